#!/usr/bin/env python3
"""Run lessons in place so the outputs stored in git come from a real run of the current code.

    python tools/execute_notebooks.py notebooks/02_sine_wave_experiment.ipynb [...]
    python tools/execute_notebooks.py --check          # CI: are stored outputs current?

Lessons are stored *with* outputs from a quick-mode run (so they read well on GitHub),
except those listed in ``STORED_WITHOUT_OUTPUTS`` (widget lessons: saved widget outputs
only show "model not found" until re-run). Executing a notebook records a hash of its
code cells in ``metadata.mamlcourse.source_sha256``; ``--check`` fails when a lesson's code
changed since its outputs were made, or when a widget lesson carries outputs. The
outputs are also re-made and asserted by nbval in CI.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor

ROOT = Path(__file__).resolve().parents[1]
STORED_WITHOUT_OUTPUTS = {"04_adaptation_explorer.ipynb"}


def source_hash(nb: nbformat.NotebookNode) -> str:
    """sha256 over the code cells' sources, in order."""
    digest = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            digest.update(cell.source.encode() + b"\0")
    return digest.hexdigest()


def clear_outputs(nb: nbformat.NotebookNode) -> None:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)


def execute(path: Path, timeout: int) -> float:
    """Execute ``path`` in quick mode, in place; returns the wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    os.environ.setdefault("MAMLCOURSE_MODE", "quick")
    tic = time.perf_counter()
    ExecutePreprocessor(timeout=timeout, kernel_name="python3").preprocess(
        nb, {"metadata": {"path": str(path.parent)}})
    seconds = time.perf_counter() - tic
    if path.name in STORED_WITHOUT_OUTPUTS:
        clear_outputs(nb)
    nb.metadata.setdefault("mamlcourse", {})["source_sha256"] = source_hash(nb)
    nbformat.write(nb, path)
    return seconds


def check(paths: list[Path]) -> list[str]:
    """Problems with stored outputs: stale lessons, widget lessons saved with outputs."""
    problems = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        has_outputs = any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
        if path.name in STORED_WITHOUT_OUTPUTS:
            if has_outputs:
                problems.append(f"{path}: widget lessons are stored without outputs")
            continue
        recorded = nb.metadata.get("mamlcourse", {}).get("source_sha256")
        if recorded != source_hash(nb):
            problems.append(f"{path}: code changed since its outputs were made; run "
                            f"python tools/execute_notebooks.py {path.relative_to(ROOT)}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--check", action="store_true", help="only check that stored outputs are current")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.check:
        problems = check([p.resolve() for p in paths])
        print("\n".join(problems) or f"{len(paths)} lessons: stored outputs are current")
        return 1 if problems else 0
    for path in paths:
        print(f"{path}: {execute(path.resolve(), args.timeout):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
