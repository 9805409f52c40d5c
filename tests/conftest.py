"""Shared test setup: quick mode, the Omniglot data in ../shared when present, small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_OMNIGLOT = ROOT.parent / "shared" / "data" / "omniglot"

# Tests and the notebooks they execute (kernels inherit this environment) run in quick mode.
os.environ.setdefault("MAMLCOURSE_MODE", "quick")
if "MAMLCOURSE_DATA" not in os.environ and SHARED_OMNIGLOT.is_dir():
    os.environ["MAMLCOURSE_DATA"] = str(SHARED_OMNIGLOT)


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
