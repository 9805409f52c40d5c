"""Functional MAML: the inner loop, and the meta-loss over a batch of tasks.

Parameters are a ``dict[str, Tensor]`` (``Params``); the model is called with them
through ``torch.func.functional_call``, so θ and every adapted θ' are plain values a
lesson can print, plot and scrub with a slider. One inner step is

    θ' = θ - α ∇_θ L_support(θ)

written once, in ``inner_loop``, and used by training and evaluation alike. The
meta-loss of a batch of tasks is the mean of their query losses at θ'; its gradient
with respect to θ flows through the inner steps (second order) unless ``first_order``
is set, in which case the inner gradients are treated as constants.

A batch of tasks runs through one primitive, ``over_tasks``: as a Python loop over tasks or
in parallel with ``torch.func.vmap`` (``resolve_vectorize`` decides, ``default_vectorize``
picks the faster one for the model and device), always on the parameters' device: tasks
made elsewhere are moved there first (``place_tasks``). Training, evaluation, the baseline
and every algorithm go through it, so tasks and parameters cannot end up on two devices.
The tests check that vmap and the loop give the same gradients.

Example:
    >>> model = SineMLP()
    >>> params = get_params(model)
    >>> adapted = inner_loop(model, params, x_support, y_support, loss_fn=F.mse_loss,
    ...                      inner_lr=0.01, num_inner_steps=1)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .config import MetaConfig
from .tasks import TaskBatch

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
# α: one number, one per parameter tensor (Meta-SGD, MAML++), or a list with one per step.
InnerLR = Union[float, Tensor, Mapping[str, Tensor], Sequence[float | Tensor | Mapping[str, Tensor]]]


def loss_function(name: str) -> LossFn:
    """The task loss named in a config: ``"mse"`` (regression) or ``"cross_entropy"``.

    Both average over the examples, so α is a step size on a *mean* loss.
    """
    losses = {"mse": F.mse_loss, "cross_entropy": F.cross_entropy}
    if name not in losses:
        raise ValueError(f"unknown loss {name!r}: choose one of {sorted(losses)}")
    return losses[name]


def get_params(model: nn.Module) -> Params:
    """θ: the model's own trainable parameters, by name (the tensors themselves, not copies)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def detach_params(params: Params) -> Params:
    """A copy of ``params`` cut from the autograd graph."""
    return {name: p.detach() for name, p in params.items()}


