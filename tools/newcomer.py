#!/usr/bin/env python3
"""Play a newcomer: fresh clone, the README's two commands, as root and as an ordinary user.

    sudo python3 tools/newcomer.py                      # everything, as root and as a user
    python3 tools/newcomer.py --only lab --as root      # one part
    python3 tools/newcomer.py --only test --pytest-args "tests/test_omniglot_download.py"

In a throwaway folder, for each persona (root, and an ordinary user made with ``useradd`` when
absent, run through ``runuser``), with an empty home (so no ``~/.cache/mamlcourse``), no
``$MAMLCOURSE_DATA`` and no ``$MAMLCOURSE_MODE``, it:

1. clones the repository (the committed HEAD of this checkout) with ``git clone``;
2. lab: runs ``python3 course.py lab --no-browser --port P``, fetches the first lesson from the
   running server over HTTP, stops it; then again (the second start installs nothing);
3. test: runs ``python3 course.py test [--pytest-args]`` and counts Omniglot skips (none
   expected: the tests download the data into the default folder);
4. eval: evaluates the shipped Omniglot model briefly and checks that ``git status`` stays clean
   (reported as a finding, never a crash).

Omniglot comes from a web server on 127.0.0.1 serving ``--zips`` (default
``../shared/data/omniglot``), standing in for the official release through
``$MAMLCOURSE_OMNIGLOT_URL``. PyTorch's CPU index is replaced by a loopback address through
``$MAMLCOURSE_TORCH_INDEX``: ``--torch-index unreachable`` (default: a closed port, which
exercises course.py's fallback) or ``local`` (a reachable loopback index). Nothing else is
contacted but the package indexes pip is configured with.

``--pin-torch VERSION`` sets ``$PIP_CONSTRAINT`` for the personas so that the install takes a
torch already on this machine's disk instead of the newest (a multi-GB CUDA build here); it
changes nothing in course.py or the requirements. ``--pin-torch none`` drops it.

The summary at the end gives each step's time and result (ok, FAIL, or FINDING: it ran and
found something the course should fix, such as a changed tracked file); ``--json FILE`` writes
it too. The exit status is 1 when a step failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import platform
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRST_LESSON = "notebooks/01_few_shot_concepts.ipynb"
SHIPPED_MODEL = "trained/omniglot-5w1s-maxpool"
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Step:
    persona: str
    name: str
    seconds: float = 0.0
    ok: bool = False
    finding: bool = False  # it ran, and found something to fix in the course (reported, not fatal)
    notes: list[str] = field(default_factory=list)


class Server:
    """A quiet HTTP server on 127.0.0.1 in a thread, recording the paths it served."""

    def __init__(self, folder: Path):
        served = self.served = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def do_GET(self):
                served.append(self.path)
                super().do_GET()

        handler = functools.partial(Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


class Persona:
    """Root or an ordinary user, with a home and a clone of their own in the throwaway folder."""

    def __init__(self, name: str, user: str, work: Path, env: dict[str, str], log):
        self.name, self.user = name, user
        self.folder = work / name
        self.home = self.folder / "home"
        self.clone = self.folder / "mamlcourse"
        self.log = log
        info = pwd.getpwnam(user)
        self.uid, self.gid = info.pw_uid, info.pw_gid
        self.env = {"HOME": str(self.home), "USER": user, "LOGNAME": user, "PATH": CLEAN_PATH,
                    "LANG": "C.UTF-8", "TERM": "dumb", **env}
        self.home.mkdir(parents=True)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run as this persona, in a clean environment (nothing from the caller's shell)."""
        env = ["env", "-i", *(f"{k}={v}" for k, v in self.env.items())]
        if os.geteuid() == self.uid:
            return [*env, *argv]
        return ["runuser", "-u", self.user, "--", *env, *argv]

    def run(self, argv: list[str], *, cwd: Path, timeout: float, log_name: str) -> tuple[int, str, float]:
        """Run to completion; returns (exit code, output, seconds). Output also goes to a log file."""
        log_path = self.folder / f"{log_name}.log"
        self.log(f"[{self.name}] $ {shlex.join(argv)}   (log: {log_path})")
        started = time.monotonic()
        with open(log_path, "w") as out:
            try:
                proc = subprocess.run(self.command(argv), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=timeout)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = 124
        return code, log_path.read_text(errors="replace"), time.monotonic() - started

    def chown(self) -> None:
        if os.geteuid() == 0 and self.uid != 0:
            subprocess.run(["chown", "-R", f"{self.uid}:{self.gid}", str(self.folder)], check=True)


