"""Omniglot N-way K-shot MAML end to end: train with validation, score 600 test tasks, Lake's runs.

``table1`` reads the course's runs of the paper's four presets (``trained/omniglot-<columns>``)
and sets each beside Table 1 as it stands: final, partial or not run.

``train_omniglot`` meta-trains ConvNet4 on the training split of ``cfg.split`` (validating
on held-out characters every ``cfg.validate_every`` iterations), checkpoints into the run
folder (a second call resumes), scores ``cfg.eval_tasks`` fixed test tasks after
0..``cfg.eval_max_steps`` inner steps and writes ``results.json`` there. ``eval_omniglot``
re-scores a run folder and writes its ``results.json`` elsewhere, leaving the run as it
was. The headline accuracy is the one after ``cfg.eval_inner_steps`` steps (3 for the
paper's 5-way, 5 for 20-way).

Batch norm uses each task's own batch statistics at test, as the original code: a query
image's prediction depends on the other query images of its task (transductive).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..algorithms.published import LAKE_RUNS_ERROR, OMNIGLOT_MAML
from ..checkpoint import load_model
from ..config import OmniglotConfig, omniglot_preset
from ..data.omniglot import SPLITS, OmniglotTasks, lake_runs, load_images
from ..evaluate import EvalResult, adaptation_curve, evaluate
from ..maml import get_params
from ..models import ConvNet4, build_model
from ..tasks import VALIDATION_SEED, TaskBatch, fixed_tasks
from ..train import History, meta_train
from .results_json import write_json

# The paper's Table 1 (accuracy %, 95% CI over 600 test tasks) for each paper preset, and Lake et al.'s
# error rates (%) on their 20 one-shot runs: read from ``algorithms.published``.
PAPER_TABLE1 = {f"paper-{columns}": (p.accuracy, p.ci95) for columns, p in OMNIGLOT_MAML.items()}
LAKE_HUMAN_ERROR, LAKE_BPL_ERROR = LAKE_RUNS_ERROR["people"].accuracy, LAKE_RUNS_ERROR["bpl"].accuracy


def omniglot_samplers(cfg: OmniglotConfig, data_root: str | os.PathLike | None,
                      device: torch.device | str, *, progress: bool = True) -> dict[str, OmniglotTasks]:
    """The train, validation and test task samplers of ``cfg.split``, from one load of the images."""
    images = load_images(data_root, image_size=cfg.image_size, progress=progress)
    names = [s for s in SPLITS if s != "validation" or cfg.validation_characters]
    return {s: OmniglotTasks.from_config(cfg, s, omniglot=images, device=device) for s in names}


def train_omniglot(cfg: OmniglotConfig, out: str | os.PathLike, *, device: torch.device,
                   data_root: str | os.PathLike | None = None, progress: bool = True,
                   cuda_graph: bool = False, deadline: float | None = None) -> dict[str, Any]:
    """Train (or resume) in ``out``, then score the test tasks and write ``out/results.json``.

    ``deadline`` (a ``time.monotonic()`` value) stops training at the first iteration past it,
    saved, with ``train.StoppedAtTimeLimit``.
    """
    samplers = omniglot_samplers(cfg, data_root, device, progress=progress)
    validate, validate_every = None, 0
    if "validation" in samplers and cfg.validate_every:
        validation = fixed_tasks(samplers["validation"], cfg.validation_tasks, seed=VALIDATION_SEED)

        def validate(model: nn.Module) -> float:
            result = evaluate(model, validation, cfg, num_steps=cfg.eval_inner_steps)
            return float(result.mean[-1])

        validate_every = cfg.validate_every
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    history = meta_train(model, samplers["train"], cfg, checkpoint_dir=out, device=device,
                         progress=progress, validate=validate, validate_every=validate_every,
                         cuda_graph=cuda_graph, deadline=deadline)
    return score_run(model, cfg, Path(out) / "results.json", history, samplers["test"])


def eval_omniglot(out: str | os.PathLike, *, device: torch.device, results_path: str | os.PathLike,
                  data_root: str | os.PathLike | None = None, num_tasks: int | None = None,
                  inner_steps: int | None = None, lake_runs: bool = False,
                  progress: bool = True) -> dict[str, Any]:
    """Re-score a trained run folder into ``results_path``; ``lake_runs`` adds Lake et al.'s 20 runs."""
    model, cfg, state = load_model(out, device=device)
    changes = {"eval_tasks": num_tasks, "eval_inner_steps": inner_steps}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    if cfg.eval_inner_steps > cfg.eval_max_steps:
        cfg = dataclasses.replace(cfg, eval_max_steps=cfg.eval_inner_steps)
    images = load_images(data_root, image_size=cfg.image_size, progress=progress)
    test = OmniglotTasks.from_config(cfg, "test", omniglot=images, device=device)
    history = History.from_dict(state["history"], steps=int(state["step"]), device=state.get("device"))
    return score_run(model, cfg, Path(results_path), history, test,
                     lake_root=data_root if lake_runs else None, lake=lake_runs)


