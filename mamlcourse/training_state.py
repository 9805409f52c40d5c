"""The training state: everything a run needs to continue, and the only way it goes to disk and back.

A ``TrainingState`` holds the model, the Adam optimizer, the step, the sampler's generator,
torch's global RNG, the config, the history, and the device and precision the run uses.
``save`` writes it as a checkpoint; ``load`` reads one into it, if the checkpoint's run id
equals this config's (``checkpoint.check_compatible``). Loading always happens on the CPU
and is then *placed*:

- parameters and Adam's moments are copied onto the run's device;
- RNG states stay CPU ``ByteTensor``s (``Generator.set_state`` refuses anything else);
- optimizer flags that describe *this* run override the saved ones: ``capturable`` (on for a
  CUDA-graph run) and the learning rate. So a checkpoint written by a ``--cuda-graph`` run on
  a GPU resumes on a CPU, and the other way round;
- a run that used TF32 on a GPU is not resumed without it (nor the reverse): that would
  silently change its arithmetic.

``RunFolder`` is the run folder held by one process: an exclusive lock (a second writer is
refused with one line naming the folder and the process holding it) and a check that a
checkpoint can be written there, done before the first iteration.

Example:
    >>> state = TrainingState.create(model, cfg, device="cpu")
    >>> if path.exists():
    ...     state.load(path)
    >>> state.save(path)
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointMismatch, check_compatible, load_checkpoint, save_checkpoint
from .config import MetaConfig
from .tasks import seeded_generator

LOCK_NAME = ".lock"


class TrainingDiverged(RuntimeError):
    """The meta-loss or its gradient became NaN or infinite; the last good checkpoint is kept."""


class RunFolderError(OSError):
    """The run folder is held by another process, or a checkpoint cannot be written there."""


@dataclass
class History:
    """What a run recorded, one entry per logging interval.

    Attributes:
        step: iteration count at the end of each interval.
        meta_loss: mean meta-loss over the interval.
        accuracy: mean query accuracy over the interval (classification only).
        validation_step, validation: validation scores and when they were taken.
        wall_seconds: training time so far, summed over resumptions.
        devices: where that time went, ``{device name: {"iterations": n, "seconds": s}}``
            (``machine.device_name``, e.g. ``"cpu (AMD EPYC)"``): a run resumed on another
            device (a GPU window continuing a CPU run) says how much each did.
    """

    step: list[int] = field(default_factory=list)
    meta_loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    validation_step: list[int] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    devices: dict[str, dict[str, float]] = field(default_factory=dict)

    def add_time(self, seconds: float, iterations: int, device: str) -> None:
        """Count ``seconds`` of training, and the ``iterations`` they ran, to ``device``'s name."""
        self.wall_seconds += seconds
        spent = self.devices.setdefault(device, {"iterations": 0, "seconds": 0.0})
        spent["iterations"] += iterations
        spent["seconds"] += seconds

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, steps: int = 0, device: str | None = None) -> History:
        """The history saved by ``to_dict``. One saved before it counted time by device
        (no ``devices``) has its ``steps`` and time given to ``device``, the device named in
        its checkpoint: where the last save before it ran."""
        history = cls(**data)
        if "devices" not in data and device is not None and (steps or history.wall_seconds):
            history.devices[f"{device} (the checkpoint's device; saved before time was counted by device)"] = {
                "iterations": steps, "seconds": history.wall_seconds}
        return history

    @property
    def iterations(self) -> int:
        """Meta-iterations trained: those counted by device, which include a run's last steps
        after its last log point (a stop at a time limit); else the last log point."""
        if self.devices:
            return int(sum(spent["iterations"] for spent in self.devices.values()))
        return self.step[-1] if self.step else 0

    @property
    def ms_per_iteration(self) -> float:
        """Mean wall time of one meta-iteration (NaN before the first)."""
        return 1000 * self.wall_seconds / self.iterations if self.iterations else math.nan


def precision_settings(device: torch.device) -> dict[str, bool]:
    """The global switches that change a GPU run's arithmetic (empty on a CPU, where none does)."""
    if device.type != "cuda":
        return {}
    return {"tf32": bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}


