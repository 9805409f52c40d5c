"""Shared test helpers (the environment, quick mode and data path, is set in ../conftest.py)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import torch

from mamlcourse.data.download import (
    DATA_ENV,
    URL_ENV,
    OmniglotNotFound,
    archive_url,
    ensure_archives,
    resolve_root,
)

REQUIRE_ENV = "MAMLCOURSE_REQUIRE_DATA"

# Download failures seen this session: an offline machine tries once, not once per test.
_failed_downloads: dict[str, str] = {}


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


def _unavailable(reason: str) -> NoReturn:
    """Skip with ``reason`` (which says how to un-skip), or fail under MAMLCOURSE_REQUIRE_DATA=1 (CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: data tests must run here)")
    pytest.skip(reason)


def omniglot_root(archives: tuple[str, ...]) -> Path:
    """The folder holding ``<name>.zip`` for every name in ``archives``, found as the course finds it.

    The folder is ``download.resolve_root()``'s: ``$MAMLCOURSE_DATA`` (which ``pytest --data DIR``
    and ../conftest.py set), else the default folder the lessons download into. Missing archives
    are downloaded into the default folder, never into a folder the user named, as the library
    does. Without them the test is skipped with how to un-skip it, or failed under
    MAMLCOURSE_REQUIRE_DATA=1 (as in CI).

    Args:
        archives: archive names without ``.zip`` (keys of ``download.ARCHIVES``).

    Returns:
        The data folder, every archive in it verified by its checksum.
    """
    folder, is_default = resolve_root()
    missing = [n for n in archives if not (folder / f"{n}.zip").is_file()]
    if not missing:
        return folder
    files = ", ".join(f"{n}.zip" for n in missing)
    if not is_default:
        _unavailable(f"Omniglot {files} not found in ${DATA_ENV}={folder}. To run these tests, put the "
                     f"zips there (from {archive_url(missing[0]).rsplit('/', 1)[0]}/), point --data DIR "
                     f"or ${DATA_ENV} at a folder holding them, or unset ${DATA_ENV} to let the tests "
                     f"download them into the default folder")
    key = str(folder)
    if key not in _failed_downloads:
        try:
            ensure_archives(missing, progress=False)
            return folder
        except OmniglotNotFound as err:  # unreachable, an HTTP error, or the folder is not writable
            _failed_downloads[key] = f"fetching {archive_url(missing[0])}: {err.__cause__ or err}"
    _unavailable(f"Omniglot {files} could not be downloaded into the default folder {folder} "
                 f"({_failed_downloads[key]}). To run these tests, run them again online (or with "
                 f"${URL_ENV} naming a mirror), or point --data DIR or ${DATA_ENV} at a folder "
                 f"holding the zips")


def expect_pass(check, fn, capsys, exercise: str) -> None:
    """An exercise check accepts ``fn`` and says so."""
    check(fn)
    assert f"✓ Exercise {exercise} passed" in capsys.readouterr().out


def expect_fail(check, fn, exercise: str, *fragments: str) -> str:
    """An exercise check refuses ``fn`` with a message that names each of ``fragments``."""
    from mamlcourse.checks import ExerciseCheckFailed

    with pytest.raises(ExerciseCheckFailed) as info:
        check(fn)
    message = str(info.value)
    assert info.value.exercise == exercise
    assert message.startswith(f"Exercise {exercise}: ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep the test output clean
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1 (a free port); yields its base URL, ending in ``/``."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def load_script(path: Path, name: str) -> types.ModuleType:
    """A script outside the package (``benchmarks/*.py``, ``course.py``) imported as module ``name``.

    Registered in ``sys.modules`` before it runs: dataclasses look their module up while the
    file executes.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

