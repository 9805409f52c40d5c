"""What a meta-iteration costs: median wall time and peak memory, measured, not estimated.

A meta-iteration is what ``meta_train`` repeats: the objective on a meta-batch, its
backward pass, and an Adam step. Memory is measured where it can be trusted:

* on CUDA, ``torch.cuda.max_memory_allocated`` above what was allocated before the
  iterations (exact: the caching allocator's own count);
* on Linux CPUs, the growth of the process's peak resident set size (``VmHWM``) after
  handing freed heap pages back to the system (``malloc_trim``) and resetting the peak to
  the current size (``/proc/self/clear_refs``), so one process can take many measurements;
* elsewhere, ``resource.getrusage``'s ``ru_maxrss`` growth in a fresh process per
  measurement (a peak never comes down, so only a new process starts from zero).

Python's ``tracemalloc`` does not see torch's allocations, so it is not used. Resident
memory includes allocator slack: differences of a few MB are noise.

Second-order MAML keeps every inner step's graph for the backward pass, so its memory
grows with ``num_inner_steps``; first order keeps only the last step's. ``inner_step_costs``
measures both for 1..N steps.

Example:
    >>> cost = measure(get_algorithm("maml"), cfg, synthetic_tasks(cfg, 8), repeats=3)
    >>> cost.ms_per_iteration, cost.peak_mb
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import multiprocessing
import re
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..algorithms.base import Algorithm
from ..algorithms.maml_variants import FIRST_ORDER_MAML, MAML
from ..config import MetaConfig, OmniglotConfig
from ..maml import get_params
from ..tasks import TaskBatch, seeded_generator


@dataclass(frozen=True)
class Cost:
    """Measured cost of one meta-iteration.

    Attributes:
        ms_per_iteration: median wall time over the timed repeats (after one warm-up).
        peak_mb: peak memory of an iteration above what is held between iterations (model,
            optimizer state, gradients, tasks), in MiB: the graph the backward pass needs.
        memory_method: how ``peak_mb`` was measured.
        device: where it ran.
    """

    ms_per_iteration: float
    peak_mb: float
    memory_method: str
    device: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def synthetic_tasks(cfg: MetaConfig, num_tasks: int, *, seed: int = 0) -> TaskBatch:
    """Tasks with the shapes of ``cfg``'s training tasks; for timing and memory only.

    Sine tasks are real (they are cheap); Omniglot tasks are random images with the right
    labels, so a cost measurement needs no data on disk (cost does not depend on pixels).
    """
    generator = seeded_generator(seed)
    if isinstance(cfg, OmniglotConfig):
        n, size = cfg.n_way, cfg.image_size

        def images(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
            x = (torch.rand(num_tasks, n * per_class, 1, size, size, generator=generator) > 0.9).float()
            return x, torch.arange(n).repeat_interleave(per_class).repeat(num_tasks, 1)

        return TaskBatch(*images(cfg.k_shot), *images(cfg.k_query))
    from ..data.sine import SineTasks

    return SineTasks.from_config(cfg).sample(num_tasks, generator)


def _iterations(algorithm: Algorithm, cfg: MetaConfig, tasks: TaskBatch, repeats: int,
                device: torch.device, memory: str) -> tuple[list[float], float]:
    """A warm-up, then ``repeats`` timed meta-iterations; (milliseconds each, peak MiB).

    The peak is above what is held between iterations (model, Adam state, gradients, tasks):
    the memory an iteration's forward and backward passes need.

    ``memory``: ``"cuda"``, ``"hwm"`` (Linux peak RSS, reset first) or ``"maxrss"`` (this
    process's lifetime peak: only meaningful in a fresh process).
    """
    torch.manual_seed(cfg.seed)
    model = algorithm.build(cfg).to(device)
    tasks = tasks.to(device)
    params = get_params(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.outer_lr)

    def iteration() -> None:
        loss, _ = algorithm.objective(model, params, tasks, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # A warm-up iteration first: it pays one-off costs (lazy initialisation, kernel choice) and
    # creates what lives between iterations (Adam's state, gradients), which the baseline holds.
    iteration()
    if memory == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    elif memory == "hwm":
        before = _reset_peak_rss()
    else:
        before = _maxrss_mb()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        iteration()
        if memory == "cuda":
            torch.cuda.synchronize(device)
        times.append(1000 * (time.perf_counter() - tic))
    if memory == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    elif memory == "hwm":
        peak = _proc_status_mb("VmHWM") - before
    else:
        peak = _maxrss_mb() - before
    return times, peak


def _proc_status_mb(key: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"/proc/self/status has no {key}")
    return int(match.group(1)) / 1024


def _reset_peak_rss() -> float:
    """Return freed heap pages to the system, reset the peak RSS to the current RSS; the RSS in MiB."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc: madvise free pages away
    except (OSError, AttributeError):
        pass  # another libc: the peak then includes reused free pages (an underestimate)
    Path("/proc/self/clear_refs").write_text("5")  # "5": reset VmHWM (Linux >= 4.0)
    return _proc_status_mb("VmRSS")


def _peak_rss_resettable() -> bool:
    try:
        _reset_peak_rss()
        return True
    except OSError:
        return False


def _maxrss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _child(conn, algorithm: Algorithm, cfg: MetaConfig, tasks: TaskBatch, repeats: int, threads: int) -> None:
    try:
        torch.set_num_threads(threads)
        conn.send(("ok", _iterations(algorithm, cfg, tasks, repeats, torch.device("cpu"), "maxrss")))
    except BaseException:  # sent back and raised in the parent, with the child's traceback
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def measure(algorithm: Algorithm, cfg: MetaConfig, tasks: TaskBatch, *, repeats: int = 3,
            device: torch.device | str = "cpu") -> Cost:
    """Median time and peak memory of ``algorithm``'s meta-iteration on ``tasks``.

    Args:
        algorithm: what to run (its ``build`` and ``objective``).
        cfg: the settings (``num_inner_steps``, ``first_order``, ...).
        tasks: one meta-batch, reused for every repeat (``synthetic_tasks`` makes one).
        repeats: timed iterations after one warm-up (at least 1).
        device: CUDA and Linux CPUs measure in this process; other CPUs in a new process.

    Raises:
        RuntimeError: the measurement failed in the child process (its traceback is included).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1 (timed iterations after the warm-up), got {repeats}")
    device = torch.device(device)
    if device.type == "cuda":
        times, peak = _iterations(algorithm, cfg, tasks, repeats, device, "cuda")
        method = "torch.cuda.max_memory_allocated"
    elif _peak_rss_resettable():
        times, peak = _iterations(algorithm, cfg, tasks, repeats, device, "hwm")
        method = "peak RSS growth (VmHWM, reset before)"
    else:
        times, peak = _in_new_process(algorithm, cfg, tasks, repeats)
        method = "ru_maxrss growth in a new process"
    return Cost(statistics.median(times), max(peak, 0.0), method, str(device))


def _in_new_process(algorithm: Algorithm, cfg: MetaConfig, tasks: TaskBatch, repeats: int
                    ) -> tuple[list[float], float]:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: its peak starts from zero
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child,
                            args=(send, algorithm, cfg, tasks, repeats, torch.get_num_threads()))
    child.start()
    send.close()
    try:
        status, payload = receive.recv()
    except EOFError as err:
        child.join()
        raise RuntimeError(f"the measuring process died (exit code {child.exitcode}); "
                           "it may have run out of memory: try fewer tasks or steps") from err
    child.join()
    if status != "ok":
        raise RuntimeError(f"measuring {algorithm.name} failed in the child process:\n{payload}")
    return payload


def inner_step_costs(cfg: MetaConfig, tasks: TaskBatch, *, steps: Sequence[int] = tuple(range(1, 11)),
                     algorithms: Sequence[Algorithm] = (MAML, FIRST_ORDER_MAML), repeats: int = 3,
                     device: torch.device | str = "cpu") -> list[dict]:
    """Cost of a meta-iteration for each number of inner steps, second and first order.

    Args:
        cfg: the settings; ``num_inner_steps`` is replaced by each of ``steps``.
        tasks: one meta-batch (``synthetic_tasks``).
        steps: the numbers of inner steps measured.
        algorithms: what is compared (default MAML and first-order MAML).

    Returns:
        One row per (algorithm, num_inner_steps): ``{"algorithm", "num_inner_steps",
        "ms_per_iteration", "peak_mb", "memory_method", "device"}``.
    """
    rows = []
    for algorithm in algorithms:
        for num_steps in steps:
            step_cfg = dataclasses.replace(cfg, num_inner_steps=num_steps)
            cost = measure(algorithm, step_cfg, tasks, repeats=repeats, device=device)
            rows.append({"algorithm": algorithm.name, "num_inner_steps": num_steps, **cost.to_dict()})
    return rows
