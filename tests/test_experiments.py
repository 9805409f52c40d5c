"""The layout: ``mamlcourse.experiments`` runs experiments on the library; the library never imports it."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mamlcourse"
EXPERIMENTS = PACKAGE / "experiments"
# The command line may import experiments, lazily, inside the command that needs it.
LAZY_IMPORTERS = {PACKAGE / "cli.py", PACKAGE / "__main__.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if EXPERIMENTS not in p.parents)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, nested ones included."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[:len(base) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def test_the_experiments_package_holds_what_runs_experiments():
    names = {p.stem for p in EXPERIMENTS.glob("*.py")}
    assert {"compare", "cost", "sine", "omniglot"} <= names
    assert not (PACKAGE / "runs").exists(), "mamlcourse/runs moved to mamlcourse/experiments"
    assert not (PACKAGE / "algorithms" / "compare.py").exists()
    assert not (PACKAGE / "algorithms" / "cost.py").exists()


def test_imported_modules_resolve_relative_imports():
    """The scanner below: relative imports, in a subpackage and at the top, resolve to absolute names."""
    assert "mamlcourse.algorithms.base" in {name for _, name in imported_modules(EXPERIMENTS / "cost.py")}
    assert "mamlcourse.config" in {name for _, name in imported_modules(PACKAGE / "train.py")}
    algorithms_init = PACKAGE / "algorithms" / "__init__.py"
    assert "mamlcourse.algorithms.anil" in {name for _, name in imported_modules(algorithms_init)}


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_never_imports_experiments(path):
    """No import of mamlcourse.experiments in the library's source, nested imports included."""
    offending = [(line, name) for line, name in imported_modules(path)
                 if name == "mamlcourse.experiments" or name.startswith("mamlcourse.experiments.")]
    if path in LAZY_IMPORTERS:
        tree = ast.parse(path.read_text())
        top_level = {node.lineno for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))}
        offending = [(line, name) for line, name in offending if line in top_level]
        assert not offending, f"{path.name} imports experiments at the top: import it inside the command"
    assert not offending, f"{path.relative_to(ROOT)} imports {offending}: the library must not"


def test_importing_every_library_module_leaves_experiments_unloaded():
    """Each library module imported in one fresh interpreter: experiments is never loaded on the way."""
    names = [module_name(p) for p in library_files() if p.name != "__main__.py"]  # __main__ runs the CLI
    script = (
        "import importlib, json, sys\n"
        "loaded = []\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'mamlcourse.experiments' in sys.modules:\n"
        "        loaded.append(name)\n"
        "        break\n"
        "print(json.dumps(loaded))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [], \
        f"importing {done.stdout.strip()} loaded mamlcourse.experiments"


def test_the_paper_numbers_of_the_experiments_come_from_published():
    from mamlcourse.algorithms import published
    from mamlcourse.experiments import omniglot, sine

    assert sine.PAPER_SINE_5SHOT == {name: {s: e.accuracy for s, e in row.items()}
                                     for name, row in published.SINE_5SHOT.items()}
    for preset, (accuracy, ci95) in omniglot.PAPER_TABLE1.items():
        entry = published.OMNIGLOT_MAML[preset.removeprefix("paper-")]
        assert (accuracy, ci95) == (entry.accuracy, entry.ci95)
    assert omniglot.LAKE_HUMAN_ERROR == published.LAKE_RUNS_ERROR["people"].accuracy
    assert omniglot.LAKE_BPL_ERROR == published.LAKE_RUNS_ERROR["bpl"].accuracy
