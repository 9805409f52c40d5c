#!/usr/bin/env python3
"""The GPU speed comparison, redone: gradients checked in float64 first, exact float32 timed, TF32 apart.

    PYTHONPATH=. python3 tools/gpu/speed.py --device cuda --out docs/gpu/speed.json

For each config (default: paper-5w1s and paper-20w1s, real Omniglot episodes) this runs
``benchmarks/meta_step.py``'s benchmark twice: with TF32 off (exact float32 arithmetic: the
figure to quote) and with TF32 on (cuDNN convolutions and matmuls in TF32: a separate line).
Each run first compares every peer's meta-gradient with mamlcourse's in float64 on the same
device, and a peer that disagrees is refused with the difference, never timed
(``meta_step.run_benchmark``). ``cudnn.benchmark`` is on for every implementation, as the
course's CLI sets it on a GPU. Peers that are not installed are listed as such: on the GPU
machine carry them as wheels (tools/gpu/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import meta_step  # noqa: E402
from mamlcourse.config import resolve_device  # noqa: E402
from mamlcourse.experiments.results_json import write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--configs", default="paper-5w1s,paper-20w1s",
                        help=f"comma-separated meta_step configs, from {list(meta_step.BENCHMARKS)}")
    parser.add_argument("--iterations", type=int, help="timed iterations (default: meta_step's per config)")
    parser.add_argument("--peers", default=",".join(meta_step.PEERS), help="comma-separated peers ('' none)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "gpu" / "speed.json")
    args = parser.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(meta_step.BENCHMARKS))
    if unknown:
        parser.error(f"--configs: unknown {unknown}; choose from {list(meta_step.BENCHMARKS)}")
    device = resolve_device(args.device)
    peers = tuple(p for p in args.peers.split(",") if p)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "cudnn_benchmark": torch.backends.cudnn.benchmark, "runs": []}
    for name in configs:
        bench = meta_step.BENCHMARKS[name]
        for tf32 in (False, True):
            if tf32 and device.type != "cuda":
                continue
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
            result = meta_step.run_benchmark(
                bench, device=device, iterations=args.iterations or bench.iterations, warmup=bench.warmup,
                peers=peers, check_dtype="float64")
            result["tf32"] = tf32
            results["runs"].append(result)
            write_json(args.out, results)  # after each run: an interrupted comparison keeps what it did
            print(f"== {name}, {'TF32' if tf32 else 'exact float32 (TF32 off)'}")
            print(meta_step.format_table(result), flush=True)
    print(json.dumps({r["config"] + (" tf32" if r["tf32"] else ""): r["ms_per_iteration"]
                      for r in results["runs"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
