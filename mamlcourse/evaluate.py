"""Evaluation: adapt on each test task's support set, score on its query set, after 0..k steps.

The paper reports the mean over 600 test tasks with a 95% confidence interval of
1.96 * std / sqrt(n) (the original code uses NumPy's population std, ddof = 0).

Example:
    >>> tasks = fixed_tasks(SineTasks.from_config(cfg), 600, k_shot=5, k_query=100)
    >>> result = evaluate(model, tasks, cfg, num_steps=10)
    >>> result.mean[1], result.ci95[1]        # MSE after one step, and its 95% CI
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .config import MetaConfig
from .maml import (
    InnerLR,
    Params,
    detach_params,
    get_params,
    inner_loop,
    loss_function,
    over_tasks,
    params_device,
    resolve_vectorize,
)
from .tasks import TaskBatch, TaskSampler, fixed_tasks


def confidence_interval(values: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """Mean and 95% half-width 1.96 * std / sqrt(n) along ``dim`` (population std, as the paper)."""
    n = values.shape[dim]
    mean = values.mean(dim)
    std = values.std(dim, correction=0) if n > 1 else torch.zeros_like(mean)
    return mean, 1.96 * std / math.sqrt(n)


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of ``labels`` [n] that ``logits`` [n, n_way] rank first."""
    return (logits.argmax(-1) == labels).float().mean()


def metric_function(cfg: MetaConfig):
    """What a task is scored by: MSE for regression, accuracy for classification."""
    return F.mse_loss if cfg.loss == "mse" else accuracy


@dataclass(frozen=True)
class EvalResult:
    """Scores of every test task after 0..k inner steps.

    Attributes:
        metric: ``"mse"`` or ``"accuracy"``.
        per_task: [num_tasks, k + 1], column s is the score after s inner steps.
    """

    metric: str
    per_task: Tensor

    @property
    def num_tasks(self) -> int:
        return self.per_task.shape[0]

    @property
    def mean(self) -> Tensor:
        """[k + 1] mean over tasks after each number of steps."""
        return confidence_interval(self.per_task)[0]

    @property
    def ci95(self) -> Tensor:
        """[k + 1] 95% confidence half-width after each number of steps."""
        return confidence_interval(self.per_task)[1]

    def at(self, step: int) -> tuple[float, float]:
        """(mean, ci95) after ``step`` inner steps."""
        return float(self.mean[step]), float(self.ci95[step])

    def to_dict(self) -> dict:
        return {"metric": self.metric, "num_tasks": self.num_tasks,
                "mean": [float(v) for v in self.mean], "ci95": [float(v) for v in self.ci95]}


def adaptation_curve(model: nn.Module, params: Params, tasks: TaskBatch, cfg: MetaConfig, *,
                     num_steps: int, inner_lr: InnerLR | None = None,
                     vectorize: bool | None = None, chunk_size: int = 100) -> Tensor:
    """Score every task after 0, 1, ..., ``num_steps`` inner steps.

    Args:
        model, params: the network and its (meta-learned) θ.
        tasks: T test tasks.
        cfg: supplies the loss and, unless ``inner_lr`` is given, α.
        num_steps: the largest number of inner steps scored.
        vectorize: vmap over tasks; None picks ``default_vectorize`` for the parameters'
            device (``cfg.vectorize`` is a training setting and is not used here).
        chunk_size: tasks per vmap call (bounds memory).

    Returns:
        [T, num_steps + 1] per-task scores (MSE or accuracy), on the CPU. The tasks may live
        on any device: they are scored where ``params`` are (``maml.over_tasks``).
    """
    loss_fn = loss_function(cfg.loss)
    metric = metric_function(cfg)
    inner_lr = cfg.inner_lr if inner_lr is None else inner_lr
    params = detach_params(params)
    vectorize = resolve_vectorize(vectorize, model, params_device(params))

    def task_curve(p: Params, x_support: Tensor, y_support: Tensor, x_query: Tensor,
                   y_query: Tensor) -> Tensor:
        path = inner_loop(model, p, x_support, y_support, loss_fn=loss_fn, inner_lr=inner_lr,
                          num_inner_steps=num_steps, first_order=True, trajectory=True)
        return torch.stack([metric(functional_call(model, q, (x_query,)), y_query) for q in path])

    with torch.no_grad():
        (scores,) = over_tasks(lambda *args: (task_curve(*args),), params, tasks, vectorize=vectorize,
                               chunk_size=chunk_size)
    return scores.cpu()


def evaluate(model: nn.Module, tasks: TaskBatch | TaskSampler, cfg: MetaConfig, *,
             params: Params | None = None, num_steps: int | None = None,
             num_tasks: int | None = None, inner_lr: InnerLR | None = None,
             vectorize: bool | None = None) -> EvalResult:
    """Mean score and 95% CI over test tasks after 0..``num_steps`` inner steps.

    Args:
        model: the network (its own parameters are θ unless ``params`` is given).
        tasks: fixed test tasks, or a sampler from which ``num_tasks`` (default
            ``cfg.eval_tasks``) are drawn with the fixed evaluation seed.
        cfg: loss, α, and defaults for ``num_steps`` (``cfg.eval_max_steps``).
        params: θ to evaluate instead of the model's own.
        inner_lr: α at test (default ``cfg.inner_lr``).

    Returns:
        EvalResult with per-task scores [num_tasks, num_steps + 1].
    """
    if not isinstance(tasks, TaskBatch):
        tasks = fixed_tasks(tasks, num_tasks or cfg.eval_tasks)
    params = get_params(model) if params is None else params
    num_steps = cfg.eval_max_steps if num_steps is None else num_steps
    per_task = adaptation_curve(model, params, tasks, cfg, num_steps=num_steps,
                                inner_lr=inner_lr, vectorize=vectorize)
    return EvalResult("mse" if cfg.loss == "mse" else "accuracy", per_task)
