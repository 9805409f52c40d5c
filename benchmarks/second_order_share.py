#!/usr/bin/env python3
"""How much of MAML's meta-gradient is second order, measured along meta-training (lesson 2b).

    python benchmarks/second_order_share.py                       # ~5-10 min on the 2-core CPU
    python benchmarks/second_order_share.py --only sine --sine-iterations 0,100,1000

For the meta-gradient of a meta-batch, g₂ (second order, MAML) and g₁ (first order), it
records ratio = ‖g₂ − g₁‖ / ‖g₁‖ (with one inner step: ‖α H ∇L_query‖ / ‖∇L_query‖) and
cos(g₂, g₁), on the same fixed meta-batches, at checkpoints of a short second-order
meta-training run it does itself (seed 0) and at the shipped models:

* sine, the paper's settings (K = 10, α = 0.01, 25 tasks per batch): the run's checkpoints,
  then ``trained/sine-paper`` (70,000 iterations);
* Omniglot 5-way 1-shot (α = 2.0, 1 step): a ``quick-5w1s`` run (8 tasks per batch) on the
  CPU, then ``trained/omniglot-5w1s-maxpool`` (36,000 iterations of 32 tasks, trained on an H200).

It also times a gradient against a Hessian-vector product (two ways) on one task of each.
Results (mean and 95% CI over the measurement batches, with provenance) go to
``results/second_order_share.json``, written after each part; lesson 2b reads and plots it.
Omniglot reads ``--data`` (default ``$MAMLCOURSE_DATA``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

import mamlcourse as mc
from mamlcourse import meta_gradient as mg
from mamlcourse.checkpoint import load_model
from mamlcourse.evaluate import confidence_interval
from mamlcourse.experiments.compare import provenance
from mamlcourse.experiments.results_json import write_json
from mamlcourse.maml import loss_function

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("hvp_cost", "sine", "omniglot")


def summarise(rows: list[dict[str, float]]) -> dict:
    """Mean and 95% CI of each measured quantity over the measurement batches, and the batches' values."""
    out: dict = {"per_batch": rows}
    for key in rows[0]:
        values = torch.tensor([r[key] for r in rows], dtype=torch.float64)[:, None]
        mean, ci = confidence_interval(values)
        out[key], out[key + "_ci95"] = float(mean[0]), float(ci[0])
    return out


def measure(model, cfg, batches, vectorize) -> dict[str, float]:
    rows = [mg.second_order_share(model, mc.get_params(model), tasks, cfg, vectorize=vectorize)
            for tasks in batches]
    return summarise(rows)


def along_training(cfg, sampler, batches, checkpoints, *, vectorize, label) -> list[dict]:
    """Second-order meta-training from seed 0; the share measured at each checkpoint iteration."""
    torch.manual_seed(cfg.seed)
    model = mc.build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.outer_lr)
    generator = mc.seeded_generator(cfg.seed)
    points, tic, train_seconds = [], time.perf_counter(), 0.0
    for step in range(0, max(checkpoints) + 1):
        if step > 0:
            start = time.perf_counter()
            loss, _ = mc.meta_loss(model, mc.get_params(model), sampler.sample(cfg.tasks_per_batch, generator),
                                   cfg, first_order=False, vectorize=vectorize)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            train_seconds += time.perf_counter() - start
        if step in checkpoints:
            points.append({"iteration": step, **measure(model, cfg, batches, vectorize)})
            print(f"{label} iteration {step}: ratio {points[-1]['ratio']:.3f}, cosine {points[-1]['cosine']:.3f} "
                  f"({time.perf_counter() - tic:.0f} s)", file=sys.stderr, flush=True)
    return points, train_seconds


def fixed_batches(sampler, cfg, num_batches, tasks_per_batch) -> list[mc.TaskBatch]:
    return [sampler.sample(tasks_per_batch, mc.seeded_generator(10_000 + b)) for b in range(num_batches)]


def run_sine(iterations: list[int], num_batches: int) -> dict:
    shipped, cfg, state = load_model(ROOT / "trained" / "sine-paper")
    cfg = dataclasses.replace(cfg, vectorize=None)
    sampler = mc.data.sine.SineTasks.from_config(cfg)
    batches = fixed_batches(sampler, cfg, num_batches, cfg.tasks_per_batch)
    points, seconds = along_training(cfg, sampler, batches, iterations, vectorize=True, label="sine")
    points.append({"iteration": state["step"], "shipped": "trained/sine-paper",
                   **measure(shipped, cfg, batches, True)})
    return {"config": cfg.to_dict(), "num_batches": num_batches, "tasks_per_batch": cfg.tasks_per_batch,
            "train_seconds": round(seconds, 1), "points": points}


