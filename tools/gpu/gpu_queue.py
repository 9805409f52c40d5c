#!/usr/bin/env python3
"""The GPU queue: every GPU window advances the same ordered list of jobs, where the last one stopped.

    python3 tools/gpu/gpu_queue.py next --out $OUT --budget 540 --data .gpu/data   # on the GPU
    python3 tools/gpu/gpu_queue.py bring-back FILES_AT                            # here, after
    python3 tools/gpu/gpu_queue.py status [--budget 540]                           # anywhere

``next`` runs the first unfinished jobs of the queue (``--queue table1``: the CUDA check,
a measurement of how many runs share the GPU best, the four Omniglot runs of the paper's
Table 1, the GPU speed comparison, lesson 5 in full mode) until ``--budget`` seconds minus a
reserve, checkpoints, writes each run's ``results.json`` and ``train.log`` and the queue's
ledger and log under ``docs/gpu/``, and puts every file it changed under ``--out`` for the
trip back. ``bring-back`` copies them into this working tree, checked, ready to commit.
Running ``next`` again (in the next window, from the tree with those files) continues.
It works the same with ``--device cpu`` (``--queue tiny`` takes seconds: the tests).

Named ``gpu_queue.py``, not ``queue.py``: a script's folder comes first on ``sys.path``, and a
``queue.py`` there would replace the standard library's ``queue`` for torch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

STARTED = time.monotonic()  # the budget counts from here, imports included

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CODE = HERE.parents[1]

import queue_bundle  # noqa: E402
import queue_jobs as qj  # noqa: E402


def default_data(root: Path) -> str | None:
    if os.environ.get("MAMLCOURSE_DATA"):
        return os.environ["MAMLCOURSE_DATA"]
    return str(root / ".gpu" / "data") if (root / ".gpu" / "data").is_dir() else None


def cmd_next(args: argparse.Namespace) -> int:
    from queue_runner import Settings, Window

    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.budget <= args.reserve:
        raise ValueError(f"--budget {args.budget} must exceed --reserve {args.reserve} (seconds)")
    settings = Settings(
        root=args.root, code=CODE, queue=args.queue, device=device, data=args.data or default_data(args.root),
        budget_s=args.budget, out=args.out, reserve_s=args.reserve, concurrency=args.concurrency,
        max_concurrency=args.max_concurrency, max_chunk=args.max_chunk,
        partial_eval_tasks=args.partial_eval_tasks, checkpoint_s=args.checkpoint_seconds,
        min_chunk_s=args.min_chunk_seconds if args.min_chunk_seconds is not None
        else (20.0 if device.startswith("cuda") else 3.0),
        only=tuple(args.only.split(",")) if args.only else (), mps=not args.no_mps)
    if settings.data and not Path(settings.data).is_dir():
        raise ValueError(f"--data {settings.data}: no such folder; on the GPU machine carry it along "
                         "(device tool: carry=[\".gpu\"], with the zips in .gpu/data)")
    known = {j.name for j in qj.QUEUES[args.queue]}
    unknown = set(settings.only) - known
    if unknown:
        raise ValueError(f"--only: no job {sorted(unknown)} in queue {args.queue}; its jobs: {sorted(known)}")
    window = Window(settings, started=STARTED)
    window.run()
    print(status_text(args.root, args.queue, window.device_name, args.budget))
    return 0


def status_text(root: Path, queue: str, device_name: str | None, budget: float) -> str:
    """Where every job stands, with the device time each still needs (projected, and from what)."""
    ledger = qj.load_ledger(root, queue)
    names = list(ledger["rates"]) + list(qj.PRIOR_MS)
    device_name = device_name or (names[0] if names else "cpu")
    kind = "cpu" if device_name == "cpu" else "cuda"
    measure = ledger["measure"].get(device_name)
    lines = [f"queue {queue} ({qj.ledger_path(queue)}), {len(ledger['windows'])} window(s) so far; "
             f"figures for {device_name}"]
    total = 0.0
    for job in qj.QUEUES[queue]:
        if job.kind == "command":
            record = ledger["commands"].get(job.name, {})
            passed = record.get("passed", {})
            state = f"passed on {', '.join(passed)}" if passed else (
                f"last exit {record['last']['rc']}" if "last" in record else "not run")
            need = 0 if device_name in passed else record.get("seconds", job.estimate_s)
            source = "measured" if "seconds" in record else "estimate"
            lines.append(f"  {job.name:<13} {state:<34} needs ~{need:.0f} s ({source})")
            total += need
        elif job.kind == "measure":
            state = "not yet" if measure is None else (
                "incomplete" if measure.get("incomplete") else f"best {measure.get('best')}, "
                f"gain {measure.get('gain')}")
            lines.append(f"  {job.name:<13} {state}")
        else:
            p = qj.read_progress(root, job)
            state = qj.train_state(job, p)
            settings = qj.run_settings(root, queue, device_name, job, p)
            ms, source = qj.rate_ms(ledger, device_name, job.preset, 1, probed=settings.ms)
            evals = 0.0 if state == "done" else qj.eval_seconds(ledger, device_name, kind, job.preset, job.eval_tasks)
            need = evals + ((job.target - p.step) * ms / 1000 if ms else float("nan"))
            total += need
            score = "" if p.accuracy is None else (
                f"; last eval at {p.results_iterations}: {100 * p.accuracy:.2f}% ± {100 * p.ci95:.2f} "
                f"({p.results_tasks} tasks)")
            rate = f"{ms:.2f} ms/it, {source}" if ms else "ms/it unknown"
            options = " ".join(settings.options(kind)) or "the CLI's defaults"
            head = f"  {job.name:<13} {state:<9} {p.step:>6}/{job.target:<6}"
            lines.append(f"{head} nothing left{score}" if state == "done" else
                         f"{head} needs ~{need / 60:.1f} min alone ({rate}){score}; next chunk: {options}")
    gain = (measure or {}).get("gain")
    lines.append(f"  total ~{total / 60:.1f} device-minutes one job at a time (projected), "
                 f"~{total / (budget - 60) if budget > 60 else float('nan'):.1f} windows of {budget:.0f} s"
                 + (f"; sharing the GPU measured {gain:.2f}x faster" if gain else ""))
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    print(status_text(args.root, args.queue, args.device_name, args.budget))
    return 0


def cmd_bring_back(args: argparse.Namespace) -> int:
    copied = queue_bundle.bring_back(args.files_at, args.root, force=args.force, dry_run=args.dry_run)
    verb = "would copy" if args.dry_run else "copied"
    print(f"{verb} {len(copied)} file(s) into {args.root}:")
    print("\n".join(f"  {p}" for p in copied))
    if not args.dry_run:
        print(f"then: git add {' '.join(sorted({str(Path(p).parent) for p in copied}))} && git commit")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu_queue.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=CODE, help="the repository the queue reads and writes "
                        "(default: the one holding this script)")
    parser.add_argument("--queue", choices=sorted(qj.QUEUES), default="table1")
    commands = parser.add_subparsers(dest="command", required=True)

    nxt = commands.add_parser("next", help="run the first unfinished jobs for --budget seconds")
    nxt.add_argument("--budget", type=float, default=540.0,
                     help="seconds this command may take in all (default 540: a 600 s device command)")
    nxt.add_argument("--reserve", type=float, default=15.0,
                     help="seconds kept at the end for stopping runs and the export (default 15)")
    nxt.add_argument("--out", type=Path, help="where the changed files go for the trip back ($OUT)")
    nxt.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    nxt.add_argument("--data", help="folder of the Omniglot zips (default: $MAMLCOURSE_DATA, else .gpu/data)")
    nxt.add_argument("--only", help="comma-separated job names: run only these")
    nxt.add_argument("--concurrency", type=int, help="training runs at once (default: the measured best)")
    nxt.add_argument("--max-concurrency", type=int, default=4, help="most runs the measure job tries at once")
    nxt.add_argument("--max-chunk", type=int, help="most iterations per chunk (default: what fits)")
    nxt.add_argument("--partial-eval-tasks", type=int, default=100,
                     help="test tasks scored after an unfinished chunk (default 100)")
    nxt.add_argument("--min-chunk-seconds", type=float, help="shortest chunk worth a process start "
                     "(default 20 on a GPU, 3 on a CPU)")
    nxt.add_argument("--checkpoint-seconds", type=float, default=30.0,
                     help="training seconds between checkpoints: what a stop at the deadline can lose")
    nxt.add_argument("--no-mps", action="store_true", help="never start CUDA MPS")

    status = commands.add_parser("status", help="where each job stands and the device time it needs")
    status.add_argument("--device-name", help="whose figures (default: the first measured, else the priors')")
    status.add_argument("--budget", type=float, default=540.0, help="seconds per window, for the count")

    back = commands.add_parser("bring-back", help="copy a window's files into the working tree")
    back.add_argument("files_at", type=Path, help="the folder the device tool put $OUT's files in")
    back.add_argument("--force", action="store_true", help="overwrite files changed here since the window")
    back.add_argument("--dry-run", action="store_true", help="check only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.root = args.root.resolve()
    for name in ("concurrency", "max_concurrency", "max_chunk", "partial_eval_tasks"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            print(f"error: --{name.replace('_', '-')} must be >= 1, got {value}", file=sys.stderr)
            return 2
    try:
        return {"next": cmd_next, "status": cmd_status, "bring-back": cmd_bring_back}[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
