#!/usr/bin/env python3
"""Set up the course and open it, or set it up and run the tests: one command each.

    python3 course.py lab      # make .venv, install the course, open JupyterLab
    python3 course.py test     # make .venv, install the course and test tools, run pytest

Needs only Python 3.10+ (standard library). The virtual environment lives in ``.venv``
beside this file; a second run installs nothing new unless the requirements changed.

PyTorch: when ``.venv`` has no torch yet, a machine without an NVIDIA GPU (no
``nvidia-smi``) gets PyTorch's CPU build from its CPU wheel index, which saves about 3 GB
over the default CUDA build; ``--torch-index URL`` picks another index, ``--torch-index
pypi`` the default one. A torch already in ``.venv`` is kept as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def venv_python() -> Path:
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return VENV / sub


def sh(*args: str | Path, **kwargs) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, **kwargs)


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


def setup(requirements: list[str], index_choice: str | None) -> Path:
    """Create .venv, install torch if missing, then the requirements (skipped when unchanged)."""
    if sys.version_info < (3, 10):
        sys.exit(f"Python 3.10 or newer is needed, this is {platform.python_version()}")
    python = venv_python()
    if not python.exists():
        sh(sys.executable, "-m", "venv", VENV)
    if not has_torch(python):
        index = torch_index(index_choice)
        sh(python, "-m", "pip", "install", "torch", *(["--index-url", index] if index else []))
    digest = hashlib.sha256(b"".join((ROOT / r).read_bytes() for r in
                                     ["requirements.txt", *requirements, "pyproject.toml"]))
    stamp = VENV / ".mamlcourse-installed"
    if not stamp.exists() or stamp.read_text() != digest.hexdigest():
        for req in requirements:
            sh(python, "-m", "pip", "install", "-r", ROOT / req, cwd=ROOT)
        stamp.write_text(digest.hexdigest())
    return python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["lab", "test"])
    parser.add_argument("--torch-index", help=f"where torch comes from when .venv has none "
                        f"(default: {CPU_INDEX} on Linux without nvidia-smi; 'pypi' for PyPI)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="passed on to jupyter lab or pytest")
    opts = parser.parse_args()

    if opts.command == "lab":
        python = setup(["requirements.txt"], opts.torch_index)
        return subprocess.call([str(python), "-m", "jupyter", "lab", "notebooks/01_few_shot_concepts.ipynb",
                                *opts.args], cwd=ROOT)
    python = setup(["requirements-test.txt"], opts.torch_index)
    return subprocess.call([str(python), "-m", "pytest", *opts.args], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
