"""The paper's pretrained baseline: one network regressed on all tasks jointly, then fine-tuned.

The network sees points from many random tasks with no task information, so it learns
the average of all sine waves (close to zero everywhere). At test it is fine-tuned on a
task's K points with plain gradient steps, like MAML's inner loop. As in the paper, its
fine-tuning step size is tuned: each value of ``cfg.baseline_lrs`` is tried on separate
validation tasks (never the test tasks) and the one with the lowest mean MSE over
1..``eval_max_steps`` steps and all K in ``cfg.eval_k_shots`` is kept.

Example:
    >>> baseline = build_model(cfg)
    >>> pretrain(baseline, SineTasks.from_config(cfg), cfg)
    >>> lr, scores = choose_finetune_lr(baseline, SineTasks.from_config(cfg), cfg)
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor, nn

from .config import SineConfig
from .evaluate import adaptation_curve
from .maml import Params, functional_forward, get_params, loss_function, place_tasks
from .tasks import VALIDATION_SEED, TaskBatch, TaskSampler, fixed_tasks
from .train import History, meta_train


def joint_loss(model: nn.Module, params: Params, tasks: TaskBatch, cfg: SineConfig
               ) -> tuple[Tensor, dict[str, Tensor]]:
    """Loss on every point of every task at θ, no adaptation: plain multi-task regression."""
    tasks = place_tasks(tasks, params)
    x = torch.cat([tasks.x_support, tasks.x_query], 1).flatten(0, 1)
    y = torch.cat([tasks.y_support, tasks.y_query], 1).flatten(0, 1)
    loss = loss_function(cfg.loss)(functional_forward(model, params, x), y)
    return loss, {"query_loss": loss.detach()[None]}


def pretrain(model: nn.Module, sampler: TaskSampler, cfg: SineConfig, *,
             checkpoint_dir: str | os.PathLike | None = None, progress: bool = True,
             deadline: float | None = None) -> History:
    """Train the baseline with the same budget as MAML (iterations, tasks per batch, Adam β).

    Checkpoints go to ``checkpoint_dir/baseline.pt`` and resume like ``meta_train``'s
    (``deadline`` too).
    """
    return meta_train(model, sampler, cfg, checkpoint_dir=checkpoint_dir, progress=progress,
                      objective=joint_loss, checkpoint_name="baseline", desc="pretrain",
                      deadline=deadline)


def choose_finetune_lr(model: nn.Module, sampler: TaskSampler, cfg: SineConfig, *,
                       num_tasks: int = 200) -> tuple[float, dict[float, float]]:
    """The fine-tuning step size from ``cfg.baseline_lrs`` with the lowest validation MSE.

    Returns:
        The chosen step size, and every candidate's mean MSE (inf when it diverged).
    """
    params = get_params(model)
    scores: dict[float, float] = {}
    for lr in cfg.baseline_lrs:
        per_k = []
        for k in cfg.eval_k_shots:
            tasks = fixed_tasks(sampler, num_tasks, seed=VALIDATION_SEED, k_shot=k,
                                k_query=cfg.eval_query_points)
            curve = adaptation_curve(model, params, tasks, cfg, num_steps=cfg.eval_max_steps, inner_lr=lr)
            per_k.append(curve[:, 1:].mean().item())
        score = sum(per_k) / len(per_k)
        scores[lr] = score if math.isfinite(score) else math.inf
    return min(scores, key=scores.get), scores
