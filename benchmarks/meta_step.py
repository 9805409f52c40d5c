"""Time one MAML meta-iteration with mamlcourse and, side by side, with the peer libraries.

One meta-iteration is what ``meta_train`` does per step: for each task of a meta-batch,
adapt θ on the support set (second order), score θ' on the query set, back-propagate the
mean query loss to θ, and take one Adam step. Every implementation starts from the same
initial weights and runs on the same tasks. Before anything is timed, each peer's
meta-gradient is compared with mamlcourse's (in float64, on copies of the same weights and
tasks); a peer that disagrees beyond ``--rtol`` is reported and not timed (a fast wrong answer
is not a result).

Peers (installed as packages by ``benchmarks/install_peers.sh``; each is skipped and listed
as not installed when absent):

- learn2learn: ``MAML(model, lr).clone()`` and ``adapt(loss)`` per task.
- higher: ``innerloop_ctx(model, SGD)`` and ``diffopt.step(loss)`` per task.
- torchopt: ``MetaSGD(model, lr).step(loss)`` per task, then the state recovered.

Each peer is written as its own documentation's MAML example does it (per-task backward).

Usage:
    python benchmarks/meta_step.py --config sine --json
    python benchmarks/meta_step.py --config omniglot-5w1s --iterations 10
    python benchmarks/meta_step.py --config paper-20w1s --device cuda

Configs: ``sine`` (MLP 40-40, 25 tasks, K=10), ``omniglot-5w1s`` (ConvNet4 on random images,
32 tasks, 5-way 1-shot, 15 query images per class), ``paper-5w1s`` and ``paper-20w1s``
(the paper presets on real Omniglot episodes from ``mamlcourse.data.omniglot``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamlcourse.config import MetaConfig, OmniglotConfig, omniglot_preset, resolve_device, sine_preset
from mamlcourse.data.sine import SineTasks
from mamlcourse.maml import get_params, meta_loss, resolve_vectorize
from mamlcourse.models import build_model
from mamlcourse.tasks import TaskBatch, random_image_tasks, seeded_generator

PEERS = ("learn2learn", "higher", "torchopt")
SEED = 0
# Largest relative meta-gradient difference from mamlcourse's that a peer may show and be timed,
# by the precision of the check.
DEFAULT_RTOL = {"float64": 1e-8, "float32": 1e-3}


# ---------------------------------------------------------------------------------------
# What is benchmarked.

@dataclass(frozen=True)
class Benchmark:
    """One benchmark configuration.

    Attributes:
        name: what ``--config`` calls it.
        cfg: the MAML settings (tasks_per_batch, n_way, k_shot, k_query, num_inner_steps, ...).
        images: where the tasks come from: ``"sine"``, ``"random"`` (random 28x28 images, so
            the conv speed is known before real data) or ``"omniglot"`` (real episodes).
        iterations, warmup: defaults for ``--iterations`` and ``--warmup``.
        description: one line for the table.
        block: default for ``--block``: consecutive iterations each implementation runs in
            its turn of the round-robin.
    """

    name: str
    cfg: MetaConfig
    images: str
    iterations: int
    warmup: int
    description: str
    block: int = 1


def _second_order(cfg: MetaConfig) -> MetaConfig:
    return dataclasses.replace(cfg, first_order=False)


BENCHMARKS: dict[str, Benchmark] = {
    "sine": Benchmark(
        "sine",
        _second_order(sine_preset("paper")), "sine", iterations=300, warmup=30, block=30,
        description="MLP 40-40, 25 tasks, K=10 support + 10 query, 1 inner step, second order"),
    "omniglot-5w1s": Benchmark(
        "omniglot-5w1s",
        _second_order(dataclasses.replace(omniglot_preset("paper-5w1s"), k_query=15)),
        "random", iterations=15, warmup=2,
        description="ConvNet4, 32 tasks, 5-way 1-shot, 15 query per class, 1 step, random images"),
    "paper-5w1s": Benchmark(
        "paper-5w1s", _second_order(omniglot_preset("paper-5w1s")), "omniglot", iterations=20, warmup=2,
        description="ConvNet4, paper-5w1s preset (32 tasks, 1 query per class, 1 step), Omniglot"),
    "paper-20w1s": Benchmark(
        "paper-20w1s", _second_order(omniglot_preset("paper-20w1s")), "omniglot", iterations=10, warmup=2,
        description="ConvNet4, paper-20w1s preset (16 tasks, 1 query per class, 5 steps), Omniglot"),
}


def omniglot_tasks(cfg: OmniglotConfig, generator: torch.Generator, root: str | None = None) -> TaskBatch:
    """Real Omniglot training episodes for ``cfg`` from ``mamlcourse.data.omniglot``.

    Args:
        root: the folder holding the Omniglot zips (``--data``); default ``$MAMLCOURSE_DATA``,
            else the course's download folder. Nothing is downloaded here.

    Raises:
        RuntimeError: the module or the data is missing, with what to do instead.
    """
    try:
        omniglot = importlib.import_module("mamlcourse.data.omniglot")
    except ImportError as err:
        raise RuntimeError(
            "the paper-* configs need real episodes from mamlcourse.data.omniglot, which is not "
            f"importable here ({err}); run --config omniglot-5w1s for the conv speed on random "
            "images, or add --random-images to run this config's shapes on random images") from err
    try:
        sampler = omniglot.OmniglotTasks.from_config(cfg, "train", root, device="cpu", download=False,
                                                     progress=False)
    except FileNotFoundError as err:
        raise RuntimeError(f"{err}\n(point --data or $MAMLCOURSE_DATA at the folder holding the "
                           "Omniglot zips, or add --random-images to time this config's shapes on "
                           "random images)") from err
    return sampler.sample(cfg.tasks_per_batch, generator)


def make_tasks(bench: Benchmark, *, random_images: bool = False,
               data: str | None = None) -> tuple[TaskBatch, str]:
    """The benchmark's meta-batch (seeded, so every implementation gets the same) and its source."""
    generator = seeded_generator(SEED)
    cfg = bench.cfg
    if bench.images == "sine":
        return SineTasks.from_config(cfg).sample(cfg.tasks_per_batch, generator), "sine"
    if bench.images == "random" or random_images:
        return random_image_tasks(cfg, generator), "random"
    return omniglot_tasks(cfg, generator, data), "omniglot"


