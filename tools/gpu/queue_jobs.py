"""The GPU queue's jobs in order, what each still needs, and the ledger of what was measured.

A training job's progress lives in its run folder (``checkpoint.pt``: the step and the
training seconds; ``results.json``: the last evaluation), so the files that are committed
are the whole truth about it. A command job (a script run once) is done when the ledger
records that it passed on this kind of device. The ledger (``docs/gpu/<queue>-queue.json``)
also keeps every window's chunks and the ms/iteration observed for each preset at each
number of runs sharing the device: what the next window sizes its chunks with.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

# Measured 2026-11-27 on one NVIDIA H200, one process alone, the meta-iteration as a CUDA
# graph, TF32 off, torch 2.11 (docs/gpu/2026-11-27-h200/tf32speed.txt, otherpresets.txt).
# Used only until this queue has measured the same device itself.
PRIOR_MS = {"NVIDIA H200": {"paper-5w1s": 10.06, "paper-20w1s": 62.12, "paper-5w5s": 30.36,
                            "paper-20w5s": 227.45}}
# Measured with the max-pool network; the paper presets now train the strided one (fewer operations,
# not yet timed on a GPU), so until the probe and the ledger measure it these overstate its time.
PRIOR_SOURCE = "docs/gpu/2026-11-27-h200 (max-pool network, one process, CUDA graph, TF32 off)"
# Guesses until a window measures them: a process's start (imports, data, CUDA graph capture)
# and an evaluation's seconds per test task (the 2026-11-27 run scored 600 5-way tasks and
# Lake's runs in 15.7 s, 0.026 s a task; 20-way tasks are larger, hence twice that).
# Chunks are planned at this many times the measured training ms/iteration: validation
# (every 500 iterations in the paper presets) is not training time, and rates vary.
SAFETY = 1.1
GUESS_START_S = {"cuda": 30.0, "cpu": 20.0}
GUESS_EVAL_S_PER_TASK = {"cuda": 0.05, "cpu": 0.5}


@dataclass(frozen=True)
class TrainJob:
    """Train ``preset`` into ``folder`` up to ``target`` iterations, then score ``eval_tasks``.

    ``options`` are extra ``train`` options given identically to every chunk (settings
    that a checkpoint refuses to change); ``lake`` adds Lake et al.'s 20 one-shot runs.
    """

    name: str
    preset: str
    folder: str
    target: int = 60_000
    eval_tasks: int = 600
    lake: bool = False
    options: tuple[str, ...] = ()
    kind: str = "train"


@dataclass(frozen=True)
class CommandJob:
    """Run ``argv`` once, alone on the device; done when it exits 0 on this device kind.

    ``{python}`` and ``{device}`` in ``argv`` are filled in; new or changed files under
    ``watch`` are its outputs; ``requires`` is a file that must exist for it to run.
    ``settles_settings``: the probe, whose timings choose each run's settings; a run that has not
    begun does not begin before it has run here (a run keeps the arithmetic it began with).
    ``resumable``: the script keeps its progress under ``watch`` (checkpoints) when stopped at a
    window's deadline and continues from it when run again, so it starts in any window with
    ``RESUMABLE_MIN_S`` left instead of waiting for one long enough for all of it.
    """

    name: str
    argv: tuple[str, ...]
    watch: tuple[str, ...] = ()
    estimate_s: float = 60.0
    needs_cuda: bool = True
    requires: str | None = None
    settles_settings: bool = False  # runs not yet begun wait until it has run on this device
    resumable: bool = False
    kind: str = "command"


RESUMABLE_MIN_S = 120.0  # a resumable command starts with this much of the window left: load, then progress


@dataclass(frozen=True)
class MeasureJob:
    """Measure ms/iteration of the unfinished training jobs alone and all at once (and
    under CUDA MPS when it starts); every measured iteration is real progress of those runs."""

    name: str = "measure"
    seconds: float = 15.0
    kind: str = "measure"


def train_groups(jobs: list) -> list[list[TrainJob]]:
    """The queue's training jobs in runs of consecutive ones: each run of them shares the device."""
    groups: list[list[TrainJob]] = []
    previous = None
    for job in jobs:
        if job.kind == "train":
            if previous != "train":
                groups.append([])
            groups[-1].append(job)
        previous = job.kind
    return groups


