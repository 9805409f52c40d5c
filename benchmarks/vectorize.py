#!/usr/bin/env python3
"""vmap over tasks or a loop: which runs ConvNet4's meta-iteration faster, per preset and network.

    python benchmarks/vectorize.py                       # quick-5w1s and Table 1's presets, ~10 min on the 2-core CPU
    python benchmarks/vectorize.py --presets paper-5w1s --iterations 3
    python benchmarks/vectorize.py --device cuda

``maml.default_vectorize`` picks the path a meta-batch takes when none is asked for. This
script measures both, side by side, for each preset with each network (``--networks``:
max-pooling or strided convolutions): one second-order meta-iteration (the meta-gradient and
Adam's step, ``train.eager_step``) on random images of the preset's shapes (the same kernels
on the same sizes as Omniglot episodes), from the same weights. The two paths alternate
iteration by iteration, so both see the same machine load; the figure is the median. Before
timing, the two paths' meta-gradients are compared in float64 (the same weights and tasks,
where rounding alone leaves ~1e-12): a fast path that disagrees is not a result. Each row names
the path ``default_vectorize`` picks and whether it is the faster one here. The figures hold
for the machine that ran them: vmap's share of a CPU's time depends on its cores and memory.

``paper-20w5s`` on the max-pool network is left out: its vmap meta-iteration was killed for
memory past 24 GiB (2026-12-07, torch 2.13.0 on the 2-core CPU), so the loop is its only path.

Results go to ``results/vectorize_<device>.json`` (``--out``): each row is added to what the
file holds, with the provenance of the call that measured it (``provenance[ROW]``).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import meta_step  # noqa: E402

from mamlcourse.config import DOWNSAMPLES, omniglot_preset, resolve_device  # noqa: E402
from mamlcourse.experiments.compare import load_results, provenance  # noqa: E402
from mamlcourse.experiments.omniglot import PAPER_TABLE1  # noqa: E402
from mamlcourse.experiments.results_json import write_json  # noqa: E402
from mamlcourse.maml import default_vectorize, get_params, meta_loss  # noqa: E402
from mamlcourse.models import build_model  # noqa: E402
from mamlcourse.tasks import TaskBatch, random_image_tasks, seeded_generator  # noqa: E402
from mamlcourse.train import eager_step  # noqa: E402
from mamlcourse.training_state import TrainingState  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PATHS = {"loop": False, "vmap": True}
# Rows not run: why.
LEFT_OUT = {"paper-20w5s maxpool": "vmap's meta-iteration was killed for memory past 24 GiB (2026-12-07, CPU)"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gradient_difference(cfg, batch: TaskBatch, device: torch.device) -> float:
    """max |vmap - loop| / max |loop| over the meta-gradient in float64 (same θ and tasks,
    ``meta_step.max_rel_diff``): rounding alone leaves ~1e-12."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device).double()
    batch = TaskBatch(batch.x_support.double(), batch.y_support, batch.x_query.double(), batch.y_query)
    grads = {}
    for name, vectorize in PATHS.items():
        params = get_params(model)
        loss, _ = meta_loss(model, params, batch, cfg, vectorize=vectorize)
        grads[name] = list(torch.autograd.grad(loss, list(params.values())))
    return meta_step.max_rel_diff(grads["vmap"], grads["loop"])


def time_paths(preset: str, network: str, device: torch.device, iterations: int) -> dict:
    """Median ms per second-order meta-iteration of ``preset`` on ``network``, loop and vmap alternating."""
    cfg = dataclasses.replace(omniglot_preset(preset), downsample=network, first_order=False)
    batch = random_image_tasks(cfg, seeded_generator(0)).to(device)
    diff = gradient_difference(cfg, batch, device)
    steps, times = {}, {name: [] for name in PATHS}
    for name, vectorize in PATHS.items():
        torch.manual_seed(cfg.seed)
        state = TrainingState.create(build_model(cfg), dataclasses.replace(cfg, vectorize=vectorize),
                                     device=device)
        params = get_params(state.model)
        steps[name] = (lambda s=state, p=params: eager_step(s, p, meta_loss, batch))
        steps[name]()  # one untimed iteration (allocations, first-call work)
    for _ in range(iterations):
        for name, step in steps.items():
            _sync(device)
            tic = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - tic)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    picked = "vmap" if default_vectorize(build_model(cfg), device, task_images=batch.x_support.shape[1]
                                         + batch.x_query.shape[1]) else "loop"
    faster = min(ms, key=ms.get)
    row = {"ms_per_iteration": {k: round(v, 2) for k, v in ms.items()},
           "loop_over_vmap": round(ms["loop"] / ms["vmap"], 2), "faster": faster,
           "default_vectorize": picked, "default_is_faster": picked == faster,
           "images_per_task": cfg.n_way * (cfg.k_shot + cfg.k_query), "tasks_per_batch": cfg.tasks_per_batch,
           "inner_steps": cfg.num_inner_steps, "max_rel_grad_diff": float(f"{diff:.2e}"),
           "iterations": iterations}
    print(f"{preset:12s} {network:8s} loop {ms['loop']:9.1f} ms  vmap {ms['vmap']:9.1f} ms  "
          f"loop/vmap {row['loop_over_vmap']:5.2f}x  default: {picked}"
          f"{'' if row['default_is_faster'] else ' (the slower)'}  grad diff {diff:.1e}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--presets", default=",".join(("quick-5w1s", *PAPER_TABLE1)),
                        help="comma-separated Omniglot presets (default: quick-5w1s and Table 1's)")
    parser.add_argument("--networks", default=",".join(DOWNSAMPLES),
                        help=f"comma-separated networks of {DOWNSAMPLES} (default: both)")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations of each path (default 5)")
    parser.add_argument("--out", type=Path, help="results file (default results/vectorize_<device>.json)")
    args = parser.parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    networks = [n for n in args.networks.split(",") if n]
    if set(networks) - set(DOWNSAMPLES) or not networks:
        raise ValueError(f"--networks: choose from {DOWNSAMPLES}, got {args.networks!r}")
    if args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    for preset in presets:
        omniglot_preset(preset)  # an unknown preset fails here, before anything is timed
    device = resolve_device(args.device)
    command = "python benchmarks/vectorize.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    out = args.out or ROOT / "results" / f"vectorize_{device.type}.json"
    results = load_results(out) or {}
    call = provenance("n/a", command, device)
    for preset in presets:
        for network in networks:
            key = f"{preset} {network}"
            if key in LEFT_OUT:
                print(f"{preset:12s} {network:8s} left out: {LEFT_OUT[key]}", flush=True)
                continue
            results.setdefault("rows", {})[key] = time_paths(preset, network, device, args.iterations)
            results.setdefault("provenance", {})[key] = call
            write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