def widen_head(model: ConvNet4, cfg: OmniglotConfig, n_way: int) -> ConvNet4:
    """A copy of ``model`` with an ``n_way`` head made by repeating the mean of its class rows.

    MAML shuffles labels in every task, so its head rows are interchangeable; their mean
    repeated n_way times is a symmetric start that the inner steps then tell apart (the
    idea of Ye & Chao's UnicornMAML, 2022). This lets a 5-way model take 20-way tasks.
    """
    wide = build_model(dataclasses.replace(cfg, n_way=n_way))
    wide.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head.")},
                         strict=False)
    with torch.no_grad():
        wide.head.weight.copy_(model.head.weight.mean(0, keepdim=True).expand(n_way, -1))
        wide.head.bias.copy_(model.head.bias.mean().expand(n_way))
    return wide.to(model.head.weight.device)


def score_lake_runs(model: ConvNet4, cfg: OmniglotConfig, root: str | os.PathLike | None) -> dict[str, Any]:
    """Error rate (%) on Lake et al.'s 20 runs (20-way 1-shot within an alphabet) after 0..k steps."""
    device = model.head.weight.device
    runs = TaskBatch.stack(lake_runs(root, image_size=cfg.image_size, device=device))
    scored = model if model.head.out_features == 20 else widen_head(model, cfg, 20)
    curve = adaptation_curve(scored, get_params(scored), runs, cfg, num_steps=cfg.eval_max_steps)
    errors = 100 * (1 - curve.mean(0))
    return {"num_runs": len(runs), "inner_steps": cfg.eval_inner_steps,
            "error_percent": float(errors[cfg.eval_inner_steps]),
            "error_percent_by_step": [float(e) for e in errors],
            "head": ("own 20-way head" if scored is model
                     else f"{model.head.out_features}-way head widened to 20"),
            "human_error_percent": LAKE_HUMAN_ERROR, "bpl_error_percent": LAKE_BPL_ERROR}


def score_run(model: nn.Module, cfg: OmniglotConfig, results_path: Path, history: History,
              test: OmniglotTasks, *,
              lake: bool = False, lake_root: str | os.PathLike | None = None) -> dict[str, Any]:
    tic = time.perf_counter()
    device = next(model.parameters()).device
    result: EvalResult = evaluate(model, fixed_tasks(test, cfg.eval_tasks), cfg, num_steps=cfg.eval_max_steps)
    accuracy, ci95 = result.at(cfg.eval_inner_steps)
    results: dict[str, Any] = {
        "task": "omniglot",
        "preset": cfg.preset,
        "iterations": history.iterations,
        "wall_seconds": history.wall_seconds,
        "ms_per_iteration": history.ms_per_iteration,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "trained_on": {name: {"iterations": int(spent["iterations"]), "seconds": round(spent["seconds"], 1)}
                       for name, spent in history.devices.items()},
        "config": cfg.to_dict(),
        "eval": {"num_tasks": result.num_tasks, "accuracy": accuracy, "ci95": ci95,
                 "inner_steps": cfg.eval_inner_steps, "k_query": cfg.eval_k_query, "split": cfg.split,
                 "accuracy_by_step": [float(v) for v in result.mean],
                 "ci95_by_step": [float(v) for v in result.ci95]},
        "history": {"step": history.step, "meta_loss": history.meta_loss, "accuracy": history.accuracy,
                    "validation_step": history.validation_step, "validation": history.validation},
    }
    if cfg.preset in PAPER_TABLE1:
        paper_accuracy, paper_ci = PAPER_TABLE1[cfg.preset]
        results["paper"] = {"accuracy": paper_accuracy / 100, "ci95": paper_ci / 100}
    if lake:
        results["lake_runs"] = score_lake_runs(model, cfg, lake_root)
    results["eval_seconds"] = time.perf_counter() - tic
    write_json(results_path, results)
    return results


