"""The trained models the explorers show: loaded from a shipped run folder, else trained quickly.

``sine_inits`` gives the three sine initialisations (MAML, pretrained, random);
``omniglot_model`` the 5-way 1-shot Omniglot model. Each first looks for the course's
shipped run (``trained/sine-paper``, ``trained/omniglot-5w1s-maxpool``); when it is absent, it
trains the quick preset instead (a short run), into ``checkpoint_dir`` when given so a
second run loads it, and says so in its ``origin`` line. Nothing here changes the global
random state.

Example:
    >>> sine = sine_inits(trained_dir="../trained/sine-paper", checkpoint_dir="../runs/lesson04-sine")
    >>> print(sine.origin)
    >>> explorer = SineExplorer(sine.model, sine.params, sine.cfg)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..baseline import pretrain
from ..checkpoint import checkpoint_path, load_model
from ..config import MetaConfig, OmniglotConfig, SineConfig, omniglot_preset, sine_preset
from ..data.sine import SineTasks
from ..maml import Params, detach_params, get_params
from ..models import build_model
from ..train import meta_train, start_of
from .base import torch_threads

PathLike = str | os.PathLike


@dataclass(frozen=True)
class SineInits:
    """The sine network and three initialisations θ to adapt from.

    Attributes:
        model: the SineMLP (its structure; the explorers pass parameters explicitly).
        params: {"maml": θ_MAML, "pretrained": θ_pretrained, "random": θ_random}.
        cfg: the config the models were trained with.
        origin: one line saying where the models came from (loaded or trained, how long).
    """

    model: nn.Module
    params: dict[str, Params]
    cfg: SineConfig
    origin: str


@dataclass(frozen=True)
class TrainedModel:
    """A meta-trained model and where it came from.

    Attributes:
        model: the network, its own parameters being θ.
        cfg: the config it was trained with.
        origin: one line saying where it came from (loaded or trained, how long).
        shipped: True when it is the course's shipped run, False for a quick stand-in.
    """

    model: nn.Module
    cfg: MetaConfig
    origin: str
    shipped: bool


def _has(directory: PathLike | None, *names: str) -> bool:
    return directory is not None and all(checkpoint_path(directory, n).is_file() for n in names)


def _train_or_resume(model: nn.Module, cfg: MetaConfig, checkpoint_dir: PathLike | None, name: str,
                     train) -> str:
    """Run ``train`` (resuming ``checkpoint_dir``); a line saying whether it loaded or trained."""
    done = (checkpoint_dir is not None
            and start_of(checkpoint_path(checkpoint_dir, name)) == cfg.num_iterations)
    tic = time.perf_counter()
    train()
    if done:
        return f"loaded from {checkpoint_dir} (trained earlier)"
    return f"trained {cfg.num_iterations} iterations in {time.perf_counter() - tic:.0f} s"


def sine_inits(cfg: SineConfig | None = None, *, trained_dir: PathLike | None = None,
               checkpoint_dir: PathLike | None = None, seed: int = 0, progress: bool = True) -> SineInits:
    """MAML, pretrained and random initialisations of the sine network.

    Args:
        cfg: what to train when no shipped run is found (default: the ``"quick"`` preset).
        trained_dir: a run folder with ``checkpoint.pt`` (MAML) and ``baseline.pt``
            (pretrained), e.g. ``trained/sine-paper``; used when both files are there.
        checkpoint_dir: where a quick run is checkpointed, so the next call loads it
            (None: train in memory every time).
        seed: seeds the networks' initialisations (MAML: seed, pretrained: seed + 1,
            random: seed + 2, as ``mamlcourse.experiments.sine``).
        progress: show the training progress bars.

    Returns:
        SineInits with the model, the three θ, the config and an ``origin`` line.
    """
    # One thread: the sine network's operations are too small to split (see base.torch_threads).
    with torch.random.fork_rng(devices=[]), torch_threads(1):
        if _has(trained_dir, "checkpoint", "baseline"):
            maml_model, cfg, state = load_model(trained_dir, "checkpoint")
            baseline, _, base_state = load_model(trained_dir, "baseline")
            origin = (f"loaded MAML ({state['step']} iterations) and the pretrained baseline "
                      f"({base_state['step']} iterations) from {trained_dir}")
        else:
            cfg = cfg if cfg is not None else sine_preset("quick")
            sampler = SineTasks.from_config(cfg)
            torch.manual_seed(cfg.seed + seed)
            maml_model = build_model(cfg)
            maml_line = _train_or_resume(maml_model, cfg, checkpoint_dir, "checkpoint", lambda: meta_train(
                maml_model, sampler, cfg, checkpoint_dir=checkpoint_dir, progress=progress, desc="MAML"))
            torch.manual_seed(cfg.seed + seed + 1)
            baseline = build_model(cfg)
            base_line = _train_or_resume(baseline, cfg, checkpoint_dir, "baseline", lambda: pretrain(
                baseline, sampler, cfg, checkpoint_dir=checkpoint_dir, progress=progress))
            where = f"{trained_dir} not found; " if trained_dir is not None else ""
            origin = (f"{where}the {cfg.preset!r} preset: MAML {maml_line}, "
                      f"pretrained baseline {base_line}")
        torch.manual_seed(cfg.seed + seed + 2)
        random_model = build_model(cfg)
    params = {"maml": detach_params(get_params(maml_model)),
              "pretrained": detach_params(get_params(baseline)),
              "random": detach_params(get_params(random_model))}
    return SineInits(maml_model.eval(), params, cfg, origin)  # type: ignore[arg-type]


def omniglot_model(*, trained_dir: PathLike | None = None, checkpoint_dir: PathLike | None = None,
                   cfg: OmniglotConfig | None = None, data_root: PathLike | None = None,
                   omniglot: Any = None, progress: bool = True) -> TrainedModel:
    """The 5-way 1-shot Omniglot model: the shipped run, else a quick one trained now.

    Args:
        trained_dir: a run folder with ``checkpoint.pt``, e.g. ``trained/omniglot-5w1s-maxpool``.
        checkpoint_dir: where a quick run is checkpointed, so the next call loads it.
        cfg: what to train when no shipped run is found (default: the ``"quick"`` preset,
            well above chance but far from the paper's 98.7%).
        data_root: the folder with the Omniglot zips (default ``$MAMLCOURSE_DATA``).
        omniglot: images already loaded with ``mamlcourse.data.omniglot.load_images``
            (saves loading them twice when the lesson also draws test episodes).
        progress: show the training progress bar.

    Returns:
        TrainedModel; ``shipped`` says whether it is the course's trained model.
    """
    if _has(trained_dir, "checkpoint"):
        model, loaded_cfg, state = load_model(trained_dir, "checkpoint")
        if not isinstance(loaded_cfg, OmniglotConfig):
            raise ValueError(f"{trained_dir} holds a {loaded_cfg.task} model, not an Omniglot one: "
                             "point trained_dir at the Omniglot run folder")
        return TrainedModel(model.eval(), loaded_cfg, f"loaded the trained model from {trained_dir} "
                            f"({loaded_cfg.preset}, {state['step']} iterations)", True)
    from ..data import omniglot as omniglot_data  # reads the image archives: imported on first use

    cfg = cfg if cfg is not None else omniglot_preset("quick")
    sampler = omniglot_data.OmniglotTasks.from_config(cfg, "train", root=data_root, device="cpu",
                                                      omniglot=omniglot, progress=progress)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg)
        line = _train_or_resume(model, cfg, checkpoint_dir, "checkpoint", lambda: meta_train(
            model, sampler, cfg, checkpoint_dir=checkpoint_dir, progress=progress, desc="MAML (quick)"))
    where = f"{trained_dir} not found, so " if trained_dir is not None else ""
    origin = (f"{where}a quick stand-in ({cfg.preset!r} preset): {line}. "
              "It is far weaker than the shipped model.")
    return TrainedModel(model.eval(), cfg, origin, False)


__all__ = ["SineInits", "TrainedModel", "sine_inits", "omniglot_model"]
