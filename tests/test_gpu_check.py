"""tools/gpu/check.py on the CPU path it shares with the CUDA run: the parts run and say what they found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools" / "gpu"))
import check  # noqa: E402


def run_check(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / "tools" / "gpu" / "check.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.mark.slow  # six short CLI runs: 22 min on a 2-core AMD EPYC shared with other work
@pytest.mark.skipif(os.environ.get("MAMLCOURSE_GPU_CHECK_CLI") != "1",
                    reason="end to end, too long for CI (each part is tested alone in tests/test_cli.py); "
                           "run it with MAMLCOURSE_GPU_CHECK_CLI=1")
def test_the_cli_parts_pass_on_the_cpu_with_one_line_each(tmp_path):
    omniglot = Path(os.environ.get("MAMLCOURSE_DATA", ""))
    if not (omniglot / "images_evaluation.zip").is_file():
        pytest.skip("needs Omniglot in $MAMLCOURSE_DATA (the CLI parts train on it)")
    result = run_check("--device", "cpu", "--quick", "--parts", "cli", "--log", str(tmp_path),
                       "--budget", "3000", timeout=3600)
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    parts = [line for line in lines if line.startswith(("PASS", "FAIL"))]
    assert [p.split(" (")[0] for p in parts] == [
        "PASS cli train sine", "PASS cli train omniglot", "PASS cli kill -9 and resume",
        "PASS cli resume without --cuda-graph", "PASS cli --time-limit and resume", "PASS cli eval"]
    assert "bit-exact" in parts[2] and "bit-exact" in parts[3] and "bit-exact" in parts[4]
    assert lines[-1] == "6/6 parts passed on cpu"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["device"] == "cpu" and all(p["ok"] for p in summary["parts"])
    assert "$ " in (tmp_path / "log.txt").read_text()


def test_a_failing_part_is_reported_and_the_rest_goes_on(tmp_path):
    runner = check.Check("cpu", tmp_path, tmp_path, budget=60)
    runner.part("broken", lambda: 1 / 0)
    runner.part("fine", lambda: "ok")
    assert [p["ok"] for p in runner.summary] == [False, True]
    assert runner.summary[0]["detail"] == "ZeroDivisionError: division by zero"
    spent = check.Check("cpu", tmp_path, tmp_path, budget=0)
    spent.part("late", lambda: "never")
    assert spent.summary[0]["detail"] == "TimeoutError: not run: the time budget (--budget) is spent"


def test_compare_is_exact_on_the_cpu_and_names_the_difference(tmp_path):
    from mamlcourse.checkpoint import checkpoint_path, save_checkpoint
    for name, value in (("a", 1.0), ("b", 1.0), ("c", 1.0 + 1e-6)):
        save_checkpoint(checkpoint_path(tmp_path / name),
                        {"step": 5, "model": {"w": torch.full((2,), value)}})
    assert check.compare(tmp_path / "a", tmp_path / "b", exact=True).endswith("(bit-exact)")
    with pytest.raises(AssertionError, match="parameters differ by"):
        check.compare(tmp_path / "a", tmp_path / "c", exact=True)
    assert "float tolerance" in check.compare(tmp_path / "a", tmp_path / "c", exact=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_cuda_without_it_says_how_to_run_the_cpu_path(tmp_path):
    result = run_check("--log", str(tmp_path), timeout=120)
    assert result.returncode == 2 and "use --device cpu for the CPU path" in result.stderr
