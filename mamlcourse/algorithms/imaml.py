"""Implicit MAML (Rajeswaran, Finn, Kakade & Levine, NeurIPS 2019): the meta-gradient without unrolling.

The inner problem keeps the adapted weights near θ with a proximal term,

    φ*(θ) = argmin_φ  L_support(φ) + λ/2 ‖φ − θ‖²,

and the implicit function theorem gives its Jacobian without looking at *how* φ* was
found: at the minimum ∇L_support(φ*) + λ(φ* − θ) = 0, so differentiating in θ,

    dφ*/dθ = (I + H/λ)⁻¹,   H = ∇²L_support(φ*),

and the meta-gradient of L_query(φ*) is x = (I + H/λ)⁻¹ ∇L_query(φ*). iMAML solves
(I + H/λ) x = ∇L_query(φ*) with a few steps of conjugate gradient, each one Hessian-vector
product (``meta_gradient.hvp_forward_over_reverse``). Unrolled MAML's product
∏(I − α H_j) over k steps needs every step's graph in memory; iMAML needs none: its inner
loop runs without a graph, so memory does not grow with the number of inner steps
(``tests/test_imaml.py`` checks it; docs/results.md, "iMAML's memory against the number
of inner steps", gives the figures and the command, measured by ``experiments.cost``).

Here φ* is approximated by ``num_inner_steps`` gradient steps on the proximal objective,
started at θ; the test-time adaptation is the same loop. λ defaults to 1/α
(``default_reg_lambda``): the limit φ* = θ − α ∇L_support(φ*) is then an *implicit* gradient
step, and the implicit Jacobian (I + αH)⁻¹ agrees with one-step MAML's (I − αH) to first order
in α. The step size is α where the support loss is flat, shorter where it is curved
(``proximal_step_size``), so the inner loop converges however sharp meta-training makes it.

``imaml_loss`` returns a surrogate whose value is the mean query loss and whose gradient
with respect to θ is the implicit meta-gradient, so ``meta_train`` trains iMAML unchanged.

Example:
    >>> model, history = train_algorithm(IMAML, SineTasks.from_config(cfg), cfg)
    >>> grads = implicit_meta_gradient(model, params, task, loss_fn=F.mse_loss, inner_lr=0.01,
    ...                                num_inner_steps=10, reg_lambda=1.0, cg_steps=5)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value

from ..config import MetaConfig
from ..evaluate import metric_function
from ..maml import Params, detach_params, loss_function
from ..meta_gradient import dot, hvp_forward_over_reverse, task_loss_fn
from ..models import build_model
from ..tasks import Task, TaskBatch
from .base import Algorithm, over_tasks, pick_vectorize

LossFn = Callable[[Tensor, Tensor], Tensor]

# Conjugate-gradient steps per task (one Hessian-vector product each): the course's choice.
CG_STEPS = 5
# Power-iteration steps for the largest curvature that sets the proximal step size.
POWER_STEPS = 8
# Divides by <p, A p> and <r, r> in CG: keeps a converged (zero) residual from giving 0/0.
_TINY = 1e-30


def proximal_inner_loop(model: nn.Module, params: Params, x_support: Tensor, y_support: Tensor, *,
                        loss_fn: LossFn, inner_lr: float, num_inner_steps: int, reg_lambda: float,
                        trajectory: bool = False) -> Params | list[Params]:
    """φ ≈ argmin_φ L_support(φ) + λ/2 ‖φ − θ‖², by ``num_inner_steps`` gradient steps from φ = θ.

    Each step is φ ← φ − η (∇L_support(φ) + λ (φ − θ)) with η = ``proximal_step_size``: α,
    shortened where the support loss is too curved for α to converge. Nothing is
    differentiable with respect to θ: iMAML's meta-gradient does not go through these steps.

    Args:
        model, params: the network and θ.
        x_support: [n_support, *x_shape]; y_support: [n_support, *y_shape].
        loss_fn, inner_lr, num_inner_steps: the inner loop's loss, α and number of steps.
        reg_lambda: λ > 0, how strongly φ is held near θ.
        trajectory: return [θ, φ_1, ..., φ_k] instead of φ_k.

    Returns:
        φ (detached), or the list of iterates.
    """
    if reg_lambda <= 0:
        raise ValueError(f"reg_lambda (λ) must be > 0, got {reg_lambda}: the implicit gradient "
                         "(I + H/λ)⁻¹ needs the proximal term")
    if num_inner_steps < 0:
        raise ValueError(f"num_inner_steps must be >= 0, got {num_inner_steps}")
    theta = detach_params(params)
    support_loss = task_loss_fn(model, x_support, y_support, loss_fn)
    support_grad = grad(support_loss)
    step = proximal_step_size(support_loss, theta, inner_lr=inner_lr, reg_lambda=reg_lambda)
    phi, path = theta, [theta]
    for _ in range(num_inner_steps):
        g = support_grad(phi)
        # φ ← φ − η (∇L_support(φ) + λ(φ − θ))
        phi = {n: p - step * (g[n] + reg_lambda * (p - theta[n])) for n, p in phi.items()}
        path.append(phi)
    return path if trajectory else phi


def largest_curvature(loss: Callable[[Params], Tensor], params: Params, num_steps: int = POWER_STEPS) -> Tensor:
    """An estimate of λ_max(∇²loss) at ``params``: ``num_steps`` of power iteration, then a Rayleigh quotient.

    One Hessian-vector product per step, a fixed number of steps (it runs under ``vmap``).
    The Rayleigh quotient never exceeds the largest eigenvalue: it is an estimate from below.
    """
    v = {n: torch.ones_like(p) for n, p in params.items()}
    for _ in range(num_steps):
        hv = hvp_forward_over_reverse(loss, params, v)
        norm = dot(hv, hv).sqrt() + _TINY
        v = {n: x / norm for n, x in hv.items()}
    return dot(v, hvp_forward_over_reverse(loss, params, v)) / (dot(v, v) + _TINY)


def proximal_step_size(loss: Callable[[Params], Tensor], theta: Params, *, inner_lr: float,
                       reg_lambda: float) -> Tensor:
    """η = min(α, 1 / (λ + 2 λ̂_max)): a gradient step on the proximal objective that converges.

    Gradient descent on L(φ) + λ/2‖φ − θ‖² converges when η < 2 / (λ + λ_max(H)). A fixed η = α
    stops converging once α λ_max(H) > 1 (with λ = 1/α), and meta-training raises λ_max: on the
    paper's sine task the fixed step diverged mid-training (docs/results.md). Where the support
    loss is flat this is α itself, so the first step from θ is MAML's; the factor 2 on the
    estimate λ̂_max (from ``largest_curvature``, at θ) leaves room for the curvature to grow
    between θ and φ.
    """
    curvature = largest_curvature(loss, theta).clamp(min=0)
    return torch.clamp(1.0 / (reg_lambda + 2.0 * curvature), max=inner_lr)


def default_reg_lambda(cfg: MetaConfig) -> float:
    """λ = 1/α: the proximal problem whose minimum is one implicit gradient step of ``cfg.inner_lr``."""
    return 1.0 / cfg.inner_lr


def conjugate_gradient(matvec: Callable[[Params], Params], b: Params, num_steps: int) -> Params:
    """x ≈ A⁻¹ b for a symmetric positive-definite A given as ``matvec(v) = A v``, from x = 0.

    A fixed number of steps (no data-dependent stopping), so it runs under ``vmap``. In
    exact arithmetic ``num_steps`` = dimension solves the system exactly.
    """
    x = {n: torch.zeros_like(v) for n, v in b.items()}
    r = dict(b)   # residual b − A x
    p = dict(b)   # search direction
    rs = dot(r, r)
    for _ in range(num_steps):
        ap = matvec(p)
        step = rs / (dot(p, ap) + _TINY)
        x = {n: x[n] + step * p[n] for n in x}
        r = {n: r[n] - step * ap[n] for n in r}
        rs_new = dot(r, r)
        p = {n: r[n] + (rs_new / (rs + _TINY)) * p[n] for n in p}
        rs = rs_new
    return x


def implicit_meta_gradient(model: nn.Module, params: Params, task: Task, *, loss_fn: LossFn,
                           inner_lr: float, num_inner_steps: int, reg_lambda: float, cg_steps: int
                           ) -> tuple[Params, Tensor, Tensor]:
    """iMAML's meta-gradient for one task: (I + H/λ)⁻¹ ∇L_query(φ), solved by conjugate gradient.

    Args:
        model, params: the network and θ.
        task: x_support [n_support, ...], y_support, x_query [n_query, ...], y_query.
        loss_fn, inner_lr, num_inner_steps, reg_lambda: the proximal inner problem.
        cg_steps: conjugate-gradient steps (one Hessian-vector product each).

    Returns:
        meta_gradient: a dict shaped like params (detached).
        query_loss: scalar L_query(φ).
        predictions: the model's output on x_query at φ.
    """
    phi = proximal_inner_loop(model, params, task.x_support, task.y_support, loss_fn=loss_fn,
                              inner_lr=inner_lr, num_inner_steps=num_inner_steps, reg_lambda=reg_lambda)

    def query_loss(p: Params) -> tuple[Tensor, Tensor]:
        predictions = functional_call(model, p, (task.x_query,))
        return loss_fn(predictions, task.y_query), predictions

    query_grad, (loss, predictions) = grad_and_value(query_loss, has_aux=True)(phi)
    support_loss = task_loss_fn(model, task.x_support, task.y_support, loss_fn)

    def matvec(v: Params) -> Params:
        hv = hvp_forward_over_reverse(support_loss, phi, v)
        return {n: v[n] + hv[n] / reg_lambda for n in v}   # (I + H/λ) v

    return conjugate_gradient(matvec, query_grad, cg_steps), loss, predictions


def imaml_loss(model: nn.Module, params: Params, tasks: TaskBatch, cfg: MetaConfig, *,
               reg_lambda: float | None = None, cg_steps: int = CG_STEPS,
               vectorize: bool | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """A surrogate whose value is the mean query loss and whose gradient in θ is iMAML's meta-gradient.

    surrogate(θ) = mean_i L_query_i(φ_i) + <θ − stop_gradient(θ), mean_i x_i>,
    x_i = (I + H_i/λ)⁻¹ ∇L_query_i(φ_i), so ``surrogate.backward()`` leaves mean_i x_i in θ's ``.grad``.

    Args:
        model, params: the network and θ (``params`` require grad for training).
        tasks: T tasks.
        cfg: the loss, ``inner_lr`` and ``num_inner_steps`` of the proximal inner loop.
        reg_lambda: λ (None: ``default_reg_lambda(cfg)``, 1/α).
        cg_steps: conjugate-gradient steps.
        vectorize: vmap over tasks, or a loop (None: ``base.pick_vectorize``).

    Returns:
        loss: the surrogate (a scalar).
        metrics: ``"query_loss"`` [T] and, for classification, ``"accuracy"`` [T].
    """
    loss_fn = loss_function(cfg.loss)
    reg_lambda = default_reg_lambda(cfg) if reg_lambda is None else reg_lambda

    def task_fn(p: Params, x_support: Tensor, y_support: Tensor, x_query: Tensor, y_query: Tensor
                ) -> tuple[Params, Tensor, Tensor]:
        return implicit_meta_gradient(model, p, Task(x_support, y_support, x_query, y_query),
                                      loss_fn=loss_fn, inner_lr=cfg.inner_lr,
                                      num_inner_steps=cfg.num_inner_steps, reg_lambda=reg_lambda,
                                      cg_steps=cg_steps)

    with torch.no_grad():
        grads, query_losses, predictions = over_tasks(
            task_fn, detach_params(params), tasks, vectorize=pick_vectorize(model, tasks, cfg, vectorize))
    mean_grad = {n: g.mean(0) for n, g in grads.items()}
    # value: the mean query loss; gradient: mean_grad
    surrogate = query_losses.mean() + sum((p - p.detach()).mul(mean_grad[n]).sum() for n, p in params.items())
    metrics = {"query_loss": query_losses}
    if cfg.loss == "cross_entropy":
        metrics["accuracy"] = (predictions.argmax(-1) == tasks.y_query).float().mean(-1)
    return surrogate, metrics


def score_imaml(model: nn.Module, tasks: TaskBatch, cfg: MetaConfig, num_steps: int, *,
                reg_lambda: float | None = None) -> Tensor:
    """[T, num_steps + 1] scores (MSE or accuracy) after 0..num_steps proximal inner steps (λ as in training)."""
    from ..maml import get_params

    loss_fn, metric = loss_function(cfg.loss), metric_function(cfg)
    reg_lambda = default_reg_lambda(cfg) if reg_lambda is None else reg_lambda

    def curve(p: Params, x_support: Tensor, y_support: Tensor, x_query: Tensor, y_query: Tensor
              ) -> tuple[Tensor]:
        path = proximal_inner_loop(model, p, x_support, y_support, loss_fn=loss_fn, inner_lr=cfg.inner_lr,
                                   num_inner_steps=num_steps, reg_lambda=reg_lambda, trajectory=True)
        return (torch.stack([metric(functional_call(model, q, (x_query,)), y_query) for q in path]),)

    with torch.no_grad():
        (scores,) = over_tasks(curve, detach_params(get_params(model)), tasks,
                               vectorize=pick_vectorize(model, tasks, cfg))
    return scores.cpu()


def make_imaml(reg_lambda: float | None = None, cg_steps: int = CG_STEPS) -> Algorithm:
    """iMAML with its own λ (None: 1/α from the config) and number of CG steps (``IMAML``: the defaults)."""
    if reg_lambda is not None and reg_lambda <= 0:
        raise ValueError(f"reg_lambda (λ) must be > 0, got {reg_lambda}")
    if cg_steps < 1:
        raise ValueError(f"cg_steps must be >= 1, got {cg_steps}")
    return Algorithm(
        name="imaml", label="iMAML", reference="Rajeswaran, Finn, Kakade & Levine, NeurIPS 2019",
        build=build_model,
        objective=functools.partial(imaml_loss, reg_lambda=reg_lambda, cg_steps=cg_steps),
        score=functools.partial(score_imaml, reg_lambda=reg_lambda))


IMAML = make_imaml()
