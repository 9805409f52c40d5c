"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``, keyed by run id.

A checkpoint holds plain types and tensors only (model and optimizer state, step, RNG
states, the config as a dict, the history), so it loads without unpickling code. It is
written to a temporary file of its own (a unique name in the same folder) and moved into
place, so a run killed while saving leaves the previous checkpoint whole, and a failed
write (a full disk) removes its temporary file. Its run id is computed from its config
dict (``config.MetaConfig.run_id``); a run resumes it only under the same run id
(``check_compatible``). ``training_state.TrainingState`` is what
writes and reads a run's checkpoints; this module is the file format.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import MetaConfig, config_from_dict, option_name, run_id

FORMAT_VERSION = 1


class CheckpointMismatch(ValueError):
    """A checkpoint was made with another configuration than the run that wants to resume it."""


def checkpoint_path(directory: str | os.PathLike, name: str = "checkpoint") -> Path:
    return Path(directory) / f"{name}.pt"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (unique temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary file, not mkstemp's owner-only mode
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (safely: ``weights_only=True``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a mamlcourse checkpoint of a known format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"{path} is not a readable mamlcourse checkpoint ({err}); "
                         "delete it to start afresh") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a mamlcourse checkpoint of format {FORMAT_VERSION}")
    return state


def check_compatible(saved_config: dict[str, Any], cfg: MetaConfig, where: str | os.PathLike) -> None:
    """Refuse to resume a checkpoint of another run: its run id must equal ``cfg.run_id()``.

    ``saved_config`` is the checkpoint's config dict; its run id is computed from it (through
    ``config_from_dict``, which gives a field the dict lacks its default), so every checkpoint,
    whenever written, is compared the same way. The message names each run setting that differs.

    Raises:
        CheckpointMismatch: the run ids differ.
    """
    saved = config_from_dict(saved_config)
    if saved.run_id() == cfg.run_id():
        return
    before, now = saved.run_settings(), cfg.run_settings()
    keys = ["task"] if before["task"] != now["task"] else before
    differences = [f"{option_name(key)}: checkpoint {before[key]!r}, now {now[key]!r}" for key in keys
                   if run_id({key: before[key]}) != run_id({key: now[key]})]  # as run_id compares: 2 == 2.0
    raise CheckpointMismatch(
        f"the checkpoint in {where} was made with other settings ({'; '.join(differences)}). "
        "Resume it with its own settings, or train into another folder (--out).")


def load_model(path: str | os.PathLike, name: str = "checkpoint",
               device: str | torch.device = "cpu") -> tuple[torch.nn.Module, MetaConfig, dict[str, Any]]:
    """The trained model in a run folder (or checkpoint file), its config and the raw state.

    Example:
        >>> model, cfg, state = load_model("runs/sine")
        >>> state["step"]
        70000
    """
    from .models import build_model

    path = Path(path)
    file = path if path.suffix == ".pt" else checkpoint_path(path, name)
    state = load_checkpoint(file)  # on the CPU; the model is then placed on ``device``
    cfg = config_from_dict(state["config"])
    model = build_model(cfg).to(device)
    model.load_state_dict(state["model"])
    return model, cfg, state
