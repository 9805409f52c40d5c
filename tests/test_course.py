"""course.py, the two commands a newcomer runs: root, an unreachable PyTorch index, what it prints.

Nothing here installs anything or reaches the internet: ``sh`` (the install step) is replaced
by a recorder, and the indexes probed are local HTTP servers on 127.0.0.1 or closed ports.
The whole path, installs included, is played by ``tools/newcomer.py``.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest

from conftest import load_script, omniglot_root, serve_directory

ROOT = Path(__file__).resolve().parent.parent


course = load_script(ROOT / "course.py", "course_under_test")


@pytest.fixture
def local_index(tmp_path):
    """A local package index on 127.0.0.1 that has a ``torch/`` page (and no other)."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "index.html").write_text("<html><body></body></html>")
    with serve_directory(tmp_path) as url:
        yield url


@pytest.fixture
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def recorded(monkeypatch):
    """The commands course.py would run, recorded instead of run."""
    calls: list[list[str]] = []
    monkeypatch.setattr(course, "sh", lambda *args, **kwargs: calls.append([str(a) for a in args]))
    return calls


def test_lab_as_root_adds_allow_root_and_says_so(monkeypatch, capsys):
    monkeypatch.setattr(course.os, "geteuid", lambda: 0, raising=False)
    args = course.lab_args(["--no-browser"])
    assert args == [course.FIRST_LESSON, f"--ServerApp.root_dir={ROOT}", "--no-browser", "--allow-root"]
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "running as root" in out and "--allow-root" in out
    assert course.lab_args(["--allow-root"]).count("--allow-root") == 1, "not added twice"


def test_lab_as_a_user_passes_the_arguments_unchanged(monkeypatch, capsys):
    monkeypatch.setattr(course.os, "geteuid", lambda: 1000, raising=False)
    assert course.lab_args(["--port", "8899"]) == [course.FIRST_LESSON, f"--ServerApp.root_dir={ROOT}",
                                                   "--port", "8899"]
    assert capsys.readouterr().out == ""
    assert course.lab_args(["--ServerApp.root_dir=/srv"]) == [course.FIRST_LESSON, "--ServerApp.root_dir=/srv"]


def test_the_probe_finds_a_reachable_index_and_names_what_is_wrong_with_others(local_index, closed_port,
                                                                              tmp_path):
    assert course.probe_index(local_index) is None
    assert "HTTP 404" in course.probe_index(local_index + "missing/")
    started = time.monotonic()
    refused = course.probe_index(f"http://127.0.0.1:{closed_port}/whl/cpu")
    assert refused and "refused" in refused.lower()
    assert time.monotonic() - started < course.PROBE_TIMEOUT_S
    assert course.probe_index((tmp_path / "torch").parent.as_uri()) is None
    assert "does not exist" in course.probe_index((tmp_path / "absent").as_uri())
    assert "not an http(s) or file URL" in course.probe_index("ftp://example.invalid/simple")


def test_the_probe_gives_up_on_a_silent_server_within_its_timeout():
    with socket.socket() as server:  # accepts connections (the kernel does) and never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        started = time.monotonic()
        problem = course.probe_index(f"http://127.0.0.1:{server.getsockname()[1]}/", timeout=0.5)
        elapsed = time.monotonic() - started
    assert problem and "timed out" in problem.lower()
    assert elapsed < 3, f"the probe took {elapsed:.1f} s with a 0.5 s timeout"


def test_an_unreachable_index_falls_back_to_the_default_one_and_says_the_trade_off(closed_port, recorded,
                                                                                     capsys):
    unreachable = f"http://127.0.0.1:{closed_port}/whl/cpu"
    course.install_torch(Path("python"), unreachable)
    assert recorded == [["python", "-m", "pip", "install", "torch"]], "no --index-url after the fallback"
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert unreachable in lines[0] and "cannot be reached" in lines[0] and "default index" in lines[0]
    assert "trade-off" in lines[1] and "CUDA build" in lines[1] and "3 GB" in lines[1]


def test_a_reachable_index_is_used(local_index, recorded, capsys):
    course.install_torch(Path("python"), local_index)
    assert recorded == [["python", "-m", "pip", "install", "torch", "--index-url", local_index]]
    assert capsys.readouterr().out == ""


