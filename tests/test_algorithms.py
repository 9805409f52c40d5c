"""The family around MAML: each algorithm's defining property, and that all of them train and resume."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import max_abs_diff
from torch.func import functional_call

from mamlcourse.algorithms import ALGORITHMS, get_algorithm, train_algorithm
from mamlcourse.algorithms.anil import adapt, anil_loss, body_and_head, feature_tasks
from mamlcourse.algorithms.base import param_name
from mamlcourse.algorithms.hypernet import SineHyperNetwork
from mamlcourse.algorithms.maml_plus_plus import MAMLPlusPlus, maml_plus_plus_loss, multi_step_weights
from mamlcourse.algorithms.meta_sgd import MetaSGD, meta_sgd_loss
from mamlcourse.algorithms.protonet import ProtoNet, build_protonet, protonet_loss, prototypes, task_logits
from mamlcourse.algorithms.reptile import reptile_loss
from mamlcourse.config import OmniglotConfig, SineConfig
from mamlcourse.data.sine import SineTasks
from mamlcourse.maml import get_params, meta_loss
from mamlcourse.models import ConvNet4, SineMLP
from mamlcourse.tasks import TaskBatch, seeded_generator
from mamlcourse.train import meta_train

SINE = SineConfig(num_inner_steps=2, inner_lr=0.05, k_shot=5, k_query=5, tasks_per_batch=3,
                  num_iterations=4, checkpoint_every=2, log_every=1, hidden_sizes=(8, 8))
CONV = OmniglotConfig(n_way=3, k_shot=1, k_query=2, num_inner_steps=2, inner_lr=0.4, tasks_per_batch=3,
                      num_filters=4, image_size=16, num_iterations=4, checkpoint_every=2, log_every=1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: one thread is as fast, and OpenMP's second thread can slow a shared
    2-core CPU down by orders of magnitude (measured here: 3.7 s instead of 0.08 s per iteration)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def sine_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = SineMLP((8, 8))
    tasks = SineTasks(k_shot=5, k_query=5).sample(3, seeded_generator(seed))
    return model, tasks


class TinyImages:
    """n_way-way tasks of random 16x16 'images' whose class shifts their mean: learnable, instant."""

    def __init__(self, cfg: OmniglotConfig):
        self.cfg = cfg

    def sample(self, num_tasks: int, generator: torch.Generator) -> TaskBatch:
        n, k, q, size = self.cfg.n_way, self.cfg.k_shot, self.cfg.k_query, self.cfg.image_size
        centres = torch.randn(num_tasks, n, 1, 1, size, size, generator=generator)

        def draw(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
            noise = 0.3 * torch.randn(num_tasks, n, per_class, 1, size, size, generator=generator)
            x = (centres + noise).flatten(1, 2)
            return x, torch.arange(n).repeat_interleave(per_class).repeat(num_tasks, 1)

        return TaskBatch(*draw(k), *draw(q))


def conv_setup(seed: int = 0):
    torch.manual_seed(seed)
    return ConvNet4(n_way=3, num_filters=4, image_size=16), TinyImages(CONV).sample(3, seeded_generator(seed))


def as_double(tasks: TaskBatch) -> TaskBatch:
    return TaskBatch(*(t.double() if t.is_floating_point() else t for t in tasks))


def grads_of(loss: torch.Tensor, params: dict) -> dict:
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


# --- Reptile -------------------------------------------------------------------------------

def reference_task_weights(model, params, tasks, cfg):
    """φ_i by a plain per-task loop with torch.autograd.grad on each task's support + query."""
    phis = []
    for x_s, y_s, x_q, y_q in (tuple(t) for t in tasks.tasks()):
        x, y = torch.cat([x_s, x_q]), torch.cat([y_s, y_q])
        phi = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        for _ in range(cfg.num_inner_steps):
            loss = F.mse_loss(functional_call(model, phi, (x,)), y)
            grads = torch.autograd.grad(loss, list(phi.values()))
            phi = {n: (p - cfg.inner_lr * g).detach().requires_grad_(True)
                   for (n, p), g in zip(phi.items(), grads)}
        phis.append({n: p.detach() for n, p in phi.items()})
    return {n: torch.stack([phi[n] for phi in phis]).mean(0) for n in params}


