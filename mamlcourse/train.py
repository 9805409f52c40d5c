"""Meta-training: Adam on the meta-loss, with a progress bar, checkpoints and automatic resume.

    θ <- θ - β ∇_θ 1/T Σ_i L_query_i(θ'_i)      (Adam with learning rate β = cfg.outer_lr)

Three pieces, each readable on its own:

- the run's state (model, Adam, step, RNG states, history) and how it is saved and resumed:
  ``training_state.TrainingState``;
- one meta-iteration: ``eager_step`` (meta-loss, backward, a finiteness check, Adam), or
  the same captured once and replayed as a CUDA graph (``cuda_graph.GraphedMetaStep``);
- the loop, ``meta_train``: draws ``cfg.tasks_per_batch`` tasks per iteration from a
  sampler with its own seeded generator (so a run is fully determined by its config), logs
  every ``cfg.log_every`` iterations and saves every ``cfg.checkpoint_every``. Called again
  on the same folder it resumes where the checkpoint left off and, on a CPU, ends with
  bit-identical parameters to an uninterrupted run (on a GPU, equal to float tolerance:
  cuDNN's kernel choice may differ between processes).

Example:
    >>> cfg = sine_preset("quick")
    >>> model = build_model(cfg)
    >>> history = meta_train(model, SineTasks.from_config(cfg), cfg, checkpoint_dir="runs/sine")
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import checkpoint_path, load_checkpoint
from .config import MetaConfig
from .cuda_graph import GraphedMetaStep, finite_gradients
from .machine import device_name
from .maml import get_params, meta_loss
from .tasks import TaskBatch, TaskSampler
from .training_state import History, RunFolder, TrainingDiverged, TrainingState

__all__ = ["History", "StoppedAtTimeLimit", "TrainingDiverged", "eager_step", "meta_train", "start_of"]

Objective = Callable[[nn.Module, dict, TaskBatch, MetaConfig], tuple[torch.Tensor, dict]]


class StoppedAtTimeLimit(Exception):
    """The run reached its time limit; its checkpoint is saved and the same command continues it."""


def eager_step(state: TrainingState, params: dict, objective: Objective, tasks: TaskBatch
               ) -> tuple[torch.Tensor, dict]:
    """One meta-iteration: meta-loss, its gradient, and Adam's update, unless something is not finite.

    Raises:
        TrainingDiverged: the meta-loss or a gradient is NaN or infinite; θ is left as it was.
    """
    loss, metrics = objective(state.model, params, tasks, state.cfg)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if not finite_gradients(loss, state.model.parameters()):
        raise TrainingDiverged(f"the meta-loss or its gradient became non-finite at step {state.step + 1} "
                               f"(meta-loss {loss.item()}); θ was not updated")
    state.optimizer.step()
    return loss, metrics


def meta_train(model: nn.Module, sampler: TaskSampler, cfg: MetaConfig, *,
               checkpoint_dir: str | os.PathLike | None = None,
               device: torch.device | str | None = None, progress: bool = True,
               validate: Callable[[nn.Module], float] | None = None,
               validate_every: int = 0, desc: str = "meta-train",
               objective: Objective = meta_loss, checkpoint_name: str = "checkpoint",
               cuda_graph: bool = False, deadline: float | None = None) -> History:
    """Meta-train ``model`` in place for ``cfg.num_iterations`` iterations (or what is left).

    Args:
        model: the network; its parameters are θ and are updated in place.
        sampler: the task distribution (``sample(num_tasks, generator)``).
        cfg: inner and outer loop settings, iterations, checkpoint interval, seed.
        checkpoint_dir: where checkpoints go; an existing checkpoint there is resumed
            (refused if its run id is not ``cfg.run_id()``). The folder is locked while the
            run trains and a checkpoint is written before the first iteration, so an
            unwritable folder fails at once. None: no checkpoints.
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
        deadline: a ``time.monotonic()`` value; the first iteration that ends after it saves
            a checkpoint and raises ``StoppedAtTimeLimit`` (needs ``checkpoint_dir``).

    Returns:
        The run's ``History``.

    Raises:
        TrainingDiverged: the meta-loss or a gradient became NaN or infinite.
        CheckpointMismatch: the checkpoint in ``checkpoint_dir`` is of another run.
        RunFolderError: another process trains in ``checkpoint_dir``, or it is not writable.
        StoppedAtTimeLimit: ``deadline`` passed; the run is saved and resumable.
    """
    if deadline is not None and checkpoint_dir is None:
        raise ValueError("a time limit needs a checkpoint folder to save the run in (checkpoint_dir)")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    state = TrainingState.create(model, cfg, device=device, capturable=cuda_graph)
    path = checkpoint_path(checkpoint_dir, checkpoint_name) if checkpoint_dir is not None else None
    if path is not None and path.exists():
        state.load(path, checkpoint_dir)
    if state.step >= cfg.num_iterations:
        return state.history
    folder = RunFolder(checkpoint_dir) if path is not None else contextlib.nullcontext()
    with folder:
        if path is not None:
            folder.save(state, path)  # fails now, not 1,000 iterations in, if it cannot be written
        _loop(state, sampler, objective, path, folder, progress=progress, desc=desc, validate=validate,
              validate_every=validate_every, cuda_graph=cuda_graph, deadline=deadline)
    return state.history


def _loop(state: TrainingState, sampler: TaskSampler, objective: Objective, path, folder, *,
          progress: bool, desc: str, validate, validate_every: int, cuda_graph: bool,
          deadline: float | None) -> None:
    """Iterate from ``state.step`` to ``cfg.num_iterations``, logging and saving on the way."""
    cfg, model, device, history = state.cfg, state.model, state.device, state.history
    params = get_params(model)
    graphed = None
    bar = tqdm(total=cfg.num_iterations, initial=state.step, desc=desc, disable=not progress,
               dynamic_ncols=True)
    # Per-step values stay on the device until a log point: reading them every step stalls a GPU.
    losses = list(state.pending.get("losses", torch.zeros(0)).to(device).unbind())
    accuracies = list(state.pending.get("accuracies", torch.zeros(0)).to(device).unbind())
    state.pending = {}
    where = device_name(device)
    tic, timed_to = time.perf_counter(), state.step  # time and iterations not yet counted

    def diverged(message: str) -> TrainingDiverged:
        bar.close()
        kept = (f"the last good checkpoint (step {load_checkpoint(path)['step']}) is kept in {path.parent}"
                if path is not None and path.exists() else "no checkpoint was written")
        return TrainingDiverged(f"{message}; {kept}. Lower the learning rates "
                                f"(inner_lr={cfg.inner_lr}, outer_lr={cfg.outer_lr}).")

    def save() -> None:
        if path is not None:
            folder.save(state, path)

    for step in range(state.step + 1, cfg.num_iterations + 1):
        tasks = sampler.sample(cfg.tasks_per_batch, state.generator)
        if cuda_graph:
            tasks = tasks.to(device)
            graphed = graphed or GraphedMetaStep(model, params, state.optimizer, objective, cfg, tasks)
            loss, metrics = graphed(tasks)
        else:
            try:
                loss, metrics = eager_step(state, params, objective, tasks)
            except TrainingDiverged as err:
                raise diverged(str(err)) from None
        state.step = step
        losses.append(loss.detach())
        if "accuracy" in metrics:
            accuracies.append(metrics["accuracy"].mean())

        at_log = step % cfg.log_every == 0 or step == cfg.num_iterations
        at_checkpoint = step % cfg.checkpoint_every == 0 or step == cfg.num_iterations
        at_limit = deadline is not None and time.monotonic() >= deadline and step < cfg.num_iterations
        if (at_log or at_checkpoint or at_limit) and graphed is not None and graphed.nonfinite.item():
            raise diverged(f"a gradient became non-finite by step {step}")
        if at_log or at_checkpoint:
            mean_loss = torch.stack(losses).mean().item()
            if not math.isfinite(mean_loss):
                raise diverged(f"the meta-loss became {mean_loss} by step {step}")
            now = time.perf_counter()
            history.add_time(now - tic, step - timed_to, where)
            tic, timed_to = now, step
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
                save()
        if at_limit:
            if not at_checkpoint:
                # Mid-interval: the interval's per-step values go into the checkpoint too, so
                # the resumed run logs exactly what an uninterrupted one would.
                history.add_time(time.perf_counter() - tic, step - timed_to, where)
                state.pending = {name: torch.stack(values) for name, values in
                                 (("losses", losses), ("accuracies", accuracies)) if values}
                save()
            bar.close()
            raise StoppedAtTimeLimit(
                f"stopped at the time limit after step {step} of {cfg.num_iterations}; "
                f"the run is saved in {path.parent}: run the same command again to continue")
    bar.close()


def start_of(path: os.PathLike | None) -> int | None:
    """The step stored in the checkpoint at ``path`` (None when there is none)."""
    if path is None or not os.path.exists(path):
        return None
    return int(load_checkpoint(path)["step"])
