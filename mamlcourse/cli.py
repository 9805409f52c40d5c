"""Command line for long runs: ``python -m mamlcourse train|eval sine|omniglot ...``.

    python -m mamlcourse train sine --preset paper --out runs/sine
    python -m mamlcourse eval sine --checkpoint runs/sine --tasks 600
    python -m mamlcourse train omniglot --preset paper-5w1s --out runs/omniglot-5w1s
    python -m mamlcourse eval omniglot --checkpoint runs/omniglot-5w1s --lake-runs

Training into a folder that holds a checkpoint resumes it; ``--time-limit`` stops a run
cleanly (saved, exit 0) and the same command continues it. ``train`` writes
``results.json`` into its run folder; ``eval`` never touches the folder it scores and
writes to ``--out`` (default ``runs/eval/<run folder name>``). Bad settings and failures
stop the command with one line naming the problem and the fix, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch

from .checkpoint import CheckpointMismatch
from .config import CONVENTIONS, DOWNSAMPLES, get_preset, replace, resolve_device
from .train import StoppedAtTimeLimit, TrainingDiverged

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mamlcourse",
                                     description="Train and evaluate MAML on sine waves and Omniglot.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="meta-train (resumes a run folder's checkpoint)")
    train.add_argument("task", choices=["sine", "omniglot"])
    train.add_argument("--preset", help="sine: paper, quick; omniglot: paper-5w1s, paper-5w5s, "
                       "paper-20w1s, paper-20w5s, quick-5w1s, quick (default: paper / paper-5w1s)")
    train.add_argument("--out", required=True, help="run folder: checkpoints and results.json")
    train.add_argument("--iterations", type=int, dest="num_iterations")
    train.add_argument("--seed", type=int)
    train.add_argument("--inner-lr", type=float, dest="inner_lr")
    train.add_argument("--outer-lr", type=float, dest="outer_lr")
    train.add_argument("--inner-steps", type=int, dest="num_inner_steps")
    train.add_argument("--tasks-per-batch", type=int, dest="tasks_per_batch")
    train.add_argument("--k-shot", type=int, dest="k_shot")
    train.add_argument("--k-query", type=int, dest="k_query")
    train.add_argument("--n-way", type=int, dest="n_way", help="omniglot only")
    train.add_argument("--downsample", choices=DOWNSAMPLES, dest="downsample",
                       help="omniglot: halve the images by 2x2 max-pooling or by stride-2 convolutions "
                       "(default: the preset's)")
    train.add_argument("--conventions", choices=CONVENTIONS, dest="conventions",
                       help="omniglot: the network's details the paper leaves open, settled as PyTorch "
                       "does or as the original code did (default: the preset's)")
    train.add_argument("--first-order", action="store_true", default=None, dest="first_order")
    train.add_argument("--checkpoint-every", type=int, dest="checkpoint_every")
    train.add_argument("--tasks", type=int, dest="eval_tasks", help="test tasks scored at the end")
    train.add_argument("--vectorize", choices=["auto", "vmap", "loop"], default="auto",
                       help="run a meta-batch's tasks under vmap or as a loop (default: auto)")
    train.add_argument("--layout", choices=["auto", "nchw", "nhwc"], default="auto",
                       help="omniglot: store images channels-first (nchw) or channels-last (nhwc); "
                       "the same maths (default auto: nhwc on a CPU, nchw on a GPU)")
    train.add_argument("--cuda-graph", action="store_true",
                       help="on a GPU, replay each meta-iteration as a captured CUDA graph")
    train.add_argument("--tf32", action="store_true",
                       help="on a GPU, allow TF32 arithmetic: faster, less exact meta-gradients")
    train.add_argument("--data", help="omniglot: folder holding images_background.zip and "
                       "images_evaluation.zip (default: $MAMLCOURSE_DATA, else a download folder)")
    train.add_argument("--time-limit", type=float, metavar="SECONDS",
                       help="stop after this many seconds, saved: the same command continues")
    _add_common(train)

    evaluate = commands.add_parser("eval", help="score a trained run folder")
    evaluate.add_argument("task", choices=["sine", "omniglot"])
    evaluate.add_argument("--checkpoint", required=True, help="run folder written by train")
    evaluate.add_argument("--tasks", type=int, dest="eval_tasks", help="test tasks (default 600)")
    evaluate.add_argument("--inner-steps", type=int, dest="eval_inner_steps",
                          help="omniglot: inner steps at test for the headline accuracy")
    evaluate.add_argument("--lake-runs", action="store_true",
                          help="omniglot: also score Lake et al.'s 20 official one-shot runs")
    evaluate.add_argument("--data", help="omniglot: folder holding the zips (see train --data)")
    evaluate.add_argument("--out", help="folder for results.json (default: runs/eval/<checkpoint "
                          "folder name>); the checkpoint's folder is left as it is")
    _add_common(evaluate)
    return parser


def _config_from_args(args: argparse.Namespace):
    """The preset with every option given: an option whose ``dest`` is a config field sets it."""
    preset = args.preset or ("paper" if args.task == "sine" else "paper-5w1s")
    cfg = get_preset(args.task, preset)
    fields = {f.name for f in dataclasses.fields(cfg)} - {"preset", "vectorize", "channels_last"}
    changes = {name: value for name, value in vars(args).items() if name in fields}
    for option, given in (("--n-way", args.n_way), ("--downsample", args.downsample),
                          ("--conventions", args.conventions)):
        if args.task == "sine" and given is not None:
            raise ValueError(f"{option} applies to omniglot only")
    if args.task == "sine" and (args.data is not None or args.cuda_graph or args.layout != "auto"):
        raise ValueError("--data, --cuda-graph and --layout apply to omniglot only")
    if changes["k_shot"] is not None and changes["k_query"] is None and args.task == "sine":
        changes["k_query"] = changes["k_shot"]  # the paper draws as many query points as shots
    changes["vectorize"] = {"auto": None, "vmap": True, "loop": False}[args.vectorize]
    if args.task == "omniglot":
        changes["channels_last"] = {"auto": None, "nchw": False, "nhwc": True}[args.layout]
    return replace(cfg, **changes)  # options left unset (None) keep the preset's value


def _eval_results_path(args: argparse.Namespace) -> Path:
    """Where ``eval`` writes: ``--out``, else runs/eval/<name of the scored folder>; never that folder."""
    scored = Path(args.checkpoint).resolve()
    scored = scored.parent if scored.suffix == ".pt" else scored
    folder = Path(args.out) if args.out else Path("runs") / "eval" / scored.name
    if folder.resolve() == scored:
        raise ValueError(f"--out {args.out} is the folder being scored; eval leaves it as it is: "
                         "choose another folder")
    return folder / "results.json"


def run(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = build_parser().parse_args(argv)
    if args.eval_tasks is not None and args.eval_tasks < 1:
        raise ValueError(f"--tasks must be an integer >= 1, got {args.eval_tasks}")
    deadline = None
    if getattr(args, "time_limit", None) is not None:
        if not (math.isfinite(args.time_limit) and args.time_limit > 0):
            raise ValueError(f"--time-limit must be a number of seconds > 0, got {args.time_limit}")
        deadline = started + args.time_limit
    results_path = _eval_results_path(args) if args.command == "eval" else None
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        # TF32 trades exactness of matmuls and convolutions for speed, which moves the float32
        # meta-gradient (docs/results.md measures both); off unless --tf32 asks for it.
        allow = getattr(args, "tf32", False)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allow
    progress = not args.no_progress
    if args.task == "sine":
        from .experiments.sine import eval_sine, format_table, train_sine
        if args.command == "train":
            results = train_sine(_config_from_args(args), args.out, device=device, progress=progress,
                                 deadline=deadline)
        else:
            results = eval_sine(args.checkpoint, device=device, num_tasks=args.eval_tasks,
                                results_path=results_path)
        print(format_table(results))
        _say_where(args, results_path)
        return 0
    from .experiments import omniglot as omniglot_run
    if args.command == "train":
        results = omniglot_run.train_omniglot(_config_from_args(args), args.out, device=device,
                                              data_root=args.data, progress=progress,
                                              cuda_graph=args.cuda_graph, deadline=deadline)
    else:
        results = omniglot_run.eval_omniglot(args.checkpoint, device=device, results_path=results_path,
                                             data_root=args.data,
                                             num_tasks=args.eval_tasks,
                                             inner_steps=args.eval_inner_steps,
                                             lake_runs=args.lake_runs, progress=progress)
    print(omniglot_run.format_table(results))
    _say_where(args, results_path)
    return 0


def _say_where(args: argparse.Namespace, results_path: Path | None) -> None:
    print(f"results written to {results_path or Path(args.out) / 'results.json'}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs a command and turns expected failures into one-line messages."""
    try:
        return run(argv)
    except StoppedAtTimeLimit as err:
        print(err)
        return 0
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except (ValueError, FileNotFoundError, CheckpointMismatch, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        return 130
