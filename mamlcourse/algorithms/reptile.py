"""Reptile (Nichol, Achiam & Schulman 2018): move θ toward the weights each task trains to.

For each task, train a copy of θ with plain gradient steps on the task's examples (its
support *and* query sets: Reptile has no use for the split) to get φ_i; then

    θ ← θ + ε (φ̄ − θ),   φ̄ = 1/T Σ_i φ_i

No gradient flows through the inner loop, so per inner step Reptile costs what first-order
MAML costs.
``reptile_loss`` writes the update as a loss whose gradient is (θ − φ̄):

    L(θ) = ½ ‖θ − stop_gradient(φ̄)‖²,   ∇_θ L = θ − φ̄

so plain SGD with learning rate ε on it is exactly the update above, and ``meta_train``'s
Adam uses (θ − φ̄) as its gradient, which the paper suggests as an alternative to plain steps.

Example:
    >>> model, history = train_algorithm(REPTILE, SineTasks.from_config(cfg), cfg)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..config import MetaConfig
from ..maml import Params, detach_params, inner_loop, loss_function, place_tasks
from ..models import build_model
from ..tasks import TaskBatch
from .base import Algorithm, over_tasks, pick_vectorize
from .maml_variants import score_maml


def task_weights(model: nn.Module, params: Params, tasks: TaskBatch, cfg: MetaConfig, *,
                 vectorize: bool | None = None) -> tuple[Params, Tensor]:
    """φ_i for every task: ``cfg.num_inner_steps`` steps of ``cfg.inner_lr`` from θ on all its examples.

    Args:
        model: the network.
        params: θ (only its values are used: φ carries no graph back to θ).
        tasks: T tasks; each trains on cat(x_support, x_query) [n_support + n_query, ...].
        cfg: inner_lr, num_inner_steps and the loss.

    Returns:
        phi: dict of [T, *param_shape] tensors, detached.
        task_loss: [T] loss of each φ_i on its own task's examples (a training loss).
    """
    loss_fn = loss_function(cfg.loss)
    tasks = place_tasks(tasks, params)
    x = torch.cat([tasks.x_support, tasks.x_query], 1)
    y = torch.cat([tasks.y_support, tasks.y_query], 1)
    task_data = TaskBatch(x, y, x, y)

    def train_on_task(p: Params, x: Tensor, y: Tensor, _x: Tensor, _y: Tensor) -> tuple[Params, Tensor]:
        # φ = θ - α Σ_s ∇L_task(θ_s): ordinary SGD on the task, no outer graph.
        phi = inner_loop(model, p, x, y, loss_fn=loss_fn, inner_lr=cfg.inner_lr,
                         num_inner_steps=cfg.num_inner_steps, first_order=True)
        return phi, loss_fn(functional_call(model, phi, (x,)), y)

    vectorize = pick_vectorize(model, tasks, cfg, vectorize)
    with torch.no_grad():
        phi, task_loss = over_tasks(train_on_task, detach_params(params), task_data, vectorize=vectorize)
    return phi, task_loss


def reptile_loss(model: nn.Module, params: Params, tasks: TaskBatch, cfg: MetaConfig, *,
                 vectorize: bool | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """½ ‖θ − φ̄‖², whose gradient (θ − φ̄) is the Reptile update direction.

    Args:
        model, params: the network and θ (``params`` must require grad for training).
        tasks: a meta-batch of T tasks.
        cfg: inner_lr and num_inner_steps of the task training (the paper's k steps).

    Returns:
        loss: scalar ½ Σ_names ‖θ − φ̄‖²; ``loss.backward()`` leaves θ − φ̄ in ``.grad``.
        metrics: ``"task_loss"`` [T], each φ_i's loss on its own task (a training fit,
            not a test score: φ_i has seen the query set).
    """
    phi, task_loss = task_weights(model, params, tasks, cfg, vectorize=vectorize)
    phi_mean = {name: p.mean(0) for name, p in phi.items()}
    # ∇_θ ½‖θ − φ̄‖² = θ − φ̄, so SGD with step ε gives θ ← θ + ε(φ̄ − θ).
    loss = sum(0.5 * (params[name] - phi_mean[name]).pow(2).sum() for name in params)
    return loss, {"task_loss": task_loss}


REPTILE = Algorithm(
    name="reptile", label="Reptile", reference="Nichol, Achiam & Schulman, arXiv:1803.02999, 2018",
    build=build_model, objective=reptile_loss, score=score_maml)