def trained_on(results: dict[str, Any]) -> str | None:
    """Each device's share of a run's training, e.g. ``cpu (AMD EPYC): 36,000 iterations in
    5,400 s (150.0 ms/iteration); cuda (NVIDIA H200): ...``; None for results written before
    ``trained_on`` was recorded."""
    spent = results.get("trained_on")
    if not spent:
        return None
    return "; ".join(f"{name}: {d['iterations']:,} iterations in {d['seconds']:,.0f} s"
                     + (f" ({1000 * d['seconds'] / d['iterations']:.1f} ms/iteration)" if d["iterations"] else "")
                     for name, d in spent.items())


def format_table(results: dict[str, Any]) -> str:
    """The results as text: accuracy ± 95% CI beside the paper's, the curve over steps, Lake's runs."""
    ev = results["eval"]
    if len(results.get("trained_on", {})) > 1:  # resumed on another device: each one's share, no mean
        lines = [f"Omniglot {results['preset']}: {results['iterations']} meta-iterations, "
                 f"{results['wall_seconds']:.0f} s of training on {len(results['trained_on'])} devices "
                 f"(scored on {results['device']})", f"  trained on {trained_on(results)}"]
    else:
        lines = [f"Omniglot {results['preset']}: {results['iterations']} meta-iterations on {results['device']}, "
                 f"{results['wall_seconds']:.0f} s ({results['ms_per_iteration']:.1f} ms/iteration)"]
    lines.append(f"  test accuracy after {ev['inner_steps']} inner steps, {ev['num_tasks']} tasks "
                 f"({ev['k_query']} query images per class): {100 * ev['accuracy']:.2f}% ± {100 * ev['ci95']:.2f}")
    if "paper" in results:
        lines.append(f"  paper (Table 1): {100 * results['paper']['accuracy']:.1f}% ± "
                     f"{100 * results['paper']['ci95']:.1f}")
    curve = "  ".join(f"{s}:{100 * a:.1f}" for s, a in enumerate(ev["accuracy_by_step"]))
    lines.append(f"  accuracy (%) by inner steps at test: {curve}")
    if "lake_runs" in results:
        lake = results["lake_runs"]
        lines.append(f"  Lake's 20 one-shot runs (20-way, {lake['head']}): "
                     f"error {lake['error_percent']:.1f}% "
                     f"after {lake['inner_steps']} steps (people {lake['human_error_percent']}%, "
                     f"BPL {lake['bpl_error_percent']}%)")
    return "\n".join(lines)


