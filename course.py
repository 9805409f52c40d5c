#!/usr/bin/env python3
"""Set up the course and open it, or set it up and run the tests: one command each.

    python3 course.py lab      # make .venv, install the course, open JupyterLab
    python3 course.py test     # make .venv, install the course and test tools, run pytest

Needs only Python 3.10+ (standard library). The virtual environment lives in ``.venv``
beside this file; a second run installs nothing new unless the requirements changed.

PyTorch: when ``.venv`` has no torch yet, a machine without an NVIDIA GPU (no
``nvidia-smi``) gets PyTorch's CPU build from its CPU wheel index, which saves about 3 GB
over the default CUDA build; ``--torch-index URL`` (or ``$MAMLCOURSE_TORCH_INDEX``) picks
another index, ``pypi`` the default one. The index is probed first (a few seconds at most):
when it cannot be reached (a campus proxy, a mirror, an offline wheel cache), torch comes
from pip's default index instead, and the script says so. A torch already in ``.venv`` is
kept as it is.

As root (containers, cloud images), ``lab`` passes ``--allow-root`` to JupyterLab.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
INDEX_ENV = "MAMLCOURSE_TORCH_INDEX"
PROBE_TIMEOUT_S = 5.0
FIRST_LESSON = "notebooks/01_few_shot_concepts.ipynb"

# What the test suite costs, as measured (README "Quickstart"; the machines: 2-core x86_64
# VMs whose `lscpu` says "AMD EPYC", Python 3.11, torch 2.13.0+cpu, quick mode).
SUITE = "unit tests (tests/), then the 7 lessons and 8 solution notebooks under nbval"
SUITE_CPU_MINUTES = (5, 25)
SUITE_CPU_MEASURED = ("on 2-core AMD EPYC machines (pytest alone: 490 tests in 5 min on one; 917 tests and notebook cells in 16.3 min on another)")
# A fresh .venv for `lab` (torch's CPU build, JupyterLab): 105-230 s measured by tools/newcomer.py
# on a 2-core AMD EPYC with torch's wheel on local disk; the test tools add 24-74 s.
SETUP_MINUTES = (2, 4)


def venv_python() -> Path:
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return VENV / sub


def sh(*args: str | Path, **kwargs) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, **kwargs)


def say(line: str) -> None:
    print(f"course.py: {line}", flush=True)


def has_torch(python: Path) -> bool:
    return subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode == 0


def torch_index(choice: str | None) -> str | None:
    """The index torch is installed from: None for PyPI's default (CUDA on Linux)."""
    if choice == "pypi":
        return None
    if choice:
        return choice
    if platform.system() == "Linux" and shutil.which("nvidia-smi") is None:
        return CPU_INDEX
    return None  # macOS and Windows wheels on PyPI are CPU builds already; a GPU wants CUDA


