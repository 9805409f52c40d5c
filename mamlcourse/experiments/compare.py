"""Every algorithm of the family in one run, on the same tasks: sine, Omniglot, and the cost of second order.

Three benchmarks, each returning plain dicts (JSON-ready) that ``format_tables`` prints and
``plot_*`` draw:

* ``run_sine``: 5-shot sine regression, MSE after 0..10 steps on fixed test tasks;
* ``run_omniglot``: 5-way 1-shot Omniglot, accuracy ± 95% CI on fixed test tasks, ms per
  meta-iteration (from the training run itself) and peak memory (``cost.measure``);
* ``run_cost``: time and memory per meta-iteration against the number of inner steps,
  second order, first order and iMAML, for the sine MLP and ConvNet4.

``MODES`` holds the sizes; only sizes differ between quick and full, never the code or the
per-algorithm settings (``SINE_SETTINGS``, ``OMNIGLOT_SETTINGS``).

Example:
    >>> results, models = run_sine(MODES["quick"])
    >>> print(format_tables({"sine": results}))
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from ..algorithms import get_algorithm
from ..algorithms.base import train_algorithm
from ..algorithms.imaml import IMAML
from ..algorithms.maml_plus_plus import multi_step_weights
from ..algorithms.maml_variants import FIRST_ORDER_MAML, MAML, score_maml
from ..algorithms.published import MINIIMAGENET_MAML, OMNIGLOT_5W1S, SINE_5SHOT, sine_reference
from ..config import MetaConfig, OmniglotConfig, SineConfig, omniglot_preset, replace, sine_preset
from ..data.sine import SineTasks
from ..evaluate import confidence_interval
from ..machine import cpu_name
from ..models import build_model
from ..tasks import TaskBatch, fixed_tasks
from ..train import TrainingDiverged
from .cost import inner_step_costs, measure, synthetic_tasks

# Colours: the course palette for MAML, first order, random init; Okabe-Ito for the rest.
COLORS = {"maml": "#0072B2", "fomaml": "#56B4E9", "reptile": "#009E73", "anil": "#E69F00",
          "meta_sgd": "#D55E00", "maml_pp": "#000000", "protonet": "#CC79A7", "hypernet": "#8C6D31",
          "imaml": "#7B3294", "random": "#999999"}


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark is (the only thing quick and full modes change).

    Attributes:
        sine_iterations, sine_tasks_per_batch, sine_test_tasks: sine meta-training and test.
        omniglot_iterations, omniglot_tasks_per_batch, omniglot_test_tasks: the same for Omniglot.
        omniglot_query_per_class: query images per class of a test task (15 in most papers; fewer
            makes each task's accuracy noisier, not biased, and the test much cheaper).
        memory_repeats: meta-iterations timed per memory measurement (after a warm-up).
        cost_steps: inner-step counts of the second-order cost sweep.
        cost_sine_tasks, cost_omniglot_tasks: tasks per meta-batch in the sweep.
    """

    sine_iterations: int
    sine_tasks_per_batch: int
    sine_test_tasks: int
    omniglot_iterations: int
    omniglot_tasks_per_batch: int
    omniglot_test_tasks: int
    omniglot_query_per_class: int
    memory_repeats: int
    cost_steps: tuple[int, ...]
    cost_sine_tasks: int
    cost_omniglot_tasks: int


_PAPER_SINE, _PAPER_5W1S = sine_preset("paper"), omniglot_preset("paper-5w1s")

MODES: dict[str, Sizes] = {
    # Lesson 5 on a CPU (its time: docs/results.md, "Beyond MAML"): rankings are rough, CIs wide.
    "quick": Sizes(sine_iterations=600, sine_tasks_per_batch=10, sine_test_tasks=200,
                   omniglot_iterations=40, omniglot_tasks_per_batch=4, omniglot_test_tasks=60,
                   omniglot_query_per_class=5, memory_repeats=2, cost_steps=(1, 2, 4, 6, 8, 10),
                   cost_sine_tasks=10, cost_omniglot_tasks=2),
    # For a GPU: the paper presets' batch sizes, test tasks and query images, far fewer iterations.
    "full": Sizes(sine_iterations=3000, sine_tasks_per_batch=_PAPER_SINE.tasks_per_batch,
                  sine_test_tasks=_PAPER_SINE.eval_tasks, omniglot_iterations=1000,
                  omniglot_tasks_per_batch=_PAPER_5W1S.tasks_per_batch,
                  omniglot_test_tasks=_PAPER_5W1S.eval_tasks,
                  omniglot_query_per_class=_PAPER_5W1S.eval_k_query, memory_repeats=3,
                  cost_steps=tuple(range(1, 11)), cost_sine_tasks=_PAPER_SINE.tasks_per_batch,
                  cost_omniglot_tasks=8),
}