# ---------------------------------------------------------------------------------------
# The implementations. Each one accumulates the meta-gradient of the mean query loss into
# ``model``'s ``.grad`` (so the outer Adam step is the same for everyone).

Backward = Callable[[nn.Module, TaskBatch, MetaConfig], None]


def _loss_fn(cfg: MetaConfig) -> Callable[[Tensor, Tensor], Tensor]:
    return F.mse_loss if cfg.loss == "mse" else F.cross_entropy


def mamlcourse_backward(vectorize: bool) -> Backward:
    """Ours: ``meta_loss`` (vmap over tasks or a loop), then one backward."""

    def backward(model: nn.Module, tasks: TaskBatch, cfg: MetaConfig) -> None:
        loss, _ = meta_loss(model, get_params(model), tasks, cfg, vectorize=vectorize)
        loss.backward()

    return backward


def _import_learn2learn_maml() -> type:
    """``learn2learn.algorithms.MAML``, also when the package as a whole cannot be imported.

    ``import learn2learn`` imports its vision and gym sub-packages, which need torchvision and
    gym; the MAML wrapper needs neither. When the full import fails, the package and its
    ``algorithms`` sub-package are registered as empty namespaces (their ``__init__`` files are
    not run) and only ``learn2learn.algorithms.maml`` (with ``utils`` and ``base_learner``) is
    loaded from the installed files.
    """
    try:
        from learn2learn.algorithms import MAML
        return MAML
    except ImportError:
        pass
    for name in [n for n in sys.modules if n == "learn2learn" or n.startswith("learn2learn.")]:
        del sys.modules[name]
    spec = importlib.util.find_spec("learn2learn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("learn2learn is not installed: run benchmarks/install_peers.sh")
    root = list(spec.submodule_search_locations)[0]
    for name, path in (("learn2learn", root), ("learn2learn.algorithms", os.path.join(root, "algorithms"))):
        package = types.ModuleType(name)
        package.__path__ = [path]
        sys.modules[name] = package
    return importlib.import_module("learn2learn.algorithms.maml").MAML


def learn2learn_backward() -> Backward:
    """learn2learn 0.2: ``MAML(model, lr).clone()``, ``adapt(support_loss)``, per-task backward."""
    maml_class = _import_learn2learn_maml()

    def backward(model: nn.Module, tasks: TaskBatch, cfg: MetaConfig) -> None:
        loss_fn = _loss_fn(cfg)
        maml = maml_class(model, lr=cfg.inner_lr, first_order=cfg.first_order)
        for x_support, y_support, x_query, y_query in tasks.tasks():
            learner = maml.clone()
            for _ in range(cfg.num_inner_steps):
                learner.adapt(loss_fn(learner(x_support), y_support))
            (loss_fn(learner(x_query), y_query) / len(tasks)).backward()

    return backward


def higher_backward() -> Backward:
    """higher 0.2.1: ``innerloop_ctx(model, SGD)``, ``diffopt.step(support_loss)``, per-task backward."""
    higher = importlib.import_module("higher")

    def backward(model: nn.Module, tasks: TaskBatch, cfg: MetaConfig) -> None:
        loss_fn = _loss_fn(cfg)
        inner_opt = torch.optim.SGD(model.parameters(), lr=cfg.inner_lr)
        for x_support, y_support, x_query, y_query in tasks.tasks():
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                      track_higher_grads=not cfg.first_order) as (fmodel, diffopt):
                for _ in range(cfg.num_inner_steps):
                    diffopt.step(loss_fn(fmodel(x_support), y_support))
                (loss_fn(fmodel(x_query), y_query) / len(tasks)).backward()

    return backward


