#!/usr/bin/env python3
"""The whole course on one device in one prepared command: unit tests, lessons 2-5, the CLI.

    python3 tools/gpu/check.py                          # on a GPU machine: about 8 minutes
    python3 tools/gpu/check.py --device cpu --quick     # the same parts, smaller, on a CPU

Parts, each run in its own process with its own time limit, each printing one summary line
(``PASS``/``FAIL``, seconds, what it checked):

1. ``unit``: the unit tests that train, resume and score, with ``MAMLCOURSE_TEST_DEVICE`` set
   to the device under test (``tests/conftest.py`` honours it).
2. ``lesson NN``: lessons 2-5 executed on the device (a copy: the stored lessons are left as
   they are), in full mode where that fits the budget (``FULL_MODE``) and quick mode otherwise.
3. ``cli ...``: ``train sine --preset quick``; ``train omniglot --preset quick --cuda-graph``;
   the same killed with SIGKILL after its first checkpoint and run again (parameters equal to
   the uninterrupted run: exactly on a CPU, to float tolerance on a GPU); a ``--cuda-graph``
   run resumed without it (equal to float tolerance: the eager and the captured step are the
   same maths in another order, and capturable Adam keeps its step count on the GPU);
   ``--time-limit`` stop and resume; ``eval`` of the run and of the shipped
   ``trained/omniglot-5w1s-maxpool`` (its model card: 98.51% ± 0.22), leaving ``trained/`` as shipped.

On a CPU ``--cuda-graph`` is refused by design, so the CPU path runs the CLI parts without it
and says so. The log (every command and its output) and the summary go to ``--log`` (default
``docs/gpu/<date>-check/``). The exit status is 0 when every part passed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LESSONS = ["02_sine_wave_experiment", "03_omniglot_maml", "04_adaptation_explorer", "05_beyond_maml"]
# Lessons run in full mode on a GPU: those whose full size loads the course's trained models
# (lesson 2: trained/sine-paper, lesson 3: trained/omniglot-5w1s-maxpool) and scores them at full size.
# Lessons 4 and 5 train at full size (minutes to hours) and run in quick mode, on the GPU.
FULL_MODE = {"02_sine_wave_experiment", "03_omniglot_maml"}
UNIT_TESTS = ["tests/test_training_state.py", "tests/test_devices.py", "tests/test_train.py",
              "tests/test_maml.py", "tests/test_cli.py::test_a_killed_cli_run_resumes_to_the_same_parameters",
              "tests/test_cli.py::test_a_run_stopped_by_its_time_limit_continues_to_the_same_parameters"]
QUICK_UNIT_TESTS = ["tests/test_training_state.py",
                    "tests/test_devices.py::test_the_imitation_refuses_mixed_devices_as_cuda_does"]
SHIPPED = "trained/omniglot-5w1s-maxpool"
SHIPPED_ACCURACY, SHIPPED_CI95 = 0.9851, 0.0022  # MODEL_CARD.md, from its results.json


def python_path(existing: str | None) -> str:
    """The repository first, then the entries already on ``existing`` ($PYTHONPATH), each once.

    On the GPU machine ``tools/gpu/window.sh`` puts the carried wheels (``/tmp/site``: the notebook
    kernel, nbval, the speed comparison's peers) on $PYTHONPATH; the parts' processes and the
    lessons' kernels must keep seeing them.
    """
    entries = [str(ROOT)] + [e for e in (existing or "").split(os.pathsep) if e]
    return os.pathsep.join(dict.fromkeys(entries))


class Check:
    """Runs the parts, keeps the log and the summary lines."""

    def __init__(self, device: str, log_dir: Path, work: Path, budget: float):
        self.device, self.log_dir, self.work = device, log_dir, work
        self.deadline = time.monotonic() + budget
        self.log = open(log_dir / "log.txt", "a")
        self.summary: list[dict] = []
        self.env = {**os.environ, "PYTHONPATH": python_path(os.environ.get("PYTHONPATH")),
                    "PYTHONUNBUFFERED": "1"}
        if device == "cpu":
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # lessons pick CUDA when they see it

    def left(self) -> float:
        """Seconds left of the budget."""
        return self.deadline - time.monotonic()

    def run(self, args: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        timeout = max(1.0, min(timeout, self.left()))
        self.log.write(f"\n$ {' '.join(args)}\n")
        self.log.flush()
        try:
            result = subprocess.run(args, cwd=ROOT, env={**self.env, **(env or {})}, capture_output=True,
                                    text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            self.log.write(f"(timed out after {timeout:.0f} s)\n{err.stdout or ''}{err.stderr or ''}")
            raise
        self.log.write(result.stdout + result.stderr + f"(exit {result.returncode})\n")
        self.log.flush()
        return result

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        result = self.run([sys.executable, "-m", "mamlcourse", *args, "--device", self.device,
                           "--no-progress"], timeout)
        if result.returncode != 0:
            raise AssertionError(f"exit {result.returncode}: {result.stderr.strip().splitlines()[-1:]}")
        return result

    def part(self, name: str, fn, *args) -> None:
        tic = time.perf_counter()
        try:
            if self.left() < 5:
                raise TimeoutError("not run: the time budget (--budget) is spent")
            detail, ok = fn(*args), True
        except subprocess.TimeoutExpired as err:
            detail, ok = f"timed out after {err.timeout:.0f} s", False
        except Exception as err:  # a failed part is recorded and the rest goes on
            detail, ok = f"{type(err).__name__}: {err}", False
        seconds = time.perf_counter() - tic
        line = f"{'PASS' if ok else 'FAIL'} {name} ({seconds:.0f} s): {detail}"
        print(line, flush=True)
        self.log.write(f"== {line}\n")
        self.summary.append({"part": name, "ok": ok, "seconds": round(seconds, 1), "detail": detail})


def unit(check: Check, tests: list[str], timeout: float) -> str:
    result = check.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *tests], timeout,
                       env={"MAMLCOURSE_TEST_DEVICE": check.device, "MAMLCOURSE_MODE": "quick"})
    last = (result.stdout.strip().splitlines() or ["no output"])[-1]
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        raise AssertionError(last if result.stdout.strip() else (errors or ["no output"])[-1].strip())
    return f"{last} (MAMLCOURSE_TEST_DEVICE={check.device})"


def lesson(check: Check, name: str, mode: str, timeout: float) -> str:
    import nbformat
    from nbconvert.preprocessors import ExecutePreprocessor

    source = ROOT / "notebooks" / f"{name}.ipynb"
    nb = nbformat.read(source, as_version=4)
    os.environ.update({k: v for k, v in check.env.items()
                       if k in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES", "MAMLCOURSE_DATA")})  # the kernel's
    os.environ["MAMLCOURSE_MODE"] = mode
    timeout = max(1, int(min(timeout, check.left())))  # per cell; the part as a whole is checked below
    tic = time.monotonic()
    ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(
        nb, {"metadata": {"path": str(source.parent)}})
    if time.monotonic() - tic > timeout:
        raise TimeoutError(f"took {time.monotonic() - tic:.0f} s, more than its {timeout} s")
    executed = check.log_dir / f"{name}.{mode}.ipynb"
    nbformat.write(nb, executed)  # the run's outputs, beside the log; notebooks/ is left alone
    return f"{mode} mode on {check.device}, every cell ran ({executed.name})"


def params_of(run: Path):
    from mamlcourse.checkpoint import checkpoint_path, load_checkpoint
    state = load_checkpoint(checkpoint_path(run))
    return state["step"], {k: v.float() for k, v in state["model"].items() if v.is_floating_point()}


def compare(a: Path, b: Path, *, exact: bool) -> str:
    step_a, pa = params_of(a)
    step_b, pb = params_of(b)
    if step_a != step_b:
        raise AssertionError(f"{a.name} ended at step {step_a}, {b.name} at {step_b}")
    diff = max((pa[k] - pb[k]).abs().max().item() for k in pa)
    scale = max(v.abs().max().item() for v in pa.values())
    if exact and diff != 0.0:
        raise AssertionError(f"parameters differ by {diff:.3g} where they must be equal")
    if diff > 1e-3 * scale:
        raise AssertionError(f"parameters differ by {diff:.3g} (largest |θ| {scale:.3g})")
    return f"step {step_a}, max |Δθ| = {diff:.3g} ({'bit-exact' if diff == 0 else 'float tolerance'})"


def omniglot_args(out: Path, iterations: int, every: int, graph: bool, tasks: str = "50") -> list[str]:
    return ["train", "omniglot", "--preset", "quick", "--out", str(out), "--iterations", str(iterations),
            "--checkpoint-every", str(every), "--tasks", tasks, *(["--cuda-graph"] if graph else [])]


def cli_parts(check: Check, quick: bool) -> None:
    from mamlcourse.checkpoint import checkpoint_path, load_checkpoint

    gpu = check.device.startswith("cuda")
    iterations, every = (6, 3) if quick else (300, 100)
    eval_tasks = "5" if quick else "50"
    graph_note = "" if gpu else " (without --cuda-graph: refused on a CPU by design)"
    work = check.work
    straight = work / "omniglot"

    def train_sine() -> str:
        iters = "50" if quick else "3000"
        out = check.cli("train", "sine", "--preset", "quick", "--out", str(work / "sine"), "--iterations",
                        iters, "--tasks", eval_tasks).stdout.strip().splitlines()
        return f"{iters} iterations; {out[-1]}"

    def train_omniglot() -> str:
        check.cli(*omniglot_args(straight, iterations, every, gpu, eval_tasks))
        accuracy = json.loads((straight / "results.json").read_text())["eval"]["accuracy"]
        return (f"{iterations} iterations{graph_note}, test accuracy {100 * accuracy:.1f}% "
                f"on {eval_tasks} tasks")

    def kill_and_resume() -> str:
        out = work / "killed"
        args = [sys.executable, "-m", "mamlcourse", *omniglot_args(out, iterations, every, gpu, eval_tasks),
                "--device", check.device, "--no-progress"]
        proc = subprocess.Popen(args, cwd=ROOT, env=check.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        path, deadline = checkpoint_path(out), time.time() + 300
        while time.time() < deadline and not (path.exists() and load_checkpoint(path)["step"] >= every):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = load_checkpoint(path)["step"]
        if not 0 < killed_at < iterations:
            raise AssertionError(f"killed at step {killed_at}: not mid-run")
        check.cli(*omniglot_args(out, iterations, every, gpu, eval_tasks))
        return f"killed at step {killed_at}, resumed: " + compare(out, straight, exact=not gpu)

    def switch_graph() -> str:
        out = work / "switched"
        check.cli(*omniglot_args(out, iterations // 2, every, gpu, eval_tasks))
        check.cli(*omniglot_args(out, iterations, every, False, eval_tasks))
        how = "--cuda-graph to eager" if gpu else "eager to eager (no CUDA graphs on a CPU)"
        return f"{how} at step {iterations // 2}: " + compare(out, straight, exact=not gpu)

    def time_limit() -> str:
        out = work / "limited"
        first = check.cli(*omniglot_args(out, iterations, every, gpu, eval_tasks), "--time-limit", "1")
        line = first.stdout.strip().splitlines()[-1]
        check.cli(*omniglot_args(out, iterations, every, gpu, eval_tasks))
        return f"{line.split(';')[0]}; resumed: " + compare(out, straight, exact=not gpu)

    def evaluate() -> str:
        tasks = "10" if quick else "600"
        before = subprocess.run(["git", "status", "--porcelain", "trained"], cwd=ROOT, capture_output=True,
                                text=True).stdout
        check.cli("eval", "omniglot", "--checkpoint", str(straight), "--out", str(work / "eval-run"))
        check.cli("eval", "omniglot", "--checkpoint", SHIPPED, "--tasks", tasks, "--out",
                  str(work / "eval-shipped"), timeout=900)
        result = json.loads((work / "eval-shipped" / "results.json").read_text())["eval"]
        after = subprocess.run(["git", "status", "--porcelain", "trained"], cwd=ROOT, capture_output=True,
                               text=True).stdout
        if after != before:
            raise AssertionError(f"eval changed trained/: {after.strip()}")
        if tasks == "600" and abs(result["accuracy"] - SHIPPED_ACCURACY) > SHIPPED_CI95:
            raise AssertionError(f"shipped model scores {100 * result['accuracy']:.2f}%, its card "
                                 f"{100 * SHIPPED_ACCURACY:.2f}% ± {100 * SHIPPED_CI95:.2f}")
        return (f"shipped model {100 * result['accuracy']:.2f}% ± {100 * result['ci95']:.2f} on {tasks} "
                f"tasks (card: 98.51% ± 0.22 on 600); trained/ left as shipped")

    check.part("cli train sine", train_sine)
    check.part("cli train omniglot", train_omniglot)
    check.part("cli kill -9 and resume", kill_and_resume)
    check.part("cli resume without --cuda-graph", switch_graph)
    check.part("cli --time-limit and resume", time_limit)
    check.part("cli eval", evaluate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="device under test (default cuda)")
    parser.add_argument("--quick", action="store_true",
                        help="a subset at small sizes (unit subset, no lessons, short CLI runs)")
    parser.add_argument("--parts", default="unit,lessons,cli", help="comma-separated: unit, lessons, cli")
    parser.add_argument("--log", type=Path, help="log folder (default docs/gpu/<date>-check)")
    parser.add_argument("--data", type=Path, help="Omniglot's zips (default: $MAMLCOURSE_DATA)")
    parser.add_argument("--budget", type=float, default=480,
                        help="seconds for everything (default 480: an 8-minute GPU window)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if unknown := parts - {"unit", "lessons", "cli"}:
        parser.error(f"unknown parts {sorted(unknown)}: choose from unit, lessons, cli")
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            parser.error("--device cuda but CUDA is not available here; use --device cpu for the CPU path")
    log_dir = args.log or ROOT / "docs" / "gpu" / f"{datetime.date.today()}-check"
    log_dir.mkdir(parents=True, exist_ok=True)
    work = log_dir / "work"  # run folders; ignored by git (see .gitignore there)
    # Run folders left by an earlier check in this log folder would be resumed, not trained: the
    # kill -9 and --time-limit parts would then pass without stopping anything. Start empty.
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (log_dir / ".gitignore").write_text("work/\n")
    check = Check(args.device, log_dir, work, args.budget)
    if args.data:
        check.env["MAMLCOURSE_DATA"] = str(args.data.resolve())
    sys.path.insert(0, str(ROOT))
    print(f"checking the course on {args.device}{' (quick)' if args.quick else ''}; log in {log_dir}",
          flush=True)

    if "unit" in parts:
        check.part("unit tests", unit, check, QUICK_UNIT_TESTS if args.quick else UNIT_TESTS,
                   120 if args.quick else 240)
    if "lessons" in parts and not args.quick:
        for name in LESSONS:
            mode = "full" if name in FULL_MODE and args.device.startswith("cuda") else "quick"
            check.part(f"lesson {name[:2]}", lesson, check, name, mode, 300)
    if "cli" in parts:
        cli_parts(check, args.quick)

    passed = sum(p["ok"] for p in check.summary)
    print(f"{passed}/{len(check.summary)} parts passed on {args.device}", flush=True)
    (log_dir / "summary.json").write_text(json.dumps(
        {"device": args.device, "quick": args.quick, "date": str(datetime.datetime.now()),
         "parts": check.summary}, indent=2) + "\n")
    return 0 if passed == len(check.summary) else 1


if __name__ == "__main__":
    sys.exit(main())
