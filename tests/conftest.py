"""Shared test helpers (the environment, quick mode and data path, is set in ../conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def device_under_test() -> torch.device:
    """The device under test: $MAMLCOURSE_TEST_DEVICE (``cuda`` in tools/gpu/check.py), else the CPU.

    Tests that train or score take their device from here, so one switch runs them on a GPU.
    On the CPU runs must repeat bit for bit; on CUDA only to float tolerance (cuDNN may pick
    other kernels in another process, and atomics reorder sums): see ``assert_same_run``.
    """
    device = torch.device(os.environ.get("MAMLCOURSE_TEST_DEVICE", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.fail("MAMLCOURSE_TEST_DEVICE=cuda but CUDA is not available")
    return device


@pytest.fixture
def device() -> torch.device:
    """``device_under_test()`` as a fixture."""
    return device_under_test()


def assert_same_run(a, b, device: torch.device | None = None) -> None:
    """Two runs' tensors agree: exactly on the CPU, to 1e-4 relative on a GPU."""
    device = device or device_under_test()
    diff = max_abs_diff(a, b)
    if device.type == "cpu":
        assert diff == 0.0, f"runs differ by {diff} on the CPU, where they must agree exactly"
    else:
        scale = max(v.abs().max().item() for v in (a.values() if isinstance(a, dict) else a))
        assert diff <= 1e-4 * max(scale, 1.0), f"runs differ by {diff} on {device}"


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