def torchopt_backward() -> Backward:
    """torchopt 0.7: ``MetaSGD(model, lr).step(support_loss)``, per-task backward, state recovered."""
    torchopt = importlib.import_module("torchopt")

    def backward(model: nn.Module, tasks: TaskBatch, cfg: MetaConfig) -> None:
        if cfg.first_order:
            raise ValueError("the torchopt benchmark is written for second-order MAML")
        loss_fn = _loss_fn(cfg)
        inner_opt = torchopt.MetaSGD(model, lr=cfg.inner_lr)
        model_state = torchopt.extract_state_dict(model)
        opt_state = torchopt.extract_state_dict(inner_opt)
        for x_support, y_support, x_query, y_query in tasks.tasks():
            for _ in range(cfg.num_inner_steps):
                inner_opt.step(loss_fn(model(x_support), y_support))
            (loss_fn(model(x_query), y_query) / len(tasks)).backward()
            torchopt.recover_state_dict(model, model_state)
            torchopt.recover_state_dict(inner_opt, opt_state)

    return backward


PEER_FACTORIES: dict[str, Callable[[], Backward]] = {
    "learn2learn": learn2learn_backward,
    "higher": higher_backward,
    "torchopt": torchopt_backward,
}


def peer_version(name: str) -> str | None:
    """The installed version of a peer package, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------
# Measuring.

def meta_gradient(backward: Backward, model: nn.Module, tasks: TaskBatch, cfg: MetaConfig) -> list[Tensor]:
    """The meta-gradient ``backward`` computes at ``model``'s weights, on a private copy of it."""
    model = copy.deepcopy(model)
    model.zero_grad(set_to_none=True)
    backward(model, tasks, cfg)
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
            for p in model.parameters()]


def max_rel_diff(got: list[Tensor], want: list[Tensor]) -> float:
    """max |got - want| / max |want|, over all parameters together.

    Relative to the largest gradient entry rather than entry by entry, because some exact
    meta-gradients are 0 (a conv bias feeding batch norm) and are rounding noise in float32.
    """
    scale = max(w.abs().max().item() for w in want)
    diff = max((g - w).abs().max().item() for g, w in zip(got, want))
    return diff / scale if scale > 0 else diff