def probe_index(index: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why ``index`` cannot serve torch, or None when it can (one request, ``timeout`` seconds).

    pip, given an index it cannot reach, retries it for every package for minutes before it
    gives up; this asks once for the index's ``torch/`` page and answers within ``timeout``.
    A ``file:`` index is checked on disk. Proxies come from the environment, as for pip.
    """
    page = index.rstrip("/") + "/torch/"
    parsed = urllib.parse.urlparse(page)
    if parsed.scheme == "file":
        folder = Path(urllib.request.url2pathname(parsed.path))
        return None if folder.is_dir() else f"{folder} does not exist"
    if parsed.scheme not in ("http", "https"):
        return f"{index!r} is not an http(s) or file URL"
    try:
        with urllib.request.urlopen(page, timeout=timeout):  # headers only: the body is not read
            return None
    except urllib.error.HTTPError as err:
        return f"{page} answered HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:  # refused, no DNS, proxy, TLS, timeout
        reason = getattr(err, "reason", err)
        return f"{reason or type(err).__name__}"


def install_torch(python: Path, choice: str | None) -> None:
    """Install torch into .venv from the chosen index, falling back to the default one."""
    index = torch_index(choice)
    if index is not None:
        started = time.monotonic()
        problem = probe_index(index)
        if problem is not None:
            say(f"the PyTorch index {index} cannot be reached ({problem}; checked in "
                f"{time.monotonic() - started:.1f} s), so torch comes from pip's default index instead.")
            say("trade-off: on Linux that is the CUDA build, about 3 GB more to download and store "
                "(it runs on the CPU just the same); see the README's Quickstart to install the CPU build later.")
            index = None
    sh(python, "-m", "pip", "install", "torch", *(["--index-url", index] if index else []))


def setup(requirements: list[str], index_choice: str | None) -> Path:
    """Create .venv, install torch if missing, then the requirements (skipped when unchanged)."""
    if sys.version_info < (3, 10):
        sys.exit(f"Python 3.10 or newer is needed, this is {platform.python_version()}")
    python = venv_python()
    if not python.exists():
        low, high = SETUP_MINUTES
        say(f"first run: making .venv and installing the course ({low}-{high} min measured on a 2-core "
            "CPU, more while PyTorch downloads; later runs install nothing).")
        sh(sys.executable, "-m", "venv", VENV)
    if not has_torch(python):
        install_torch(python, index_choice)
    digest = hashlib.sha256(b"".join((ROOT / r).read_bytes() for r in
                                     ["requirements.txt", *requirements, "pyproject.toml"]))
    stamp = VENV / ".mamlcourse-installed"
    if not stamp.exists() or stamp.read_text() != digest.hexdigest():
        for req in requirements:
            sh(python, "-m", "pip", "install", "-r", ROOT / req, cwd=ROOT)
        stamp.write_text(digest.hexdigest())
    return python


def cpu_name() -> str:
    """The CPU's model name as ``lscpu`` shows it (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda_available(python: Path) -> bool:
    """Whether .venv's torch sees a GPU (asked only where an NVIDIA driver is installed)."""
    if shutil.which("nvidia-smi") is None:
        return False
    check = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0


def mode_lines(python: Path, command: str) -> list[str]:
    """What mode the lessons (or tests) will run in, and how to choose the other one."""
    chosen = os.environ.get("MAMLCOURSE_MODE")
    if chosen:
        return [f"MAMLCOURSE_MODE={chosen} (set in your environment)."]
    if command == "test":  # conftest.py defaults the tests to quick mode, GPU or not
        return ["quick mode (the tests' default); MAMLCOURSE_MODE=full runs the lessons at the paper's "
                "sizes inside the suite (not timed yet: meant for a GPU)."]
    if not cuda_available(python):
        return ["quick mode (no CUDA GPU): sizes for a laptop CPU; MAMLCOURSE_MODE=full picks the paper's."]
    return ["a CUDA GPU is present, so the lessons run in FULL mode by default (the paper's settings): "
            "from under a minute to ~10 min per lesson (the README's lesson map; lesson 5 not timed yet).",
            "for the quick sizes instead: MAMLCOURSE_MODE=quick python3 course.py lab"]


def test_plan(args: list[str]) -> list[str]:
    """What ``course.py test`` will run and roughly how long, from the measurements on record."""
    if args and not all(a.startswith("-") for a in args):
        what = f"pytest {' '.join(args)} (a part of the suite; all of it: python3 course.py test)"
    else:
        what = f"the whole suite: {SUITE}" + (f", with {' '.join(args)}" if args else "")
    low, high = SUITE_CPU_MINUTES
    return [f"running {what}.",
            f"the whole suite in quick mode took {low}-{high} min {SUITE_CPU_MEASURED}; "
            f"this machine: {cpu_name()}, {os.cpu_count()} CPUs."]


def lab_args(args: list[str]) -> list[str]:
    """JupyterLab's arguments: the first lesson, the user's own, and --allow-root as root.

    The server's root is the repository (given a file, JupyterLab would serve only the file's
    folder, and a lesson's links to ``../exercises/`` would lead nowhere).
    """
    own_root = any("root_dir" in a or "notebook-dir" in a or "notebook_dir" in a for a in args)
    args = [FIRST_LESSON, *([] if own_root else [f"--ServerApp.root_dir={ROOT}"]), *args]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in args:
        say("running as root (usual in containers and cloud images): adding --allow-root, which "
            "JupyterLab asks for before it starts as root.")
        args.append("--allow-root")
    return args


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["lab", "test"])
    parser.add_argument("--torch-index", default=os.environ.get(INDEX_ENV) or None,
                        help=f"where torch comes from when .venv has none (default: ${INDEX_ENV}, "
                        f"else {CPU_INDEX} on Linux without nvidia-smi; 'pypi' for PyPI)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="passed on to jupyter lab or pytest")
    opts = parser.parse_args()

    if opts.command == "lab":
        python = setup(["requirements.txt"], opts.torch_index)
        for line in mode_lines(python, "lab"):
            say(line)
        return subprocess.call([str(python), "-m", "jupyter", "lab", *lab_args(opts.args)], cwd=ROOT)
    python = setup(["requirements-test.txt"], opts.torch_index)
    for line in [*test_plan(opts.args), *mode_lines(python, "test")]:
        say(line)
    return subprocess.call([str(python), "-m", "pytest", *opts.args], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
