"""benchmarks/vectorize.py: vmap and the loop timed side by side, checked to agree, rows added to one file.

Tiny sizes only (one timed iteration of the quick preset): the figures are the script's job;
what is tested is that each row times both paths on the same meta-batch after checking that
their meta-gradients agree, names the rule's pick, and that a second call adds rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


vectorize = load_script(ROOT / "benchmarks" / "vectorize.py", "vectorize_benchmark")


def test_each_row_times_both_paths_after_checking_they_agree_and_calls_add_rows(tmp_path):
    out = tmp_path / "vectorize.json"
    assert vectorize.main(["--presets", "quick", "--networks", "stride", "--iterations", "1",
                           "--out", str(out)]) == 0
    first = json.loads(out.read_text())
    row = first["rows"]["quick stride"]
    ms = row["ms_per_iteration"]
    assert set(ms) == {"loop", "vmap"} and min(ms.values()) > 0
    assert row["loop_over_vmap"] == pytest.approx(ms["loop"] / ms["vmap"], rel=0.01)
    assert row["faster"] == min(ms, key=ms.get)
    assert row["max_rel_grad_diff"] < 1e-9  # float64: the two paths compute the same meta-gradient
    assert row["images_per_task"] == 10 and row["default_vectorize"] == "vmap"  # 5-way 1-shot, strided
    assert row["default_is_faster"] == (row["faster"] == "vmap")

    assert vectorize.main(["--presets", "quick", "--networks", "maxpool", "--iterations", "1",
                           "--out", str(out)]) == 0
    both = json.loads(out.read_text())
    assert both["rows"]["quick stride"] == row  # kept, with the provenance of the call that made it
    assert both["rows"]["quick maxpool"]["default_vectorize"] == "loop"
    assert set(both["provenance"]) == {"quick stride", "quick maxpool"}
    assert "--networks stride" in both["provenance"]["quick stride"]["command"]
    assert "--networks maxpool" in both["provenance"]["quick maxpool"]["command"]


def test_the_row_that_does_not_fit_in_memory_is_left_out_saying_why(tmp_path, capsys):
    out = tmp_path / "vectorize.json"
    assert vectorize.main(["--presets", "paper-20w5s", "--networks", "maxpool", "--out", str(out)]) == 0
    assert "left out: vmap's meta-iteration was killed for memory" in capsys.readouterr().out
    assert not out.exists() or "paper-20w5s maxpool" not in json.loads(out.read_text()).get("rows", {})


def test_bad_options_are_refused_before_anything_is_timed(tmp_path):
    with pytest.raises(ValueError, match=r"--networks: choose from \('maxpool', 'stride'\), got 'pool'"):
        vectorize.main(["--networks", "pool", "--out", str(tmp_path / "x.json")])
    with pytest.raises(ValueError, match="--iterations must be >= 1, got 0"):
        vectorize.main(["--iterations", "0", "--out", str(tmp_path / "x.json")])
    with pytest.raises(ValueError, match="nope"):
        vectorize.main(["--presets", "nope", "--out", str(tmp_path / "x.json")])