@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "loop"])
def test_reptile_sgd_step_moves_theta_along_phi_minus_theta(float64, vectorize):
    model, tasks = sine_setup()
    model.double()
    tasks = as_double(tasks)
    params = get_params(model)
    before = {n: p.detach().clone() for n, p in params.items()}
    phi_mean = reference_task_weights(model, params, tasks, SINE)
    epsilon = 0.3
    optimizer = torch.optim.SGD(model.parameters(), lr=epsilon)
    loss, _ = reptile_loss(model, params, tasks, SINE, vectorize=vectorize)
    loss.backward()
    optimizer.step()
    # θ_new = θ + ε (φ̄ − θ)
    expected = {n: before[n] + epsilon * (phi_mean[n] - before[n]) for n in before}
    assert max_abs_diff(get_params(model), expected) < 1e-12
    assert max_abs_diff(phi_mean, before) > 1e-3, "φ̄ = θ: the test would not see a wrong direction"


def test_reptile_in_meta_train_takes_an_adam_step_toward_phi():
    """Adam's first step is lr · sign(gradient): with gradient θ − φ̄, every weight moves toward φ̄."""
    cfg = dataclasses.replace(SINE, num_iterations=1)
    sampler = SineTasks.from_config(cfg)
    torch.manual_seed(0)
    model = SineMLP(cfg.hidden_sizes)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tasks = sampler.sample(cfg.tasks_per_batch, seeded_generator(cfg.seed))  # what meta_train draws
    phi_mean = reference_task_weights(model, get_params(model), tasks, cfg)
    meta_train(model, sampler, cfg, objective=get_algorithm("reptile").objective, progress=False)
    for name, p in model.named_parameters():
        direction = phi_mean[name] - before[name]
        moved = p.detach() - before[name]
        clear = direction.abs() > 1e-6  # Adam's eps blurs the sign of tiny gradients
        assert clear.any()
        torch.testing.assert_close(moved[clear], cfg.outer_lr * direction[clear].sign(), rtol=1e-3, atol=1e-7)


# --- ANIL ----------------------------------------------------------------------------------

@pytest.mark.parametrize("setup, cfg, head", [(sine_setup, SINE, {"layers.2.weight", "layers.2.bias"}),
                                               (conv_setup, CONV, {"head.weight", "head.bias"})],
                         ids=["mlp", "conv"])
def test_anil_leaves_the_body_unadapted_and_adapts_the_head(setup, cfg, head):
    """Only the last linear layer's tensors move in ANIL's inner loop; the model names them."""
    model, tasks = setup()
    params = get_params(model)
    adapted = adapt(model, params, tasks.x_support[0], tasks.y_support[0], cfg)
    assert {n for n in params if n.startswith(body_and_head(model).head_prefix)} == head
    assert adapted.keys() == params.keys()
    for name in params:
        if name in head:
            assert not torch.equal(adapted[name], params[name]), f"head tensor {name} did not adapt"
        else:
            assert torch.equal(adapted[name], params[name]), f"body tensor {name} changed in the inner loop"


@pytest.mark.parametrize("setup, cfg", [(sine_setup, SINE), (conv_setup, CONV)], ids=["mlp", "conv"])
@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "loop"])
def test_anil_meta_gradient_is_maml_with_no_step_on_the_body(float64, setup, cfg, vectorize):
    """ANIL == MAML with α = 0 on every body tensor, and the body still gets a meta-gradient."""
    model, tasks = setup()
    model.double()
    tasks = as_double(tasks)
    params = get_params(model)
    head_prefix = body_and_head(model).head_prefix
    got = grads_of(anil_loss(model, params, tasks, cfg, vectorize=vectorize)[0], params)
    zero_on_body = {n: torch.full_like(p, 0.0 if not n.startswith(head_prefix) else cfg.inner_lr)
                    for n, p in params.items()}
    want = grads_of(meta_loss(model, params, tasks, cfg, inner_lr=zero_on_body, vectorize=vectorize)[0],
                    params)
    assert max_abs_diff(got, want) < 1e-10
    body = [n for n in params if not n.startswith(head_prefix) and not n.endswith("bias")]
    assert all(got[n].abs().max() > 1e-8 for n in body), "a body weight received no meta-gradient"