SINE_ALGORITHMS = ("maml", "fomaml", "reptile", "anil", "meta_sgd", "maml_pp", "hypernet")
# iMAML is measured on request (``run_sine(names=...)``, ``compare_algorithms.py --algorithms``): its
# conjugate-gradient solve makes a sine meta-iteration several times as long as MAML's (``cost.measure``
# times both), too slow for lesson 5's quick mode. The cost sweep always includes it.
OMNIGLOT_ALGORITHMS = ("maml", "fomaml", "reptile", "anil", "meta_sgd", "maml_pp", "protonet")

# Per-algorithm settings on top of the shared config (the same in both modes).
SINE_SETTINGS: dict[str, dict[str, Any]] = {
    "reptile": dict(num_inner_steps=5, inner_lr=0.02),   # Nichol et al.'s sine demo: k = 5, α = 0.02
    "anil": dict(inner_lr=0.1),                          # a linear head needs a larger step than 0.01
    "maml_pp": dict(num_inner_steps=5),                  # the multi-step loss needs several steps
    # λ = 1/α = 100; ten steps of the proximal problem, whose step imaml.proximal_step_size shortens
    # where the support loss is curved (steps of α itself diverged in the full-size sine run).
    "imaml": dict(num_inner_steps=10),
}
OMNIGLOT_SETTINGS: dict[str, dict[str, Any]] = {
    # Nichol et al. take 5 inner steps on more examples than the test's (support + query here).
    "reptile": dict(num_inner_steps=5, inner_lr=0.5, eval_inner_steps=5),
    # Two steps of MAML's α = 2.0 overshoot and stayed at chance in short runs here; 0.5 learns.
    "maml_pp": dict(num_inner_steps=2, inner_lr=0.5, eval_inner_steps=2),
}
# First-order MAML and Meta-SGD keep MAML's settings (α = 2.0, 1 step) on purpose: what the
# comparison isolates is the dropped second-order term, and what learning α adds.

SINE_K_SHOT = 5            # the paper's 5-shot column
SINE_STEPS = 10            # MSE after 0..10 steps
SINE_REPORTED_STEPS = (1, 5, 10)


