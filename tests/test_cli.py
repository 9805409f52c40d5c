"""The command line: a sine run end to end, resume after a kill, and one-line errors on bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same_run, device_under_test

from mamlcourse.checkpoint import checkpoint_path, load_checkpoint
from mamlcourse.config import replace, sine_preset
from mamlcourse.data.sine import SineTasks
from mamlcourse.models import build_model
from mamlcourse.train import meta_train


REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "mamlcourse", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("args, message", [
    (["--iterations", "0"], r"num_iterations (--iterations) must be an integer >= 1, got 0"),
    (["--tasks-per-batch", "-3"], r"tasks_per_batch (--tasks-per-batch) must be an integer >= 1, got -3"),
    (["--inner-lr", "nan"], r"inner_lr (--inner-lr) must be a finite number >= 0, got nan"),
    (["--inner-lr", "-1"], r"inner_lr (--inner-lr) must be a finite number >= 0, got -1.0"),
    (["--k-shot", "0"], r"k_shot (--k-shot) must be an integer >= 1, got 0"),
    (["--preset", "huge"], "unknown preset 'huge' for sine: choose one of ['paper', 'quick']"),
    (["--device", "xla"], "unsupported device 'xla' (--device): use 'cpu' or 'cuda'"),
    (["--device", "banana"], "unknown device 'banana' (--device)"),
    (["--tasks", "0"], "--tasks must be an integer >= 1, got 0"),
    (["--n-way", "5"], "--n-way applies to omniglot only"),
    (["--conventions", "original"], "--conventions applies to omniglot only"),
    (["--layout", "nhwc"], "--data, --cuda-graph and --layout apply to omniglot only"),
    (["--time-limit", "0"], "--time-limit must be a number of seconds > 0, got 0.0"),
])
def test_bad_input_fails_fast_with_one_line_and_no_traceback(tmp_path, args, message):
    result = cli("train", "sine", "--preset", "quick", "--out", str(tmp_path / "run"), *args, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_argparse_errors_are_short_too(tmp_path):
    result = cli("train", "sine", "--iterations", "many", "--out", str(tmp_path))
    assert result.returncode == 2 and "invalid int value: 'many'" in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_of_a_missing_run_says_so(tmp_path):
    result = cli("eval", "sine", "--checkpoint", str(tmp_path / "nothing"))
    assert result.returncode == 2 and "no checkpoint at" in result.stderr and "Traceback" not in result.stderr


def test_train_and_eval_sine_write_results_json(tmp_path):
    out = tmp_path / "run"
    result = cli("train", "sine", "--preset", "quick", "--out", str(out), "--iterations", "150",
                 "--tasks", "20", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "paper maml" in result.stdout and "MAML" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "sine" and results["iterations"] == 150
    assert isinstance(results["wall_seconds"], float) and results["wall_seconds"] > 0
    assert results["eval"]["num_tasks"] == 20
    for block in (results["eval"]["mse"], results["eval"]["ci95"], results["baseline"]["mse"]):
        assert sorted(block, key=int) == ["5", "10", "20"]
        assert all(len(curve) == 11 for curve in block.values())
    assert results["baseline"]["finetune_lr"] in sine_preset("quick").baseline_lrs

    again = cli("eval", "sine", "--checkpoint", str(out), "--tasks", "30", "--out", str(tmp_path / "scores"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == f"results written to {tmp_path / 'scores' / 'results.json'}"
    rescored = json.loads((tmp_path / "scores" / "results.json").read_text())
    assert rescored["eval"]["num_tasks"] == 30 and rescored["iterations"] == 150
    assert json.loads((out / "results.json").read_text())["eval"]["num_tasks"] == 20  # left as trained

    # A second train into the same folder resumes: asking for more iterations continues the run.
    more = cli("train", "sine", "--preset", "quick", "--out", str(out), "--iterations", "200",
               "--tasks", "20", "--no-progress")
    assert more.returncode == 0, more.stderr
    assert load_checkpoint(checkpoint_path(out))["step"] == 200
    # ... while other settings are refused, naming the difference.
    other = cli("train", "sine", "--preset", "quick", "--out", str(out), "--inner-lr", "0.02")
    assert other.returncode == 2 and "inner_lr (--inner-lr): checkpoint 0.01, now 0.02" in other.stderr


def test_a_killed_cli_run_resumes_to_the_same_parameters(tmp_path):
    """SIGKILL the real command mid-run, run it again, compare with an uninterrupted run."""
    out = tmp_path / "killed"
    device = device_under_test()
    args = [sys.executable, "-m", "mamlcourse", "train", "sine", "--preset", "quick", "--out", str(out),
            "--iterations", "1500", "--checkpoint-every", "100", "--tasks", "10", "--no-progress",
            "--device", str(device)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = checkpoint_path(out)
    deadline = time.time() + 120
    while time.time() < deadline and not (path.exists() and load_checkpoint(path)["step"] >= 300):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(path)["step"]
    assert 300 <= killed_at < 1500, "the run was not killed mid-training"

    finished = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr

    cfg = replace(sine_preset("quick"), num_iterations=1500, checkpoint_every=100, eval_tasks=10)
    torch.manual_seed(cfg.seed)
    straight = build_model(cfg).to(device)
    meta_train(straight, SineTasks.from_config(cfg), cfg, progress=False)
    assert_same_run(load_checkpoint(path)["model"], {k: v.cpu() for k, v in straight.state_dict().items()})


def test_evaluating_a_shipped_model_leaves_it_as_shipped(tmp_path):
    """eval writes to runs/eval/<name>/ under the working folder, never into the folder it scores."""
    shipped = tmp_path / "sine-paper"
    shutil.copytree(REPO / "trained" / "sine-paper", shipped)
    before = fingerprint(shipped)
    result = cli("eval", "sine", "--checkpoint", str(shipped), "--tasks", "20", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "results written to runs/eval/sine-paper/results.json"
    assert json.loads((tmp_path / "runs/eval/sine-paper/results.json").read_text())["eval"]["num_tasks"] == 20
    assert fingerprint(shipped) == before
    refused = cli("eval", "sine", "--checkpoint", str(shipped), "--out", str(shipped))
    assert refused.returncode == 2 and "is the folder being scored" in refused.stderr
    assert fingerprint(shipped) == before


def test_a_run_stopped_by_its_time_limit_continues_to_the_same_parameters(tmp_path):
    """--time-limit saves the run and exits 0 with one line; the same command then finishes it."""
    out = tmp_path / "limited"
    device = device_under_test()
    args = ["train", "sine", "--preset", "quick", "--out", str(out), "--iterations", "2000",
            "--checkpoint-every", "1000", "--tasks", "10", "--no-progress", "--device", str(device),
            "--time-limit", "1"]
    stopped = cli(*args)
    assert stopped.returncode == 0, stopped.stderr
    line = stopped.stdout.strip()
    assert line.startswith("stopped at the time limit after step ") and line.endswith(
        f"of 2000; the run is saved in {out}: run the same command again to continue"), line
    step = int(line.split("after step ")[1].split()[0])
    assert 0 < step < 1000, "the stop should fall between two checkpoints"
    assert load_checkpoint(checkpoint_path(out))["step"] == step
    assert not (out / "results.json").exists()

    finished = cli(*args[:-2])
    assert finished.returncode == 0, finished.stderr
    cfg = replace(sine_preset("quick"), num_iterations=2000, checkpoint_every=1000, eval_tasks=10)
    torch.manual_seed(cfg.seed)
    straight = build_model(cfg).to(device)
    history = meta_train(straight, SineTasks.from_config(cfg), cfg, progress=False)
    saved = load_checkpoint(checkpoint_path(out))
    assert_same_run(saved["model"], {k: v.cpu() for k, v in straight.state_dict().items()})
    if device.type == "cpu":
        assert saved["history"]["meta_loss"] == history.meta_loss


@pytest.mark.parametrize("layout, channels_last", [("auto", None), ("nchw", False), ("nhwc", True)])
def test_layout_sets_convnet4s_memory_layout(layout, channels_last):
    from mamlcourse.cli import _config_from_args, build_parser

    base = ["train", "omniglot", "--preset", "quick", "--out", "x"]
    cfg = _config_from_args(build_parser().parse_args([*base, "--layout", layout]))
    assert cfg.channels_last is channels_last and build_model(cfg).channels_last is channels_last
    assert cfg.run_id() == _config_from_args(build_parser().parse_args(base)).run_id()  # not part of the run


def test_downsample_chooses_convnet4s_network_and_is_part_of_the_run():
    from mamlcourse.cli import _config_from_args, build_parser

    base = ["train", "omniglot", "--preset", "quick", "--out", "x"]
    preset = _config_from_args(build_parser().parse_args(base))
    for choice in ("maxpool", "stride"):
        cfg = _config_from_args(build_parser().parse_args([*base, "--downsample", choice]))
        assert cfg.downsample == choice and build_model(cfg).downsample == choice
        # another network, another run
        assert (cfg.run_id() == preset.run_id()) == (choice == preset.downsample)


def test_conventions_choose_convnet4s_details_and_are_part_of_the_run():
    from mamlcourse.cli import _config_from_args, build_parser

    base = ["train", "omniglot", "--preset", "quick", "--out", "x"]
    preset = _config_from_args(build_parser().parse_args(base))
    for choice in ("pytorch", "original"):
        cfg = _config_from_args(build_parser().parse_args([*base, "--conventions", choice]))
        assert cfg.conventions == choice and build_model(cfg).conventions == choice
        assert (cfg.run_id() == preset.run_id()) == (choice == preset.conventions)