def run_omniglot(iterations: list[int], num_batches: int, data_root) -> dict:
    from mamlcourse.data.omniglot import OmniglotTasks
    from mamlcourse.data.omniglot_images import load_images

    images = load_images(data_root, progress=False)
    shipped, shipped_cfg, state = load_model(ROOT / "trained" / "omniglot-5w1s-maxpool")
    shipped_cfg = dataclasses.replace(shipped_cfg, vectorize=False)  # the loop: right and faster on a CPU
    cfg = dataclasses.replace(mc.omniglot_preset("quick-5w1s"), vectorize=False)
    sampler = OmniglotTasks.from_config(cfg, "train", omniglot=images)
    batches = fixed_batches(sampler, cfg, num_batches, cfg.tasks_per_batch)
    points, seconds = along_training(cfg, sampler, batches, iterations, vectorize=False, label="omniglot")
    shipped_sampler = OmniglotTasks.from_config(shipped_cfg, "train", omniglot=images)
    shipped_batches = fixed_batches(shipped_sampler, shipped_cfg, num_batches, shipped_cfg.tasks_per_batch)
    points.append({"iteration": state["step"], "shipped": "trained/omniglot-5w1s-maxpool",
                   "tasks_per_batch": shipped_cfg.tasks_per_batch,
                   **measure(shipped, shipped_cfg, shipped_batches, False)})
    return {"config": cfg.to_dict(), "shipped_config": shipped_cfg.to_dict(), "num_batches": num_batches,
            "tasks_per_batch": cfg.tasks_per_batch, "train_seconds": round(seconds, 1), "points": points}


def time_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - tic))
    return statistics.median(times)


def run_hvp_cost(repeats: int, data_root) -> dict:
    """Median ms of ∇L, of H v by double backward and by jvp over grad, on one task of each model."""
    from mamlcourse.data.omniglot import OmniglotTasks
    from mamlcourse.data.omniglot_images import load_images

    sine_cfg = mc.sine_preset("paper")
    omni_cfg = mc.omniglot_preset("paper-5w1s")
    images = load_images(data_root, progress=False)
    cases = {"sine_mlp": (sine_cfg, mc.data.sine.SineTasks.from_config(sine_cfg)),
             "convnet4": (omni_cfg, OmniglotTasks.from_config(omni_cfg, "train", omniglot=images))}
    out = {}
    for name, (cfg, sampler) in cases.items():
        torch.manual_seed(0)
        model = mc.build_model(cfg)
        params = {n: p.detach() for n, p in mc.get_params(model).items()}
        task = sampler.sample(1, mc.seeded_generator(0))[0]
        f = mg.task_loss_fn(model, task.x_support, task.y_support, loss_function(cfg.loss))
        v = {n: torch.randn_like(p) for n, p in params.items()}
        leaves = {n: p.clone().requires_grad_() for n, p in params.items()}
        row = {"gradient_ms": time_ms(lambda: torch.autograd.grad(f(leaves), list(leaves.values())), repeats),
               "hvp_double_backward_ms": time_ms(lambda: mg.hvp_double_backward(f, params, v), repeats),
               "hvp_forward_over_reverse_ms": time_ms(lambda: mg.hvp_forward_over_reverse(f, params, v), repeats)}
        row["double_backward_over_gradient"] = row["hvp_double_backward_ms"] / row["gradient_ms"]
        row["forward_over_reverse_over_gradient"] = row["hvp_forward_over_reverse_ms"] / row["gradient_ms"]
        out[name] = {"examples": len(task.x_support), **row}
        print(f"{name}: {row}", file=sys.stderr, flush=True)
    return out


def ints(text: str) -> list[int]:
    return sorted({int(t) for t in text.split(",") if t.strip()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--sine-iterations", default="0,100,300,1000,3000,10000",
                        help="checkpoints of the sine run (iterations)")
    parser.add_argument("--omniglot-iterations", default="0,25,100,300,600",
                        help="checkpoints of the Omniglot run (iterations)")
    parser.add_argument("--batches", type=int, default=8, help="fixed meta-batches measured at each checkpoint")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats of the HVP cost")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: small models, and steadier on a shared CPU)")
    parser.add_argument("--data", default=None, help="Omniglot folder (default $MAMLCOURSE_DATA)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "second_order_share.json")
    args = parser.parse_args(argv)
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(only) - set(PARTS))
    if unknown:
        parser.error(f"--only: unknown part(s) {unknown}; choose from {list(PARTS)}")
    if args.batches < 2:
        parser.error(f"--batches must be >= 2 (a confidence interval needs two), got {args.batches}")
    torch.set_num_threads(args.threads)
    arguments = sys.argv[1:] if argv is None else argv
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/second_order_share.py", *arguments])
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}  # keeps the parts not re-run
    for part in (p for p in PARTS if p in only):
        tic = time.perf_counter()
        if part == "hvp_cost":
            results[part] = run_hvp_cost(args.repeats, args.data)
        elif part == "sine":
            results[part] = run_sine(ints(args.sine_iterations), args.batches)
        else:
            results[part] = run_omniglot(ints(args.omniglot_iterations), args.batches, args.data)
        # each part carries the command, date and machine that made it
        results[part]["provenance"] = {**provenance("custom", command, "cpu"),
                                       "seconds": round(time.perf_counter() - tic, 1)}
        write_json(args.out, results)
        print(f"{part}: {time.perf_counter() - tic:.0f} s, written to {args.out}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