def sine_config(sizes: Sizes) -> SineConfig:
    """The shared sine settings: the paper's (α = 0.01, Adam 1e-3, MLP 40-40), trained with K = 5."""
    return replace(
        _PAPER_SINE, preset="beyond-maml", k_shot=SINE_K_SHOT,
        num_iterations=sizes.sine_iterations, tasks_per_batch=sizes.sine_tasks_per_batch,
        eval_tasks=sizes.sine_test_tasks, checkpoint_every=max(1, sizes.sine_iterations // 5),
        log_every=max(1, min(100, sizes.sine_iterations // 10)))


def omniglot_config(sizes: Sizes) -> OmniglotConfig:
    """The shared Omniglot settings: the course's 5-way 1-shot (α = 2.0 on a mean loss, 1 step)."""
    return replace(
        omniglot_preset("quick-5w1s"), preset="beyond-maml", num_iterations=sizes.omniglot_iterations,
        tasks_per_batch=sizes.omniglot_tasks_per_batch, eval_tasks=sizes.omniglot_test_tasks,
        eval_k_query=sizes.omniglot_query_per_class, checkpoint_every=max(1, sizes.omniglot_iterations // 5),
        log_every=max(1, min(50, sizes.omniglot_iterations // 10)), validate_every=0)


def _settings(name: str, cfg: MetaConfig, table: dict[str, dict[str, Any]]) -> MetaConfig:
    return replace(cfg, **table.get(name, {}))


def _summary(per_task: torch.Tensor) -> tuple[list[float], list[float]]:
    mean, ci = confidence_interval(per_task)
    return [float(v) for v in mean], [float(v) for v in ci]


def _folder(checkpoint_dir: str | os.PathLike | None, name: str) -> Path | None:
    return None if checkpoint_dir is None else Path(checkpoint_dir) / name


# ---------------------------------------------------------------------------------------
# Sine

def run_sine(sizes: Sizes, *, names: Sequence[str] = SINE_ALGORITHMS, device: torch.device | str = "cpu",
             checkpoint_dir: str | os.PathLike | None = None, progress: bool = True,
             equal_time_first_order: bool = True) -> tuple[dict[str, Any], dict[str, nn.Module]]:
    """Meta-train each algorithm on sine waves, score all on the same fixed 5-shot test tasks.

    Returns:
        results: ``{"config", "k_shot", "num_test_tasks", "steps", "algorithms": {name:
            {"label", "settings", "iterations", "ms_per_iteration", "train_seconds", "mse",
            "ci95"}}, "random_init": {...}, "paper": {...}}``; ``mse``/``ci95`` have one entry
            per step 0..10 (one entry, the adapted prediction, for the hypernetwork); an
            algorithm whose training diverged has ``"diverged"`` (the message) instead.
            With ``equal_time_first_order`` (and both MAML and first-order MAML in ``names``),
            ``"first_order_equal_time"`` holds first-order MAML trained for MAML's wall time.
        models: the trained models by name.
    """
    cfg = sine_config(sizes)
    test_tasks = fixed_tasks(SineTasks.from_config(cfg), sizes.sine_test_tasks, k_shot=SINE_K_SHOT,
                             k_query=cfg.eval_query_points).to(device)
    torch.manual_seed(cfg.seed)
    random_init = build_model(cfg).to(device)
    mse, ci = _summary(score_maml(random_init, test_tasks, cfg, SINE_STEPS))
    results: dict[str, Any] = {
        "config": cfg.to_dict(), "k_shot": SINE_K_SHOT, "num_test_tasks": sizes.sine_test_tasks,
        "steps": list(range(SINE_STEPS + 1)), "algorithms": {},
        "random_init": {"label": "random init", "mse": mse, "ci95": ci},
        "paper": {"maml": {str(k): v for k, v in sine_reference("maml").items()},
                  "source": SINE_5SHOT["maml"][1].source},
    }
    models = {}
    for name in names:
        algo_cfg = _settings(name, cfg, SINE_SETTINGS)
        entry, model = _train(name, SineTasks.from_config(algo_cfg), algo_cfg, SINE_SETTINGS.get(name, {}),
                              checkpoint_dir=_folder(checkpoint_dir, "sine"), device=device,
                              progress=progress)
        if model is not None:
            curve = get_algorithm(name).score(model, test_tasks, algo_cfg, SINE_STEPS)
            entry["mse"], entry["ci95"] = _summary(curve)
            models[name] = model
        results["algorithms"][name] = entry
    if equal_time_first_order and _both_trained(results):
        def score(model: nn.Module) -> tuple[list[float], list[float]]:
            return _summary(get_algorithm("fomaml").score(model, test_tasks, cfg, SINE_STEPS))

        results["first_order_equal_time"] = _first_order_equal_time(
            results, cfg, SineTasks.from_config(cfg), score, ("mse", "ci95"), device=device,
            progress=progress)
    return results, models


def _train(name: str, sampler, cfg, settings: dict[str, Any], *, checkpoint_dir, device, progress
           ) -> tuple[dict[str, Any], nn.Module | None]:
    """Train one algorithm; a run whose meta-loss turns NaN is recorded as diverged, not raised."""
    algo = get_algorithm(name)
    entry: dict[str, Any] = {"label": algo.label, "reference": algo.reference, "settings": settings,
                             "adapts_by_gradient": algo.adapts_by_gradient}
    try:
        model, history = train_algorithm(algo, sampler, cfg, checkpoint_dir=checkpoint_dir, device=device,
                                         progress=progress)
    except TrainingDiverged as err:
        return {**entry, "diverged": str(err)}, None
    # The history's training time, summed over the calls of a run resumed from its checkpoint.
    entry.update(iterations=history.step[-1], ms_per_iteration=history.ms_per_iteration,
                 train_seconds=history.wall_seconds)
    return entry, model


def _both_trained(results: dict[str, Any]) -> bool:
    algos = results["algorithms"]
    return all(n in algos and "diverged" not in algos[n] for n in ("maml", "fomaml"))


def _first_order_equal_time(results: dict[str, Any], cfg, sampler, score, keys: tuple[str, str], *,
                            device, progress) -> dict[str, Any]:
    """First-order MAML given MAML's wall-clock budget: N · ms(MAML) / ms(first order) iterations."""
    maml, fomaml = results["algorithms"]["maml"], results["algorithms"]["fomaml"]
    iterations = max(1, round(maml["iterations"] * maml["ms_per_iteration"] / fomaml["ms_per_iteration"]))
    equal_cfg = dataclasses.replace(cfg, num_iterations=iterations,
                                    checkpoint_every=max(1, iterations // 5))
    entry, model = _train("fomaml", sampler, equal_cfg, {"num_iterations": iterations}, checkpoint_dir=None,
                          device=device, progress=progress)
    entry["label"] = "first-order MAML, MAML's time"
    if model is not None:
        entry[keys[0]], entry[keys[1]] = score(model)
    return entry


def sine_headline(entry: dict[str, Any], steps: int) -> float:
    """MSE after ``steps`` steps (the only value for algorithms that adapt without steps)."""
    return entry["mse"][steps] if entry.get("adapts_by_gradient", True) else entry["mse"][0]


# ---------------------------------------------------------------------------------------
# Omniglot

def run_omniglot(sizes: Sizes, *, names: Sequence[str] = OMNIGLOT_ALGORITHMS,
                 device: torch.device | str = "cpu", data_root: str | os.PathLike | None = None,
                 checkpoint_dir: str | os.PathLike | None = None, progress: bool = True,
                 equal_time_first_order: bool = True) -> tuple[dict[str, Any], dict[str, nn.Module]]:
    """Meta-train each algorithm on 5-way 1-shot Omniglot; accuracy, time and memory, same test tasks.

    Accuracy is scored after the algorithm's ``eval_inner_steps`` on ``sizes.omniglot_test_tasks``
    fixed test tasks with 15 query images per class. Time per meta-iteration comes from
    the training run; peak memory from ``cost.measure`` on a batch of the same shape.

    Returns:
        results: ``{"config", "num_test_tasks", "algorithms": {name: {"label", "settings",
            "iterations", "ms_per_iteration", "train_seconds", "peak_mb", "memory_method",
            "accuracy", "ci95", "eval_inner_steps", "curve"}}, "random_init", "published"}``
            (accuracies in percent); ``"diverged"`` and ``"first_order_equal_time"`` as in
            ``run_sine``.
        models: the trained models by name.
    """
    from ..data.omniglot import OmniglotTasks
    from ..data.omniglot_images import load_images

    cfg = omniglot_config(sizes)
    images = load_images(data_root, image_size=cfg.image_size, progress=progress)
    train_sampler = OmniglotTasks.from_config(cfg, "train", omniglot=images, device=device)
    test_tasks = fixed_tasks(OmniglotTasks.from_config(cfg, "test", omniglot=images, device=device),
                             sizes.omniglot_test_tasks)
    torch.manual_seed(cfg.seed)
    random_init = build_model(cfg).to(device)
    curve = score_maml(random_init, test_tasks, cfg, cfg.eval_inner_steps)
    acc, ci = _summary(100 * curve)
    results: dict[str, Any] = {
        "config": cfg.to_dict(), "num_test_tasks": sizes.omniglot_test_tasks,
        "query_per_class": cfg.eval_k_query, "algorithms": {},
        "random_init": {"label": "random init", "accuracy": acc[-1], "ci95": ci[-1],
                        "eval_inner_steps": cfg.eval_inner_steps},
        "published": {name: dataclasses.asdict(p) for name, p in OMNIGLOT_5W1S.items()},
        "miniimagenet_maml": {k: dataclasses.asdict(p) for k, p in MINIIMAGENET_MAML.items()},
    }
    models = {}
    for name in names:
        algo = get_algorithm(name)
        algo_cfg = _settings(name, cfg, OMNIGLOT_SETTINGS)
        entry, model = _train(name, train_sampler, algo_cfg, OMNIGLOT_SETTINGS.get(name, {}),
                              checkpoint_dir=_folder(checkpoint_dir, "omniglot"), device=device,
                              progress=progress)
        if model is not None:
            steps = algo_cfg.eval_inner_steps if algo.adapts_by_gradient else 0
            acc, ci = _summary(100 * algo.score(model, test_tasks, algo_cfg, steps))
            cost = measure(algo, algo_cfg, synthetic_tasks(algo_cfg, algo_cfg.tasks_per_batch),
                           repeats=sizes.memory_repeats, device=device)
            entry.update(peak_mb=cost.peak_mb, memory_method=cost.memory_method, eval_inner_steps=steps,
                         accuracy=acc[-1], ci95=ci[-1], curve=acc)
            models[name] = model
        results["algorithms"][name] = entry
    if equal_time_first_order and _both_trained(results):
        def score(model: nn.Module) -> tuple[float, float]:
            curve = get_algorithm("fomaml").score(model, test_tasks, cfg, cfg.eval_inner_steps)
            acc, ci = _summary(100 * curve)
            return acc[-1], ci[-1]

        results["first_order_equal_time"] = _first_order_equal_time(
            results, cfg, train_sampler, score, ("accuracy", "ci95"), device=device, progress=progress)
    return results, models


# ---------------------------------------------------------------------------------------
# The cost of second order

COST_ALGORITHMS = (MAML, FIRST_ORDER_MAML, IMAML)


def run_cost(sizes: Sizes, *, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Time and peak memory per meta-iteration for 1..N inner steps: second order, first order, iMAML.

    Measured on the sine MLP (``sizes.cost_sine_tasks`` tasks of K = 5) and on ConvNet4
    (``sizes.cost_omniglot_tasks`` 5-way 1-shot tasks, 1 query image per class). The MLP's
    iterations are far cheaper, so it is timed over 5x the repeats, to damp noise.
    """
    sine_cfg = sine_config(sizes)
    conv_cfg = omniglot_config(sizes)
    return {
        "sine_mlp": {"tasks_per_batch": sizes.cost_sine_tasks,
                     "rows": inner_step_costs(sine_cfg, synthetic_tasks(sine_cfg, sizes.cost_sine_tasks),
                                              steps=sizes.cost_steps, repeats=5 * sizes.memory_repeats,
                                              algorithms=COST_ALGORITHMS, device=device)},
        "convnet4": {"tasks_per_batch": sizes.cost_omniglot_tasks,
                     "rows": inner_step_costs(conv_cfg, synthetic_tasks(conv_cfg, sizes.cost_omniglot_tasks),
                                              steps=sizes.cost_steps, repeats=sizes.memory_repeats,
                                              algorithms=COST_ALGORITHMS, device=device)},
    }


# ---------------------------------------------------------------------------------------
# Provenance, tables, plots

def provenance(mode: str, command: str, device: torch.device | str) -> dict[str, Any]:
    """Where and how results were made: command, date, machine, versions, git commit."""
    device = torch.device(device)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores ({cpu_name()}), "
               f"{torch.get_num_threads()} torch threads")
    if device.type == "cuda":
        machine += f", {torch.cuda.get_device_name(device)}"
    return {"command": command, "mode": mode, "date": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="seconds"), "machine": machine, "platform": platform.platform(),
            "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "git_commit": commit}


def _fmt(mean: float, ci: float | None, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "diverged"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}" if ci is not None else f"{mean:.{digits}f}"


def sine_table(sine: dict[str, Any]) -> str:
    """Text table: 5-shot MSE ± 95% CI after 1, 5, 10 steps, per algorithm, with the paper's MAML row."""
    head = f"{'algorithm':<30}" + "".join(f"{f'{s} step' + ('s' if s > 1 else ''):>18}"
                                          for s in SINE_REPORTED_STEPS) + f"{'ms/iter':>9}{'iters':>7}"
    lines = [f"Sine, {sine['k_shot']}-shot: MSE ± 95% CI on {sine['num_test_tasks']} fixed test tasks",
             head, "-" * len(head)]
    entries = [sine["random_init"], *sine["algorithms"].values()]
    if "first_order_equal_time" in sine:
        entries.append(sine["first_order_equal_time"])
    for entry in entries:
        if "diverged" in entry:
            cells = f"{'diverged in training':>54}"
        elif entry.get("adapts_by_gradient", True):
            cells = "".join(f"{_fmt(entry['mse'][s], entry['ci95'][s]):>18}" for s in SINE_REPORTED_STEPS)
        else:
            cells = f"{_fmt(entry['mse'][0], entry['ci95'][0]) + ' (no steps)':>54}"
        extra = f"{entry['ms_per_iteration']:>9.1f}{entry['iterations']:>7}" if "iterations" in entry else ""
        lines.append(f"{entry['label']:<30}{cells}{extra}")
    paper = sine["paper"]["maml"]
    lines.append(f"{'MAML (paper)':<30}" + "".join(f"{paper[str(s)]:>18.2f}" for s in SINE_REPORTED_STEPS)
                 + f"   [{sine['paper']['source']}]")
    return "\n".join(lines)


def omniglot_table(omniglot: dict[str, Any]) -> str:
    """Text table: accuracy ± 95% CI, ms per meta-iteration, peak MB, and the published number."""
    head = (f"{'algorithm':<30}{'ours (%)':>14}{'steps':>6}{'ms/iter':>9}{'peak MB':>9}{'iters':>7}"
            f"{'published (%)':>16}  source")
    lines = [f"Omniglot 5-way 1-shot: accuracy ± 95% CI on {omniglot['num_test_tasks']} fixed test tasks "
             f"({omniglot['query_per_class']} query images per class)", head, "-" * len(head)]
    rnd = omniglot["random_init"]
    lines.append(f"{'random init':<30}{_fmt(rnd['accuracy'], rnd['ci95'], 1):>14}"
                 f"{rnd['eval_inner_steps']:>6}")
    entries = dict(omniglot["algorithms"])
    if "first_order_equal_time" in omniglot:
        entries["fomaml_equal_time"] = omniglot["first_order_equal_time"]
    for name, e in entries.items():
        pub = omniglot["published"].get(name)
        pub_text = (f"{pub['accuracy']:.2f}" + (f" ± {pub['ci95']:.2f}" if pub["ci95"] is not None else "")
                    if pub else "-")
        if "diverged" in e:
            ours = f"{'diverged in training':>29}{'':>9}{'':>7}"
        else:
            steps = e.get("eval_inner_steps", omniglot["random_init"]["eval_inner_steps"])
            peak = f"{e['peak_mb']:>9.0f}" if "peak_mb" in e else f"{'':>9}"
            ours = (f"{_fmt(e['accuracy'], e['ci95'], 1):>14}{steps:>6}{e['ms_per_iteration']:>9.0f}{peak}"
                    f"{e['iterations']:>7}")
        lines.append(f"{e['label']:<30}{ours}{pub_text:>16}  {pub['source'] if pub else ''}")
    return "\n".join(lines)


def cost_table(cost: dict[str, Any]) -> str:
    """Text table: ms and peak MB per meta-iteration against inner steps, per algorithm measured."""
    lines = []
    for model_name, block in cost.items():
        rows = block["rows"]
        steps = sorted({r["num_inner_steps"] for r in rows})
        lines.append(f"{model_name}, {block['tasks_per_batch']} tasks per meta-batch "
                     f"(memory: {rows[0]['memory_method']})")
        head = f"{'inner steps':<26}" + "".join(f"{s:>8}" for s in steps)
        lines += [head, "-" * len(head)]
        for algo, label in _cost_lines(rows):
            by_step = {r["num_inner_steps"]: r for r in rows if r["algorithm"] == algo}
            lines.append(f"{label + ' ms':<26}" + "".join(f"{by_step[s]['ms_per_iteration']:>8.0f}"
                                                        for s in steps))
            lines.append(f"{label + ' peak MB':<26}" + "".join(f"{by_step[s]['peak_mb']:>8.1f}"
                                                             for s in steps))
        lines.append("")
    return "\n".join(lines).rstrip()


COST_LABELS = {"maml": "second order", "fomaml": "first order", "imaml": "iMAML"}


def _cost_lines(rows: list[dict]) -> list[tuple[str, str]]:
    """(algorithm, label) for each algorithm in ``rows``, in the order measured."""
    names = list(dict.fromkeys(r["algorithm"] for r in rows))
    return [(name, COST_LABELS.get(name, name)) for name in names]


def first_order_table(sine: dict[str, Any], omniglot: dict[str, Any] | None = None) -> str:
    """What first order gives up: MAML against first-order MAML at MAML's iterations and at MAML's time.

    Sine: MSE after 1 step (the trained number); Omniglot: accuracy after the trained steps.
    """
    head = f"{'':<34}{'iters':>7}{'ms/iter':>9}{'sine MSE, 1 step':>20}"
    if omniglot:
        head += f"{'iters':>7}{'ms/iter':>9}{'Omniglot acc. (%)':>20}"
    lines = ["What first order gives up (same settings, same test tasks)", head, "-" * len(head)]
    rows = [("MAML (second order)", "maml"), ("first-order, MAML's iterations", "fomaml"),
            ("first-order, MAML's wall time", "first_order_equal_time")]
    for label, key in rows:
        line = f"{label:<34}"
        for block, metric, digits in ((sine, "mse", 3), (omniglot, "accuracy", 1)):
            if not block:
                continue
            e = block[key] if key == "first_order_equal_time" else block["algorithms"][key]
            value = (e[metric][1], e["ci95"][1]) if metric == "mse" else (e[metric], e["ci95"])
            line += f"{e['iterations']:>7}{e['ms_per_iteration']:>9.1f}{_fmt(*value, digits):>20}"
        lines.append(line)
    return "\n".join(lines)


def load_results(path: str | os.PathLike) -> dict[str, Any] | None:
    """Results saved by ``benchmarks/compare_algorithms.py`` (None when the file is absent)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def format_tables(results: dict[str, Any]) -> str:
    """Every table present in ``results``, with the provenance line on top."""
    parts = []
    if "provenance" in results:
        p = results["provenance"]
        parts.append(f"[{p['mode']} mode, {p['date']}, {p['device']}, {p['machine']}, torch {p['torch']}]\n"
                     f"$ {p['command']}")
    for key, table in (("sine", sine_table), ("omniglot", omniglot_table), ("cost", cost_table)):
        if key in results:
            parts.append(table(results[key]))
    return "\n\n".join(parts)


def plot_sine(sine: dict[str, Any], *, title: str = "") -> Figure:
    """5-shot MSE (log scale) after 0..10 steps, one line per algorithm, the paper's MAML as stars.

    A curve that leaves the plot (more than 3x the random initialisation's worst MSE, or not
    finite) stops there with an arrow: it diverges.
    """
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    steps = sine["steps"]
    ceiling = 3 * max(sine["random_init"]["mse"])
    entries = {"random": sine["random_init"], **sine["algorithms"]}
    for name, e in entries.items():
        color = COLORS.get(name, "#444444")
        if "diverged" in e:
            continue
        if not e.get("adapts_by_gradient", True):
            ax.axhline(e["mse"][0], color=color, ls=":", lw=2, label=f"{e['label']} (one forward pass)")
            continue
        mean, ci = torch.tensor(e["mse"]), torch.tensor(e["ci95"])
        ok = torch.isfinite(mean) & (mean < ceiling)
        shown = int(ok.long().cumprod(0).sum())  # up to the first step that leaves the plot
        xs = steps[:shown]
        ax.plot(xs, mean[:shown], marker="o", ms=3, color=color, label=e["label"],
                ls="--" if name == "random" else "-")
        ax.fill_between(xs, (mean - ci)[:shown].clamp_min(1e-3), (mean + ci)[:shown], color=color,
                        alpha=0.12)
        if shown < len(steps):
            ax.annotate("diverges", (xs[-1], float(mean[shown - 1])), xytext=(xs[-1] + 0.6, ceiling / 1.6),
                        color=color, fontsize=8, arrowprops=dict(arrowstyle="<-", color=color))
    paper = sine["paper"]["maml"]
    ax.plot([int(k) for k in paper], list(paper.values()), "*", ms=12, color=COLORS["maml"],
            markeredgecolor="white", label="MAML, paper")
    ax.set(yscale="log", ylim=(0.2, ceiling), xlabel="inner gradient steps at test",
           ylabel=f"MSE, {sine['k_shot']}-shot (log scale)",
           title=title or f"Sine regression on {sine['num_test_tasks']} fixed test tasks")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8,
               frameon=False)
    ax.grid(alpha=0.3, which="both")
    return fig


def plot_omniglot(omniglot: dict[str, Any], *, title: str = "") -> Figure:
    """Accuracy ± 95% CI per algorithm beside the published number, and ms per meta-iteration."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_acc, ax_ms = fig.subplots(1, 2, width_ratios=[3, 2])
    names = [n for n, e in omniglot["algorithms"].items() if "diverged" not in e]
    entries = [omniglot["algorithms"][n] for n in names]
    xs = torch.arange(len(names), dtype=torch.float)
    ax_acc.bar(xs - 0.2, [e["accuracy"] for e in entries], 0.4, yerr=[e["ci95"] for e in entries],
               color=[COLORS.get(n, "#444444") for n in names], capsize=3, label="ours")
    published = [omniglot["published"].get(n) for n in names]
    ax_acc.bar([x + 0.2 for x, p in zip(xs.tolist(), published) if p],
               [p["accuracy"] for p in published if p], 0.4, color="white",
               edgecolor=[COLORS.get(n, "#444444") for n, p in zip(names, published) if p], hatch="//",
               label="published")
    ax_acc.axhline(omniglot["random_init"]["accuracy"], color=COLORS["random"], ls="--", label="random init")
    ax_acc.axhline(20, color="black", lw=0.8, ls=":", label="chance (20%)")
    for x, p in zip(xs.tolist(), published):
        if not p:
            ax_acc.annotate("not\nreported", (x + 0.2, 2), ha="center", fontsize=7, color="#666666")
    ax_acc.set(xticks=xs.tolist(), ylim=(0, 100), ylabel="test accuracy (%)",
               title=title or f"Omniglot 5-way 1-shot, {omniglot['num_test_tasks']} test tasks")
    ax_acc.set_xticklabels([e["label"] for e in entries], rotation=30, ha="right")
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8,
               frameon=False)
    ax_ms.barh(xs, [e["ms_per_iteration"] for e in entries], color=[COLORS.get(n, "#444444") for n in names])
    ax_ms.set(yticks=xs.tolist(), xlabel="ms per meta-iteration (training)",
              title="time per meta-iteration, peak memory")
    ax_ms.set_yticklabels([e["label"] for e in entries])
    ax_ms.invert_yaxis()
    for x, e in zip(xs.tolist(), entries):
        ax_ms.annotate(f" {e['peak_mb']:.0f} MB", (e["ms_per_iteration"], x), va="center", fontsize=8)
    ax_ms.margins(x=0.3)
    return fig


COST_MODELS = {"sine_mlp": "sine MLP 40-40 (K = 5)", "convnet4": "ConvNet4 (5-way 1-shot)"}


def plot_cost(cost: dict[str, Any]) -> Figure:
    """ms and peak MB per meta-iteration against inner steps: second order grows, the others barely."""
    fig = Figure(figsize=(10, 6.5), layout="constrained")
    axes = fig.subplots(2, len(cost), squeeze=False)
    for col, (model_name, block) in enumerate(cost.items()):
        for algo, label in _cost_lines(block["rows"]):
            color = COLORS.get(algo, "#444444")
            rows = [r for r in block["rows"] if r["algorithm"] == algo]
            steps = [r["num_inner_steps"] for r in rows]
            axes[0, col].plot(steps, [r["ms_per_iteration"] for r in rows], "-o", color=color, label=label)
            axes[1, col].plot(steps, [r["peak_mb"] for r in rows], "-o", color=color, label=label)
        axes[0, col].set(title=f"{COST_MODELS.get(model_name, model_name)}, {block['tasks_per_batch']} tasks "
                               "per meta-batch",
                         ylabel="ms per meta-iteration")
        axes[1, col].set(xlabel="inner steps per meta-iteration", ylabel="peak memory of an iteration (MB)")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=8)
    return fig


def plot_multi_step_weights(num_inner_steps: int, anneal_iterations: int) -> Figure:
    """MAML++'s multi-step loss weights v_1..v_N over meta-iterations (``multi_step_weights``)."""
    iterations = torch.arange(0, int(1.25 * anneal_iterations) + 1)
    schedule = torch.stack([multi_step_weights(int(i), num_inner_steps, anneal_iterations)
                            for i in iterations])
    fig = Figure(figsize=(6.5, 3.2), layout="constrained")
    ax = fig.subplots()
    n = num_inner_steps
    ax.plot(iterations, schedule[:, :-1], color=COLORS["random"], lw=1.5)  # equal: one line on screen
    ax.plot([], [], color=COLORS["random"], lw=1.5, label=f"v_1 ... v_{n - 1} (earlier steps, equal)")
    ax.plot(iterations, schedule[:, -1], color=COLORS["maml_pp"], lw=2, label=f"v_{n} (last step)")
    ax.axvline(anneal_iterations, color="black", ls=":", lw=0.8)
    ax.annotate(" only the last step counts", (anneal_iterations, 0.5), fontsize=8)
    ax.set(xlabel="meta-iteration", ylabel="weight of step s's query loss", ylim=(-0.02, 1.02),
           title=f"MAML++ multi-step loss: N = {num_inner_steps}, annealed over {anneal_iterations} "
                 "iterations")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def plot_sine_predictions(models: dict[str, nn.Module], tasks: TaskBatch, cfg: SineConfig, *,
                          maml_steps: tuple[int, int] = (1, 10), num_tasks: int = 3) -> Figure:
    """A few test tasks: the true wave, the support points, MAML after some steps, the hypernetwork.

    Args:
        models: needs ``"maml"`` and ``"hypernet"`` (as ``run_sine`` returns them).
        tasks: the test tasks (their support sets are what both models adapt on).
        cfg: α and the x range.
    """
    from ..maml import adaptation_trajectory, functional_forward, get_params, loss_function

    maml, hypernet = models["maml"], models["hypernet"]
    device = next(maml.parameters()).device
    x = torch.linspace(*cfg.x_range, 200, device=device)[:, None]
    fig = Figure(figsize=(4 * num_tasks, 3.6), layout="constrained")
    axes = fig.subplots(1, num_tasks, sharey=True, squeeze=False)[0]
    for i, ax in enumerate(axes):
        x_s, y_s, x_q, y_q = (t.to(device) for t in tasks[i])
        path = adaptation_trajectory(maml, get_params(maml), x_s, y_s, loss_fn=loss_function(cfg.loss),
                                     inner_lr=cfg.inner_lr, num_inner_steps=max(maml_steps))
        order = x_q[:, 0].argsort()  # the query points cover the x range: they draw the true wave
        ax.plot(x_q[order, 0].cpu(), y_q[order, 0].cpu(), color="black", lw=1.4, label="true wave")
        for k, style in zip(maml_steps, (":", "-")):
            with torch.no_grad():
                y = functional_forward(maml, path[k], x)
            ax.plot(x.cpu(), y.cpu(), style, color=COLORS["maml"], lw=2,
                    label=f"MAML, {k} step{'s' * (k > 1)}")
        with torch.no_grad():
            y = hypernet(x_s, y_s, x)
        ax.plot(x.cpu(), y.cpu(), color=COLORS["hypernet"], lw=2, label="hypernetwork (no steps)")
        ax.scatter(x_s.cpu(), y_s.cpu(), s=45, zorder=3, color="#E69F00", edgecolors="black",
                   label=f"support ({len(x_s)} points)")
        ax.set(xlabel="x", title=f"test task {i + 1}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("y")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=5, fontsize=8,
               frameon=False)
    return fig


def plot_where_maml_stops(omniglot: dict[str, Any]) -> Figure:
    """MAML's published accuracy on Omniglot and MiniImagenet (5-way), beside chance."""
    fig = Figure(figsize=(6, 3.4), layout="constrained")
    ax = fig.subplots()
    mini = omniglot["miniimagenet_maml"]
    omni = omniglot["published"]["maml"]
    labels = ["Omniglot\n1-shot", "MiniImagenet\n1-shot", "MiniImagenet\n5-shot"]
    values = [omni["accuracy"], mini["1-shot"]["accuracy"], mini["5-shot"]["accuracy"]]
    errors = [omni["ci95"], mini["1-shot"]["ci95"], mini["5-shot"]["ci95"]]
    bars = ax.bar(labels, values, yerr=errors, capsize=4, color=COLORS["maml"])
    ax.bar_label(bars, [f"{v:.1f}%" for v in values], label_type="center", color="white")
    ax.axhline(20, color="black", ls=":", lw=0.8, label="chance (5-way)")
    ax.set(ylim=(0, 100), ylabel="test accuracy (%)", title="MAML, 5-way, published (Finn et al. 2017)")
    ax.legend(fontsize=8)
    return fig


__all__ = ["Sizes", "MODES", "SINE_ALGORITHMS", "OMNIGLOT_ALGORITHMS", "SINE_SETTINGS", "OMNIGLOT_SETTINGS",
           "COLORS", "sine_config", "omniglot_config", "run_sine", "run_omniglot", "run_cost", "provenance",
           "sine_table", "omniglot_table", "cost_table", "format_tables", "plot_sine", "plot_omniglot",
           "plot_cost", "plot_where_maml_stops", "sine_headline", "first_order_table", "load_results",
           "plot_multi_step_weights", "plot_sine_predictions"]