def gradient_agreement(backwards: dict[str, Backward], model: nn.Module, tasks: TaskBatch,
                       cfg: MetaConfig, *, rtol: float,
                       dtype: torch.dtype | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """Compare every implementation's meta-gradient with the first one's (mamlcourse's).

    Args:
        dtype: compare in this precision (copies of the model and tasks), or as given (None).
            In float64 correct implementations agree to ~1e-12; in float32 an inner step with
            a large inner_lr and batch norm over a handful of support images can amplify
            rounding differences (another summation order) to ~1e-3.

    Returns:
        rel_diffs: ``max_rel_diff`` of each other implementation.
        refused: why, for each implementation whose difference exceeds ``rtol`` (or is NaN).
    """
    if dtype is not None:
        model = copy.deepcopy(model).to(dtype)
        tasks = TaskBatch(*(t.to(dtype) if t.is_floating_point() else t for t in tasks))
    (reference_name, reference_backward), *others = backwards.items()
    reference = meta_gradient(reference_backward, model, tasks, cfg)
    rel_diffs, refused = {}, {}
    for name, backward in others:
        rel_diffs[name] = max_rel_diff(meta_gradient(backward, model, tasks, cfg), reference)
        if not rel_diffs[name] <= rtol:  # also refuses NaN
            refused[name] = (f"meta-gradient differs from {reference_name}'s by {rel_diffs[name]:.2e} "
                             f"(relative), above --rtol {rtol:g}")
    return rel_diffs, refused


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One implementation with its own copy of the initial model and its own Adam."""

    def __init__(self, backward: Backward, model: nn.Module, cfg: MetaConfig,
                 clock: Callable[[], float] = time.perf_counter):
        self.backward = backward
        self.clock = clock
        self.model = copy.deepcopy(model)
        self.cfg = cfg
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.outer_lr)
        self.times_ms: list[float] = []

    def step(self, tasks: TaskBatch, device: torch.device, record: bool) -> None:
        """One meta-iteration: zero grads, meta-gradient, Adam step; timed when ``record``."""
        _sync(device)
        start = self.clock()
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(self.model, tasks, self.cfg)
        self.optimizer.step()
        _sync(device)
        if record:
            self.times_ms.append(1000 * (self.clock() - start))


def _load_average() -> float | None:
    """The machine's 1-minute load average (None where the OS has none): was it quiet?"""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return (values[0],) * 3
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def run_benchmark(bench: Benchmark, *, device: torch.device, iterations: int, warmup: int,
                  block: int | None = None,
                  vectorize: bool | None = None, peers: tuple[str, ...] = PEERS, rtol: float | None = None,
                  check_dtype: str = "float64",
                  random_images: bool = False, data: str | None = None, clock: str = "wall") -> dict:
    """Check every implementation's meta-gradient against ours, then time them round-robin.

    Round-robin (``block`` iterations of each implementation in turn) spreads the noise of a
    shared machine evenly over the implementations. A block longer than one iteration lets
    each implementation run warm, as in a training loop, instead of finding the caches and
    the allocator as the previous implementation left them: this matters for the
    millisecond-sized sine step, not for the conv configs. ``clock="cpu"`` times with the process's CPU
    time instead of the wall clock: steadier on a machine shared with other work, and
    comparable to wall time with ``--threads 1`` (with more threads it adds theirs up).

    Returns:
        The JSON-ready result (see ``--json``).
    """
    cfg = bench.cfg
    tasks, images = make_tasks(bench, random_images=random_images, data=data)
    tasks = tasks.to(device)
    torch.manual_seed(SEED)
    model = build_model(cfg).to(device)
    vectorize = resolve_vectorize(vectorize, model, device, configured=cfg.vectorize,
                                  task_images=tasks.x_support.shape[1] + tasks.x_query.shape[1])

    backwards: dict[str, Backward] = {"mamlcourse": mamlcourse_backward(vectorize)}
    versions = {"mamlcourse": importlib.metadata.version("mamlcourse") if peer_version("mamlcourse")
                else "source", "torch": torch.__version__}
    not_installed, unusable = [], {}
    for name in peers:
        versions[name] = peer_version(name)
        if versions[name] is None:
            not_installed.append(name)
            continue
        try:
            backwards[name] = PEER_FACTORIES[name]()
        except ImportError as err:
            unusable[name] = f"installed but not importable ({err}): rerun benchmarks/install_peers.sh"

    if rtol is None:
        rtol = DEFAULT_RTOL[check_dtype]
    load_before = _load_average()
    rel_diffs, refused = gradient_agreement(backwards, model, tasks, cfg, rtol=rtol,
                                            dtype=getattr(torch, check_dtype))
    for name in refused:
        del backwards[name]
    refused.update(unusable)

    if clock == "cpu" and device.type == "cuda":
        raise ValueError("--clock cpu does not see GPU time: use --clock wall with --device cuda")
    timer = time.process_time if clock == "cpu" else time.perf_counter
    runners = {name: Runner(fn, model, cfg, timer) for name, fn in backwards.items()}
    block = bench.block if block is None else block
    if block < 1:
        raise ValueError(f"--block must be >= 1, got {block}")
    for start in range(0, warmup + iterations, block):
        for runner in runners.values():
            for i in range(start, min(start + block, warmup + iterations)):
                runner.step(tasks, device, record=i >= warmup)

    medians = {name: _quartiles(r.times_ms)[1] for name, r in runners.items()}
    peer_medians = [ms for name, ms in medians.items() if name != "mamlcourse"]
    fastest_peer = min(peer_medians) if peer_medians else math.nan
    return {
        "config": bench.name,
        "description": bench.description,
        "images": images,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "clock": clock,
        "mamlcourse_path": "vmap" if vectorize else "loop",
        "ms_per_iteration": {name: round(ms, 3) for name, ms in medians.items()},
        "ms_quartiles": {name: [round(q, 3) for q in _quartiles(r.times_ms)] for name, r in runners.items()},
        "speedup_vs_fastest_peer": round(fastest_peer / medians["mamlcourse"], 3) if peer_medians else None,
        "max_rel_grad_diff": {name: float(f"{d:.3e}") for name, d in rel_diffs.items()},
        "grad_check_dtype": check_dtype,
        "rtol": rtol,
        "not_installed": not_installed,
        "refused": refused,
        "load_average": [load_before, _load_average()],
        "iterations": iterations,
        "warmup": warmup,
        "block": block,
        "tasks_per_batch": cfg.tasks_per_batch,
        "num_inner_steps": cfg.num_inner_steps,
        "versions": versions,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


# ---------------------------------------------------------------------------------------
# Output.

def format_table(result: dict) -> str:
    """A side-by-side table: ms per iteration, quartiles, ratio to mamlcourse, gradient check."""
    ours = result["ms_per_iteration"]["mamlcourse"]
    lines = [
        f"{result['config']}: {result['description']}",
        f"device {result['device']}, {result['threads']} threads, {result['clock']} clock, "
        f"images: {result['images']}, "
        f"mamlcourse path: {result['mamlcourse_path']}, median of {result['iterations']} iterations "
        f"after {result['warmup']} warm-up",
        "",
        f"{'implementation':<14} {'ms/iteration':>13} {'quartiles':>21} {'x mamlcourse':>13} "
        f"{'max rel grad diff':>18}",
    ]
    for name, ms in result["ms_per_iteration"].items():
        q1, _, q3 = result["ms_quartiles"][name]
        diff = "reference" if name == "mamlcourse" else f"{result['max_rel_grad_diff'][name]:.1e}"
        lines.append(f"{name:<14} {ms:>13.2f} {f'{q1:.2f} - {q3:.2f}':>21} {ms / ours:>13.2f} {diff:>18}")
    for name, reason in result["refused"].items():
        lines.append(f"{name:<14} {'not timed':>13}   {reason}")
    for name in result["not_installed"]:
        lines.append(f"{name:<14} {'not installed':>13}   (benchmarks/install_peers.sh installs it)")
    if result["speedup_vs_fastest_peer"] is not None:
        lines += ["", f"mamlcourse is {result['speedup_vs_fastest_peer']:.2f}x the speed of the fastest peer"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=list(BENCHMARKS), default="sine")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--iterations", type=int, help="timed iterations per implementation "
                        "(default: per config, 300 for sine, 10-20 for the conv configs)")
    parser.add_argument("--warmup", type=int, help="untimed iterations first (default: per config)")
    parser.add_argument("--block", type=int, help="iterations each implementation runs in its turn "
                        "(default: 30 for sine, 1 for the conv configs)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, "
                        "one per physical core)")
    parser.add_argument("--vectorize", choices=["auto", "vmap", "loop"], default="auto",
                        help="mamlcourse path: maml.default_vectorize's choice (auto), or forced")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"comma-separated peers to compare (default: {','.join(PEERS)}; '' for none)")
    parser.add_argument("--check-dtype", choices=list(DEFAULT_RTOL), default="float64",
                        help="precision of the meta-gradient check (default float64: correct "
                        "implementations agree to rounding, ~1e-12)")
    parser.add_argument("--rtol", type=float,
                        help="largest relative meta-gradient difference a peer may show and be timed "
                        f"(default {DEFAULT_RTOL})")
    parser.add_argument("--random-images", action="store_true",
                        help="paper-* configs: random images of the same shapes instead of Omniglot")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time (default), or this process's CPU time: steadier on a shared "
                        "machine, use it with --threads 1")
    parser.add_argument("--data", help="paper-* configs: folder holding the Omniglot zips "
                        "(default: $MAMLCOURSE_DATA, else the course's download folder)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    peers = tuple(p for p in args.peers.split(",") if p)
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}: choose from {list(PEERS)}")
    args.peers = peers
    for name in ("iterations", "warmup", "threads"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            parser.error(f"--{name} must be {'>= 0' if name == 'warmup' else '>= 1'}, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = BENCHMARKS[args.config]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        result = run_benchmark(
            bench, device=device,
            iterations=args.iterations if args.iterations is not None else bench.iterations,
            warmup=args.warmup if args.warmup is not None else bench.warmup, block=args.block,
            vectorize={"auto": None, "vmap": True, "loop": False}[args.vectorize],
            peers=args.peers, rtol=args.rtol, check_dtype=args.check_dtype,
            random_images=args.random_images, data=args.data, clock=args.clock)
    except (RuntimeError, ValueError) as err:
        print(f"meta_step.py: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
