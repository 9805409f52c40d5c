#!/usr/bin/env python3
"""How fast each Omniglot preset's meta-iteration runs in each setting the CLI offers, on this device.

    PYTHONPATH=. python3 tools/gpu/probe_speed.py --device cuda --out docs/gpu/table1-probe.json
    PYTHONPATH=. python3 tools/gpu/probe_speed.py --device cpu --presets quick --seconds 1 --out /tmp/p.json

A preset's meta-iteration is timed the way ``train --cuda-graph`` runs it on a GPU (meta-loss,
backward through the inner loop and Adam, captured once as a CUDA graph and replayed; on a
CPU the eager step) in each *variant*: the meta-batch's tasks under ``torch.func.vmap`` or in
a loop (``--vectorize vmap|loop``), and on a GPU with TF32 off (exact float32) or on
(``--tf32``), and the loop with TF32 also with the images stored channels-last (``--layout
nhwc``: cuDNN's tensor-core convolutions work in that layout, so it may save their layout
conversions; under vmap the tasks are folded into the channels, which undoes the layout, so
vmap is not timed so). Random images of the preset's shapes stand in for Omniglot episodes: the same
kernels on the same sizes take the same time, and nothing has to be loaded. The time of a
variant is the median of its per-iteration times (each ended by a device synchronisation);
sampling the tasks, which training adds to every variant alike, is not in it.

The GPU queue (``tools/gpu/queue_jobs.choose_settings``) reads the file to pick each run's
settings; the probe itself only measures. A variant that fails (out of memory, say) is
recorded with its error and the others go on. The file is rewritten after every variant, so
a probe cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from queue_runner import device_name  # noqa: E402  (the ledger's device key; this script's folder is on sys.path)

from mamlcourse.config import omniglot_preset, replace, resolve_device  # noqa: E402
from mamlcourse.cuda_graph import GraphedMetaStep  # noqa: E402
from mamlcourse.maml import get_params, meta_loss  # noqa: E402
from mamlcourse.models import build_model  # noqa: E402
from mamlcourse.tasks import random_image_tasks  # noqa: E402
from mamlcourse.train import eager_step  # noqa: E402
from mamlcourse.training_state import TrainingState  # noqa: E402

TABLE1 = ("paper-5w1s", "paper-20w1s", "paper-5w5s", "paper-20w5s")


def variants(device: torch.device) -> list[dict]:
    """The settings to time: vmap or loop, and (on a GPU) TF32 off or on, and the loop with TF32 in NHWC."""
    tf32 = (False, True) if device.type == "cuda" else (False,)
    found = [{"vectorize": v, "tf32": t, "nhwc": False} for v in ("vmap", "loop") for t in tf32]  # vmap first
    if device.type == "cuda":
        found.append({"vectorize": "loop", "tf32": True, "nhwc": True})
    return found


def variant_name(v: dict) -> str:
    """``vmap``, ``loop+tf32``, ``loop+tf32+nhwc``...: the key of a variant in the file."""
    return v["vectorize"] + ("+tf32" if v["tf32"] else "") + ("+nhwc" if v.get("nhwc") else "")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variant(cfg, v: dict, device: torch.device, seconds: float, most: int = 200) -> dict:
    """ms/iteration of one variant: median over as many iterations as fit ``seconds`` (at least 3)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the CLI sets it on a GPU
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = v["tf32"]
    cfg = replace(cfg, vectorize=v["vectorize"] == "vmap", channels_last=True if v.get("nhwc") else None)
    torch.manual_seed(0)
    graphed = device.type == "cuda"
    state = TrainingState.create(build_model(cfg), cfg, device=device, capturable=graphed)  # as meta_train
    params = get_params(state.model)
    generator = torch.Generator().manual_seed(0)
    batches = [random_image_tasks(cfg, generator).to(device) for _ in range(4)]
    tic = time.perf_counter()
    if graphed:
        step = GraphedMetaStep(state.model, params, state.optimizer, meta_loss, cfg, batches[0])
    else:
        def step(tasks):
            return eager_step(state, params, meta_loss, tasks)
        step(batches[0])  # one untimed iteration (allocations, first-call work)
    sync(device)
    setup_s = time.perf_counter() - tic
    times: list[float] = []
    until = time.perf_counter() + seconds
    while len(times) < most and (len(times) < 3 or time.perf_counter() < until):
        tic = time.perf_counter()
        step(batches[len(times) % len(batches)])
        sync(device)
        times.append(time.perf_counter() - tic)
    out = {"ms": round(1000 * statistics.median(times), 3), "iterations": len(times),
           "setup_s": round(setup_s, 2)}
    if device.type == "cuda":
        out["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--presets", default=",".join(TABLE1), help="comma-separated Omniglot presets")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per variant (default 2)")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    if not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    device = resolve_device(args.device)
    presets = [p for p in args.presets.split(",") if p]
    cfgs = {p: omniglot_preset(p) for p in presets}  # an unknown preset fails here, before any timing
    result = {"device": device_name(str(device)), "torch": torch.__version__, "python": platform.python_version(),
              "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "method": "median ms per meta-iteration on random images of the preset's shapes; "
                        + ("CUDA graph, cudnn.benchmark on" if device.type == "cuda" else "eager step"),
              "seconds_per_variant": args.seconds, "presets": {}, "errors": {}}
    if device.type == "cpu":
        result["cpu_threads"] = torch.get_num_threads()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, args.out)

    for preset, cfg in cfgs.items():
        for v in variants(device):
            name = variant_name(v)
            try:
                timed = time_variant(cfg, v, device, args.seconds)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as err:  # out of memory, a kernel refused
                result["errors"][f"{preset} {name}"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                print(f"{preset:12s} {name:10s} failed: {result['errors'][f'{preset} {name}']}", flush=True)
            else:
                result["presets"].setdefault(preset, {})[name] = timed
                print(f"{preset:12s} {name:10s} {timed['ms']:9.2f} ms/iteration "
                      f"(median of {timed['iterations']}, setup {timed['setup_s']:.1f} s)", flush=True)
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
            write()
    return 0 if all(p in result["presets"] for p in presets) else 1  # every preset has a variant


if __name__ == "__main__":
    sys.exit(main())