def table1(trained: str | os.PathLike = "trained") -> list[dict[str, Any]]:
    """Table 1's four columns beside the course's runs in ``trained/omniglot-<columns>/results.json``.

    Returns one dict per column (5w1s, 5w5s, 20w1s, 20w5s): ``preset``, ``paper`` and
    ``paper_ci95`` (%), ``target`` (the paper's mean minus its CI, %), ``status`` (``final``:
    the paper's iterations and 600 test tasks; ``partial``; ``not run``), and for a run
    ``iterations``, ``num_tasks``, ``accuracy`` and ``ci95`` (%), ``device``, ``reached``
    (accuracy >= target), and Lake's error (%) with the head used, when scored.

    The paper presets use the paper's strided network (``OmniglotConfig.downsample``). A run of
    the same preset with max-pooling, in ``trained/omniglot-<columns>-maxpool/``, is not Table
    1's run: it is reported beside it, under ``maxpool`` (the same keys as a run).

    Raises:
        ValueError: a folder holds a run of another preset or another network.
    """
    rows = []
    for columns, published in OMNIGLOT_MAML.items():
        preset = f"paper-{columns}"
        row: dict[str, Any] = {"preset": preset, "paper": published.accuracy, "paper_ci95": published.ci95,
                               "target": round(published.accuracy - published.ci95, 2), "status": "not run"}
        network = omniglot_preset(preset).downsample
        row.update(_run(Path(trained) / f"omniglot-{columns}", preset, network, row["target"]) or {})
        other = _run(Path(trained) / f"omniglot-{columns}-maxpool", preset, "maxpool", row["target"])
        if other is not None and network != "maxpool":
            row["maxpool"] = other
        rows.append(row)
    return rows


def _run(folder: Path, preset: str, network: str, target: float) -> dict[str, Any] | None:
    """What ``folder/results.json`` says of a run of ``preset`` with ``network``; None if absent."""
    path = folder / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    if results.get("preset") != preset:
        raise ValueError(f"{path} is a run of preset {results.get('preset')!r}, not {preset!r}: "
                         f"train {preset} into {folder}, or move that run elsewhere")
    found = results.get("config", {}).get("downsample", "maxpool")  # written before the option: max-pooling
    if found != network:
        base = folder.parent / folder.name.removesuffix("-maxpool")
        paper_network = found == omniglot_preset(preset).downsample
        right = base if paper_network else base.with_name(f"{base.name}-{found}")
        raise ValueError(f"{path} is a run of {preset} with downsample {found!r}, not {network!r}: "
                         f"move it to {right}")
    ev = results["eval"]
    devices = list(results.get("trained_on", {}))  # each device that trained it (none: written before)
    if len(devices) > 1:
        device = "trained on " + " and ".join(devices) + f", scored on {results['device']}"
    else:
        device = devices[0] if devices else results["device"]
    run: dict[str, Any] = dict(iterations=results["iterations"], num_tasks=ev["num_tasks"],
                               device=device, accuracy=100 * ev["accuracy"], ci95=100 * ev["ci95"])
    run["reached"] = run["accuracy"] >= target
    final = results["iterations"] >= omniglot_preset(preset).num_iterations and ev["num_tasks"] >= 600
    run["status"] = "final" if final else "partial"
    if "lake_runs" in results:
        run["lake_error"] = results["lake_runs"]["error_percent"]
        run["lake_head"] = results["lake_runs"]["head"]
    return run


def format_table1(rows: list[dict[str, Any]]) -> str:
    """``table1``'s rows as text, one line per column of the paper's Table 1 (and one per max-pool run)."""
    lines = ["Omniglot (Table 1)  paper          target   course run (accuracy % ± 95% CI)"]
    for r in rows:
        paper = f"{r['paper']:.1f} ± {r['paper_ci95']:.1f}"
        run = "not run yet" if r["status"] == "not run" else _format_run(r)
        lines.append(f"  {r['preset']:<17} {paper:<14} {r['target']:<8} {run}")
        if "maxpool" in r:
            lines.append(f"  {'':<17} {'':<14} {'':<8} with max-pooling, not the paper's network: "
                         f"{_format_run(r['maxpool'])}")
    return "\n".join(lines)


def _format_run(r: dict[str, Any]) -> str:
    text = (f"{r['accuracy']:.2f} ± {r['ci95']:.2f}, {r['status']}: {r['iterations']:,} iterations, "
            f"{r['num_tasks']} test tasks, {r['device']}; "
            f"{'at or above' if r['reached'] else 'below'} target")
    if "lake_error" in r:
        text += f"; Lake's runs {r['lake_error']:.1f}% error ({r['lake_head']})"
    return text
