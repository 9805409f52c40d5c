"""The sine-wave experiment end to end: MAML and the pretrained baseline, trained and scored.

``train_sine`` meta-trains MAML, pretrains the baseline with the same budget, tunes the
baseline's fine-tuning step size on validation tasks, scores both on the same fixed test
tasks for every K in ``cfg.eval_k_shots`` after 0..``cfg.eval_max_steps`` steps, and
writes ``results.json`` into the run folder. Every stage checkpoints there, so running it
again resumes, and a finished run only re-scores. ``eval_sine`` re-scores a run folder and
writes its ``results.json`` elsewhere, leaving the run folder as it was.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..algorithms.published import SINE_5SHOT, sine_reference
from ..baseline import choose_finetune_lr, pretrain
from ..checkpoint import checkpoint_path, load_model
from ..config import SineConfig
from ..data.sine import SineTasks
from ..evaluate import EvalResult, evaluate
from ..models import build_model
from ..tasks import fixed_tasks
from ..train import History, meta_train
from .results_json import write_json

# The paper's 5-shot MSE after 1, 5 and 10 steps, MAML and the pretrained baseline: {name: {steps: MSE}},
# read from ``algorithms.published`` (Finn et al. 2017, Table 2, Appendix C.1).
PAPER_SINE_5SHOT = {name: sine_reference(name) for name in SINE_5SHOT}


def score(model: torch.nn.Module, cfg: SineConfig, *, inner_lr: float | None = None
          ) -> dict[int, EvalResult]:
    """MSE on ``cfg.eval_tasks`` fixed test tasks for each K in ``cfg.eval_k_shots``."""
    sampler = SineTasks.from_config(cfg)
    device = next(model.parameters()).device
    results = {}
    for k in cfg.eval_k_shots:
        tasks = fixed_tasks(sampler, cfg.eval_tasks, k_shot=k, k_query=cfg.eval_query_points).to(device)
        results[k] = evaluate(model, tasks, cfg, num_steps=cfg.eval_max_steps, inner_lr=inner_lr)
    return results


def train_sine(cfg: SineConfig, out: str | os.PathLike, *, device: torch.device,
               progress: bool = True, deadline: float | None = None) -> dict[str, Any]:
    """Train (or resume) MAML and the baseline in ``out``, score both, write ``out/results.json``.

    ``deadline`` (a ``time.monotonic()`` value) stops either training at the first iteration
    past it, saved, with ``train.StoppedAtTimeLimit``.
    """
    out = Path(out)
    sampler = SineTasks.from_config(cfg)

    torch.manual_seed(cfg.seed)
    maml_model = build_model(cfg).to(device)
    maml_history = meta_train(maml_model, sampler, cfg, checkpoint_dir=out, device=device,
                              progress=progress, deadline=deadline)
    torch.manual_seed(cfg.seed + 1)
    baseline = build_model(cfg).to(device)
    baseline_history = pretrain(baseline, sampler, cfg, checkpoint_dir=out, progress=progress,
                                deadline=deadline)
    return score_run(maml_model, baseline, cfg, out / "results.json", maml_history, baseline_history)


def eval_sine(out: str | os.PathLike, *, device: torch.device, num_tasks: int | None = None,
              results_path: str | os.PathLike) -> dict[str, Any]:
    """Re-score a trained run folder (MAML and, when present, the baseline) into ``results_path``."""
    out = Path(out)
    model, cfg, state = load_model(out, device=device)
    if num_tasks is not None:
        cfg = dataclasses.replace(cfg, eval_tasks=num_tasks)
    baseline = baseline_history = None
    if checkpoint_path(out, "baseline").exists():
        baseline, _, baseline_state = load_model(out, "baseline", device=device)
        baseline_history = History.from_dict(baseline_state["history"])
    return score_run(model, baseline, cfg, Path(results_path), History.from_dict(state["history"]),
                     baseline_history)


def score_run(model, baseline, cfg: SineConfig, results_path: Path, history: History,
              baseline_history: History | None) -> dict[str, Any]:
    tic = time.perf_counter()
    maml_scores = score(model, cfg)
    results: dict[str, Any] = {
        "task": "sine",
        "preset": cfg.preset,
        "iterations": history.step[-1] if history.step else 0,
        "config": cfg.to_dict(),
        "device": str(next(model.parameters()).device),
        "eval": _scores_dict(maml_scores, cfg),
    }
    if baseline is not None:
        lr, lr_scores = choose_finetune_lr(baseline, SineTasks.from_config(cfg), cfg)
        results["baseline"] = {
            **_scores_dict(score(baseline, cfg, inner_lr=lr), cfg),
            "finetune_lr": lr,
            "finetune_lr_validation_mse": {str(k): (v if math.isfinite(v) else None)
                                           for k, v in lr_scores.items()},
        }
    eval_seconds = time.perf_counter() - tic
    timings = {"meta_train": history.wall_seconds, "evaluate": eval_seconds}
    if baseline_history is not None:
        timings["pretrain"] = baseline_history.wall_seconds
    results["timings"] = timings
    results["wall_seconds"] = sum(timings.values())
    results["ms_per_iteration"] = history.ms_per_iteration
    results["paper_5shot"] = {name: {str(k): v for k, v in row.items()}
                              for name, row in PAPER_SINE_5SHOT.items()}
    write_json(results_path, results)
    return results


def _scores_dict(scores: dict[int, EvalResult], cfg: SineConfig) -> dict[str, Any]:
    return {
        "num_tasks": cfg.eval_tasks,
        "mse": {str(k): [float(v) for v in r.mean] for k, r in scores.items()},
        "ci95": {str(k): [float(v) for v in r.ci95] for k, r in scores.items()},
    }


def format_table(results: dict[str, Any], steps: tuple[int, ...] = (0, 1, 5, 10)) -> str:
    """The results as a text table: MSE ± 95% CI per K and model, beside the paper's 5-shot row."""
    lines = [f"Sine regression: MSE on {results['eval']['num_tasks']} fixed test tasks "
             f"after k inner steps ({results['iterations']} meta-iterations, "
             f"{results['wall_seconds']:.0f} s)"]
    header = f"{'K':>3}  {'model':<24}" + "".join(f"{f'k={s}':>16}" for s in steps)
    lines += [header, "-" * len(header)]
    rows = [("MAML", results["eval"])]
    if "baseline" in results:
        rows.append((f"pretrained (lr {results['baseline']['finetune_lr']})", results["baseline"]))
    for k in results["eval"]["mse"]:
        for name, block in rows:
            cells = "".join(f"{block['mse'][k][s]:>9.3f} ±{block['ci95'][k][s]:<5.3f}"
                            if s < len(block["mse"][k]) else f"{'':>16}" for s in steps)
            lines.append(f"{k:>3}  {name:<24}{cells}")
        if k == "5":
            for name, row in PAPER_SINE_5SHOT.items():
                cells = "".join(f"{row[s]:>9.2f}{'':7}" if s in row else f"{'-':>9}{'':7}" for s in steps)
                lines.append(f"{k:>3}  {'paper ' + name:<24}{cells}")
    return "\n".join(lines)