def probe_path(queue: str) -> str:
    """Where the queue's probe (``tools/gpu/probe_speed.py``) writes its timings."""
    return f"docs/gpu/{queue}-probe.json"


LESSON5_CHECKPOINTS = "trained/beyond-maml-full-gpu"  # compare_algorithms.py --checkpoints: <part>/<algorithm>.pt


def _paper(preset: str, *, lake: bool = False) -> TrainJob:
    return TrainJob(preset, preset, f"trained/omniglot-{preset.removeprefix('paper-')}", lake=lake)


QUEUES: dict[str, list] = {
    # Issue 13's order (the CUDA check, Table 1's runs after measuring how many share the GPU best,
    # the speed comparison, lesson 5 in full mode) with one change: paper-20w5s goes last. It is
    # ~228 of the ~304 projected training minutes (PRIOR_MS); the four command jobs after it,
    # ~20 minutes by their estimates, would otherwise wait some 28 windows behind it, and ahead of
    # it they delay it by ~9%.
    "table1": [
        CommandJob("check", ("{python}", "{code}/tools/gpu/check.py"), watch=("docs/gpu",), estimate_s=480,
                   requires="tools/gpu/check.py"),
        # ms/iteration of every preset with vmap or a loop, TF32 off or on (and the loop with TF32 on
        # channels-last images): each run's settings.
        CommandJob("probe", ("{python}", "{code}/tools/gpu/probe_speed.py", "--device", "{device}", "--out",
                             probe_path("table1")), watch=("docs/gpu",), estimate_s=190, settles_settings=True),
        MeasureJob(),
        # The paper presets use the paper's strided network: 5w1s starts afresh. The lessons' max-pool
        # model (trained/omniglot-5w1s-maxpool, 36,000 iterations) is another run and stays as it is.
        _paper("paper-5w1s", lake=True),
        _paper("paper-20w1s", lake=True),
        _paper("paper-5w5s"),
        CommandJob("speed", ("{python}", "{code}/tools/gpu/speed.py", "--device", "{device}",
                             "--out", "docs/gpu/speed.json"), watch=("docs/gpu",), estimate_s=300),
        # Lesson 5 in full mode, timed: its three benchmarks one job each, so each fits a window; the
        # algorithms' checkpoints come back too, so one cut by a window's end resumes in the next.
        *[CommandJob(f"lesson5-full-{part}", ("{python}", "{code}/benchmarks/compare_algorithms.py", "--mode",
                                              "full", "--only", part, "--device", "{device}", "--out",
                                              f"results/beyond_maml_full_gpu_{part}.json", "--no-progress",
                                              "--checkpoints", LESSON5_CHECKPOINTS),
                     watch=("results", LESSON5_CHECKPOINTS), estimate_s=300, resumable=True)
          for part in ("omniglot", "cost", "sine")],
        _paper("paper-20w5s"),
    ],
    # Seconds on a CPU, for the tests: small runs of the quick preset (one long enough to be
    # stopped at a deadline) and one command.
    "tiny": [
        CommandJob("tiny-probe", ("{python}", "{code}/tools/gpu/probe_speed.py", "--device", "{device}",
                                  "--presets", "quick", "--seconds", "0.5", "--out", probe_path("tiny")),
                   watch=("docs/gpu",), estimate_s=30, needs_cuda=False, settles_settings=True),
        MeasureJob(seconds=2.0),
        TrainJob("tiny-a", "quick", "trained/tiny-a", target=24, eval_tasks=6,
                 options=("--tasks-per-batch", "2")),
        TrainJob("tiny-b", "quick", "trained/tiny-b", target=24, eval_tasks=6,
                 options=("--tasks-per-batch", "2", "--seed", "1")),
        TrainJob("tiny-long", "quick", "trained/tiny-long", target=100_000, eval_tasks=6,
                 options=("--tasks-per-batch", "2", "--seed", "2")),
        CommandJob("tiny-speed", ("{python}", "{code}/benchmarks/meta_step.py", "--config", "sine", "--device",
                                  "{device}", "--iterations", "3", "--warmup", "1", "--peers", ""),
                   estimate_s=30, needs_cuda=False),
    ],
}


def ledger_path(queue: str) -> str:
    return f"docs/gpu/{queue}-queue.json"


