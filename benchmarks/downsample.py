#!/usr/bin/env python3
"""Max-pooling or strided convolutions in ConvNet4: speed and accuracy side by side.

    python benchmarks/downsample.py --only speed                      # ~2 min on the 2-core CPU
    python benchmarks/downsample.py --only train --preset quick-5w1s  # ~30 min on the 2-core CPU
    python benchmarks/downsample.py --device cuda --only speed        # the same on a GPU

Section 5.2 of the paper describes the network with 2x2 max-pooling, then adds "For Omniglot,
we used strided convolutions instead of max-pooling". ``OmniglotConfig.downsample`` (``train
--downsample``) offers both; this script measures what the choice changes.

* ``speed``: ms per meta-iteration of each Table 1 preset with each network, on random
  images of the preset's shapes (the same kernels on the same sizes as Omniglot episodes).
  The two networks alternate iteration by iteration, so both see the same machine load; the
  figure is the median, and the ratio is max-pooling's over the strided network's.
* ``train``: the same preset trained from the same seed with each network for the same
  number of iterations (``train_omniglot``, as ``python -m mamlcourse train``), then scored on
  the same fixed test tasks: accuracy with its 95% CI after the preset's test-time steps.
  ``--checkpoints`` keeps the runs: stopped, the same command continues them, and a larger
  ``--iterations`` continues them further. Results are keyed by the preset, plus
  ``@ITERATIONS`` when ``--iterations`` is given; ``--networks stride`` trains one network only
  (for instance for as long as the other took). A network is ``maxpool`` or ``stride``, with
  PyTorch's conventions for the details the paper leaves open, or ``stride+original`` (and
  ``maxpool+original``) with the original code's (``OmniglotConfig.conventions``: batch norm
  without scale whose offsets the inner loop leaves alone, the original's initialisation and
  padding).

Results go to ``results/downsample_<device>.json`` (``--out``), written after each part, with
the provenance of the call that measured each part (``provenance["speed"]``, and for each
network trained ``provenance["train KEY NETWORK"]``, so that a call training one network keeps
the provenance of the others). Omniglot reads ``--data`` (default ``$MAMLCOURSE_DATA``).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from mamlcourse.config import CONVENTIONS, DOWNSAMPLES, omniglot_preset, resolve_device
from mamlcourse.experiments.compare import load_results, provenance
from mamlcourse.experiments.omniglot import PAPER_TABLE1, train_omniglot
from mamlcourse.experiments.results_json import write_json
from mamlcourse.maml import get_params, meta_loss
from mamlcourse.models import build_model
from mamlcourse.tasks import random_image_tasks, seeded_generator
from mamlcourse.train import eager_step
from mamlcourse.training_state import TrainingState

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("speed", "train")
# What --networks accepts: a downsampling, and "+original" for the original code's conventions.
NETWORKS = DOWNSAMPLES + tuple(f"{d}+{c}" for d in DOWNSAMPLES for c in CONVENTIONS if c != "pytorch")


def network_settings(network: str) -> dict[str, str]:
    """``"stride+original"`` -> ``{"downsample": "stride", "conventions": "original"}``."""
    downsample, _, conventions = network.partition("+")
    return {"downsample": downsample, "conventions": conventions or "pytorch"}


def time_presets(presets: list[str], device: torch.device, iterations: int) -> dict:
    """Median ms per meta-iteration of each preset with each network, the two alternating."""
    out = {}
    for preset in presets:
        steps, times = {}, {d: [] for d in DOWNSAMPLES}
        batch = random_image_tasks(omniglot_preset(preset), seeded_generator(0)).to(device)
        for d in DOWNSAMPLES:
            cfg = dataclasses.replace(omniglot_preset(preset), downsample=d)
            torch.manual_seed(cfg.seed)
            state = TrainingState.create(build_model(cfg), cfg, device=device)
            params = get_params(state.model)
            steps[d] = (lambda s=state, p=params, b=batch: eager_step(s, p, meta_loss, b))
            steps[d]()  # one untimed iteration (allocations, first-call work)
        for _ in range(iterations):
            for d in DOWNSAMPLES:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                tic = time.perf_counter()
                steps[d]()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[d].append(time.perf_counter() - tic)
        ms = {d: 1000 * statistics.median(t) for d, t in times.items()}
        out[preset] = {"ms_per_iteration": {d: round(v, 2) for d, v in ms.items()}, "iterations": iterations,
                       "maxpool_over_stride": round(ms["maxpool"] / ms["stride"], 2)}
        print(f"{preset:12s} maxpool {ms['maxpool']:9.1f} ms  stride {ms['stride']:9.1f} ms  "
              f"maxpool/stride {ms['maxpool'] / ms['stride']:.2f}x  (median of {iterations})", flush=True)
    return out


def train_both(preset: str, iterations: int | None, tasks: int | None, device: torch.device, data_root,
               checkpoints: Path, progress: bool, networks: tuple[str, ...] = DOWNSAMPLES) -> dict:
    """Train ``preset`` with each of ``networks`` from the same seed, score the same test tasks."""
    out = {}
    for d in networks:
        cfg = dataclasses.replace(omniglot_preset(preset), **network_settings(d))
        if iterations is not None:
            cfg = dataclasses.replace(cfg, num_iterations=iterations)
        if tasks is not None:
            cfg = dataclasses.replace(cfg, eval_tasks=tasks)
        result = train_omniglot(cfg, checkpoints / f"{preset}-{d}", device=device, data_root=data_root,
                                progress=progress)
        ev = result["eval"]
        out[d] = {"iterations": result["iterations"],
                  "ms_per_iteration": round(result["ms_per_iteration"], 2),
                  "accuracy": ev["accuracy"], "ci95": ev["ci95"], "inner_steps": ev["inner_steps"],
                  "num_tasks": ev["num_tasks"], "accuracy_by_step": ev["accuracy_by_step"],
                  "ci95_by_step": ev["ci95_by_step"]}
        print(f"{preset} {d:15s} {result['iterations']} iterations, "
              f"{result['ms_per_iteration']:.1f} ms/iteration: "
              f"{100 * ev['accuracy']:.2f}% ± {100 * ev['ci95']:.2f} after {ev['inner_steps']} steps "
              f"on {ev['num_tasks']} test tasks", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {PARTS}")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--presets", default=",".join(PAPER_TABLE1), help="speed: comma-separated presets")
    parser.add_argument("--speed-iterations", type=int, default=5, help="speed: timed iterations of each")
    parser.add_argument("--preset", default="quick-5w1s", help="train: the preset (default quick-5w1s)")
    parser.add_argument("--iterations", type=int, help="train: iterations (default: the preset's)")
    parser.add_argument("--tasks", type=int, help="train: test tasks (default: the preset's)")
    parser.add_argument("--networks", default=",".join(DOWNSAMPLES),
                        help=f"train: comma-separated networks of {NETWORKS} (default: maxpool,stride)")
    parser.add_argument("--checkpoints", type=Path,
                        help="train: keep the runs here (default: a temporary folder)")
    parser.add_argument("--data", help="Omniglot folder (default $MAMLCOURSE_DATA)")
    parser.add_argument("--out", type=Path, help="results file (default results/downsample_<device>.json)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"--only: unknown part(s) {unknown}; choose from {PARTS}")
    networks = tuple(n for n in args.networks.split(",") if n)
    if not networks or set(networks) - set(NETWORKS):
        raise ValueError(f"--networks: choose from {NETWORKS}, got {args.networks!r}")
    if args.speed_iterations < 1:
        raise ValueError(f"--speed-iterations must be >= 1, got {args.speed_iterations}")
    device = resolve_device(args.device)
    out = args.out or ROOT / "results" / f"downsample_{device.type}.json"
    results = load_results(out) or {}
    command = "python benchmarks/downsample.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    made = results.setdefault("provenance", {})  # each part: the call that measured it
    if "speed" in parts:
        presets = [p for p in args.presets.split(",") if p]
        results["speed"] = time_presets(presets, device, args.speed_iterations)
        made["speed"] = provenance("n/a", command, device)
        write_json(out, results)
    if "train" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.checkpoints or Path(tmp)
            key = args.preset if args.iterations is None else f"{args.preset}@{args.iterations}"
            results.setdefault("train", {}).setdefault(key, {}).update(train_both(
                args.preset, args.iterations, args.tasks, device, args.data, folder, not args.no_progress,
                networks))
        call = provenance("n/a", command, device)  # one call (git, lscpu) made every network's run
        made.update({f"train {key} {network}": call for network in networks})
        write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
