"""What every algorithm of the MAML family provides, and the one way they are all trained.

An ``Algorithm`` is a recipe of three functions over the course's plain pieces:

* ``build(cfg)`` returns a fresh ``nn.Module``: the paper's network, or a thin wrapper
  around it that also holds learned tensors (Meta-SGD's and MAML++'s step sizes);
* ``objective(model, params, tasks, cfg) -> (loss, metrics)`` is what ``meta_train``
  differentiates, so every algorithm gets the progress bar, checkpoints and resume of
  ``mamlcourse.train`` for free;
* ``score(model, tasks, cfg, num_steps)`` adapts a trained model to each test task and
  returns [num_tasks, num_steps + 1] scores (MSE or accuracy) after 0..num_steps steps.

Example:
    >>> from mamlcourse.algorithms import get_algorithm
    >>> reptile = get_algorithm("reptile")
    >>> model, history = train_algorithm(reptile, SineTasks.from_config(cfg), cfg)
    >>> curve = reptile.score(model, test_tasks, cfg, 10)      # [600, 11]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import MetaConfig
from ..maml import Params, over_tasks, params_device, resolve_vectorize
from ..tasks import TaskBatch, TaskSampler
from ..train import History, Objective, meta_train

__all__ = ["Algorithm", "over_tasks", "pick_vectorize", "split_prefix", "train_algorithm"]

# score(model, tasks, cfg, num_steps) -> [num_tasks, num_steps + 1]
ScoreFn = Callable[[nn.Module, TaskBatch, MetaConfig, int], Tensor]


@dataclass(frozen=True)
class Algorithm:
    """One meta-learning algorithm, as three functions ``meta_train`` and ``evaluate`` can use.

    Attributes:
        name: short identifier (``"reptile"``), also the checkpoint's file name.
        label: how tables and legends name it (``"Reptile"``).
        reference: the paper it comes from.
        build: ``build(cfg) -> nn.Module``, a freshly initialised model (seed first).
        objective: ``objective(model, params, tasks, cfg) -> (loss, metrics)``.
        score: ``score(model, tasks, cfg, num_steps) -> [num_tasks, num_steps + 1]``.
        task_kinds: the losses it applies to (``"mse"``, ``"cross_entropy"``).
        adapts_by_gradient: False for algorithms with no inner steps (ProtoNets, the
            hypernetwork): their score has a single column, the adapted prediction.
    """

    name: str
    label: str
    reference: str
    build: Callable[[MetaConfig], nn.Module]
    objective: Objective
    score: ScoreFn
    task_kinds: tuple[str, ...] = ("mse", "cross_entropy")
    adapts_by_gradient: bool = True

    def supports(self, cfg: MetaConfig) -> bool:
        """Whether the algorithm applies to ``cfg``'s task (ProtoNets only classify)."""
        return cfg.loss in self.task_kinds


def train_algorithm(algorithm: Algorithm, sampler: TaskSampler, cfg: MetaConfig, *,
                    checkpoint_dir: str | os.PathLike | None = None,
                    device: torch.device | str = "cpu", progress: bool = True
                    ) -> tuple[nn.Module, History]:
    """Build ``algorithm``'s model from ``cfg.seed`` and meta-train it with ``meta_train``.

    The checkpoint is ``checkpoint_dir/<algorithm.name>.pt``, so several algorithms can
    share one run folder; calling again resumes (or, when finished, only loads).

    Returns:
        The trained model and its ``History``.

    Raises:
        ValueError: the algorithm does not apply to ``cfg``'s task.
    """
    if not algorithm.supports(cfg):
        raise ValueError(f"{algorithm.label} does not apply to {cfg.task} ({cfg.loss} loss): "
                         f"it handles {algorithm.task_kinds}; leave it out of this comparison")
    torch.manual_seed(cfg.seed)
    model = algorithm.build(cfg).to(device)
    history = meta_train(model, sampler, cfg, checkpoint_dir=checkpoint_dir, device=device,
                         progress=progress, objective=algorithm.objective,
                         checkpoint_name=algorithm.name, desc=algorithm.label)
    return model, history


def pick_vectorize(model: nn.Module, tasks: TaskBatch, cfg: MetaConfig,
                   vectorize: bool | None = None) -> bool:
    """The argument, else ``cfg.vectorize``, else ``maml.default_vectorize`` for the model's device."""
    return resolve_vectorize(vectorize, model, params_device(dict(model.named_parameters())),
                             configured=cfg.vectorize)


def split_prefix(params: Params, prefix: str) -> Params:
    """The entries of ``params`` under ``prefix`` (``"net."``), with the prefix removed."""
    return {name[len(prefix):]: p for name, p in params.items() if name.startswith(prefix)}


def safe_key(name: str) -> str:
    """A parameter name as an ``nn.ParameterDict`` key (no dots): ``layers.0.weight`` -> ``layers:0:weight``.
    """
    return name.replace(".", ":")


def param_name(key: str) -> str:
    """Inverse of ``safe_key``."""
    return key.replace(":", ".")