def test_anil_asks_a_model_without_body_and_head_for_them():
    model = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with pytest.raises(TypeError, match="Sequential, which has no body, head, head_prefix: give it a "
                                        "`body.x. -> features` method"):
        body_and_head(model)


def test_anil_body_gradient_flows_through_the_heads_adaptation(float64):
    """Detaching the support features (the head's inner step) changes the body's meta-gradient."""
    model, tasks = sine_setup()
    model.double()
    tasks = as_double(tasks)
    params = get_params(model)
    split = body_and_head(model)
    body_names = [n for n in params if not n.startswith(split.head_prefix)]
    _, head_params = split.partition(params)
    features = feature_tasks(model, params, tasks, SINE)
    full = meta_loss(split.head, head_params, features, SINE)[0]
    cut = TaskBatch(features.x_support.detach(), features.y_support, features.x_query, features.y_query)
    query_only = meta_loss(split.head, head_params, cut, SINE)[0]
    g_full = torch.autograd.grad(full, [params[n] for n in body_names], retain_graph=True)
    g_cut = torch.autograd.grad(query_only, [params[n] for n in body_names])
    assert max((a - b).abs().max().item() for a, b in zip(g_full, g_cut)) > 1e-6


# --- Meta-SGD ------------------------------------------------------------------------------

def test_meta_sgd_starts_as_maml_and_its_step_sizes_get_meta_gradients():
    model, tasks = sine_setup()
    wrapped = MetaSGD(model, inner_lr=SINE.inner_lr)
    params = get_params(wrapped)
    loss, _ = meta_sgd_loss(wrapped, params, tasks, SINE)
    maml, _ = meta_loss(model, get_params(model), tasks, SINE)
    torch.testing.assert_close(loss, maml)  # constant α = cfg.inner_lr is MAML
    lrs = wrapped.inner_lrs_dict()
    assert {n: lr.shape for n, lr in lrs.items()} == {n: p.shape for n, p in model.named_parameters()}
    grads = dict(zip(lrs, torch.autograd.grad(loss, list(lrs.values()))))
    for name, g in grads.items():
        assert g.abs().max() > 0, f"the step sizes of {name} received no meta-gradient"