@dataclass
class TrainingState:
    """A run in memory: model and optimizer on ``device``, RNG states and history on the CPU.

    Attributes:
        model: the network; its parameters are θ.
        optimizer: Adam over the model's parameters with lr β = ``cfg.outer_lr``.
        generator: the sampler's generator (CPU), seeded with ``cfg.seed``.
        cfg: the run's settings.
        device: where the model and tasks live.
        step: meta-iterations done.
        history: the logged intervals.
        pending: per-step meta-losses and accuracies of the interval not yet logged, [n] each
            (non-empty only in a checkpoint saved between two log points, at a time limit).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    cfg: MetaConfig
    device: torch.device
    step: int = 0
    history: History = field(default_factory=History)
    pending: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def create(cls, model: nn.Module, cfg: MetaConfig, *, device: torch.device | str,
               capturable: bool = False) -> TrainingState:
        """A fresh run: ``model`` moved to ``device``, Adam (``capturable`` for CUDA graphs)."""
        device = torch.device(device)
        model.to(device)
        # capturable: Adam keeps its step count on the device, so a CUDA graph can replay it.
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.outer_lr, capturable=capturable)
        return cls(model, optimizer, seeded_generator(cfg.seed), cfg, device)

    def save(self, path: str | os.PathLike) -> None:
        """Write the state to ``path`` atomically (see ``checkpoint.save_checkpoint``)."""
        save_checkpoint(path, {
            "step": self.step, "config": self.cfg.to_dict(), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(), "history": self.history.to_dict(),
            "pending": {k: v.detach().cpu() for k, v in self.pending.items()},
            "device": str(self.device), "precision": precision_settings(self.device)})

    def load(self, path: str | os.PathLike, where: str | os.PathLike | None = None) -> None:
        """Continue the run saved at ``path``: read on the CPU, then placed (see the module doc).

        Raises:
            CheckpointMismatch: the checkpoint is of another run (another run id), or another
                GPU precision.
        """
        where = where if where is not None else Path(path).parent
        saved = load_checkpoint(path, map_location="cpu")
        check_compatible(saved["config"], self.cfg, where)
        self._check_precision(saved.get("precision"), where)
        self.model.load_state_dict(saved["model"])
        optimizer_state = saved["optimizer"]
        ours = self.optimizer.param_groups[0]
        for group in optimizer_state["param_groups"]:
            # This run's flags, not the saved run's: Optimizer.load_state_dict would keep those.
            group["capturable"], group["lr"] = ours["capturable"], ours["lr"]
        self.optimizer.load_state_dict(optimizer_state)
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        self.history = History.from_dict(saved["history"], steps=int(saved["step"]), device=saved.get("device"))
        self.pending = dict(saved.get("pending", {}))
        self.step = int(saved["step"])

    def _check_precision(self, saved: dict[str, bool] | None, where) -> None:
        now = precision_settings(self.device)
        if saved and now and saved.get("tf32") != now["tf32"]:
            flag = "with --tf32" if saved["tf32"] else "without --tf32"
            raise CheckpointMismatch(
                f"the checkpoint in {where} was trained {'with' if saved['tf32'] else 'without'} TF32 "
                f"arithmetic; resume it {flag}, or train into another folder (--out)")


class RunFolder:
    """A run folder held by this process: locked against other writers and checked writable.

    Used as a context manager around training. The lock is an ``flock`` on ``.lock`` in the
    folder (released by the OS if the process dies, so a ``kill -9`` never leaves it stuck);
    the file holds the owner's process id for the error message. Re-entrant within a process.
    """

    _held: dict[Path, int] = {}

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._file = None

    def __enter__(self) -> RunFolder:
        key = self.directory.resolve()
        if RunFolder._held.get(key):
            RunFolder._held[key] += 1
            return self
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._file = open(self.directory / LOCK_NAME, "a+")
        except OSError as err:
            raise RunFolderError(f"cannot write to the run folder {self.directory} ({err.strerror}): "
                                 "choose a writable folder (--out)") from None
        if not _try_lock(self._file):
            self._file.seek(0)
            owner = self._file.read().strip() or "unknown"
            self._file.close()
            raise RunFolderError(f"the run folder {self.directory} is in use by process {owner}: "
                                 "wait for it to finish, or train into another folder (--out)")
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()
        RunFolder._held[key] = 1
        return self

    def __exit__(self, *exc) -> None:
        key = self.directory.resolve()
        RunFolder._held[key] -= 1
        if RunFolder._held[key] == 0 and self._file is not None:
            del RunFolder._held[key]
            self._file.close()  # closing releases the lock

    def save(self, state: TrainingState, path: Path) -> None:
        """``state.save(path)``, with a full disk or a read-only folder said in one line."""
        try:
            state.save(path)
        except OSError as err:
            raise RunFolderError(f"cannot write a checkpoint to {path.parent} ({err.strerror or err}); "
                                 f"the previous checkpoint there, if any, is intact: free space or "
                                 "choose another folder (--out)") from None


def _try_lock(file) -> bool:
    """Take an exclusive, non-blocking lock on ``file``; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt
        try:
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