def log_path(queue: str) -> str:
    return f"docs/gpu/{queue}-queue.log"


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_ledger(root: Path, queue: str) -> dict:
    path = root / ledger_path(queue)
    ledger = json.loads(path.read_text()) if path.is_file() else {}
    for key in ("rates", "starts", "evals", "measure", "commands"):
        ledger.setdefault(key, {})
    ledger.setdefault("queue", queue)
    ledger.setdefault("windows", [])
    return ledger


def save_ledger(root: Path, queue: str, ledger: dict) -> None:
    path = root / ledger_path(queue)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(ledger, indent=1) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# Where a training job stands, read from its run folder.

@dataclass(frozen=True)
class Progress:
    step: int = 0                      # iterations in checkpoint.pt (0: no checkpoint)
    train_seconds: float = 0.0         # training time so far, summed over chunks
    results_iterations: int | None = None
    results_tasks: int | None = None
    results_lake: bool = False
    accuracy: float | None = None
    ci95: float | None = None
    tf32: bool | None = None           # the checkpoint's arithmetic, when it records it (GPU runs)


def read_progress(root: Path, job: TrainJob) -> Progress:
    import torch  # here, not at import: `status` and `bring-back` stay light

    folder = root / job.folder
    step, seconds, tf32 = 0, 0.0, None
    if (folder / "checkpoint.pt").is_file():
        state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
        step = int(state["step"])
        seconds = float(state.get("history", {}).get("wall_seconds", 0.0))
        tf32 = (state.get("precision") or {}).get("tf32")
    results = {}
    if (folder / "results.json").is_file():
        results = json.loads((folder / "results.json").read_text())
    ev = results.get("eval", {})
    return Progress(step, seconds, results.get("iterations"), ev.get("num_tasks"),
                    "lake_runs" in results, ev.get("accuracy"), ev.get("ci95"), tf32)


def train_state(job: TrainJob, p: Progress) -> str:
    """``train`` (iterations left), ``evaluate`` (trained, final scoring owed) or ``done``."""
    if p.step < job.target:
        return "train"
    final = p.results_iterations == job.target and p.results_tasks == job.eval_tasks
    return "done" if final and (p.results_lake or not job.lake) else "evaluate"


# ---------------------------------------------------------------------------------------
# Estimates: measured here when the ledger has them, else priors, labelled as such.

def device_kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def rate_ms(ledger: dict, device_name: str, preset: str, level: int,
            probed: float | None = None) -> tuple[float | None, str]:
    """ms/iteration of ``preset`` with ``level`` runs sharing the device, and where it comes from.

    Unmeasured levels are projected pessimistically from fewer runs (no gain from sharing);
    a preset not yet trained here is projected from ``probed`` (the probe's ms/iteration of the
    settings chosen, which leaves out sampling the tasks), else from the priors.
    """
    known = ledger["rates"].get(device_name, {}).get(preset, {})
    if str(level) in known:
        return known[str(level)]["ms"], f"measured {known[str(level)]['when'][:10]}"
    lower = [int(k) for k in known if int(k) < level]
    if lower:
        k = max(lower)
        return known[str(k)]["ms"] * level / k, f"projected from {k} run(s) measured"
    if probed is not None:
        return probed * level, "projected from the probe (random images, sampling not timed)"
    prior = PRIOR_MS.get(device_name, {}).get(preset)
    if prior is not None:
        return prior * level, f"projected from {PRIOR_SOURCE}"
    return None, "unknown"


# ---------------------------------------------------------------------------------------
# Each run's settings: vmap or a loop over the tasks, TF32 or exact float32, from the probe.

TF32_MIN_GAIN = 1.15  # TF32 moves the float32 meta-gradient: taken only for a clear saving


@dataclass(frozen=True)
class RunSettings:
    """The ``train`` options a chunk gets, the probe's ms/iteration for them, and why."""

    vectorize: str | None = None       # "vmap" or "loop"; None: the CLI's default
    tf32: bool = False
    ms: float | None = None            # the probe's figure for this variant (None: not probed)
    why: str = "not probed on this device: the CLI's defaults"
    channels_last: bool = False        # --layout nhwc (the same maths in another memory order)

    def options(self, device: str) -> list[str]:
        opts = ["--vectorize", self.vectorize] if self.vectorize else []
        opts += ["--layout", "nhwc"] if self.channels_last else []
        return opts + (["--tf32"] if self.tf32 and device_kind(device) == "cuda" else [])

    def describe(self) -> dict:
        """What the ledger records of a chunk's settings."""
        return {"vectorize": self.vectorize, "tf32": self.tf32, "channels_last": self.channels_last,
                "why": self.why}


