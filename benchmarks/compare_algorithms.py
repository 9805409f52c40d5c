#!/usr/bin/env python3
"""The MAML family side by side, in one run: sine, Omniglot 5-way 1-shot, and the cost of second order.

    python benchmarks/compare_algorithms.py --mode quick              # a few minutes on a 2-core CPU
    python benchmarks/compare_algorithms.py --mode full --device cuda # minutes on one GPU

Every algorithm of ``mamlcourse.algorithms`` is meta-trained with ``meta_train`` and scored
on the same fixed test tasks:

* sine, 5-shot: MSE ± 95% CI after 1, 5 and 10 steps (and 0..10 in the JSON);
* Omniglot 5-way 1-shot: accuracy ± 95% CI, ms per meta-iteration, peak memory, with
  the published number and its source beside ours;
* cost of second order: ms and peak memory per meta-iteration for 1..10 inner steps,
  second vs first order, on the sine MLP and on ConvNet4;
* what first order gives up: first-order MAML at MAML's iterations, and at MAML's time.

Results go to a JSON file (``--out``, default ``results/beyond_maml_<mode>.json``) with
their provenance (command, date, machine, torch version, sizes), written after each
benchmark so an interrupted run keeps what it finished; the tables are printed at the end.
This is a measurement script, not a timed test: its numbers depend on the machine.

Omniglot reads ``--data`` (default ``$MAMLCOURSE_DATA``, see ``mamlcourse.data.omniglot``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from mamlcourse.algorithms import ALGORITHMS, get_algorithm
from mamlcourse.config import resolve_device, resolve_mode
from mamlcourse.experiments import compare
from mamlcourse.experiments.results_json import write_json

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ("omniglot", "cost", "sine")  # the order they run in: the most informative first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(compare.MODES), default=None,
                        help="sizes: quick (CPU, minutes) or full (GPU); default $MAMLCOURSE_MODE, "
                             "else full with CUDA and quick without")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--algorithms", default=None,
                        help="comma-separated subset of the algorithms (default: all that apply)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    parser.add_argument("--data", default=None, help="Omniglot folder (default $MAMLCOURSE_DATA)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file of results (default results/beyond_maml_<mode>.json)")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="keep checkpoints here, so a rerun resumes or only re-scores (default: none)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: as fast as 2 for these small networks on a "
                             "2-core CPU, and it does not collapse when other processes share the cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    names = None if args.algorithms is None else [a.strip() for a in args.algorithms.split(",") if a.strip()]
    if names is not None:
        unknown = sorted(set(names) - set(ALGORITHMS))
        if unknown:
            parser.error(f"--algorithms: unknown {unknown}; choose from {list(ALGORITHMS)}")
    mode = resolve_mode(args.mode)
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    sizes = compare.MODES[mode]
    out = args.out or ROOT / "results" / f"beyond_maml_{mode}.json"
    arguments = sys.argv[1:] if argv is None else argv
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/compare_algorithms.py", *arguments])
    results = {"provenance": compare.provenance(mode, command, device),
               "sizes": {**vars(sizes), "cost_steps": list(sizes.cost_steps)}}
    progress = not args.no_progress
    tic = time.perf_counter()
    for benchmark in (b for b in BENCHMARKS if b in only):
        start = time.perf_counter()
        if benchmark == "sine":
            sine_names = compare.SINE_ALGORITHMS if names is None else [
                n for n in names if get_algorithm(n).supports(compare.sine_config(sizes))]
            results["sine"], _ = compare.run_sine(sizes, names=sine_names, device=device, progress=progress,
                                                  checkpoint_dir=args.checkpoints)
        elif benchmark == "omniglot":
            omniglot_names = compare.OMNIGLOT_ALGORITHMS if names is None else names
            results["omniglot"], _ = compare.run_omniglot(sizes, names=omniglot_names, device=device, data_root=args.data,
                                                          progress=progress, checkpoint_dir=args.checkpoints)
        else:
            results["cost"] = compare.run_cost(sizes, device=device)
        results["provenance"].setdefault("seconds", {})[benchmark] = round(time.perf_counter() - start, 1)
        results["provenance"]["wall_seconds"] = round(time.perf_counter() - tic, 1)
        write_json(out, results)
        print(f"{benchmark}: {time.perf_counter() - start:.0f} s, written to {out}", file=sys.stderr,
              flush=True)
    print(compare.format_tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