def test_meta_sgd_step_size_gradient_matches_finite_differences(float64):
    model, tasks = sine_setup()
    wrapped = MetaSGD(model, inner_lr=SINE.inner_lr).double()
    tasks = as_double(tasks)
    params = get_params(wrapped)
    name = "inner_lrs.layers:1:weight"

    def loss_of(lr):
        return meta_sgd_loss(wrapped, {**params, name: lr}, tasks, SINE)[0]

    lr = params[name].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(loss_of, (lr,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_meta_sgd_step_sizes_change_after_one_outer_step():
    cfg = dataclasses.replace(SINE, num_iterations=1)
    torch.manual_seed(0)
    model = get_algorithm("meta_sgd").build(cfg)
    before = {n: lr.detach().clone() for n, lr in model.inner_lrs_dict().items()}
    meta_train(model, SineTasks.from_config(cfg), cfg, objective=get_algorithm("meta_sgd").objective,
               progress=False)
    for name, lr in model.inner_lrs_dict().items():
        assert not torch.equal(lr.detach(), before[name]), f"α of {name} did not change"


# --- MAML++ --------------------------------------------------------------------------------

def test_multi_step_loss_weights_start_uniform_sum_to_one_and_anneal_to_the_last_step():
    n, anneal = 5, 100
    schedule = torch.stack([multi_step_weights(i, n, anneal) for i in range(0, 121)])
    torch.testing.assert_close(schedule[0], torch.full((n,), 1 / n))
    torch.testing.assert_close(schedule.sum(1), torch.ones(len(schedule)))
    assert (schedule[1:, :-1] <= schedule[:-1, :-1]).all(), "non-final weights must only shrink"
    assert (schedule[1:, -1] >= schedule[:-1, -1]).all(), "the final weight must only grow"
    assert (schedule[:anneal, :-1] >= 0.03 / n - 1e-7).all(), "non-final weights keep the paper's floor"
    torch.testing.assert_close(schedule[anneal], torch.tensor([0.0, 0, 0, 0, 1]))
    torch.testing.assert_close(schedule[50], torch.tensor([0.1, 0.1, 0.1, 0.1, 0.6]))
    with pytest.raises(ValueError, match="num_inner_steps"):
        multi_step_weights(0, 0, anneal)


def test_maml_plus_plus_loss_is_the_weighted_sum_of_every_steps_query_loss(float64):
    model, tasks = sine_setup()
    wrapped = MAMLPlusPlus(model, num_inner_steps=3, inner_lr=0.05, anneal_iterations=10).double()
    tasks = as_double(tasks)
    with torch.no_grad():  # distinct step sizes per step and tensor, so a mix-up shows
        for i, lr in enumerate(wrapped.inner_lrs.values()):
            lr.copy_(torch.tensor([0.05, 0.02, 0.08]) * (1 + 0.1 * i))
    wrapped.iteration.fill_(4)
    weights = multi_step_weights(4, 3, 10).double()
    loss, metrics = maml_plus_plus_loss(wrapped, get_params(wrapped), tasks, SINE)
    assert int(wrapped.iteration) == 5, "each call counts one meta-iteration"
    # Oracle: a hand loop with the per-step, per-tensor step sizes α[s].
    steps = {param_name(k): v for k, v in wrapped.inner_lrs.items()}
    total = 0.0
    for x_s, y_s, x_q, y_q in (tuple(t) for t in tasks.tasks()):
        p = dict(model.named_parameters())
        per_step = []
        for s in range(3):
            g = torch.autograd.grad(F.mse_loss(functional_call(model, p, (x_s,)), y_s), list(p.values()),
                                    create_graph=True)
            p = {n: w - steps[n][s] * gw for (n, w), gw in zip(p.items(), g)}
            per_step.append(F.mse_loss(functional_call(model, p, (x_q,)), y_q))
        total = total + (torch.stack(per_step) * weights).sum()
    torch.testing.assert_close(loss, total / len(tasks))
    assert metrics["step_query_loss"].shape == (3, 3)


def test_maml_plus_plus_step_sizes_get_a_meta_gradient_at_every_step():
    model, tasks = sine_setup()
    wrapped = MAMLPlusPlus(model, num_inner_steps=3, inner_lr=0.05, anneal_iterations=10)
    loss, _ = maml_plus_plus_loss(wrapped, get_params(wrapped), tasks, SINE)
    grads = torch.autograd.grad(loss, list(wrapped.inner_lrs.values()))
    for key, g in zip(wrapped.inner_lrs, grads):
        assert g.shape == (3,)
        assert (g != 0).all(), f"a step of {key} got no meta-gradient: {g.tolist()}"


def test_maml_plus_plus_resumes_its_annealing_from_a_checkpoint(tmp_path):
    cfg = dataclasses.replace(SINE, num_inner_steps=2)
    sampler = SineTasks.from_config(cfg)
    algo = get_algorithm("maml_pp")
    straight, _ = train_algorithm(algo, sampler, cfg, progress=False)
    train_algorithm(algo, sampler, dataclasses.replace(cfg, num_iterations=2), checkpoint_dir=tmp_path,
                    progress=False)
    resumed, _ = train_algorithm(algo, sampler, cfg, checkpoint_dir=tmp_path, progress=False)
    assert int(resumed.iteration) == int(straight.iteration) == cfg.num_iterations
    assert max_abs_diff(dict(resumed.named_parameters()), dict(straight.named_parameters())) < 1e-6


# --- Prototypical Networks -----------------------------------------------------------------

def test_prototypes_are_class_means_and_predictions_the_nearest_one():
    torch.manual_seed(0)
    model = build_protonet(CONV)
    tasks = TinyImages(dataclasses.replace(CONV, k_shot=3, k_query=4)).sample(2, seeded_generator(1))
    params = get_params(model)
    for x_s, y_s, x_q, _ in (tuple(t) for t in tasks.tasks()):
        embeddings = model(torch.cat([x_s, x_q])).detach()
        support, query = embeddings[:len(x_s)], embeddings[len(x_s):]
        centres = prototypes(support, y_s, CONV.n_way)
        for k in range(CONV.n_way):
            torch.testing.assert_close(centres[k], support[y_s == k].mean(0))
        logits = task_logits(model, params, x_s, y_s, x_q, CONV.n_way)
        nearest = torch.tensor([min(range(CONV.n_way), key=lambda k: float(((q - centres[k]) ** 2).sum()))
                                for q in query])
        assert torch.equal(logits.argmax(-1), nearest)
        torch.testing.assert_close(-logits, torch.cdist(query, centres) ** 2, rtol=1e-4, atol=1e-4)


def test_one_image_per_class_classifies_those_same_images_correctly():
    torch.manual_seed(0)
    model = build_protonet(CONV)  # untrained: the property holds for any embedding
    tasks = TinyImages(CONV).sample(4, seeded_generator(2))
    same = TaskBatch(tasks.x_support, tasks.y_support, tasks.x_support, tasks.y_support)
    _, metrics = protonet_loss(model, get_params(model), same, CONV)
    assert (metrics["accuracy"] == 1).all()
    assert not (protonet_loss(model, get_params(model), tasks, CONV)[1]["accuracy"] == 1).all(), \
        "other query images are not all classified right by an untrained net"


def test_protonet_refuses_a_class_without_support_examples():
    model = ProtoNet(torch.nn.Flatten())
    tasks = TinyImages(CONV).sample(1, seeded_generator(0))
    missing = TaskBatch(tasks.x_support, torch.zeros_like(tasks.y_support), tasks.x_query, tasks.y_query)
    with pytest.raises(ValueError, match="support example"):
        protonet_loss(model, get_params(model), missing, CONV)


# --- the hypernetwork ---------------------------------------------------------------------

def test_hypernetwork_starts_as_its_target_and_ignores_the_order_of_the_support_set():
    torch.manual_seed(0)
    model = SineHyperNetwork((8, 8))
    tasks = SineTasks(k_shot=5, k_query=5).sample(1, seeded_generator(0))
    x_s, y_s, x_q, _ = tuple(tasks[0])
    torch.testing.assert_close(model(x_s, y_s, x_q), model.target(x_q))
    torch.nn.init.normal_(model.generator.weight, std=0.1)
    order = torch.randperm(len(x_s))
    torch.testing.assert_close(model(x_s, y_s, x_q), model(x_s[order], y_s[order], x_q))
    assert not torch.allclose(model(x_s, y_s, x_q), model.target(x_q))


# --- every algorithm -----------------------------------------------------------------------

def sampler_for(cfg):
    return SineTasks.from_config(cfg) if isinstance(cfg, SineConfig) else TinyImages(cfg)


CASES = [(name, cfg) for name, algo in ALGORITHMS.items() for cfg in (SINE, CONV) if algo.supports(cfg)
         and not (name == "hypernet" and cfg is CONV)]


@pytest.mark.parametrize("name, cfg", CASES, ids=[f"{n}-{c.task}" for n, c in CASES])
def test_every_algorithm_trains_through_meta_train_and_resumes_exactly(tmp_path, name, cfg):
    algo = get_algorithm(name)
    sampler = sampler_for(cfg)
    straight, history = train_algorithm(algo, sampler, cfg, progress=False)
    assert history.step[-1] == cfg.num_iterations
    train_algorithm(algo, sampler, dataclasses.replace(cfg, num_iterations=2), checkpoint_dir=tmp_path,
                    progress=False)
    assert (tmp_path / f"{name}.pt").exists()
    resumed, _ = train_algorithm(algo, sampler, cfg, checkpoint_dir=tmp_path, progress=False)
    assert max_abs_diff(resumed.state_dict(), straight.state_dict()) < 1e-6
    test_tasks = sampler.sample(2, seeded_generator(9))
    scores = algo.score(resumed, test_tasks, cfg, 2)
    assert scores.shape == (2, 3 if algo.adapts_by_gradient else 1)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("name", [n for n, a in ALGORITHMS.items() if a.supports(CONV) and n != "hypernet"])
def test_vmap_and_loop_give_the_same_meta_gradient_on_a_batch_norm_convnet(float64, name):
    """The torch.func trap of ../shared/notes: every algorithm's vmapped path against its loop."""
    algo = get_algorithm(name)
    tasks = as_double(TinyImages(CONV).sample(3, seeded_generator(0)))
    grads = {}
    for vectorize in (True, False):
        cfg = dataclasses.replace(CONV, vectorize=vectorize)
        torch.manual_seed(0)
        model = algo.build(cfg).double()
        params = get_params(model)
        grads[vectorize] = grads_of(algo.objective(model, params, tasks, cfg)[0], params)
    assert max_abs_diff(grads[True], grads[False]) < 1e-10


def test_unknown_algorithm_and_wrong_task_are_refused():
    with pytest.raises(ValueError, match="choose one of"):
        get_algorithm("maml2")
    with pytest.raises(ValueError, match="does not apply"):
        train_algorithm(get_algorithm("protonet"), SineTasks.from_config(SINE), SINE, progress=False)


# --- cost and the comparison ---------------------------------------------------------------

def _allocating_objective(model, params, tasks, cfg):
    """Keeps 64 MiB alive in the graph until backward: a known peak for the memory measurement."""
    big = torch.ones(16 * 2**20, requires_grad=True)  # 16 Mi float32 = 64 MiB
    loss = sum(p.sum() for p in params.values()) + (big * 2).sum() * 0
    return loss, {}


def test_measured_peak_memory_sees_a_known_allocation():
    from mamlcourse.algorithms.base import Algorithm
    from mamlcourse.algorithms.maml_variants import score_maml
    from mamlcourse.experiments.cost import measure
    from mamlcourse.models import build_model

    allocating = Algorithm("alloc", "alloc", "test", build_model, _allocating_objective, score_maml)
    cost = measure(allocating, SINE, SineTasks.from_config(SINE).sample(2, seeded_generator(0)), repeats=1)
    # ones (64 MiB) and its double (64 MiB) are alive together: 128 MiB, plus allocator slack
    assert 120 <= cost.peak_mb <= 200, f"got {cost.peak_mb:.0f} MiB"
    assert cost.ms_per_iteration > 0


def test_second_order_memory_grows_with_inner_steps_and_first_order_barely():
    from mamlcourse.experiments.cost import inner_step_costs, synthetic_tasks

    cfg = OmniglotConfig(n_way=5, k_shot=1, k_query=1, inner_lr=2.0, tasks_per_batch=1, num_filters=32)
    rows = inner_step_costs(cfg, synthetic_tasks(cfg, 1), steps=(1, 6), repeats=1)
    peak = {(r["algorithm"], r["num_inner_steps"]): r["peak_mb"] for r in rows}
    assert peak["maml", 6] > peak["maml", 1] + 5, peak
    assert peak["maml", 6] > 2 * peak["fomaml", 6], peak


def test_comparison_runs_scores_and_reports_every_algorithm(tmp_path):
    import json

    from mamlcourse.algorithms import published
    from mamlcourse.experiments import compare

    sizes = dataclasses.replace(compare.MODES["quick"], sine_iterations=3, sine_tasks_per_batch=2,
                                sine_test_tasks=4)
    names = ("maml", "fomaml", "meta_sgd", "hypernet")
    results, models = compare.run_sine(sizes, names=names, progress=False)
    assert set(models) == set(names)
    assert len(results["algorithms"]["maml"]["mse"]) == 11
    assert len(results["algorithms"]["hypernet"]["mse"]) == 1
    assert results["first_order_equal_time"]["iterations"] >= 1
    table = compare.sine_table(results)
    assert all(label in table for label in ("MAML", "first-order MAML", "Meta-SGD", "hypernetwork", "paper"))
    assert results["paper"]["source"] == published.SINE_5SHOT["maml"][1].source  # Table 2 (Appendix C.1)
    (tmp_path / "r.json").write_text(json.dumps({"sine": results}))
    compare.plot_sine(json.loads((tmp_path / "r.json").read_text())["sine"])