def load_probe(root: Path, queue: str, device_name: str) -> dict:
    """The probe's timings by preset (``{preset: {variant: {"ms": ...}}}``) if it ran on this device, else {}."""
    path = root / probe_path(queue)
    if not path.is_file():
        return {}
    probe = json.loads(path.read_text())
    return probe.get("presets", {}) if probe.get("device") == device_name else {}


def choose_settings(timings: dict | None, fixed_tf32: bool | None = None) -> RunSettings:
    """The fastest variant the probe timed for a preset; TF32 only when it saves ``TF32_MIN_GAIN``.

    ``timings``: ``{variant: {"ms": ...}}`` with variants ``vmap``, ``loop``, ``vmap+tf32``,
    ``loop+tf32``, ``loop+tf32+nhwc`` (``probe_speed.variant_name``). ``fixed_tf32``: the
    arithmetic a run already began with (it keeps it: a checkpoint refuses to resume with the
    other), None for a run not yet begun.
    """
    fixed = "" if fixed_tf32 is None else f"; TF32 {'on' if fixed_tf32 else 'off'} as the run began"
    timed = {name: t["ms"] for name, t in (timings or {}).items() if t.get("ms")}
    exact = {n: ms for n, ms in timed.items() if "tf32" not in n.split("+")}
    tf32 = {n: ms for n, ms in timed.items() if "tf32" in n.split("+")}
    pool = exact if fixed_tf32 is False else tf32 if fixed_tf32 else None
    if pool is None:
        if exact and tf32:
            gain = min(exact.values()) / min(tf32.values())
            pool = tf32 if gain >= TF32_MIN_GAIN else exact
            fixed = f"; TF32 {'saves' if pool is tf32 else 'would save only'} {gain:.2f}x"
        else:
            pool = exact or tf32
    if not pool:
        return RunSettings(tf32=bool(fixed_tf32), why=RunSettings.why + fixed)
    name = min(pool, key=pool.get)
    vectorize, *flags = name.split("+")
    return RunSettings(vectorize, "tf32" in flags, pool[name],
                       f"fastest probed: {name} {pool[name]:.2f} ms/iteration" + fixed, "nhwc" in flags)


def run_settings(root: Path, queue: str, device_name: str, job: TrainJob, progress: Progress) -> RunSettings:
    """The settings of ``job``'s next chunk: the probe's choice, TF32 as the run began if it has."""
    return choose_settings(load_probe(root, queue, device_name).get(job.preset), progress.tf32)


def record_rate(ledger: dict, device_name: str, preset: str, level: int, ms: float) -> None:
    ledger["rates"].setdefault(device_name, {}).setdefault(preset, {})[str(level)] = {
        "ms": round(ms, 3), "when": now_iso()}


def start_seconds(ledger: dict, device_name: str, device: str) -> float:
    return ledger["starts"].get(device_name, GUESS_START_S[device_kind(device)])


def eval_seconds(ledger: dict, device_name: str, device: str, preset: str, tasks: int) -> float:
    per_task = ledger["evals"].get(device_name, {}).get(preset)
    return 5.0 + tasks * (per_task if per_task is not None else GUESS_EVAL_S_PER_TASK[device_kind(device)])


def plan_end(step: int, target: int, ms: float, usable_s: float) -> int:
    """The step a chunk can reach in ``usable_s`` seconds of training (``step``: none)."""
    if usable_s <= 0 or not math.isfinite(ms) or ms <= 0:
        return step
    return min(target, step + int(usable_s * 1000 / ms))


def checkpoint_every(ms: float | None, seconds: float = 30.0, most: int = 1000) -> int:
    """Iterations between checkpoints so that a killed chunk loses at most ~``seconds``."""
    if ms is None:
        return 10
    return max(1, min(most, int(seconds * 1000 / ms)))
