"""iMAML: the conjugate-gradient implicit meta-gradient equals the exact one, and unrolled MAML's in the limit.

On linear regression the inner problem is a quadratic, solved exactly in closed form:
φ* = argmin L_support(φ) + λ/2‖φ − θ‖², and the implicit gradient (I + H/λ)⁻¹ ∇L_query(φ*)
can be computed with a dense solve. Conjugate gradient must reach it in as many steps as
there are parameters, and unrolled MAML through the proximal steps must approach it as the
number of inner steps grows (and differ from it with few steps: the test could fail).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import mamlcourse as mc
from mamlcourse.algorithms import ALGORITHMS, MAML, get_algorithm
from mamlcourse.algorithms import imaml
from mamlcourse.experiments.cost import measure, synthetic_tasks
from mamlcourse.meta_gradient import flat

LAMBDA = 2.0


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def regression_problem(seed: int = 0, dim: int = 3):
    """A linear model (dim weights + 1 bias) and one task with float64 data."""
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(dim, 1).double()
    params = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in model.named_parameters()}
    true_w = torch.randn(dim, 1, generator=g, dtype=torch.float64)
    x_s, x_q = torch.randn(6, dim, generator=g, dtype=torch.float64), torch.randn(9, dim, generator=g,
                                                                                    dtype=torch.float64)
    task = mc.Task(x_s, x_s @ true_w + 0.3, x_q, x_q @ true_w + 0.3)
    return model, params, task


def unflatten(vector: torch.Tensor, like: dict) -> dict:
    out, i = {}, 0
    for n, p in like.items():
        out[n] = vector[i:i + p.numel()].view_as(p)
        i += p.numel()
    return out


def exact_solution(model, params, task):
    """φ* in closed form and the exact implicit meta-gradient, by dense linear algebra."""
    theta = flat(params)

    def support(v):
        return F.mse_loss(functional_call(model, unflatten(v, params), (task.x_support,)), task.y_support)

    hessian = torch.autograd.functional.hessian(support, theta)        # constant: L_support is quadratic
    gradient_at_zero = torch.func.grad(support)(torch.zeros_like(theta))  # ∇L(φ) = H φ + g₀
    eye = torch.eye(len(theta), dtype=theta.dtype)
    # ∇L(φ*) + λ(φ* − θ) = 0  ⇔  (H + λI) φ* = λθ − g₀
    phi = torch.linalg.solve(hessian + LAMBDA * eye, LAMBDA * theta - gradient_at_zero)

    def query(v):
        return F.mse_loss(functional_call(model, unflatten(v, params), (task.x_query,)), task.y_query)

    implicit = torch.linalg.solve(eye + hessian / LAMBDA, torch.func.grad(query)(phi))
    return phi, implicit


def unrolled_gradient(model, params, task, *, inner_lr, num_inner_steps):
    """∇_θ L_query(φ_k(θ)), differentiating through k proximal gradient steps (MAML, unrolled)."""
    theta = {n: p.clone().requires_grad_() for n, p in params.items()}
    phi = theta
    for _ in range(num_inner_steps):
        loss = F.mse_loss(functional_call(model, phi, (task.x_support,)), task.y_support)
        grads = torch.autograd.grad(loss, list(phi.values()), create_graph=True)
        phi = {n: p - inner_lr * (g + LAMBDA * (p - theta[n])) for (n, p), g in zip(phi.items(), grads)}
    query = F.mse_loss(functional_call(model, phi, (task.x_query,)), task.y_query)
    return flat(dict(zip(theta, torch.autograd.grad(query, list(theta.values())))))


def test_the_proximal_inner_loop_converges_to_the_closed_form_minimum():
    model, params, task = regression_problem()
    phi_exact, _ = exact_solution(model, params, task)
    phi = imaml.proximal_inner_loop(model, params, task.x_support, task.y_support, loss_fn=F.mse_loss,
                                    inner_lr=0.1, num_inner_steps=200, reg_lambda=LAMBDA)
    assert torch.allclose(flat(phi), phi_exact, atol=1e-10)


def test_the_step_size_shrinks_where_the_support_loss_is_too_curved_for_alpha():
    """Inputs scaled by 10 make λ_max(H) ~100x larger: steps of α itself diverge, the library's converge."""
    model, params, task = regression_problem()
    task = mc.Task(10 * task.x_support, task.y_support, task.x_query, task.y_query)
    phi_exact, _ = exact_solution(model, params, task)
    inner_lr = 0.1
    hessian = torch.autograd.functional.hessian(
        lambda v: F.mse_loss(functional_call(model, unflatten(v, params), (task.x_support,)), task.y_support),
        flat(params))
    lam_max = torch.linalg.eigvalsh(hessian).max()
    assert inner_lr * (LAMBDA + lam_max) > 2, "the problem must be too curved for α, or the test proves nothing"
    theta = dict(params)
    fixed = dict(params)
    for _ in range(50):   # the old rule, a fixed step α: it diverges
        g = torch.func.grad(lambda p: F.mse_loss(functional_call(model, p, (task.x_support,)), task.y_support))(fixed)
        fixed = {n: p - inner_lr * (g[n] + LAMBDA * (p - theta[n])) for n, p in fixed.items()}
    assert (flat(fixed) - phi_exact).norm() > 1e3
    loss = imaml.task_loss_fn(model, task.x_support, task.y_support, F.mse_loss)
    estimate = imaml.largest_curvature(loss, params)
    assert 0.5 * lam_max <= estimate <= lam_max * (1 + 1e-9), (estimate, lam_max)
    step = imaml.proximal_step_size(loss, params, inner_lr=inner_lr, reg_lambda=LAMBDA)
    assert step < inner_lr and step * (LAMBDA + lam_max) < 2
    phi = imaml.proximal_inner_loop(model, params, task.x_support, task.y_support, loss_fn=F.mse_loss,
                                    inner_lr=inner_lr, num_inner_steps=6000, reg_lambda=LAMBDA)
    assert (flat(phi) - phi_exact).norm() < 1e-6 * phi_exact.norm(), (flat(phi) - phi_exact).norm()


