#!/usr/bin/env python3
"""How curved is the support loss where a sine model starts adapting? α·λ_max(H) over test tasks.

    python benchmarks/support_curvature.py                                   # init and trained/sine-paper
    python benchmarks/support_curvature.py --checkpoint runs/x/imaml.pt      # any sine checkpoints too

For each model (a freshly initialised SineMLP, ``trained/sine-paper`` and every ``--checkpoint``),
on the same fixed 5-shot sine tasks, the largest eigenvalue λ_max of the Hessian of the support
loss at θ (power iteration on Hessian-vector products) times the model's inner step size α.
Gradient steps of α on the support loss, or on iMAML's proximal problem with λ = 1/α, converge
only where α·λ_max < 2, respectively < 1: the fraction of tasks beyond those limits says whether
fixed steps of α can be trusted there (docs/results.md, "iMAML on sine waves at full size").
Results go to ``--out`` (default ``results/support_curvature.json``) with their provenance.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import mamlcourse as mc
from mamlcourse.algorithms.imaml import largest_curvature
from mamlcourse.checkpoint import load_model
from mamlcourse.experiments.compare import provenance
from mamlcourse.experiments.results_json import write_json
from mamlcourse.meta_gradient import task_loss_fn

ROOT = Path(__file__).resolve().parents[1]


def curvatures(model: torch.nn.Module, tasks: mc.TaskBatch, power_steps: int) -> torch.Tensor:
    """[T] λ_max of each task's support-loss Hessian at the model's parameters."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    return torch.stack([largest_curvature(task_loss_fn(model, tasks.x_support[i], tasks.y_support[i], F.mse_loss),
                                          params, num_steps=power_steps) for i in range(len(tasks))])


def summary(alpha_lambda: torch.Tensor) -> dict[str, float]:
    return {"median": alpha_lambda.median().item(), "p90": alpha_lambda.quantile(0.9).item(),
            "max": alpha_lambda.max().item(), "fraction_above_1": (alpha_lambda > 1).float().mean().item(),
            "fraction_above_2": (alpha_lambda > 2).float().mean().item()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", default=[], type=Path,
                        help="a sine checkpoint file or run folder (repeatable)")
    parser.add_argument("--tasks", type=int, default=200, help="fixed 5-shot test tasks (default 200)")
    parser.add_argument("--power-steps", type=int, default=40, help="power-iteration steps (default 40)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "support_curvature.json")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.power_steps < 1:
        parser.error("--tasks and --power-steps must be >= 1")
    torch.set_num_threads(1)

    cfg = mc.sine_preset("paper")
    tasks = mc.data.sine.SineTasks.from_config(cfg).sample(args.tasks, mc.seeded_generator(1), k_shot=5)
    torch.manual_seed(cfg.seed)
    models = {"random init (seed 0)": (mc.build_model(cfg), cfg, 0)}
    for path in [ROOT / "trained" / "sine-paper", *args.checkpoint]:
        model, saved_cfg, state = load_model(path)
        if saved_cfg.task != "sine":
            parser.error(f"{path}: a {saved_cfg.task} checkpoint; this measures sine models")
        label = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        models[label] = (model, saved_cfg, state["step"])

    command = shlex.join(["python", "benchmarks/support_curvature.py", *(argv if argv is not None else sys.argv[1:])])
    results = {"provenance": provenance("full", command, "cpu"), "tasks": args.tasks, "k_shot": 5,
               "power_steps": args.power_steps, "models": {}}
    print(f"α·λ_max(support-loss Hessian) at θ, {args.tasks} fixed 5-shot sine tasks\n"
          f"{'model':<48} {'step':>7} {'α':>6} {'median':>7} {'p90':>7} {'max':>7} {'>1':>6} {'>2':>6}")
    for label, (model, model_cfg, step) in models.items():
        row = summary(model_cfg.inner_lr * curvatures(model, tasks, args.power_steps))
        results["models"][label] = {"step": step, "inner_lr": model_cfg.inner_lr, **row}
        print(f"{label:<48} {step:>7} {model_cfg.inner_lr:>6.3g} {row['median']:>7.2f} {row['p90']:>7.2f} "
              f"{row['max']:>7.2f} {row['fraction_above_1']:>6.2f} {row['fraction_above_2']:>6.2f}")
    write_json(args.out, results)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
