"""What second-order MAML computes: Hessian-vector products, never the Hessian.

For one inner step θ' = θ − α ∇L_support(θ) the chain rule gives the meta-gradient

    ∇_θ L_query(θ') = (I − α H) ∇L_query(θ'),   H = ∇²L_support(θ)

and for k steps θ_0 = θ, ..., θ_k = θ' the product of the step Jacobians

    ∇_θ L_query(θ_k) = (I − α H_0)(I − α H_1) ··· (I − α H_{k−1}) ∇L_query(θ_k),   H_j = ∇²L_support(θ_j)

(each factor is symmetric, so the order written is the order the backward pass applies them,
last step first). Autograd never forms H: it applies it to a vector, a Hessian-vector
product (HVP), which costs a small multiple of one gradient. This module gives the HVP two
ways (double backward; forward-over-reverse with ``torch.func.jvp`` over ``grad``), the
meta-gradient assembled by hand from them, and ``second_order_share``, the size of the term
first-order MAML drops, measured on a meta-batch.

Example:
    >>> hvp = hvp_double_backward(lambda p: support_loss(p), params, vector)
    >>> share = second_order_share(model, params, tasks, cfg)
    >>> share["ratio"], share["cosine"]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

from .config import MetaConfig
from .maml import Params, detach_params, inner_loop
from .tasks import Task, TaskBatch

ScalarFn = Callable[[Params], Tensor]


def flat(params: Params) -> Tensor:
    """All tensors of a dict, flattened and concatenated: [total number of entries]."""
    return torch.cat([t.reshape(-1) for t in params.values()])


def dot(a: Params, b: Params) -> Tensor:
    """Σ_names <a[name], b[name]>: the inner product of two dicts shaped like params."""
    return sum((a[name] * b[name]).sum() for name in a)


def squared_error(predictions: Tensor, targets: Tensor) -> Tensor:
    """mean((predictions − targets)²): ``F.mse_loss``'s value, written out.

    torch 2.13's forward-mode derivative of ``F.mse_loss``'s backward fails ("ZeroTensors are
    immutable"), so ``jvp`` over ``grad`` cannot go through ``F.mse_loss``; this form can.
    """
    return (predictions - targets).pow(2).mean()


def task_loss_fn(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]
                 ) -> ScalarFn:
    """params -> loss_fn(model(x; params), y): a task loss as a function of the parameters.

    ``F.mse_loss`` is replaced by ``squared_error`` (the same values), so the function also
    works under forward-mode differentiation (``hvp_forward_over_reverse``).
    """
    if loss_fn is F.mse_loss:
        loss_fn = squared_error
    return lambda params: loss_fn(functional_call(model, params, (x,)), y)


def hvp_double_backward(f: ScalarFn, params: Params, vector: Params) -> Params:
    """H v with H = ∇²f(params), by differentiating <∇f, v> a second time (reverse over reverse).

    Args:
        f: a scalar function of a params dict.
        params: where H is taken (values only; the result is detached).
        vector: v, a dict shaped like params.

    Returns:
        H v, a dict shaped like params.
    """
    leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
    with torch.enable_grad():
        grads = torch.autograd.grad(f(leaves), list(leaves.values()), create_graph=True)
        # ∇_p <∇f(p), v> = H v (v held constant)
        inner = sum((g * vector[name].detach()).sum() for g, name in zip(grads, leaves))
        hv = torch.autograd.grad(inner, list(leaves.values()))
    return dict(zip(leaves, hv))


def hvp_forward_over_reverse(f: ScalarFn, params: Params, vector: Params) -> Params:
    """H v as the directional derivative of ∇f along v: ``jvp(grad(f), (params,), (v,))``.

    Runs under ``torch.func.vmap`` and ``torch.no_grad()``; the same numbers as
    ``hvp_double_backward``. ``f`` must support forward mode: build it with ``task_loss_fn``
    (``F.mse_loss`` itself does not, see ``squared_error``).
    """
    _, hv = jvp(grad(f), (detach_params(params),), (detach_params(vector),))
    return hv


def hvp_finite_difference(f: ScalarFn, params: Params, vector: Params, eps: float = 1e-6) -> Params:
    """H v ≈ (∇f(p + εv) − ∇f(p − εv)) / 2ε: the central difference every HVP is checked against.

    Use float64 params. ε must be small for a ReLU network: its gradient jumps where a unit
    switches on or off, and a step εv that moves a pre-activation across 0 gives an error
    of order 1/ε.
    """
    def gradient_at(p: Params) -> Params:
        with torch.enable_grad():
            return grad(f)(p)

    plus = gradient_at({n: p.detach() + eps * vector[n] for n, p in params.items()})
    minus = gradient_at({n: p.detach() - eps * vector[n] for n, p in params.items()})
    return {n: (plus[n] - minus[n]) / (2 * eps) for n in params}


def meta_gradient_by_hand(model: nn.Module, params: Params, task: Task, *,
                          loss_fn: Callable[[Tensor, Tensor], Tensor], inner_lr: float,
                          num_inner_steps: int) -> Params:
    """MAML's meta-gradient for one task, assembled from HVPs: (I − αH_0)···(I − αH_{k−1}) ∇L_query(θ_k).

    The backward pass written out: start from g = ∇L_query(θ_k), then for j = k−1 down to 0
    replace g by g − α H_j g, with H_j the support Hessian at the j-th inner iterate.
    Equals ``torch.autograd.grad`` of the second-order ``meta_loss`` (tested).

    Args:
        model, params: the network and θ.
        task: one task (x_support [n_support, ...], ...).
        loss_fn, inner_lr, num_inner_steps: the inner loop's settings.

    Returns:
        ∇_θ L_query(θ'), a dict shaped like params (detached).
    """
    path = inner_loop(model, detach_params(params), task.x_support, task.y_support, loss_fn=loss_fn,
                      inner_lr=inner_lr, num_inner_steps=num_inner_steps, first_order=True,
                      trajectory=True)
    support_loss = task_loss_fn(model, task.x_support, task.y_support, loss_fn)
    g = grad(task_loss_fn(model, task.x_query, task.y_query, loss_fn))(detach_params(path[-1]))
    for theta_j in reversed(path[:-1]):
        hg = hvp_double_backward(support_loss, theta_j, g)
        g = {n: g[n] - inner_lr * hg[n] for n in g}  # (I − α H_j) g
    return detach_params(g)


def meta_gradients(model: nn.Module, params: Params, tasks: TaskBatch, cfg: MetaConfig, *,
                   num_inner_steps: int | None = None, vectorize: bool | None = None
                   ) -> tuple[Tensor, Tensor, float]:
    """The meta-batch's second-order and first-order meta-gradients, as flat vectors.

    Both are gradients of ``cfg``'s mean query loss over ``tasks`` with respect to θ, after
    ``num_inner_steps`` (default ``cfg.num_inner_steps``) inner steps of ``cfg.inner_lr``;
    ``vectorize`` as in ``maml.meta_loss``.

    Returns:
        (second_order [P], first_order [P], meta_loss), P = number of entries of params; the
        meta-loss (mean query loss after adaptation) is the same for both.
    """
    from .maml import meta_loss

    leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
    out, value = [], 0.0
    for first_order in (False, True):
        with torch.enable_grad():
            loss, _ = meta_loss(model, leaves, tasks, cfg, first_order=first_order,
                                num_inner_steps=num_inner_steps, vectorize=vectorize)
            out.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(leaves.values()))]))
        value = float(loss.detach())
    return out[0], out[1], value


def second_order_share(model: nn.Module, params: Params, tasks: TaskBatch, cfg: MetaConfig, *,
                       num_inner_steps: int | None = None, vectorize: bool | None = None) -> dict[str, float]:
    """How much of the meta-gradient first-order MAML drops, on one meta-batch.

    With g₂ the second-order meta-gradient and g₁ the first-order one (both the batch mean),

        ratio  = ‖g₂ − g₁‖ / ‖g₁‖   (one inner step: ‖α H ∇L_query‖ / ‖∇L_query‖, averaged over tasks)
        cosine = <g₂, g₁> / (‖g₂‖ ‖g₁‖)

    Returns:
        ``{"ratio", "cosine", "first_order_norm", "second_order_norm", "meta_loss"}`` as floats.
    """
    second, first, loss = meta_gradients(model, params, tasks, cfg, num_inner_steps=num_inner_steps,
                                   vectorize=vectorize)
    return {"ratio": float((second - first).norm() / first.norm()),
            "cosine": float(torch.nn.functional.cosine_similarity(second, first, dim=0)),
            "first_order_norm": float(first.norm()), "second_order_norm": float(second.norm()), "meta_loss": loss}

