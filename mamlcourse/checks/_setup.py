"""Fresh inputs for the checks: small sine models and tasks, seeded without touching global RNGs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from ..data.sine import SineTasks
from ..maml import Params, get_params, inner_loop
from ..models import SineMLP
from ..tasks import TaskBatch, seeded_generator

# Several seeds, so an answer that is right by accident on one input is still caught.
SEEDS = (0, 1, 2)


def sine_model(seed: int, hidden_sizes: tuple[int, ...] = (40, 40)) -> tuple[SineMLP, Params]:
    """A freshly initialised SineMLP and its params (the model's own tensors).

    Seeded inside ``fork_rng`` so running a check leaves the notebook's RNG as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SineMLP(hidden_sizes)
    return model, get_params(model)


def sine_tasks(seed: int, num_tasks: int, k_shot: int = 5, k_query: int = 7) -> TaskBatch:
    """``num_tasks`` sine tasks. k_shot and k_query differ so mixing the halves up shows."""
    return SineTasks(k_shot=k_shot, k_query=k_query).sample(num_tasks, seeded_generator(1000 + seed))


def loss_at(model: torch.nn.Module, params: Params, x: Tensor, y: Tensor, loss_fn=F.mse_loss) -> Tensor:
    return loss_fn(functional_call(model, params, (x,)), y)


def gradient(model: torch.nn.Module, params: Params, x: Tensor, y: Tensor, loss_fn=F.mse_loss, *,
             create_graph: bool = False) -> Params:
    """∇ loss_fn(model(x; params), y) with respect to params, by name."""
    grads = torch.autograd.grad(loss_at(model, params, x, y, loss_fn), list(params.values()),
                                create_graph=create_graph)
    return dict(zip(params, grads))


def step(params: Params, grads: Params, scale: float) -> Params:
    """params - scale * grads."""
    return {k: p - scale * grads[k] for k, p in params.items()}


def per_task_losses(model, params: Params, tasks: TaskBatch, inner_lr: float, steps: int, *,
                    adapt_on: str = "support", score_on: str = "query",
                    first_order: bool = False) -> Tensor:
    """[T] query (or support) losses after adapting on the support (or query) set."""
    losses = []
    for task in tasks.tasks():
        halves = {"support": (task.x_support, task.y_support), "query": (task.x_query, task.y_query)}
        adapted = inner_loop(model, params, *halves[adapt_on], loss_fn=F.mse_loss, inner_lr=inner_lr,
                             num_inner_steps=steps, first_order=first_order)
        losses.append(loss_at(model, adapted, *halves[score_on]))
    return torch.stack(losses)
