"""benchmarks/downsample.py: both networks timed side by side and trained alike, into one results file.

Tiny sizes only (one timed iteration, two training iterations, a few test tasks): the figures
are the script's job; what is tested is that each part measures both networks, from the same
seed, and that a second part adds to the file rather than replacing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_script, omniglot_root

ROOT = Path(__file__).resolve().parents[1]


downsample = load_script(ROOT / "benchmarks" / "downsample.py", "downsample")


def test_speed_then_train_measure_both_networks_into_one_file(tmp_path):
    out = tmp_path / "downsample.json"
    assert downsample.main(["--only", "speed", "--presets", "quick", "--speed-iterations", "1",
                            "--out", str(out)]) == 0
    speed = json.loads(out.read_text())["speed"]["quick"]
    ms = speed["ms_per_iteration"]
    assert set(ms) == {"maxpool", "stride"} and min(ms.values()) > 0
    assert speed["maxpool_over_stride"] == pytest.approx(ms["maxpool"] / ms["stride"], rel=0.01)

    data = omniglot_root(("images_background", "images_evaluation"))
    assert downsample.main(["--only", "train", "--preset", "quick", "--iterations", "2", "--tasks", "4",
                            "--data", str(data), "--checkpoints", str(tmp_path / "runs"), "--out", str(out),
                            "--no-progress"]) == 0
    results = json.loads(out.read_text())
    assert results["speed"]["quick"] == speed  # the train part adds to the file
    runs = results["train"]["quick@2"]
    assert set(runs) == {"maxpool", "stride"}
    for name, run in runs.items():
        assert run["iterations"] == 2 and run["num_tasks"] == 4 and 0 <= run["accuracy"] <= 1
        saved = json.loads((tmp_path / "runs" / f"quick-{name}" / "results.json").read_text())
        assert saved["config"]["downsample"] == name and saved["config"]["seed"] == 0
    # each part, and each network trained, says how it was measured
    assert set(results["provenance"]) == {"speed", "train quick@2 maxpool", "train quick@2 stride"}
    assert "--speed-iterations" in results["provenance"]["speed"]["command"]
    assert "CPU cores (" in results["provenance"]["train quick@2 stride"]["machine"]  # the CPU's model name


def test_an_unknown_part_or_network_is_refused_naming_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"--only: unknown part\(s\) \['nope'\]; choose from \('speed', 'train'\)"):
        downsample.main(["--only", "nope", "--out", str(tmp_path / "x.json")])
    choices = r"\('maxpool', 'stride', 'maxpool\+original', 'stride\+original'\)"
    with pytest.raises(ValueError, match=rf"--networks: choose from {choices}, got 'pool'"):
        downsample.main(["--networks", "pool", "--out", str(tmp_path / "x.json")])


def test_a_network_with_the_original_codes_conventions_trains_under_its_own_name(tmp_path):
    out = tmp_path / "downsample.json"
    earlier = {"command": "python benchmarks/downsample.py --networks stride (an earlier call)"}
    out.write_text(json.dumps({"provenance": {"train quick@2 stride": earlier},
                               "train": {"quick@2": {"stride": {"accuracy": 0.5}}}}))
    data = omniglot_root(("images_background", "images_evaluation"))
    assert downsample.network_settings("stride+original") == {"downsample": "stride",
                                                               "conventions": "original"}
    assert downsample.network_settings("maxpool") == {"downsample": "maxpool", "conventions": "pytorch"}
    assert downsample.main(["--only", "train", "--preset", "quick", "--iterations", "2", "--tasks", "4",
                            "--networks", "stride+original", "--data", str(data),
                            "--checkpoints", str(tmp_path / "runs"), "--out", str(out), "--no-progress"]) == 0
    results = json.loads(out.read_text())
    run = results["train"]["quick@2"]["stride+original"]
    assert run["iterations"] == 2 and run["num_tasks"] == 4
    assert results["train"]["quick@2"]["stride"] == {"accuracy": 0.5}  # the other network's run stays
    assert results["provenance"]["train quick@2 stride"] == earlier  # and so does how it was made
    assert "--networks stride+original" in results["provenance"]["train quick@2 stride+original"]["command"]
    saved = json.loads((tmp_path / "runs" / "quick-stride+original" / "results.json").read_text())
    assert (saved["config"]["downsample"], saved["config"]["conventions"]) == ("stride", "original")
