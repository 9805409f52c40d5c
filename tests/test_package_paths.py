"""The package names no folder of one machine: paths come from arguments, the environment or ~."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mamlcourse"
# An absolute folder of one machine ("/work/...", "/home/...") or this project's "../shared" symlink.
MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:work|home|shared|tmp|Users|mnt|root|data)/|\.\./shared")


def test_no_machine_paths_in_the_package():
    hits = [f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
            for path in sorted(PACKAGE.rglob("*.py"))
            for number, line in enumerate(path.read_text().splitlines(), 1) if MACHINE_PATH.search(line)]
    assert hits == [], "paths of one machine in the package:\n" + "\n".join(hits)
