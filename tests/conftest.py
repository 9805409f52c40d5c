"""Shared test helpers (the environment, quick mode and data path, is set in ../conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture
def float64():
    """Run a test in float64 (finite differences need it), restoring the default after."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def max_abs_diff(a: dict[str, torch.Tensor] | list[torch.Tensor], b) -> float:
    """Largest elementwise difference between two dicts or lists of tensors."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        a, b = list(a.values()), [b[k] for k in a]
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def omniglot_root(archives: tuple[str, ...]) -> Path:
    """$MAMLCOURSE_DATA when it holds ``<name>.zip`` for every name in ``archives``.

    Without them the test is skipped, or failed under MAMLCOURSE_REQUIRE_DATA=1 (as in CI).
    """
    root = Path(os.environ.get("MAMLCOURSE_DATA", ""))
    missing = [f"{n}.zip" for n in archives if not (root / f"{n}.zip").is_file()]
    if os.environ.get("MAMLCOURSE_DATA") and not missing:
        return root
    reason = f"Omniglot archives {missing} not found in $MAMLCOURSE_DATA={str(root)!r}"
    if os.environ.get("MAMLCOURSE_REQUIRE_DATA") == "1":
        pytest.fail(reason + " (MAMLCOURSE_REQUIRE_DATA=1)")
    pytest.skip(reason)
