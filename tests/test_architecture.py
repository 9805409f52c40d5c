"""The layout of docs/architecture.md: each layer imports only the layers below it.

``mamlcourse.experiments`` runs experiments on the library, and the library never imports it;
the core (MAML itself) imports nothing of the rest of the package.
"""

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


# docs/architecture.md, "What each layer may import": the layer of each module, and what it may use.
CORE = {"config", "tasks", "models", "maml", "training_state", "train", "cuda_graph", "checkpoint", "evaluate",
        "machine"}
ALGORITHMS = {"algorithms", "baseline", "meta_gradient"}
COURSE = {"plotting", "widgets", "checks"}
ENTRY_POINTS = {"cli", "__main__"}
MAY_IMPORT = {
    "core": {"core"},
    "data": {"core", "data"},
    "algorithms": {"core", "algorithms"},
    "course": {"core", "data", "algorithms", "course"},
    "experiments": {"core", "data", "algorithms", "experiments"},
    "entry points": {"core", "experiments", "entry points"},
}


def layer(module: str) -> str:
    """``mamlcourse.maml`` -> ``"core"``, ``mamlcourse.widgets.sine`` -> ``"course"``, ..."""
    first = module.split(".")[1]
    for name, members in (("core", CORE), ("algorithms", ALGORITHMS), ("course", COURSE),
                          ("entry points", ENTRY_POINTS)):
        if first in members:
            return name
    if first in ("data", "experiments"):
        return first
    raise AssertionError(f"{module}: in no layer of docs/architecture.md; add it there and here")


def package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_the_layers_it_may(path):
    own = layer(module_name(path))
    wrong = []
    for line, name in imported_modules(path):
        if not name.startswith("mamlcourse.") or name.count(".") < 1:
            continue
        try:
            used = layer(name)
        except AssertionError:
            continue  # ``from . import x`` names resolve to their module as well; unknown names are attributes
        if used not in MAY_IMPORT[own]:
            wrong.append(f"line {line}: {name} ({used})")
    assert not wrong, f"{path.relative_to(ROOT)} is in the {own} layer, which may import " \
                      f"{sorted(MAY_IMPORT[own])} only: " + "; ".join(wrong)


def test_the_layer_rule_can_fail():
    """A core module importing an algorithm, or an algorithm importing the course, is caught."""
    assert "algorithms" not in MAY_IMPORT[layer("mamlcourse.maml")]
    assert "course" not in MAY_IMPORT[layer("mamlcourse.algorithms.anil")]
    assert layer("mamlcourse.widgets.sine") == "course" and layer("mamlcourse.experiments.cost") == "experiments"


def test_the_core_is_what_architecture_md_lists():
    text = (ROOT / "docs" / "architecture.md").read_text()
    for name in CORE:
        assert f"`{name}`" in text, f"docs/architecture.md does not list the core module {name}"
        assert (PACKAGE / f"{name}.py").is_file()


def test_importing_the_package_loads_no_plotting_widgets_or_experiments():
    """docs/architecture.md: ``import mamlcourse`` (core, data, algorithms) leaves the course and experiments out."""
    code = ("import sys, mamlcourse; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('matplotlib', 'ipywidgets') or m.startswith(('mamlcourse.experiments', 'mamlcourse.plotting', "
            "'mamlcourse.widgets', 'mamlcourse.checks'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout.strip()
    assert out == "[]", f"import mamlcourse loaded {out}"
