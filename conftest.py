"""pytest setup for the whole repository (unit tests, lessons, solutions).

Tests and the notebooks they execute (their kernels inherit this environment) run in quick
mode unless ``$MAMLCOURSE_MODE`` says otherwise. Omniglot is found the way the course finds
it (``mamlcourse.data.download.resolve_root``):

1. ``pytest --data DIR`` (``python3 course.py test --data DIR``): an explicit folder;
2. ``$MAMLCOURSE_DATA``;
3. ``../shared/data/omniglot`` when that folder exists (this project's own machines and CI);
4. otherwise nothing is set and the default folder ``~/.cache/mamlcourse/omniglot`` is used,
   where the lessons download the zips; the data tests download them there too when missing
   (``tests/conftest.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_OMNIGLOT = Path(__file__).resolve().parent.parent / "shared" / "data" / "omniglot"

os.environ.setdefault("MAMLCOURSE_MODE", "quick")


def pytest_addoption(parser):
    parser.addoption("--data", metavar="DIR", default=None,
                     help="folder holding the Omniglot zips (sets $MAMLCOURSE_DATA for the tests and the "
                     "notebooks' kernels; default: $MAMLCOURSE_DATA, else the course's default folder)")


def pytest_configure(config):
    data = config.getoption("data")
    if data:
        os.environ["MAMLCOURSE_DATA"] = str(Path(data).expanduser().resolve())
    elif "MAMLCOURSE_DATA" not in os.environ and SHARED_OMNIGLOT.is_dir():
        os.environ["MAMLCOURSE_DATA"] = str(SHARED_OMNIGLOT)
