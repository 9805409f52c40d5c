#!/usr/bin/env python3
"""An experiment, not a library feature: the conv meta-iteration on a CPU, tasks on two threads.

    python benchmarks/task_threads.py --config paper-5w1s --path loop      # what the library does
    python benchmarks/task_threads.py --config paper-5w1s --path threads   # the experiment
    python benchmarks/task_threads.py --config paper-5w1s --check          # float64 gradients equal?

``loop``: ``meta_loss`` over the tasks one after another with 2 intra-op threads, then one
backward (mamlcourse's CPU path for ConvNet4). ``threads``: one intra-op thread, the tasks
split into two halves, each half adapted and back-propagated on its own Python thread (with
its own copy of the module, because ``functional_call`` swaps a module's parameters while it
runs), then the two gradient sums added. Run each path in its own process for its speed;
``--path both`` measures what running them in one process costs the loop path.
Random 28x28 images of the preset's shapes; the median of ``--iterations`` after one warm-up.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch.func import functional_call

sys.path.insert(0, str(Path(__file__).resolve().parent))
import meta_step  # noqa: E402

from mamlcourse.config import omniglot_preset  # noqa: E402
from mamlcourse.maml import get_params, inner_loop, loss_function, meta_loss  # noqa: E402
from mamlcourse.models import build_model  # noqa: E402
from mamlcourse.tasks import TaskBatch, seeded_generator  # noqa: E402


def loop_gradient(model, tasks: TaskBatch, cfg) -> None:
    """The library's path: ``meta_loss`` as a loop over tasks, one backward."""
    loss, _ = meta_loss(model, get_params(model), tasks, cfg, vectorize=False)
    loss.backward()


def threaded_gradient(model, copies, pool: ThreadPoolExecutor, tasks: TaskBatch, cfg) -> None:
    """Two halves of the tasks on two threads, each with a backward per task."""
    params = get_params(model)
    loss_fn = loss_function(cfg.loss)
    every = list(tasks.tasks())

    def half(args):
        module, chunk = args
        total = None
        for x_support, y_support, x_query, y_query in chunk:
            adapted = inner_loop(module, params, x_support, y_support, loss_fn=loss_fn,
                                 inner_lr=cfg.inner_lr, num_inner_steps=cfg.num_inner_steps,
                                 grad_with="autograd")
            loss = loss_fn(functional_call(module, adapted, (x_query,)), y_query) / len(every)
            grads = torch.autograd.grad(loss, list(params.values()))
            total = grads if total is None else [a + b for a, b in zip(total, grads)]
        return total

    first, second = pool.map(half, [(copies[0], every[0::2]), (copies[1], every[1::2])])
    for p, a, b in zip(params.values(), first, second):
        p.grad = a + b


def setup(config: str, dtype: torch.dtype):
    cfg = omniglot_preset(config)
    torch.manual_seed(0)
    model = build_model(cfg).to(dtype)
    tasks = meta_step.random_image_tasks(cfg, seeded_generator(0))
    tasks = TaskBatch(*[t.to(dtype) if t.is_floating_point() else t for t in tasks])
    return cfg, model, tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper-5w1s", choices=["paper-5w1s", "paper-20w1s"])
    parser.add_argument("--path", default="loop", choices=["loop", "threads", "both"],
                        help="both: the two paths in turn in one process, each worker thread "
                             "set to one intra-op thread by its initializer, the main thread to 2")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--check", action="store_true", help="compare both paths' float64 gradients")
    args = parser.parse_args(argv)
    # Two CPU threads in all: 2 intra-op threads for the loop, 2 task threads x 1 for threads.
    torch.set_num_threads(1 if args.path == "threads" and not args.check else 2)
    one_thread = (lambda: torch.set_num_threads(1)) if args.path == "both" else None
    pool = ThreadPoolExecutor(2, initializer=one_thread)
    dtype = torch.float64 if args.check else torch.float32
    cfg, model, tasks = setup(args.config, dtype)
    copies = [copy.deepcopy(model) for _ in range(2)]
    run = {"loop": lambda: loop_gradient(model, tasks, cfg),
           "threads": lambda: threaded_gradient(model, copies, pool, tasks, cfg)}
    if args.check:
        grads = {}
        for name, fn in run.items():
            model.zero_grad()
            fn()
            grads[name] = [p.grad.clone() for p in model.parameters()]
        scale = max(g.abs().max().item() for g in grads["loop"])
        diff = max((a - b).abs().max().item() for a, b in zip(grads["loop"], grads["threads"]))
        print(f"{args.config}: float64 meta-gradients, largest difference relative to the largest "
              f"entry: {diff / scale:.1e}")
        return 0
    paths = ["loop", "threads"] if args.path == "both" else [args.path]
    times = {path: [] for path in paths}
    for _ in range(args.iterations + 1):
        for path in paths:
            model.zero_grad()
            tic = time.perf_counter()
            run[path]()
            times[path].append(1000 * (time.perf_counter() - tic))
    for path in paths:
        print(f"{args.config} {path}{' (in turn)' if args.path == 'both' else ''}: "
              f"{statistics.median(times[path][1:]):.0f} ms per meta-iteration "
              f"(median of {args.iterations}, 2 CPU threads in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
