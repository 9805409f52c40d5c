"""Meta-training: Adam on the meta-loss, with a progress bar, checkpoints and automatic resume.

    θ <- θ - β ∇_θ 1/T Σ_i L_query_i(θ'_i)      (Adam with learning rate β = cfg.outer_lr)

``meta_train`` draws ``cfg.tasks_per_batch`` tasks per iteration from a sampler with its
own seeded generator, so a run is fully determined by its config. Every
``cfg.checkpoint_every`` iterations it writes model, optimizer, step, RNG states, config
and history to ``checkpoint_dir``; called again on the same folder it resumes where the
checkpoint left off and ends with the same parameters as an uninterrupted run.

Example:
    >>> cfg = sine_preset("quick")
    >>> model = build_model(cfg)
    >>> history = meta_train(model, SineTasks.from_config(cfg), cfg, checkpoint_dir="runs/sine")
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import check_compatible, checkpoint_path, load_checkpoint, save_checkpoint
from .config import MetaConfig
from .cuda_graph import GraphedMetaStep
from .maml import get_params, meta_loss
from .tasks import TaskBatch, TaskSampler, seeded_generator

Objective = Callable[[nn.Module, dict, TaskBatch, MetaConfig], tuple[torch.Tensor, dict]]


class TrainingDiverged(RuntimeError):
    """The meta-loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class History:
    """What a run recorded, one entry per logging interval.

    Attributes:
        step: iteration count at the end of each interval.
        meta_loss: mean meta-loss over the interval.
        accuracy: mean query accuracy over the interval (classification only).
        validation_step, validation: validation scores and when they were taken.
        wall_seconds: training time so far, summed over resumptions.
    """

    step: list[int] = field(default_factory=list)
    meta_loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    validation_step: list[int] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> History:
        return cls(**data)

    @property
    def ms_per_iteration(self) -> float:
        """Mean wall time of one meta-iteration (NaN before the first)."""
        return 1000 * self.wall_seconds / self.step[-1] if self.step else math.nan


def meta_train(model: nn.Module, sampler: TaskSampler, cfg: MetaConfig, *,
               checkpoint_dir: str | os.PathLike | None = None,
               device: torch.device | str | None = None, progress: bool = True,
               validate: Callable[[nn.Module], float] | None = None,
               validate_every: int = 0, desc: str = "meta-train",
               objective: Objective = meta_loss, checkpoint_name: str = "checkpoint",
               cuda_graph: bool = False) -> History:
    """Meta-train ``model`` in place for ``cfg.num_iterations`` iterations (or what is left).

    Args:
        model: the network; its parameters are θ and are updated in place.
        sampler: the task distribution (``sample(num_tasks, generator)``).
        cfg: inner and outer loop settings, iterations, checkpoint interval, seed.
        checkpoint_dir: where checkpoints go; an existing checkpoint there is resumed
            (refused if it was made with other settings). None: no checkpoints.
        device: where the model and tasks live (default: the model's device).
        progress: show a tqdm progress bar.
        validate: ``validate(model) -> score``, called every ``validate_every`` iterations.
        validate_every: 0 never validates.
        desc: label of the progress bar.
        objective: ``objective(model, params, tasks, cfg) -> (loss, metrics)``, the
            meta-loss by default; ``baseline.joint_loss`` trains the pretrained baseline.
        checkpoint_name: file name (without ``.pt``) of the checkpoint in ``checkpoint_dir``.
        cuda_graph: on a GPU, capture one meta-iteration as a CUDA graph and replay it
            (``cuda_graph.GraphedMetaStep``): same maths, far fewer kernel launches.

    Returns:
        The run's ``History``.

    Raises:
        TrainingDiverged: the meta-loss became NaN or infinite.
        CheckpointMismatch: the checkpoint in ``checkpoint_dir`` has other settings.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    # capturable: Adam keeps its step count on the device, so a CUDA graph can replay it.
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.outer_lr, capturable=cuda_graph)
    generator = seeded_generator(cfg.seed)
    history = History()
    start = 0
    path = checkpoint_path(checkpoint_dir, checkpoint_name) if checkpoint_dir is not None else None

    if path is not None and path.exists():
        state = load_checkpoint(path, map_location=device)
        check_compatible(state["config"], cfg, checkpoint_dir)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history = History.from_dict(state["history"])
        start = state["step"]

    def save(step: int) -> None:
        if path is not None:
            save_checkpoint(path, {
                "step": step, "config": cfg.to_dict(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(), "history": history.to_dict()})

    params = get_params(model)
    graphed = None
    bar = tqdm(total=cfg.num_iterations, initial=start, desc=desc, disable=not progress,
               dynamic_ncols=True)
    losses, accuracies = [], []
    tic = time.perf_counter()
    for step in range(start + 1, cfg.num_iterations + 1):
        tasks = sampler.sample(cfg.tasks_per_batch, generator).to(device)
        if cuda_graph:
            graphed = graphed or GraphedMetaStep(model, params, optimizer, objective, cfg, tasks)
            loss, metrics = graphed(tasks)
        else:
            loss, metrics = objective(model, params, tasks, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        # Kept on the device: reading them every step would stall a GPU.
        losses.append(loss.detach())
        if "accuracy" in metrics:
            accuracies.append(metrics["accuracy"].mean())

        at_log = step % cfg.log_every == 0 or step == cfg.num_iterations
        at_checkpoint = step % cfg.checkpoint_every == 0 or step == cfg.num_iterations
        if at_log or at_checkpoint:
            mean_loss = torch.stack(losses).mean().item() if losses else math.nan
            if not math.isfinite(mean_loss):
                bar.close()
                kept = f"the last good checkpoint (step {start_of(path)}) is kept in {checkpoint_dir}" \
                    if path is not None and path.exists() else "no checkpoint was written"
                raise TrainingDiverged(
                    f"the meta-loss became {mean_loss} by step {step}; {kept}. "
                    f"Lower the learning rates (inner_lr={cfg.inner_lr}, outer_lr={cfg.outer_lr}).")
            now = time.perf_counter()
            history.wall_seconds += now - tic
            tic = now
            history.step.append(step)
            history.meta_loss.append(mean_loss)
            postfix = {"loss": f"{mean_loss:.4f}"}
            if accuracies:
                history.accuracy.append(torch.stack(accuracies).mean().item())
                postfix["acc"] = f"{history.accuracy[-1]:.3f}"
            losses, accuracies = [], []
            if validate is not None and validate_every and step % validate_every == 0:
                history.validation_step.append(step)
                history.validation.append(float(validate(model)))
                postfix["val"] = f"{history.validation[-1]:.3f}"
                tic = time.perf_counter()  # validation time is not training time
            bar.set_postfix(postfix, refresh=False)
            bar.update(step - bar.n)
            if at_checkpoint:
                save(step)
    bar.close()
    return history


def start_of(path: Path | None) -> int | None:
    """The step stored in the checkpoint at ``path`` (None when there is none)."""
    if path is None or not path.exists():
        return None
    return int(load_checkpoint(path)["step"])