def test_the_cpu_index_is_chosen_without_a_gpu_and_pypi_on_request(monkeypatch):
    monkeypatch.setattr(course.platform, "system", lambda: "Linux")
    monkeypatch.setattr(course.shutil, "which", lambda name: None)
    assert course.torch_index(None) == course.CPU_INDEX
    assert course.torch_index("pypi") is None
    monkeypatch.setattr(course.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    assert course.torch_index(None) is None


def test_the_index_can_come_from_the_environment(monkeypatch, local_index, recorded):
    monkeypatch.setenv(course.INDEX_ENV, local_index)
    monkeypatch.setattr(course.sys, "argv", ["course.py", "test"])
    monkeypatch.setattr(course, "setup", lambda requirements, choice: pytest.fail(f"setup({choice!r})")
                        if choice != local_index else Path("python"))
    monkeypatch.setattr(course.subprocess, "call", lambda *a, **k: 0)
    assert course.main() == 0


def test_test_prints_what_it_runs_and_the_measured_range_with_the_cpu(monkeypatch):
    whole = course.test_plan([])
    assert "the whole suite" in whole[0] and "nbval" in whole[0]
    low, high = course.SUITE_CPU_MINUTES
    assert f"{low}-{high} min" in whole[1] and "AMD EPYC" in whole[1]
    assert course.cpu_name() in whole[1], "the machine's own CPU is named beside the measured one"
    part = course.test_plan(["tests/test_maml.py", "-q"])
    assert "pytest tests/test_maml.py -q" in part[0] and "a part of the suite" in part[0]
    assert "the whole suite" in course.test_plan(["-x"])[0]


def test_modes_are_announced_with_how_to_choose_the_other(monkeypatch):
    monkeypatch.delenv("MAMLCOURSE_MODE", raising=False)
    monkeypatch.setattr(course, "cuda_available", lambda python: True)
    gpu = course.mode_lines(Path("python"), "lab")
    assert "FULL mode" in gpu[0] and "min per lesson" in gpu[0]
    assert gpu[1].endswith("MAMLCOURSE_MODE=quick python3 course.py lab")
    assert "quick mode" in course.mode_lines(Path("python"), "test")[0]
    monkeypatch.setattr(course, "cuda_available", lambda python: False)
    assert "MAMLCOURSE_MODE=full" in course.mode_lines(Path("python"), "lab")[0]
    monkeypatch.setenv("MAMLCOURSE_MODE", "quick")
    assert course.mode_lines(Path("python"), "lab") == ["MAMLCOURSE_MODE=quick (set in your environment)."]


def test_without_nvidia_smi_cuda_is_not_asked_for(monkeypatch):
    monkeypatch.setattr(course.shutil, "which", lambda name: None)
    monkeypatch.setattr(course.subprocess, "run", lambda *a, **k: pytest.fail("torch was imported"))
    assert course.cuda_available(Path("python")) is False


# --- The data finder of tests/conftest.py (what `course.py test` uses with no folder configured).

@pytest.fixture
def omniglot_server(tmp_path):
    """all_runs.zip (real, 353 kB) served from 127.0.0.1, standing in for the official release."""
    source = omniglot_root(("all_runs",))
    served = tmp_path / "served"
    served.mkdir()
    shutil.copyfile(source / "all_runs.zip", served / "all_runs.zip")
    with serve_directory(served) as url:
        yield url


@pytest.fixture
def no_data_configured(tmp_path, monkeypatch, closed_port):
    """A student's machine: no $MAMLCOURSE_DATA, an empty default folder, nothing required.

    Downloads go to a closed local port unless a test names its server: never the internet.
    """
    import conftest

    monkeypatch.setenv("MAMLCOURSE_OMNIGLOT_URL", f"http://127.0.0.1:{closed_port}/")
    monkeypatch.delenv("MAMLCOURSE_DATA", raising=False)
    monkeypatch.delenv("MAMLCOURSE_REQUIRE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(conftest, "_failed_downloads", {})
    return tmp_path / "xdg" / "mamlcourse" / "omniglot"


def test_the_finder_downloads_into_the_default_folder(omniglot_server, no_data_configured, monkeypatch):
    monkeypatch.setenv("MAMLCOURSE_OMNIGLOT_URL", omniglot_server)
    assert omniglot_root(("all_runs",)) == no_data_configured
    assert sorted(p.name for p in no_data_configured.iterdir()) == ["all_runs.zip"]
    monkeypatch.setenv("MAMLCOURSE_OMNIGLOT_URL", "http://127.0.0.1:9/")  # found now: not fetched again
    assert omniglot_root(("all_runs",)) == no_data_configured


def test_the_finder_skips_saying_how_to_unskip_when_offline(no_data_configured, monkeypatch):
    with pytest.raises(pytest.skip.Exception) as skipped:
        omniglot_root(("all_runs",))
    message = str(skipped.value)
    assert "could not be downloaded" in message and str(no_data_configured) in message
    assert "refused" in message.lower(), "the skip says why the download failed"
    assert "To run these tests" in message and "--data DIR" in message and "$MAMLCOURSE_DATA" in message
    monkeypatch.setenv("MAMLCOURSE_REQUIRE_DATA", "1")
    with pytest.raises(pytest.fail.Exception, match="MAMLCOURSE_REQUIRE_DATA=1"):
        omniglot_root(("all_runs",))


def test_the_finder_never_downloads_into_a_named_folder(omniglot_server, no_data_configured, tmp_path,
                                                         monkeypatch):
    named = tmp_path / "named"
    named.mkdir()
    monkeypatch.setenv("MAMLCOURSE_DATA", str(named))
    monkeypatch.setenv("MAMLCOURSE_OMNIGLOT_URL", omniglot_server)
    with pytest.raises(pytest.skip.Exception) as skipped:
        omniglot_root(("all_runs",))
    assert "unset $MAMLCOURSE_DATA" in str(skipped.value) and str(named) in str(skipped.value)
    assert list(named.iterdir()) == [] and not no_data_configured.exists()
