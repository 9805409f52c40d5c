"""pytest setup for the whole repository (unit tests, lessons, solutions).

Tests and the notebooks they execute (their kernels inherit this environment) run in quick
mode and read Omniglot from ../shared/data/omniglot when that folder exists, unless the
environment says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_OMNIGLOT = Path(__file__).resolve().parent.parent / "shared" / "data" / "omniglot"

os.environ.setdefault("MAMLCOURSE_MODE", "quick")
if "MAMLCOURSE_DATA" not in os.environ and SHARED_OMNIGLOT.is_dir():
    os.environ["MAMLCOURSE_DATA"] = str(SHARED_OMNIGLOT)