def test_where_the_support_loss_is_flat_the_step_is_alpha():
    """A loss without curvature (linear in the weights): nothing to shorten, the step is α itself."""
    _, params, _ = regression_problem()
    slope = {n: torch.full_like(p, 0.5) for n, p in params.items()}

    def linear_loss(p):
        return sum((p[n] * slope[n]).sum() for n in p)

    assert float(imaml.largest_curvature(linear_loss, params)) == 0.0
    assert float(imaml.proximal_step_size(linear_loss, params, inner_lr=0.1, reg_lambda=10.0)) == 0.1
    # and it is never longer than α, however large λ is
    assert float(imaml.proximal_step_size(linear_loss, params, inner_lr=0.1, reg_lambda=1e-3)) == 0.1


def test_conjugate_gradient_gives_the_exact_implicit_gradient():
    model, params, task = regression_problem()
    _, implicit = exact_solution(model, params, task)
    dim = len(flat(params))
    grads, _, _ = imaml.implicit_meta_gradient(model, params, task, loss_fn=F.mse_loss, inner_lr=0.1,
                                               num_inner_steps=200, reg_lambda=LAMBDA, cg_steps=dim)
    assert torch.allclose(flat(grads), implicit, rtol=1e-8, atol=1e-10)
    # One CG step is not enough on this 4-dimensional problem: the comparison can fail.
    rough, _, _ = imaml.implicit_meta_gradient(model, params, task, loss_fn=F.mse_loss, inner_lr=0.1,
                                               num_inner_steps=200, reg_lambda=LAMBDA, cg_steps=1)
    assert not torch.allclose(flat(rough), implicit, rtol=1e-3)


def test_unrolled_maml_of_the_proximal_objective_approaches_the_implicit_gradient():
    model, params, task = regression_problem(seed=1)
    _, implicit = exact_solution(model, params, task)
    errors = {k: float((unrolled_gradient(model, params, task, inner_lr=0.1, num_inner_steps=k)
                        - implicit).norm() / implicit.norm()) for k in (2, 20, 400)}
    assert errors[2] > 0.05, f"two steps are far from the minimum, the gradients should differ: {errors}"
    assert errors[20] < errors[2]
    assert errors[400] < 1e-9, f"many steps: unrolled MAML's gradient is the implicit one: {errors}"


def test_the_surrogate_has_the_mean_query_loss_as_value_and_the_mean_implicit_gradient():
    cfg = dataclasses.replace(mc.sine_preset("quick"), num_inner_steps=3, inner_lr=0.02)
    torch.manual_seed(0)
    model = mc.build_model(cfg).double()  # float64: CG amplifies float32 rounding
    params = mc.get_params(model)
    tasks = mc.TaskBatch(*(t.double() for t in synthetic_tasks(cfg, 4)))
    per_task = [imaml.implicit_meta_gradient(model, params, task, loss_fn=F.mse_loss, inner_lr=0.02,
                                             num_inner_steps=3, reg_lambda=LAMBDA, cg_steps=4)
                for task in tasks.tasks()]
    expected = torch.stack([flat(g) for g, _, _ in per_task]).mean(0)
    for vectorize in (True, False):
        loss, metrics = imaml.imaml_loss(model, params, tasks, cfg, reg_lambda=LAMBDA, cg_steps=4,
                                         vectorize=vectorize)
        grads = torch.autograd.grad(loss, list(params.values()))
        assert torch.allclose(torch.cat([g.flatten() for g in grads]), expected, rtol=1e-9, atol=1e-12)
        assert torch.allclose(loss.detach(), torch.stack([q for _, q, _ in per_task]).mean(), rtol=1e-12)
        assert metrics["query_loss"].shape == (4,)