def ensure_user(name: str, log) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        log(f"creating the ordinary user {name!r} (useradd)")
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)


def clone(persona: Persona, source: Path, branch: str, step: Step) -> bool:
    """A fresh ``git clone`` made by the persona, from a bare copy it owns (no shared ownership)."""
    bare = persona.folder / "origin.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", "--branch", branch, str(source), str(bare)],
                   check=True)
    persona.chown()
    code, out, seconds = persona.run(["git", "clone", "--quiet", str(bare), str(persona.clone)],
                                     cwd=persona.folder, timeout=300, log_name="clone")
    step.seconds, step.ok = seconds, code == 0
    if code:
        step.notes.append(f"git clone failed ({code}): {out.strip()[-300:]}")
    return step.ok


def git_status(persona: Persona) -> str:
    code, out, _ = persona.run(["git", "status", "--porcelain"], cwd=persona.clone, timeout=60,
                               log_name="git-status")
    return out.strip() if code == 0 else f"(git status failed: {out.strip()[-200:]})"


def fetch(url: str, token: str, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""
    except (urllib.error.URLError, OSError):
        return 0, b""


def serve_lab_once(persona: Persona, step: Step, *, timeout: float, label: str) -> None:
    """Start ``course.py lab``, wait until it serves the first lesson over HTTP, then stop it."""
    port, token = free_port(), os.urandom(12).hex()
    argv = ["python3", "course.py", "lab", "--no-browser", f"--port={port}", f"--IdentityProvider.token={token}"]
    log_path = persona.folder / f"lab-{label.split()[0]}.log"
    persona.log(f"[{persona.name}] $ {shlex.join(argv[:5])} ...   (log: {log_path})")
    started = time.monotonic()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(persona.command(argv), cwd=persona.clone, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        lesson_url = f"http://127.0.0.1:{port}/api/contents/{FIRST_LESSON}?content=1"
        status, body = 0, b""
        try:
            while time.monotonic() - started < timeout and proc.poll() is None:
                status, body = fetch(lesson_url, token)
                if status == 200:
                    break
                time.sleep(1.0)
            served_s = time.monotonic() - started
            page_status, page = fetch(f"http://127.0.0.1:{port}/lab/tree/{FIRST_LESSON}", token)
            exercises_status, _ = fetch(f"http://127.0.0.1:{port}/api/contents/exercises", token)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # the group this script started, nothing else
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    output = log_path.read_text(errors="replace")
    step.seconds = served_s
    if status != 200:
        step.notes.append(f"{label}: the first lesson was not served (HTTP {status}, exit {proc.returncode}); "
                          f"last output: {output.strip()[-400:]}")
        return
    notebook = json.loads(body)
    cells = notebook.get("content", {}).get("cells", [])
    title = next((c["source"] for c in cells if c["cell_type"] == "markdown"), "").splitlines()[:1]
    step.ok = notebook.get("type") == "notebook" and bool(cells) and page_status == 200 \
        and b"JupyterLab" in page and exercises_status == 200
    step.notes.append(f"{label}: served {FIRST_LESSON} ({len(cells)} cells, {title[0] if title else '?'}) "
                      f"and /lab/tree (HTTP {page_status}; exercises/ HTTP {exercises_status}) after {served_s:.0f} s")
    for line in output.splitlines():
        if line.startswith("course.py:"):
            step.notes.append(f"{label}: says: {line[len('course.py: '):][:160]}")
    if "Running as root is not recommended" in output:
        step.ok = False
        step.notes.append(f"{label}: JupyterLab refused to run as root")


def step_lab(persona: Persona, timeout: float) -> Step:
    step = Step(persona.name, "lab")
    serve_lab_once(persona, step, timeout=timeout, label="first start")
    if step.ok:
        second = Step(persona.name, "lab")
        serve_lab_once(persona, second, timeout=timeout, label="second start")
        step.notes += [n for n in second.notes if not n.startswith("second start: says")]
        step.ok = second.ok
        if "pip install" in (persona.folder / "lab-second.log").read_text(errors="replace"):
            step.notes.append("second start: installed again (it should install nothing)")
            step.ok = False
    status = git_status(persona)
    if status:
        step.notes.append(f"finding: git status after lab is not clean: {status[:300]}")
    return step


def step_test(persona: Persona, pytest_args: list[str], timeout: float) -> Step:
    step = Step(persona.name, "test")
    code, out, step.seconds = persona.run(["python3", "course.py", "test", *pytest_args], cwd=persona.clone,
                                          timeout=timeout, log_name="test")
    summary = re.findall(r"^=+ (.*\d+ (?:passed|failed|error).*) in ([\d.]+)s", out, re.MULTILINE)
    pytest_s = float(summary[-1][1]) if summary else None
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    omniglot_skips = [line for line in skips if "omniglot" in line.lower()]
    step.ok = code == 0 and not omniglot_skips
    step.notes.append(f"exit {code}; pytest: {summary[-1][0] if summary else 'no summary'}"
                      + (f" in {pytest_s:.0f} s (set-up and start: {step.seconds - pytest_s:.0f} s)"
                         if pytest_s is not None else ""))
    step.notes.append(f"Omniglot skips: {len(omniglot_skips)}; other skips: {len(skips) - len(omniglot_skips)}")
    step.notes += [f"skip: {line[:200]}" for line in skips]
    for line in out.splitlines():
        if line.startswith("course.py:"):
            step.notes.append(f"says: {line[len('course.py: '):][:200]}")
    default = persona.home / ".cache" / "mamlcourse" / "omniglot"
    if default.is_dir():
        step.notes.append(f"default data folder now holds: {', '.join(sorted(p.name for p in default.iterdir()))}")
    status = git_status(persona)
    if status:
        step.notes.append(f"finding: git status after test is not clean: {status[:300]}")
    if code == 124:
        step.notes.append(f"stopped after {timeout:.0f} s (--test-timeout)")
    return step


def step_eval(persona: Persona, tasks: int, timeout: float) -> Step:
    """Evaluate the shipped model briefly; a changed tracked file is a finding, not a crash."""
    step = Step(persona.name, "eval")
    python = persona.clone / ".venv" / "bin" / "python"
    if not python.exists():
        step.notes.append("skipped: no .venv yet (run the lab or test part first)")
        return step
    code, out, step.seconds = persona.run(
        [str(python), "-m", "mamlcourse", "eval", "omniglot", "--checkpoint", SHIPPED_MODEL,
         "--tasks", str(tasks), "--no-progress"], cwd=persona.clone, timeout=timeout, log_name="eval")
    status = git_status(persona)
    step.ok, step.finding = code == 0, bool(status)
    step.notes.append(f"exit {code}" + ("" if code == 0 else f": {out.strip()[-300:]}"))
    step.notes.append("git status clean after evaluating the shipped model" if not status else
                      f"finding: evaluating the shipped model changed tracked files: {status[:300]}")
    where = [line for line in out.splitlines() if "results" in line.lower() and ("wrote" in line.lower()
                                                                               or "written" in line.lower())]
    step.notes += [f"says: {line.strip()[:200]}" for line in where[:2]]
    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="all", help="parts to play, comma-separated: lab, test, eval "
                        "(default all; eval needs the .venv that lab or test made)")
    parser.add_argument("--as", dest="personas", choices=["root", "user", "both"], default="both")
    parser.add_argument("--user", default="mamlstudent", help="the ordinary user (created when absent)")
    parser.add_argument("--pytest-args", default="", help="passed to `course.py test` (default: the whole suite)")
    parser.add_argument("--zips", type=Path, default=REPO.parent / "shared" / "data" / "omniglot",
                        help="folder whose Omniglot zips the local server offers (default ../shared/data/omniglot)")
    parser.add_argument("--torch-index", choices=["unreachable", "local"], default="unreachable",
                        help="the CPU index course.py sees: a closed loopback port, or a loopback index")
    parser.add_argument("--pin-torch", default="2.13.0",
                        help="torch version pip may take (PIP_CONSTRAINT); 'none' for no pin")
    parser.add_argument("--lab-timeout", type=float, default=1800)
    parser.add_argument("--test-timeout", type=float, default=7200)
    parser.add_argument("--eval-tasks", type=int, default=20)
    parser.add_argument("--work", type=Path, help="throwaway folder (default: a new one under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway folder")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    opts = parser.parse_args()

    def log(line: str) -> None:
        print(f"newcomer: {line}", flush=True)

    parts = {"lab", "test", "eval"} if opts.only == "all" else set(opts.only.split(","))
    if not parts <= {"lab", "test", "eval"}:
        raise SystemExit(f"--only {opts.only!r}: choose from lab, test, eval (comma-separated) or all")
    personas = ["root", "user"] if opts.personas == "both" else [opts.personas]
    if os.geteuid() != 0:
        if "root" in personas:
            log("not root: playing only the current user")
        personas, opts.user = ["user"], pwd.getpwuid(os.geteuid()).pw_name
    missing = [n for n in ("images_background", "images_evaluation", "images_background_small1", "all_runs")
               if not (opts.zips / f"{n}.zip").is_file()]
    if missing:
        raise SystemExit(f"--zips {opts.zips} lacks {', '.join(missing)}.zip: point it at a folder "
                         "holding the Omniglot zips")
    source_branch = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--abbrev-ref", "HEAD"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    source_commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    if subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                      capture_output=True, text=True).stdout.strip():
        log("note: this checkout has uncommitted changes; the clone tests the committed HEAD only")

    work = opts.work or Path(tempfile.mkdtemp(prefix="mamlcourse-newcomer-"))
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    served = work / "served"
    (served / "omniglot").mkdir(parents=True)
    for zip_path in opts.zips.glob("*.zip"):
        shutil.copyfile(zip_path, served / "omniglot" / zip_path.name)
    (served / "whl" / "cpu" / "torch").mkdir(parents=True)
    (served / "whl" / "cpu" / "torch" / "index.html").write_text(
        "<!DOCTYPE html><html><body><!-- torch comes from pip's configured find-links --></body></html>")
    server = Server(served)
    index = f"{server.url}/whl/cpu" if opts.torch_index == "local" else f"http://127.0.0.1:{free_port()}/whl/cpu"
    env = {"MAMLCOURSE_OMNIGLOT_URL": f"{server.url}/omniglot/", "MAMLCOURSE_TORCH_INDEX": index,
           "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    # The machine's own pip set-up (local wheel folders, certificates), as any user here has it.
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_") or k.lower().endswith("_proxy")
                and k.lower() != "no_proxy"})
    if opts.torch_index == "local":
        # PyTorch's real CPU index also serves torch's dependencies (filelock, sympy, ...); the
        # loopback stand-in serves only torch's page, so pip may look for the rest on PyPI too.
        configured = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.extra-index-url"],
                                    capture_output=True, text=True).stdout.split()
        env["PIP_EXTRA_INDEX_URL"] = " ".join(["https://pypi.org/simple", *configured])
    if opts.pin_torch != "none":
        constraints = work / "constraints.txt"
        constraints.write_text(f"torch=={opts.pin_torch}\n")
        os.chmod(constraints, 0o644)
        env["PIP_CONSTRAINT"] = str(constraints)
    log(f"throwaway folder {work}; clone of {REPO} at {source_branch} {source_commit}; "
        f"Omniglot from {server.url}/omniglot/; CPU index {index} ({opts.torch_index}); "
        f"torch pin: {opts.pin_torch}; CPU: {cpu_name()}, {os.cpu_count()} CPUs")

    steps: list[Step] = []
    try:
        for name in personas:
            user = "root" if name == "root" else opts.user
            if name == "user" and os.geteuid() == 0:
                ensure_user(user, log)
            persona = Persona(name, user, work, env, log)
            step = Step(name, "clone")
            steps.append(step)
            if not clone(persona, REPO, source_branch, step):
                continue
            if "lab" in parts:
                steps.append(step_lab(persona, opts.lab_timeout))
            if "test" in parts:
                steps.append(step_test(persona, shlex.split(opts.pytest_args), opts.test_timeout))
            if "eval" in parts:
                steps.append(step_eval(persona, opts.eval_tasks, timeout=1800))
    finally:
        server.close()
        zips = sorted({p for p in server.served if p.endswith(".zip")})
        print("\n=== newcomer summary ===")
        print(f"commit {source_commit} ({source_branch}); CPU: {cpu_name()}, {os.cpu_count()} CPUs; "
              f"python3 = {shutil.which('python3', path=CLEAN_PATH)}")
        print(f"zips served by the local stand-in: {', '.join(zips) or 'none'} ({len(server.served)} requests)")
        for s in steps:
            verdict = "FAIL" if not s.ok else "FINDING" if s.finding else "ok"
            print(f"[{s.persona:4}] {s.name:5} {verdict:7} {s.seconds:7.0f} s")
            for note in s.notes:
                print(f"               {note}")
        if opts.json:
            opts.json.write_text(json.dumps({"commit": source_commit, "cpu": cpu_name(), "cpus": os.cpu_count(),
                                             "zips_served": zips, "steps": [asdict(s) for s in steps]}, indent=1))
        if opts.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if steps and all(s.ok for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
