"""Frozen configurations: the paper's presets, quick presets, and the quick/full mode switch.

Every hyperparameter of the course lives here. A notebook overrides one in a single
visible cell, ``cfg = dataclasses.replace(cfg, inner_lr=0.1)``; the dataclasses
validate themselves, so a bad value fails where it is written, with the fix in the
message.

Each field declares its role where it is written, one of two:

- ``run_field``: it defines the run (what is computed: the task distribution, the model,
  the inner and outer loops, the seed). ``cfg.run_settings()`` collects these fields and the
  task; ``cfg.run_id()`` hashes them. A checkpoint resumes only under the same run id.
- ``call_field``: it may change from one call on a run to the next: how long the run goes,
  how it is logged, checkpointed and validated, how it is scored, and whether a meta-batch
  runs under vmap or as a loop (the same maths).

Example:
    >>> cfg = sine_preset("paper")
    >>> cfg.inner_lr, cfg.tasks_per_batch, cfg.num_iterations
    (0.01, 25, 70000)
    >>> dataclasses.replace(cfg, num_iterations=100).run_id() == cfg.run_id()
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

MODES = ("quick", "full")
DOWNSAMPLES = ("maxpool", "stride")  # how ConvNet4 halves its images (OmniglotConfig.downsample)
CONVENTIONS = ("pytorch", "original")  # who settles ConvNet4's details the paper leaves open
RUN, CALL = "run", "call"


def run_field(default: Any, *, option: str | None = None) -> Any:
    """A field that defines the run (hashed by ``run_id``); ``option`` is its command-line spelling."""
    return field(default=default, metadata={"role": RUN, "option": option})


def call_field(default: Any, *, option: str | None = None) -> Any:
    """A field that may change between calls on one run; ``option`` is its command-line spelling."""
    return field(default=default, metadata={"role": CALL, "option": option})


def option_name(name: str) -> str:
    """``inner_lr`` -> ``"inner_lr (--inner-lr)"``: how errors name a setting."""
    option = _OPTIONS.get(name)
    return f"{name} ({option})" if option else name


def run_id(settings: dict[str, Any]) -> str:
    """The first 12 hex digits of the sha256 of ``settings`` as canonical JSON.

    Canonical: keys sorted, no spaces, and a whole float written as an integer, so
    ``inner_lr=2`` and ``inner_lr=2.0`` (equal in Python) give the same id.
    """
    text = json.dumps(_canonical(settings), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _canonical(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _check_count(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{option_name(name)} must be an integer >= {minimum}, got {value!r}")


def _check_rate(name: str, value: Any, *, allow_zero: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{option_name(name)} must be a finite number {bound}, got {value!r}")


def _check_range(name: str, value: tuple[float, float]) -> None:
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be (low, high) with low < high, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class MetaConfig:
    """Settings shared by every MAML experiment.

    Attributes defining the run:
        preset: name of the preset this config came from. A label, but one the run keeps:
            results and model cards report it and the paper's row is looked up by it, so a
            run is resumed under the name it was started with.
        num_inner_steps: inner gradient steps during meta-training.
        inner_lr: α, the inner-loop step size (on a *mean* loss over the support set).
        first_order: drop second derivatives (first-order MAML).
        outer_lr: β, Adam's learning rate for the meta-update.
        tasks_per_batch: tasks per meta-update.
        k_shot: support examples (per class for classification).
        k_query: query examples (per class for classification) during meta-training.
        seed: seeds the initialisation and the task stream.

    Attributes that may change between calls:
        num_iterations: meta-updates in the whole run (a larger value continues it).
        checkpoint_every: iterations between checkpoints.
        log_every: iterations between progress-bar updates (and NaN checks).
        eval_tasks: fixed test tasks scored by ``evaluate`` (600, as the paper).
        eval_inner_steps: inner steps at test for the headline number.
        eval_max_steps: the learning curve at test goes from 0 to this many steps.
        vectorize: run a meta-batch's tasks with ``torch.func.vmap`` (True), one by one
            (False), or let ``maml.default_vectorize`` pick for the model and device (None).
    """

    # -- What defines the run: hashed by run_id(); a checkpoint resumes only if all match.
    preset: str = run_field("custom")
    num_inner_steps: int = run_field(1, option="--inner-steps")
    inner_lr: float = run_field(0.01, option="--inner-lr")
    first_order: bool = run_field(False, option="--first-order")
    outer_lr: float = run_field(1e-3, option="--outer-lr")
    tasks_per_batch: int = run_field(25, option="--tasks-per-batch")
    k_shot: int = run_field(10, option="--k-shot")
    k_query: int = run_field(10, option="--k-query")
    seed: int = run_field(0, option="--seed")

    # -- What may change between calls: length, logging, checkpoints, scoring, batching.
    num_iterations: int = call_field(70_000, option="--iterations")
    checkpoint_every: int = call_field(1000, option="--checkpoint-every")
    log_every: int = call_field(50)
    eval_tasks: int = call_field(600, option="--tasks")
    eval_inner_steps: int = call_field(1, option="--inner-steps")
    eval_max_steps: int = call_field(10)
    vectorize: bool | None = call_field(None)

    def __post_init__(self) -> None:
        for name in ("tasks_per_batch", "num_iterations", "k_shot", "k_query", "eval_tasks",
                     "checkpoint_every", "log_every"):
            _check_count(name, getattr(self, name))
        for name in ("num_inner_steps", "eval_inner_steps", "eval_max_steps", "seed"):
            _check_count(name, getattr(self, name), minimum=0)
        _check_rate("inner_lr", self.inner_lr, allow_zero=True)
        _check_rate("outer_lr", self.outer_lr, allow_zero=False)
        if self.vectorize not in (None, True, False):
            raise ValueError(f"vectorize must be True, False or None, got {self.vectorize!r}")

    @property
    def task(self) -> str:
        raise NotImplementedError

    @property
    def loss(self) -> str:
        """Name of the task loss: ``"mse"`` or ``"cross_entropy"`` (see ``maml.loss_function``)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists for tuples), for JSON and ``torch.load(weights_only=True)``."""
        out = {"task": self.task}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def run_settings(self) -> dict[str, Any]:
        """The task and every ``run_field``, as plain types: what defines the run."""
        data = self.to_dict()
        return {"task": data["task"], **{f.name: data[f.name] for f in dataclasses.fields(self)
                                         if f.metadata["role"] == RUN}}

    def run_id(self) -> str:
        """A short hash of ``run_settings()``: two configs with the same id compute the same run.

        Example:
            >>> omniglot_preset("paper-5w1s").run_id() == omniglot_preset("paper-5w5s").run_id()
            False
        """
        return run_id(self.run_settings())


@dataclass(frozen=True, kw_only=True)
class SineConfig(MetaConfig):
    """Sine-wave regression (paper, Section 5.1 and Appendix C).

    Attributes defining the run:
        amplitude_range: A ~ U[0.1, 5].
        phase_range: phase ~ U[0, π].
        x_range: x ~ U[-5, 5].
        hidden_sizes: the MLP's hidden layers (40, 40), ReLU.

    Attributes that may change between calls:
        eval_k_shots: the support sizes K scored at test (5, 10, 20).
        eval_query_points: query points per test task, uniform over ``x_range``.
        baseline_lrs: fine-tuning step sizes tried for the pretrained baseline; the one
            with the lowest MSE on separate validation tasks is kept.
    """

    # -- What defines the run.
    amplitude_range: tuple[float, float] = run_field((0.1, 5.0))
    phase_range: tuple[float, float] = run_field((0.0, math.pi))
    x_range: tuple[float, float] = run_field((-5.0, 5.0))
    hidden_sizes: tuple[int, ...] = run_field((40, 40))

    # -- What may change between calls.
    eval_k_shots: tuple[int, ...] = call_field((5, 10, 20))
    eval_query_points: int = call_field(100)
    baseline_lrs: tuple[float, ...] = call_field((0.001, 0.005, 0.01, 0.02, 0.05))

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("amplitude_range", "phase_range", "x_range"):
            _check_range(name, getattr(self, name))
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers, got {self.hidden_sizes!r}")
        for k in self.eval_k_shots:
            _check_count("eval_k_shots", k)
        _check_count("eval_query_points", self.eval_query_points)
        for lr in self.baseline_lrs:
            _check_rate("baseline_lrs", lr, allow_zero=False)

    @property
    def task(self) -> str:
        return "sine"

    @property
    def loss(self) -> str:
        return "mse"


@dataclass(frozen=True, kw_only=True)
class OmniglotConfig(MetaConfig):
    """N-way K-shot Omniglot classification (paper, Section 5.2 and Appendix A.1).

    The inner loss is the *mean* cross-entropy over the support set. The original code
    sums the per-example cross-entropy divided by K, which is N times the mean, so its
    α = 0.4 (5-way) and α = 0.1 (20-way) are both α = 2.0 here.

    Attributes defining the run:
        n_way: classes per task.
        num_filters: channels of each of ConvNet4's four blocks.
        downsample: how ConvNet4's blocks halve the image: ``"maxpool"`` (stride-1
            convolution, then 2x2 max-pooling: the network as Section 5.2 first describes
            it) or ``"stride"`` (stride-2 convolutions: "For Omniglot, we used strided
            convolutions instead of max-pooling", Section 5.2). See ``models.ConvNet4``.
        conventions: the network's details the paper leaves open: ``"pytorch"`` (batch norm
            with scale and offset, both adapted; PyTorch's initialisation) or ``"original"``
            (the original code's: batch norm with an offset only, meta-learned but not
            adapted; its initialisation; TensorFlow's padding). See ``models.ConvNet4``.
        image_size: images are resized to ``image_size`` x ``image_size``.
        split: ``"paper"`` (1200 training characters, the rest for testing) or
            ``"lake"`` (background alphabets for training, evaluation alphabets for testing).
        rotations: add rotations by 90/180/270 degrees as new classes (paper).
        validation_characters: characters carved out of the training ones for validation.

    Attributes that may change between calls:
        eval_k_query: query images per class at test (15, as most reimplementations;
            the original drew K).
        validate_every: iterations between validation scores during training (0: never).
        validation_tasks: tasks per validation score.
        channels_last: ConvNet4's memory layout, NHWC (True) or NCHW (False); None: NHWC on
            the CPU only (see ``models.ConvNet4``). The same maths in another memory order.
    """

    # -- What defines the run.
    n_way: int = run_field(5, option="--n-way")
    num_filters: int = run_field(64)
    downsample: str = run_field("maxpool", option="--downsample")
    conventions: str = run_field("pytorch", option="--conventions")
    image_size: int = run_field(28)
    split: str = run_field("paper")
    rotations: bool = run_field(True)
    validation_characters: int = run_field(100)

    # -- What may change between calls.
    eval_k_query: int = call_field(15)
    validate_every: int = call_field(500)
    validation_tasks: int = call_field(100)
    channels_last: bool | None = call_field(None, option="--layout")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.channels_last not in (None, True, False):
            raise ValueError(f"{option_name('channels_last')} must be True, False or None, "
                             f"got {self.channels_last!r}")
        for name in ("n_way", "eval_k_query", "num_filters", "image_size", "validation_tasks"):
            _check_count(name, getattr(self, name))
        for name in ("validation_characters", "validate_every"):
            _check_count(name, getattr(self, name), minimum=0)
        if self.n_way < 2:
            raise ValueError(f"{option_name('n_way')} must be >= 2 for classification, got {self.n_way}")
        if self.downsample not in DOWNSAMPLES:
            raise ValueError(f"{option_name('downsample')} must be 'maxpool' or 'stride', "
                             f"got {self.downsample!r}")
        if self.conventions not in CONVENTIONS:
            raise ValueError(f"{option_name('conventions')} must be 'pytorch' or 'original', "
                             f"got {self.conventions!r}")
        if self.split not in ("paper", "lake"):
            raise ValueError(f"split must be 'paper' or 'lake', got {self.split!r}")

    @property
    def task(self) -> str:
        return "omniglot"

    @property
    def loss(self) -> str:
        return "cross_entropy"


CONFIG_CLASSES: dict[str, type[MetaConfig]] = {"sine": SineConfig, "omniglot": OmniglotConfig}

# Each setting's command-line spelling, from the fields' declarations, so errors name the option.
_OPTIONS = {f.name: f.metadata["option"] for cls in CONFIG_CLASSES.values()
            for f in dataclasses.fields(cls) if f.metadata["option"]}


# ---------------------------------------------------------------------------------------
# Presets. "paper" presets are the paper's settings; "quick" ones keep the maths and cut the
# sizes (iterations, tasks per batch, test tasks) for a CPU. docs/results.md times them.

SINE_PRESETS: dict[str, SineConfig] = {
    # Appendix C: K = 10, one inner step of 0.01, Adam 1e-3, 25 tasks, 70k iterations.
    "paper": SineConfig(preset="paper", k_shot=10, k_query=10, num_inner_steps=1,
                        inner_lr=0.01, outer_lr=1e-3, tasks_per_batch=25,
                        num_iterations=70_000, checkpoint_every=5000, log_every=100),
    # The paper's maths with 3,000 iterations and 200 test tasks.
    "quick": SineConfig(preset="quick", k_shot=10, k_query=10, num_inner_steps=1,
                        inner_lr=0.01, outer_lr=1e-3, tasks_per_batch=25,
                        num_iterations=3000, eval_tasks=200, checkpoint_every=1000),
}

# Section 5.2: "For Omniglot, we used strided convolutions instead of max-pooling". The quick
# presets keep max-pooling: every stored quick result and the lessons' model were made with it.
_PAPER_OMNIGLOT = dict(outer_lr=1e-3, num_iterations=60_000, eval_max_steps=10,
                       checkpoint_every=1000, log_every=50, downsample="stride")

OMNIGLOT_PRESETS: dict[str, OmniglotConfig] = {
    # Appendix A.1: 5-way trains with 1 step (α = 0.4 on the summed loss = 2.0 on the mean)
    # and 32 tasks, and is evaluated with 3 steps; K query images per class, as the original.
    "paper-5w1s": OmniglotConfig(preset="paper-5w1s", n_way=5, k_shot=1, k_query=1,
                                 num_inner_steps=1, inner_lr=2.0, tasks_per_batch=32,
                                 eval_inner_steps=3, **_PAPER_OMNIGLOT),
    "paper-5w5s": OmniglotConfig(preset="paper-5w5s", n_way=5, k_shot=5, k_query=5,
                                 num_inner_steps=1, inner_lr=2.0, tasks_per_batch=32,
                                 eval_inner_steps=3, **_PAPER_OMNIGLOT),
    # 20-way trains and tests with 5 steps of α = 0.1 (2.0 on the mean) and 16 tasks.
    "paper-20w1s": OmniglotConfig(preset="paper-20w1s", n_way=20, k_shot=1, k_query=1,
                                  num_inner_steps=5, inner_lr=2.0, tasks_per_batch=16,
                                  eval_inner_steps=5, **_PAPER_OMNIGLOT),
    "paper-20w5s": OmniglotConfig(preset="paper-20w5s", n_way=20, k_shot=5, k_query=5,
                                  num_inner_steps=5, inner_lr=2.0, tasks_per_batch=16,
                                  eval_inner_steps=5, **_PAPER_OMNIGLOT),
    # 5-way 1-shot with 8 tasks per batch, 6,500 iterations and 1 inner step at test.
    "quick-5w1s": OmniglotConfig(preset="quick-5w1s", n_way=5, k_shot=1, k_query=1,
                                 num_inner_steps=1, inner_lr=2.0, tasks_per_batch=8,
                                 num_iterations=6500, eval_inner_steps=1, eval_max_steps=10,
                                 checkpoint_every=250, log_every=25, validate_every=500),
    # What the quick mode of the lessons trains: 300 iterations of 8 tasks, no validation.
    "quick": OmniglotConfig(preset="quick", n_way=5, k_shot=1, k_query=1, num_inner_steps=1,
                            inner_lr=2.0, tasks_per_batch=8, num_iterations=300,
                            eval_tasks=200, eval_inner_steps=1, checkpoint_every=100,
                            log_every=25, validate_every=0),
}

PRESETS: dict[str, dict[str, MetaConfig]] = {"sine": SINE_PRESETS, "omniglot": OMNIGLOT_PRESETS}


def get_preset(task: str, name: str) -> MetaConfig:
    """The preset ``name`` of ``task`` (``"sine"`` or ``"omniglot"``).

    Raises:
        ValueError: unknown task or preset, listing the valid names.
    """
    if task not in PRESETS:
        raise ValueError(f"unknown task {task!r}: choose one of {sorted(PRESETS)}")
    presets = PRESETS[task]
    if name not in presets:
        raise ValueError(f"unknown preset {name!r} for {task}: choose one of {list(presets)}")
    return presets[name]


def sine_preset(name: str = "paper") -> SineConfig:
    """Shorthand for ``get_preset("sine", name)``."""
    return get_preset("sine", name)  # type: ignore[return-value]


def omniglot_preset(name: str = "paper-5w1s") -> OmniglotConfig:
    """Shorthand for ``get_preset("omniglot", name)``."""
    return get_preset("omniglot", name)  # type: ignore[return-value]


def config_from_dict(data: dict[str, Any]) -> MetaConfig:
    """Rebuild a config written by ``MetaConfig.to_dict`` (for example from a checkpoint).

    A field the dict lacks takes its default; a key no field has is ignored.

    Raises:
        ValueError: the dict names no known task.
    """
    data = dict(data)
    task = data.pop("task", None)
    if task not in CONFIG_CLASSES:
        raise ValueError(f"a config of unknown task {task!r}: expected one of {sorted(CONFIG_CLASSES)}")
    cls = CONFIG_CLASSES[task]
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            continue  # a field from a newer or older version: ignored, not guessed
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------
# Mode and device.

def resolve_mode(mode: str | None = None) -> str:
    """``"quick"`` or ``"full"``: the argument, else ``$MAMLCOURSE_MODE``, else full with CUDA.

    Quick and full change sizes only (iterations, tasks, evaluation tasks), never code.
    """
    mode = mode if mode is not None else os.environ.get("MAMLCOURSE_MODE") or None
    if mode is None:
        return "full" if torch.cuda.is_available() else "quick"
    if mode not in MODES:
        raise ValueError(f"MAMLCOURSE_MODE must be 'quick' or 'full', got {mode!r}")
    return mode


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The argument checked for availability, else CUDA when present, else the CPU.

    Raises:
        ValueError: an unknown device name, or CUDA asked for on a machine without it.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r} (--device): use 'cpu', 'cuda' or 'cuda:N'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} (--device) asked for, but CUDA is not available here: "
                         "use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r} (--device): use 'cpu' or 'cuda'")
    return dev


def replace(cfg: MetaConfig, **changes: Any) -> MetaConfig:
    """``dataclasses.replace`` that skips ``None`` values (handy for optional CLI flags)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})


__all__ = [
    "MetaConfig", "SineConfig", "OmniglotConfig", "PRESETS", "SINE_PRESETS", "OMNIGLOT_PRESETS",
    "CONFIG_CLASSES", "get_preset", "sine_preset", "omniglot_preset", "config_from_dict", "resolve_mode",
    "resolve_device", "replace", "option_name", "run_field", "call_field", "run_id",
]