def functional_forward(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    """The model's output on ``x`` with ``params`` in place of its own parameters.

    Shapes: x [n, *x_shape] -> [n, *y_shape].
    """
    return functional_call(model, params, (x,))


def _lr(inner_lr: InnerLR, step: int, name: str) -> float | Tensor:
    if isinstance(inner_lr, Sequence) and not isinstance(inner_lr, (str, Tensor)):
        inner_lr = inner_lr[step]
    if isinstance(inner_lr, Mapping):
        return inner_lr[name]
    return inner_lr


def inner_loop(model: nn.Module, params: Params, x_support: Tensor, y_support: Tensor, *,
               loss_fn: LossFn, inner_lr: InnerLR, num_inner_steps: int,
               first_order: bool = False, trajectory: bool = False,
               grad_with: str = "func") -> Params | list[Params]:
    """Adapt ``params`` to one task's support set with ``num_inner_steps`` gradient steps.

    Each step is θ' = θ - α ∇L_support(θ), the gradient taken with ``torch.func.grad`` so
    the loop also runs under ``torch.func.vmap``. With ``first_order=False`` (the
    default) the result stays differentiable with respect to ``params`` through the
    inner gradients (second-order MAML); with ``first_order=True`` each inner gradient is
    computed on detached parameters, so it is a constant to the outer gradient.
    Parameters the model names in ``not_adapted`` (the original code's batch-norm offsets,
    ``ConvNet4(conventions="original")``) stay as they are: no step, no gradient taken.

    Args:
        model: the network; only its structure is used, never its own parameters.
        params: θ, a dict of tensors (usually ``get_params(model)``).
        x_support: [n_support, *x_shape] the task's support inputs.
        y_support: [n_support, *y_shape] their targets.
        loss_fn: ``loss_fn(predictions, targets)`` -> scalar, averaged over examples.
        inner_lr: α: a number, a dict with one tensor per parameter name (learned
            per-parameter step sizes), or a sequence of those with one entry per step.
        num_inner_steps: gradient steps; 0 returns ``params`` unchanged.
        first_order: drop second derivatives (first-order MAML).
        trajectory: return every intermediate θ (a list of ``num_inner_steps + 1`` dicts,
            starting with ``params``) instead of only the last.
        grad_with: ``"func"`` takes the inner gradient with ``torch.func.grad``, which runs
            under ``vmap`` and inside ``torch.no_grad()``; ``"autograd"`` with
            ``torch.autograd.grad`` (``create_graph=not first_order``), the same numbers
            without ``torch.func``'s wrapping, but only outside ``vmap`` with gradients enabled and
            ``params`` requiring grad (``meta_loss``'s loop path uses it).

    Returns:
        The adapted parameters θ' (or the list of them along the way).
    """
    if num_inner_steps < 0:
        raise ValueError(f"num_inner_steps must be >= 0, got {num_inner_steps}")

    if grad_with not in ("func", "autograd"):
        raise ValueError(f"grad_with must be 'func' or 'autograd', got {grad_with!r}")

    fixed_names = getattr(model, "not_adapted", frozenset())
    fixed = {name: p for name, p in params.items() if name in fixed_names}
    # First order: the inner gradients are constants, so they see the fixed parameters detached too.
    fixed_inside = detach_params(fixed) if first_order else fixed

    def support_loss(p: Params) -> Tensor:
        return loss_fn(functional_call(model, {**p, **fixed_inside}, (x_support,)), y_support)

    def autograd_grad(p: Params) -> Params:
        values = torch.autograd.grad(support_loss(p), list(p.values()), create_graph=not first_order)
        return dict(zip(p, values))

    path = [params]
    adapted = {name: p for name, p in params.items() if name not in fixed}
    for step in range(num_inner_steps):
        if grad_with == "func":
            source = detach_params(adapted) if first_order else adapted
            grads = grad(support_loss)(source)
        else:
            source = {k: v.detach().requires_grad_() for k, v in adapted.items()} if first_order else adapted
            grads = autograd_grad(source)
        # θ' = θ - α ∇L_support(θ)
        adapted = {name: p - _lr(inner_lr, step, name) * grads[name] for name, p in adapted.items()}
        path.append({name: adapted.get(name, p) for name, p in params.items()} if fixed else adapted)
    return path if trajectory else path[-1]


def adaptation_trajectory(model: nn.Module, params: Params, x_support: Tensor, y_support: Tensor,
                          *, loss_fn: LossFn, inner_lr: InnerLR, num_inner_steps: int) -> list[Params]:
    """[θ, θ_1, ..., θ_k] for one task, detached: what plots and sliders show.

    First-order and second-order MAML take the same steps forward; only their meta-gradients
    differ, so the trajectory is computed without an outer graph.
    """
    with torch.no_grad():
        path = inner_loop(model, detach_params(params), x_support, y_support, loss_fn=loss_fn,
                          inner_lr=inner_lr, num_inner_steps=num_inner_steps, first_order=True,
                          trajectory=True)
    return [detach_params(p) for p in path]


# On the CPU, a strided ConvNet4 runs a meta-batch under vmap when a task holds at most this many
# images, support and query together (5-way 1-shot with 1 query per class: 10).
SMALL_TASK_IMAGES = 10


def default_vectorize(model: nn.Module, device: torch.device | str, *,
                      task_images: int | None = None) -> bool:
    """Whether a meta-batch should run under ``vmap`` (True) or as a loop (False).

    vmap for a network without convolutions (the sine MLP), whose cost is per-operation
    overhead that vmap pays once for all tasks. For a conv net (ConvNet4), vmap on CUDA,
    where a loop pays kernel launches per task. On the CPU, a loop, where the cost is
    arithmetic that vmap does not reduce and vmap's batched intermediates take more memory;
    except for ConvNet4 with strided convolutions on small tasks (``task_images``, the support
    and query images of one task, at most ``SMALL_TASK_IMAGES``), whose convolutions are small
    enough that per-operation overhead dominates again. ``task_images`` None (not known): the
    loop. The timings behind this rule, with their commands: docs/results.md, "vmap or a loop
    on the CPU, per preset and network".
    """
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    if not has_conv:
        return True
    if torch.device(device).type == "cuda":
        return True
    return (getattr(model, "downsample", None) == "stride" and task_images is not None
            and task_images <= SMALL_TASK_IMAGES)


def resolve_vectorize(vectorize: bool | None, model: nn.Module, device: torch.device | str, *,
                      configured: bool | None = None, task_images: int | None = None) -> bool:
    """The one rule for vmap or loop: the argument, else ``configured`` (a config's
    ``vectorize``, for training), else ``default_vectorize(model, device, task_images=...)``."""
    if vectorize is not None:
        return vectorize
    if configured is not None:
        return configured
    return default_vectorize(model, device, task_images=task_images)


def params_device(params: Params) -> torch.device:
    """The device θ lives on (the CPU for an empty dict)."""
    return next(iter(params.values())).device if params else torch.device("cpu")


def place_tasks(tasks: TaskBatch, params: Params) -> TaskBatch:
    """``tasks`` on the device of ``params`` (the same object when already there)."""
    device = params_device(params)
    return tasks if tasks.device == device else tasks.to(device)


def over_tasks(task_fn: Callable[..., tuple], params: Params, tasks: TaskBatch, *, vectorize: bool,
               chunk_size: int | None = None) -> tuple:
    """Run ``task_fn(params, x_support, y_support, x_query, y_query)`` on every task, on θ's device.

    The tasks are first moved to the device of ``params``. With ``vectorize`` they run in
    parallel under ``torch.func.vmap`` (``chunk_size`` tasks per call, to bound memory;
    None: all at once); otherwise in a Python loop. Either way each output (a tensor, or
    a dict of tensors such as adapted params) comes back stacked along a new leading task
    dimension [T, ...].
    """
    tasks = place_tasks(tasks, params)
    if vectorize:
        batched = vmap(task_fn, in_dims=(None, 0, 0, 0, 0))
        if chunk_size is None or chunk_size >= len(tasks):
            return batched(params, *tasks)
        chunks = [batched(params, *chunk) for chunk in tasks.split(chunk_size)]
        return tuple(_join(parts, torch.cat) for parts in zip(*chunks))
    outputs = [task_fn(params, *task) for task in tasks.tasks()]
    return tuple(_join(parts, torch.stack) for parts in zip(*outputs))


def _join(parts: tuple, join: Callable) -> Tensor | Params:
    if isinstance(parts[0], dict):
        return {name: join([part[name] for part in parts]) for name in parts[0]}
    return join(list(parts))


def meta_loss(model: nn.Module, params: Params, tasks: TaskBatch, cfg: MetaConfig, *,
              inner_lr: InnerLR | None = None, num_inner_steps: int | None = None,
              first_order: bool | None = None,
              vectorize: bool | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean query loss after adapting to each task: the quantity MAML's outer loop minimises.

    meta_loss(θ) = 1/T Σ_i L_query_i(θ'_i),  θ'_i = inner_loop(θ, support_i)

    Args:
        model: the network.
        params: θ.
        tasks: a batch of T tasks (x_support [T, n_support, ...], ...).
        cfg: supplies the loss, α, the number of inner steps and ``first_order``.
        inner_lr, num_inner_steps, first_order: override ``cfg`` (learned step sizes, say).
        vectorize: vmap over tasks (True), loop (False), or ``cfg.vectorize`` and then
            ``default_vectorize`` (None): see ``resolve_vectorize``.

    Returns:
        meta_loss: scalar, differentiable with respect to ``params``.
        metrics: detached per-task values, ``"query_loss"`` [T] and, for classification,
            ``"accuracy"`` [T].
    """
    loss_fn = loss_function(cfg.loss)
    inner_lr = cfg.inner_lr if inner_lr is None else inner_lr
    num_inner_steps = cfg.num_inner_steps if num_inner_steps is None else num_inner_steps
    first_order = cfg.first_order if first_order is None else first_order
    tasks = place_tasks(tasks, params)
    vectorize = resolve_vectorize(vectorize, model, tasks.device, configured=cfg.vectorize,
                                  task_images=tasks.x_support.shape[1] + tasks.x_query.shape[1])

    # Outside vmap, torch.autograd.grad is the faster way to the inner gradient (same numbers).
    grad_with = "autograd" if (not vectorize and torch.is_grad_enabled()
                               and all(p.requires_grad for p in params.values())) else "func"

    def task_loss(p: Params, x_support: Tensor, y_support: Tensor, x_query: Tensor,
                  y_query: Tensor) -> tuple[Tensor, Tensor]:
        adapted = inner_loop(model, p, x_support, y_support, loss_fn=loss_fn, inner_lr=inner_lr,
                             num_inner_steps=num_inner_steps, first_order=first_order,
                             grad_with=grad_with)
        predictions = functional_call(model, adapted, (x_query,))
        return loss_fn(predictions, y_query), predictions

    query_losses, predictions = over_tasks(task_loss, params, tasks, vectorize=vectorize)

    metrics = {"query_loss": query_losses.detach()}
    if cfg.loss == "cross_entropy":
        metrics["accuracy"] = (predictions.detach().argmax(-1) == tasks.y_query).float().mean(-1)
    return query_losses.mean(), metrics