def test_imaml_is_registered_and_scores_like_the_others():
    assert ALGORITHMS["imaml"] is imaml.IMAML is get_algorithm("imaml")
    cfg = dataclasses.replace(mc.sine_preset("quick"), num_inner_steps=2)
    torch.manual_seed(0)
    model = imaml.IMAML.build(cfg)
    scores = imaml.IMAML.score(model, synthetic_tasks(cfg, 5), cfg, 3)
    assert scores.shape == (5, 4) and torch.isfinite(scores).all()


def test_imaml_trains_on_sine_waves():
    cfg = dataclasses.replace(mc.sine_preset("quick"), num_iterations=150, tasks_per_batch=10, num_inner_steps=2,
                              inner_lr=0.02, k_shot=5, checkpoint_every=1000, log_every=50)
    sampler = mc.data.sine.SineTasks.from_config(cfg)
    test_tasks = mc.fixed_tasks(sampler, 100, k_shot=5, k_query=20)
    algo = imaml.make_imaml(cg_steps=2)
    torch.manual_seed(cfg.seed)
    before = algo.score(algo.build(cfg), test_tasks, cfg, 2)[:, -1].mean()
    model, _ = mc.algorithms.train_algorithm(algo, sampler, cfg, progress=False)
    after = algo.score(model, test_tasks, cfg, 2)[:, -1].mean()
    assert after < 0.92 * before, f"MSE after 2 steps on 100 test tasks: {before:.3f} before, {after:.3f} after"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="reg_lambda"):
        imaml.make_imaml(reg_lambda=0.0)
    with pytest.raises(ValueError, match="cg_steps"):
        imaml.make_imaml(cg_steps=0)
    model, params, task = regression_problem()
    with pytest.raises(ValueError, match="proximal term"):
        imaml.proximal_inner_loop(model, params, task.x_support, task.y_support, loss_fn=F.mse_loss,
                                  inner_lr=0.1, num_inner_steps=2, reg_lambda=-1.0)


@pytest.mark.slow
def test_imaml_memory_is_flat_in_the_number_of_inner_steps_where_maml_grows():
    """Measured (peak resident memory of a meta-iteration), on ConvNet4 where graphs are large."""
    cfg = dataclasses.replace(mc.omniglot_preset("quick-5w1s"), tasks_per_batch=2)
    tasks = synthetic_tasks(cfg, 2)
    peak = {}
    for algo in (MAML, imaml.IMAML):
        for steps in (1, 8):
            step_cfg = dataclasses.replace(cfg, num_inner_steps=steps)
            peak[algo.name, steps] = measure(algo, step_cfg, tasks, repeats=1).peak_mb
    maml_growth = peak["maml", 8] - peak["maml", 1]
    imaml_growth = peak["imaml", 8] - peak["imaml", 1]
    assert maml_growth > 20, f"MAML's graph should grow with the inner steps: {peak}"
    assert imaml_growth < 0.25 * maml_growth, f"iMAML's memory should stay flat: {peak}"


def test_the_cost_table_and_curves_show_imaml_beside_maml():
    from mamlcourse.experiments import compare

    rows = [{"algorithm": a, "num_inner_steps": s, "ms_per_iteration": 1.0 + s, "peak_mb": 2.0 * s,
             "memory_method": "test", "device": "cpu"} for a in ("maml", "fomaml", "imaml") for s in (1, 2)]
    cost = {"sine_mlp": {"tasks_per_batch": 3, "rows": rows}}
    table = compare.cost_table(cost)
    assert "second order ms" in table and "first order ms" in table and "iMAML peak MB" in table
    fig = compare.plot_cost(cost)
    assert [len(ax.lines) for ax in fig.axes] == [3, 3]
    assert compare.COST_ALGORITHMS[-1] is imaml.IMAML


def test_the_support_curvature_benchmark_measures_alpha_lambda_max(tmp_path):
    """benchmarks/support_curvature.py: a random init is flat, the shipped MAML model is not (Rayleigh ≤ λ_max)."""
    import json
    from pathlib import Path

    from conftest import load_script

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "support_curvature.py"
    module = load_script(script, "support_curvature")
    out = tmp_path / "curvature.json"
    assert module.main(["--tasks", "4", "--power-steps", "20", "--out", str(out)]) == 0
    models = json.loads(out.read_text())["models"]
    init, trained = models["random init (seed 0)"], models["trained/sine-paper"]
    assert trained["step"] == 70000 and trained["inner_lr"] == 0.01
    assert 0 < init["median"] < trained["median"], models
    assert init["max"] >= init["median"] and 0 <= trained["fraction_above_1"] <= 1
