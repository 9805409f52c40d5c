"""One window of the GPU queue: run the first unfinished jobs until the deadline, then export.

Training runs as the project's own CLI (``python -m mamlcourse train|eval omniglot``), one
process per chunk; a chunk's ``--iterations`` is the step it can reach before the window's
deadline at the ms/iteration the ledger knows, and a hard guard stops any process still
running at the deadline (SIGINT, then SIGKILL): checkpoints are atomic, so the next window
resumes from the last one. Several training jobs can share the device as separate
processes (and CUDA MPS when it starts), as the measure job found best.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import queue_bundle
import queue_card
import queue_jobs as qj


def eval_folder(job: qj.TrainJob) -> str:
    """Where a job's final ``eval`` writes (``eval`` never writes into the folder it scores); the
    queue then copies its results.json into the run folder. Under runs/: not exported."""
    return f"runs/queue-eval/{Path(job.folder).name}"


@dataclass
class Proc:
    """A running child: a training chunk, a final evaluation, or a command job."""

    job: object
    kind: str                       # "train", "evaluate" or "command"
    popen: subprocess.Popen
    log: Path
    started: float
    before: qj.Progress | None = None
    planned_end: int | None = None
    settings: qj.RunSettings | None = None  # a training chunk's vmap/loop, TF32 and layout
    level_sum: int = 0
    polls: int = 0
    stopped: str | None = None      # why the queue stopped it, if it did

    @property
    def level(self) -> int:
        """How many runs shared the device with it, on average (itself included)."""
        return max(1, round(self.level_sum / self.polls)) if self.polls else 1


@dataclass
class Settings:
    root: Path
    code: Path
    queue: str
    device: str
    data: str | None
    budget_s: float
    out: Path | None
    reserve_s: float = 15.0
    concurrency: int | None = None
    max_concurrency: int = 4
    max_chunk: int | None = None
    partial_eval_tasks: int = 100
    min_chunk_s: float = 20.0
    probe_iterations: int = 10
    checkpoint_s: float = 30.0
    only: tuple[str, ...] = ()
    mps: bool = True
    poll_s: float = 0.5
    extra_env: dict = field(default_factory=dict)


class Window:
    def __init__(self, s: Settings, started: float | None = None):
        self.s = s
        self.t0 = started if started is not None else time.monotonic()
        self.deadline = self.t0 + s.budget_s - s.reserve_s
        self.jobs = qj.QUEUES[s.queue]
        self.selected = [j for j in self.jobs if not s.only or j.name in s.only]  # this window's jobs
        self.ledger = qj.load_ledger(s.root, s.queue)
        self.device_name = device_name(s.device)
        self.time_limit_flag = "--time-limit" in (s.code / "mamlcourse" / "cli.py").read_text()
        self.touched: set[str] = {qj.ledger_path(s.queue), qj.log_path(s.queue)}
        self.base = queue_bundle.snapshot(s.root, self._candidates())
        self.record = {"started": qj.now_iso(), "device": self.device_name, "budget_s": s.budget_s,
                       "chunks": [], "commands": [], "notes": []}
        self.ledger["windows"].append(self.record)
        self.mps_env: dict | None = None
        self.sharing = 1  # processes meant to share the device now
        self.failed: set[str] = set()  # jobs that failed in this window: not retried in it

    # -- bookkeeping ------------------------------------------------------------------
    def _candidates(self) -> list[str]:
        paths = [qj.ledger_path(self.s.queue), qj.log_path(self.s.queue)]
        for job in self.jobs:
            if job.kind == "train":
                paths += [f"{job.folder}/{n}" for n in ("checkpoint.pt", "results.json", "train.log")]
            for folder in getattr(job, "watch", ()):
                paths += [str(p.relative_to(self.s.root)) for p in (self.s.root / folder).rglob("*") if p.is_file()]
        return sorted(set(paths))

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, message: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f} s] {message}"
        print(line, flush=True)
        path = self.s.root / qj.log_path(self.s.queue)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(line + "\n")

    def note(self, message: str) -> None:
        self.record["notes"].append(message)
        self.log(message)

    def save(self) -> None:
        self.record["wall_s"] = round(time.monotonic() - self.t0, 1)
        qj.save_ledger(self.s.root, self.s.queue, self.ledger)
        if self.s.out is not None:
            queue_bundle.export(self.s.root, sorted(self.touched), self.s.out, self.base)

    # -- processes --------------------------------------------------------------------
    def env(self) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.s.extra_env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.s.code), env.get("PYTHONPATH")) if p)
        if self.s.data:
            env["MAMLCOURSE_DATA"] = str(Path(self.s.data).resolve())
        if self.mps_env:
            env.update(self.mps_env)
        if "OMP_NUM_THREADS" not in os.environ:  # share the host's cores between the runs
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.sharing))
        return env

    def launch(self, job, kind: str, argv: list[str], log: Path, **extra) -> Proc:
        log.parent.mkdir(parents=True, exist_ok=True)
        mode = "w" if kind == "command" else "a"
        with open(log, mode) as f:
            f.write(f"\n== {qj.now_iso()} {self.device_name}: {' '.join(argv)}\n")
            f.flush()
            popen = subprocess.Popen(argv, cwd=self.s.root, env=self.env(), stdout=f, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.log(f"{job.name}: {kind} started: {' '.join(argv[1:])}")
        return Proc(job, kind, popen, log, time.monotonic(), **extra)

    def stop(self, procs: list[Proc], why: str, grace_s: float = 8.0) -> None:
        """SIGINT to each (the CLI stops and says how to resume), SIGKILL to those left after ``grace_s``."""
        for p in procs:
            p.stopped = why
            if p.popen.poll() is None:
                os.kill(p.popen.pid, signal.SIGINT)
        until = time.monotonic() + grace_s
        for p in procs:
            try:
                p.popen.wait(max(0.1, until - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
            if p.popen.returncode == 0:  # it had ended on its own (the CLI's --time-limit) as the signal went
                p.stopped = None

    def poll(self, procs: list[Proc], on_exit) -> None:
        """Count who shares the device, hand ended ones to ``on_exit``, stop all at the deadline."""
        for p in procs:
            p.level_sum += len(procs)
            p.polls += 1
        if self.time_left() <= 0:
            self.stop([p for p in procs if p.popen.poll() is None], "stopped at the window's deadline")
        for p in [p for p in procs if p.popen.poll() is not None]:
            procs.remove(p)
            on_exit(p)

    def wait(self, procs: list[Proc], on_exit) -> None:
        """Poll ``procs`` until all have ended, stopping them at the deadline."""
        procs = list(procs)
        while procs:
            time.sleep(self.s.poll_s)
            self.poll(procs, on_exit)

    # -- training ---------------------------------------------------------------------
    def settings_pending(self) -> str | None:
        """The probe this window runs, while it has not yet run to its end on this device."""
        for job in self.selected:
            if not getattr(job, "settles_settings", False) or (job.needs_cuda and not self.s.device.startswith("cuda")):
                continue
            record = self.ledger["commands"].get(job.name, {})
            last = record.get("last", {})
            ran_here = last.get("device") == self.device_name and last.get("stopped") is None
            if self.device_name not in record.get("passed", {}) and not ran_here:  # failed: the defaults
                return job.name
        return None

    def train_argv(self, job: qj.TrainJob, end: int, ms: float | None, usable_s: float,
                   settings: qj.RunSettings | None = None) -> list[str]:
        settings = settings or qj.RunSettings()
        argv = [sys.executable, "-m", "mamlcourse", "train", "omniglot", "--preset", job.preset,
                "--out", job.folder, "--device", self.s.device, "--iterations", str(end),
                "--tasks", str(min(self.s.partial_eval_tasks, job.eval_tasks)),
                "--checkpoint-every", str(qj.checkpoint_every(ms, self.s.checkpoint_s)), "--no-progress",
                *settings.options(self.s.device), *job.options]
        if self.s.device.startswith("cuda"):
            argv.append("--cuda-graph")
        if self.time_limit_flag:  # a clean stop a little after the planned end, if the CLI has it
            argv += ["--time-limit", str(int(usable_s * 1.1 + 5))]
        return argv

    def start_train(self, job: qj.TrainJob, level: int, seconds: float | None = None) -> Proc | None:
        """Launch the job's next step (a training chunk or its final evaluation), or None."""
        before = qj.read_progress(self.s.root, job)
        state = qj.train_state(job, before)
        start = qj.start_seconds(self.ledger, self.device_name, self.s.device)
        if state == "done":
            return None
        gate = self.settings_pending() if before.step == 0 else None
        if gate is not None:
            self.log(f"{job.name}: not begun; it waits for {gate}, whose timings choose its settings")
            return None
        self.touched.update(f"{job.folder}/{n}" for n in ("checkpoint.pt", "results.json", "train.log"))
        log = self.s.root / job.folder / "train.log"
        if state == "evaluate":
            need = start + qj.eval_seconds(self.ledger, self.device_name, self.s.device, job.preset, job.eval_tasks)
            if self.time_left() < need:
                self.log(f"{job.name}: the final evaluation needs ~{need:.0f} s, {self.time_left():.0f} s left")
                return None
            argv = [sys.executable, "-m", "mamlcourse", "eval", "omniglot", "--checkpoint", job.folder,
                    "--device", self.s.device, "--tasks", str(job.eval_tasks), "--no-progress",
                    "--out", eval_folder(job)]
            return self.launch(job, "evaluate", argv + (["--lake-runs"] if job.lake else []), log, before=before)
        settings = qj.run_settings(self.s.root, self.s.queue, self.device_name, job, before)
        ms, _ = qj.rate_ms(self.ledger, self.device_name, job.preset, level, probed=settings.ms)
        partial = qj.eval_seconds(self.ledger, self.device_name, self.s.device, job.preset,
                                  min(self.s.partial_eval_tasks, job.eval_tasks))
        usable = self.time_left() - start - partial
        if seconds is not None:
            usable = min(usable, seconds)
        if usable < (self.s.min_chunk_s if seconds is None else 1.0):
            self.log(f"{job.name}: {max(0.0, usable):.0f} s usable (start ~{start:.0f} s, evaluation "
                     f"~{partial:.0f} s, {self.time_left():.0f} s left): no chunk in this window")
            return None
        end = before.step + self.s.probe_iterations if ms is None else qj.plan_end(
            before.step, job.target, ms * qj.SAFETY, usable)
        end = min(end, job.target, before.step + self.s.max_chunk if self.s.max_chunk else job.target)
        if end <= before.step:
            return None
        return self.launch(job, "train", self.train_argv(job, end, ms, usable, settings), log, before=before,
                           planned_end=end, settings=settings)

    def finished(self, p: Proc) -> None:
        """Record what a training or evaluation process did, and learn its rates."""
        wall = time.monotonic() - p.started
        rc = p.popen.returncode
        scored = self.s.root / eval_folder(p.job) / "results.json" if p.kind == "evaluate" else None
        if scored is not None and rc == 0 and scored.is_file():
            # ``eval`` leaves the folder it scores alone; the final score is the run's results.json.
            target = self.s.root / p.job.folder / "results.json"
            shutil.copyfile(scored, target.with_name("results.json.tmp"))
            os.replace(target.with_name("results.json.tmp"), target)
        after = qj.read_progress(self.s.root, p.job)
        steps, seconds = after.step - p.before.step, after.train_seconds - p.before.train_seconds
        chunk = {"job": p.job.name, "kind": p.kind, "from_step": p.before.step, "to_step": after.step,
                 "planned_to": p.planned_end, "runs_sharing": p.level, "mps": bool(self.mps_env),
                 "wall_s": round(wall, 1), "train_s": round(seconds, 1), "rc": rc, "stopped": p.stopped}
        if p.settings is not None:
            chunk["settings"] = p.settings.describe()
        evals = self.ledger["evals"].setdefault(self.device_name, {})
        results = self.s.root / p.job.folder / "results.json"
        eval_s = 0.0
        if rc == 0 and results.is_file() and results.stat().st_mtime > time.time() - wall:
            eval_s = float(json.loads(results.read_text()).get("eval_seconds", 0.0))
            tasks = after.results_tasks or 1
            evals[p.job.preset] = round(eval_s / tasks, 4)
        if steps > 0 and seconds > 0:
            chunk["ms_per_iteration"] = round(1000 * seconds / steps, 3)
            qj.record_rate(self.ledger, self.device_name, p.job.preset, p.level, 1000 * seconds / steps)
        if rc == 0:  # the median of the last five: a long chunk adds its validation time
            samples = self.ledger.setdefault("start_samples", {}).setdefault(self.device_name, [])
            samples[:] = (samples + [round(max(1.0, wall - seconds - eval_s), 1)])[-5:]
            self.ledger["starts"][self.device_name] = sorted(samples)[len(samples) // 2]
        elif p.stopped is None:
            tail = p.log.read_text().strip().splitlines()[-12:]
            chunk["error"] = "\n".join(tail)
            self.failed.add(p.job.name)
            self.note(f"{p.job.name}: {p.kind} failed (exit {rc}); not retried in this window:\n    "
                      + "\n    ".join(tail[-4:]))
        self.record["chunks"].append(chunk)
        if p.kind == "evaluate" or after.step >= p.job.target:
            if qj.train_state(p.job, after) == "done":
                card = queue_card.write_card(self.s.root, p.job.folder, qj.ledger_path(self.s.queue),
                                             queue_card.chunk_settings(self.ledger, p.job.name))
                self.touched.add(str(card.relative_to(self.s.root)))
                self.note(f"{p.job.name}: done: {100 * after.accuracy:.2f}% ± {100 * after.ci95:.2f} on "
                          f"{after.results_tasks} test tasks at {after.step} iterations; {card.name} written")
        rate = f", {chunk['ms_per_iteration']:.1f} ms/iteration" if "ms_per_iteration" in chunk else ""
        self.log(f"{p.job.name}: {p.kind} ended (exit {rc}{', ' + p.stopped if p.stopped else ''}) "
                 f"at step {after.step}/{p.job.target}{rate}, {wall:.0f} s")
        self.save()

    def run_trains(self, jobs: list[qj.TrainJob], concurrency: int) -> None:
        """Keep up to ``concurrency`` of ``jobs`` (first unfinished first) running until the deadline."""
        exhausted: set[str] = set()
        running: list[Proc] = []
        self.sharing = concurrency

        def on_exit(p: Proc) -> None:
            nonlocal refill
            self.finished(p)
            refill = True

        refill = True
        while self.time_left() > 0:
            if refill:  # a slot is free: start the first unfinished jobs that are not running
                refill = False
                open_jobs = [j for j in jobs if j.name not in self.failed | exhausted
                             and qj.train_state(j, qj.read_progress(self.s.root, j)) != "done"]
                level = max(1, min(concurrency, len(open_jobs)))
                for job in open_jobs:
                    if len(running) >= concurrency:
                        break
                    if job.name not in {p.job.name for p in running}:
                        proc = self.start_train(job, level)
                        if proc is None:
                            exhausted.add(job.name)
                        else:
                            running.append(proc)
            if not running:
                break
            time.sleep(self.s.poll_s)
            self.poll(running, on_exit)
        self.wait(running, on_exit)
        self.sharing = 1

    # -- measuring --------------------------------------------------------------------
    def run_measure(self, job: qj.MeasureJob, groups: list[list[qj.TrainJob]]) -> None:
        """ms/iteration alone and with all (up to max_concurrency) sharing; picks the best.

        The runs measured are those that will share the device next: the unfinished runs of the
        first group of consecutive training jobs (``queue_jobs.train_groups``) that has any.
        """
        open_jobs: list[qj.TrainJob] = []
        for group in groups:
            open_jobs = [j for j in group if qj.train_state(j, qj.read_progress(self.s.root, j)) == "train"]
            if open_jobs:
                break
        open_jobs = open_jobs[: self.s.max_concurrency]
        result = {"when": qj.now_iso(), "jobs": [j.name for j in open_jobs], "seconds_each": job.seconds}
        if len(open_jobs) < 2:
            result.update(best={"concurrency": 1, "mps": False}, note="fewer than two runs left: nothing to share")
            self.ledger["measure"][self.device_name] = result
            return
        together: dict[str, float] = {}
        previous = self.ledger["measure"].get(self.device_name, {})
        alone = dict(previous.get("alone_ms", {})) if previous.get("incomplete") else {}  # a cut-short measure

        def collect(into: dict):
            def on_exit(p: Proc) -> None:
                self.finished(p)
                chunk = self.record["chunks"][-1]
                if "ms_per_iteration" in chunk:
                    into[p.job.name] = chunk["ms_per_iteration"]
            return on_exit

        for j in [j for j in open_jobs if j.name not in set(alone) | self.failed]:  # one at a time
            proc = self.start_train(j, 1, seconds=job.seconds)
            if proc is not None:
                self.wait([proc], collect(alone))
        self.ledger["measure"][self.device_name] = result | {"alone_ms": alone, "incomplete": True}
        sharing = [j for j in open_jobs if j.name in alone]
        if len(sharing) < 2:
            self.note("measure: fewer than two runs measured alone; sharing not measured")
            return
        result["alone_ms"] = alone

        def all_at_once(into: dict) -> float | None:
            procs = []
            self.sharing = len(sharing)
            for j in sharing:
                proc = self.start_train(j, len(sharing), seconds=job.seconds * len(sharing))
                if proc is not None:
                    procs.append(proc)
            self.wait(procs, collect(into))
            self.sharing = 1
            if set(into) != {j.name for j in sharing}:
                return None
            return sum(alone[n] / into[n] for n in into)  # runs' progress per unit time, vs one alone

        result["together_ms"] = together
        gain = all_at_once(together)
        result["gain"] = gain
        if gain is None:  # cut short by the deadline, or a run failed: measured again next window
            self.ledger["measure"][self.device_name] = result | {"incomplete": True}
            self.note("measure: the runs at once did not all finish their chunk; measured again next window")
            return
        best = {"concurrency": len(sharing) if gain and gain >= 1.1 else 1, "mps": False}
        self.log(f"measure: {len(sharing)} runs at once make {gain:.2f}x the progress of one alone")
        if self.s.device.startswith("cuda") and self.s.mps:
            env = start_mps()
            if env is None:
                result["mps"] = "did not start"
            else:
                self.mps_env, mps_ms = env, {}
                try:
                    gain_mps = all_at_once(mps_ms)
                finally:
                    self.mps_env = None
                    stop_mps(env)
                result["mps"] = {"together_ms": mps_ms, "gain": gain_mps}
                if gain_mps and gain_mps >= 1.1 and gain_mps > (gain or 0) * 1.05:
                    best = {"concurrency": len(sharing), "mps": True}
        result["best"] = best
        self.ledger["measure"][self.device_name] = result
        self.note(f"measure: best setting {best}")

    # -- command jobs -----------------------------------------------------------------
    def run_command(self, job: qj.CommandJob) -> None:
        if job.needs_cuda and not self.s.device.startswith("cuda"):
            self.log(f"{job.name}: needs CUDA, skipped on {self.s.device}")
            return
        if job.requires and not (self.s.code / job.requires).is_file():
            self.log(f"{job.name}: {job.requires} is not in this tree yet, skipped")
            return
        last = self.ledger["commands"].get(job.name, {})
        script = self.script_sha(job)
        if last.get("last", {}).get("rc") not in (0, None) and last["last"].get("stopped") is None \
                and last["last"].get("script_sha256") == script:
            self.log(f"{job.name}: failed last time (exit {last['last']['rc']}, docs/gpu/{job.name}.log) and "
                     "its script has not changed since: skipped")
            return
        need = qj.RESUMABLE_MIN_S if job.resumable else \
            max(last.get("seconds", job.estimate_s), 1.2 * last.get("ran_at_least_s", 0))
        if self.time_left() < need:
            self.log(f"{job.name}: needs ~{need:.0f} s, {self.time_left():.0f} s left: next window")
            return
        watched = {p: (p.stat().st_size, p.stat().st_mtime_ns) for w in job.watch
                   for p in (self.s.root / w).rglob("*") if p.is_file()}
        argv = [a.format(python=sys.executable, device=self.s.device, code=self.s.code) for a in job.argv]
        log = self.s.root / "docs" / "gpu" / f"{job.name}.log"
        proc = self.launch(job, "command", argv, log)
        self.wait([proc], lambda p: None)
        seconds = time.monotonic() - proc.started
        ours = {qj.ledger_path(self.s.queue), qj.log_path(self.s.queue)}
        outputs = sorted(str(p.relative_to(self.s.root)) for w in job.watch for p in (self.s.root / w).rglob("*")
                         if p.is_file() and watched.get(p) != (p.stat().st_size, p.stat().st_mtime_ns))
        outputs = [o for o in outputs if o not in ours and not o.endswith((".tmp", "/.lock"))]  # not results
        rc = proc.popen.returncode
        entry = {"when": qj.now_iso(), "device": self.device_name, "rc": rc, "seconds": round(seconds, 1),
                 "stopped": proc.stopped, "script_sha256": script, "outputs": outputs + [str(log.relative_to(self.s.root))]}
        record = self.ledger["commands"].setdefault(job.name, {})
        record["last"] = entry
        if proc.stopped:  # it needs more than it had: wait for a window with more (or resume)
            record["ran_at_least_s"] = round(seconds, 1)
        if job.resumable and (proc.stopped or rc == 0):  # its time: the sum of its runs, each resumed
            record["runs_s"] = record.get("runs_s", []) + [round(seconds, 1)]
        if rc == 0:
            record["seconds"] = round(sum(record["runs_s"]) if job.resumable else seconds, 1)
            record.setdefault("passed", {})[self.device_name] = entry["when"]
        self.record["commands"].append({"job": job.name, **entry})
        self.touched.update(entry["outputs"])
        self.log(f"{job.name}: exit {rc} after {seconds:.0f} s{', ' + proc.stopped if proc.stopped else ''}")
        self.save()

    def script_sha(self, job: qj.CommandJob) -> str | None:
        """SHA-256 of the script a command job runs: a failed job is retried once it changes."""
        for token in job.argv[1:]:
            path = Path(token.format(python="", device="", code=self.s.code))
            if path.suffix == ".py" and path.is_file():
                return queue_bundle.sha256(path)
        return None

    # -- the window -------------------------------------------------------------------
    def command_done(self, job: qj.CommandJob) -> bool:
        return self.device_name in self.ledger["commands"].get(job.name, {}).get("passed", {})

    def run(self) -> None:
        self.log(f"window on {self.device_name}: budget {self.s.budget_s:.0f} s, "
                 f"{self.time_left():.0f} s until the deadline")
        jobs = self.selected
        groups = qj.train_groups(self.jobs)  # measured even under --only measure
        i = 0
        try:
            while i < len(jobs) and self.time_left() > 0:
                job = jobs[i]
                if job.kind == "command":
                    if not self.command_done(job):
                        self.run_command(job)
                    i += 1
                elif job.kind == "measure":
                    if self.device_name not in self.ledger["measure"] or \
                            self.ledger["measure"][self.device_name].get("incomplete"):
                        self.run_measure(job, groups)
                    i += 1
                else:
                    group = []
                    while i < len(jobs) and jobs[i].kind == "train":
                        group.append(jobs[i])
                        i += 1
                    best = self.ledger["measure"].get(self.device_name, {}).get("best", {})
                    concurrency = self.s.concurrency or best.get("concurrency", 1)
                    env = start_mps() if best.get("mps") and self.s.mps and self.s.device.startswith("cuda") \
                        else None
                    self.mps_env = env
                    try:
                        self.run_trains(group, concurrency)
                    finally:
                        self.mps_env = None
                        if env:
                            stop_mps(env)
        finally:
            self.log(f"window ends: {time.monotonic() - self.t0:.0f} s used of {self.s.budget_s:.0f}")
            self.save()


def device_name(device: str) -> str:
    """``NVIDIA H200`` for a GPU, ``cpu`` otherwise: the key of every measured figure."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def start_mps() -> dict | None:
    """Start a CUDA MPS control daemon in a private folder; its clients' environment, or None."""
    exe = shutil.which("nvidia-cuda-mps-control")
    if exe is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="mps-"))
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "log")}
    for p in env.values():
        Path(p).mkdir()
    try:
        done = subprocess.run([exe, "-d"], env=dict(os.environ, **env), timeout=20, capture_output=True)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return env if done.returncode == 0 else None


def stop_mps(env: dict) -> None:
    try:
        subprocess.run(["nvidia-cuda-mps-control"], input=b"quit\n", env=dict(os.environ, **env), timeout=20,
                       capture_output=True)
    except (OSError, subprocess.TimeoutExpired):
        pass
