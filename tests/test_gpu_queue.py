"""tools/gpu/gpu_queue.py: the GPU queue, run here with --device cpu on its tiny queue.

What a GPU window does, imitated: the queue runs in a copy of the working tree (the device
tool's copy), writes what changed under an $OUT folder within the tool's limits, the files
are brought back into the tree here, and the next window, from a fresh copy of that tree,
continues where the first one stopped. The slow tests start real training processes of
the course's CLI (a quick-preset ConvNet4 on real Omniglot, 2 tasks per batch).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "gpu"))

import queue_bundle  # noqa: E402
import queue_card  # noqa: E402
import queue_jobs as qj  # noqa: E402

QUEUE = [sys.executable, str(ROOT / "tools" / "gpu" / "gpu_queue.py")]
needs_omniglot = pytest.mark.skipif(not os.environ.get("MAMLCOURSE_DATA"),
                                    reason="needs the Omniglot zips ($MAMLCOURSE_DATA)")


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def comes_back(out: Path) -> list[Path]:
    """The files under ``out``, checked against the device tool's limits on what returns."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= queue_bundle.MAX_FILES, files
    for p in files:
        rel = p.relative_to(out)
        assert len(rel.parts) - 1 <= queue_bundle.MAX_FOLDERS, rel
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts), rel
        assert p.stat().st_size <= queue_bundle.MAX_FILE_BYTES
    return files


# ---------------------------------------------------------------------------------------
# Export and bring-back (no training).

def test_export_in_layout_then_bring_back(tmp_path):
    gpu, here, out = tmp_path / "gpu", tmp_path / "here", tmp_path / "out"
    write(here / "docs/gpu/q.json", "old")
    shutil.copytree(here, gpu)
    base = queue_bundle.snapshot(gpu, ["docs/gpu/q.json", "trained/run/checkpoint.pt"])
    write(gpu / "docs/gpu/q.json", "new")
    write(gpu / "trained/run/checkpoint.pt", os.urandom(5000))
    write(gpu / "docs/gpu/same.json", "unchanged")
    base |= queue_bundle.snapshot(gpu, ["docs/gpu/same.json"])
    wanted = ["docs/gpu/q.json", "trained/run/checkpoint.pt", "docs/gpu/same.json"]
    manifest = queue_bundle.export(gpu, wanted, out, base)
    assert "docs/gpu/same.json" not in manifest["files"]  # unchanged: not sent
    assert manifest["layout"] == "files"
    checkpoint = "trained/run/checkpoint.pt"
    assert (out / checkpoint).read_bytes() == (gpu / checkpoint).read_bytes()
    assert len(comes_back(out)) == 3  # two files and the manifest

    copied = queue_bundle.bring_back(out, here)
    assert copied == ["docs/gpu/q.json", "trained/run/checkpoint.pt"]
    for p in copied:
        assert (here / p).read_bytes() == (gpu / p).read_bytes()
    assert queue_bundle.bring_back(out, here) == copied  # again: already there, nothing refused


def test_export_packs_into_tar_when_the_layout_does_not_fit(tmp_path):
    gpu, here, out = tmp_path / "gpu", tmp_path / "here", tmp_path / "out"
    paths = [f"trained/r{i}/{name}" for i in range(5) for name in ("checkpoint.pt", "results.json")]
    paths.append("docs/gpu/2026-12-03-h200/log.txt")  # three folders down: would not come back
    for p in paths:
        write(gpu / p, os.urandom(3000))
    assert queue_bundle.export(gpu, paths, out, {})["layout"] == "tar"
    files = comes_back(out)
    assert {p.name for p in files} == {"queue-manifest.json", "queue-bundle-1.tar"}
    # a second export in the same window replaces the first, leaving nothing stale behind
    queue_bundle.export(gpu, paths[:2], out, {})
    assert sorted(str(p.relative_to(out)) for p in comes_back(out)) == [
        "queue-manifest.json", "trained/r0/checkpoint.pt", "trained/r0/results.json"]
    queue_bundle.export(gpu, paths, out, {})
    assert sorted(queue_bundle.bring_back(out, here)) == sorted(paths)
    assert all((here / p).read_bytes() == (gpu / p).read_bytes() for p in paths)


def test_bring_back_checks_everything_before_copying_anything(tmp_path):
    gpu, here, out = tmp_path / "gpu", tmp_path / "here", tmp_path / "out"
    for p in ("a/x.txt", "a/y.txt"):
        write(gpu / p, p)
    queue_bundle.export(gpu, ["a/x.txt", "a/y.txt"], out, {})
    with pytest.raises(queue_bundle.BringBackError, match="no queue-manifest.json"):
        queue_bundle.bring_back(tmp_path / "elsewhere", here)

    write(out / "a/y.txt", "damaged")
    with pytest.raises(queue_bundle.BringBackError, match="a/y.txt: checksum differs"):
        queue_bundle.bring_back(out, here)
    (out / "a/y.txt").unlink()
    with pytest.raises(queue_bundle.BringBackError, match="a/y.txt: did not come back"):
        queue_bundle.bring_back(out, here)
    assert not (here / "a/x.txt").exists()  # all or nothing

    write(out / "a/y.txt", "a/y.txt")
    write(here / "a/x.txt", "edited here meanwhile")
    with pytest.raises(queue_bundle.BringBackError, match="a/x.txt: changed in this working tree"):
        queue_bundle.bring_back(out, here)
    assert (here / "a/x.txt").read_text() == "edited here meanwhile"
    queue_bundle.bring_back(out, here, force=True)
    assert (here / "a/x.txt").read_text() == "a/x.txt"


def test_export_refuses_what_cannot_come_back(tmp_path, monkeypatch):
    monkeypatch.setattr(queue_bundle, "BUNDLE_BYTES", 1000)
    write(tmp_path / "big.bin", os.urandom(2000))
    with pytest.raises(queue_bundle.BringBackError, match="big.bin is .* larger than"):
        queue_bundle._bins(tmp_path, ["big.bin"])
    for i in range(9):
        write(tmp_path / f"f{i}/f.bin", os.urandom(900))
    with pytest.raises(queue_bundle.BringBackError, match="fewer jobs at once"):
        queue_bundle._bins(tmp_path, [f"f{i}/f.bin" for i in range(9)])


# ---------------------------------------------------------------------------------------
# Planning (no training).

def test_chunk_planning():
    assert qj.plan_end(36_000, 60_000, 10.0, 100.0) == 46_000
    assert qj.plan_end(59_000, 60_000, 10.0, 100.0) == 60_000  # never past the target
    assert qj.plan_end(100, 60_000, 10.0, 0.0) == 100           # no time: no chunk
    assert qj.checkpoint_every(10.0) == 1000 and qj.checkpoint_every(227.0) == 132
    assert qj.checkpoint_every(None) == 10


def test_rates_say_whether_measured_or_projected():
    ledger = qj.load_ledger(Path("/nonexistent"), "table1")
    ms, source = qj.rate_ms(ledger, "NVIDIA H200", "paper-20w1s", 1)
    assert ms == 62.12 and source.startswith("projected from docs/gpu/2026-11-27-h200")
    assert qj.rate_ms(ledger, "NVIDIA H200", "paper-20w1s", 4)[0] == pytest.approx(4 * 62.12)
    assert qj.rate_ms(ledger, "cpu", "paper-20w1s", 1) == (None, "unknown")
    qj.record_rate(ledger, "NVIDIA H200", "paper-20w1s", 1, 50.0)
    assert qj.rate_ms(ledger, "NVIDIA H200", "paper-20w1s", 1)[1].startswith("measured")
    assert qj.rate_ms(ledger, "NVIDIA H200", "paper-20w1s", 2) == (100.0, "projected from 1 run(s) measured")


def test_train_state_needs_the_final_evaluation():
    job = qj.TrainJob("p", "paper-20w1s", "trained/x", target=100, eval_tasks=600, lake=True)
    assert qj.train_state(job, qj.Progress(step=50)) == "train"
    assert qj.train_state(job, qj.Progress(step=100, results_iterations=100, results_tasks=100)) == "evaluate"
    assert qj.train_state(job, qj.Progress(step=100, results_iterations=100, results_tasks=600)) == "evaluate"
    assert qj.train_state(job, qj.Progress(step=100, results_iterations=100, results_tasks=600,
                                            results_lake=True)) == "done"


def test_table1_queue_is_in_the_issues_order_with_the_longest_run_last():
    names = [j.name for j in qj.QUEUES["table1"]]
    assert names == ["check", "probe", "measure", "paper-5w1s", "paper-20w1s", "paper-5w5s",
                     "speed", "lesson5-full-omniglot", "lesson5-full-cost", "lesson5-full-sine",
                     "paper-20w5s"]
    # paper-20w5s goes last because it is the longest by far: more than all the other jobs together.
    prior = qj.PRIOR_MS["NVIDIA H200"]
    others = sum(prior[j.preset] * (j.target - qj.read_progress(ROOT, j).step) / 1000
                 for j in qj.QUEUES["table1"] if j.kind == "train" and j.name != "paper-20w5s")
    others += sum(j.estimate_s for j in qj.QUEUES["table1"] if j.kind == "command")
    assert prior["paper-20w5s"] * 60_000 / 1000 > others
    # The runs that share the GPU (and that the measure job times together) are consecutive ones.
    groups = [[j.name for j in g] for g in qj.train_groups(qj.QUEUES["table1"])]
    assert groups == [["paper-5w1s", "paper-20w1s", "paper-5w5s"], ["paper-20w5s"]]
    tiny = [[j.name for j in g] for g in qj.train_groups(qj.QUEUES["tiny"])]
    assert tiny == [["tiny-a", "tiny-b", "tiny-long"]]
    five_one = job_named("table1", "paper-5w1s")
    # The paper's strided network: a new run, not the lessons' max-pool model (36,000 iterations),
    # which stays in its own folder. (The new run may have begun on a CPU: it continues from there.)
    assert five_one.folder == "trained/omniglot-5w1s" and five_one.lake
    saved = ROOT / five_one.folder / "checkpoint.pt"
    if saved.is_file():
        assert torch.load(saved, map_location="cpu", weights_only=True)["config"]["downsample"] == "stride"
    assert (ROOT / "trained/omniglot-5w1s-maxpool/checkpoint.pt").is_file()
    twenty_one = job_named("table1", "paper-20w1s")
    assert twenty_one.lake and twenty_one.folder == "trained/omniglot-20w1s"


def job_named(queue: str, name: str):
    return next(j for j in qj.QUEUES[queue] if j.name == name)


PROBED = {"vmap": {"ms": 100.0}, "loop": {"ms": 80.0}, "vmap+tf32": {"ms": 60.0}, "loop+tf32": {"ms": 75.0}}


def test_settings_take_the_fastest_probed_variant_and_keep_a_runs_arithmetic():
    fresh = qj.choose_settings(PROBED)
    assert (fresh.vectorize, fresh.tf32, fresh.ms) == ("vmap", True, 60.0) and "saves 1.33x" in fresh.why
    assert fresh.options("cuda") == ["--vectorize", "vmap", "--tf32"]
    assert fresh.options("cpu") == ["--vectorize", "vmap"]  # TF32 means nothing on a CPU
    exact = qj.choose_settings(PROBED, fixed_tf32=False)  # a run begun in exact float32 stays so
    assert (exact.vectorize, exact.tf32, exact.ms) == ("loop", False, 80.0)
    small_gain = qj.choose_settings({"vmap": {"ms": 10.0}, "vmap+tf32": {"ms": 9.0}})
    assert not small_gain.tf32 and "only 1.11x" in small_gain.why  # under TF32_MIN_GAIN: exact
    unprobed = qj.choose_settings(None, fixed_tf32=True)
    assert unprobed.options("cuda") == ["--tf32"] and unprobed.ms is None
    # The loop with TF32 in NHWC (the probe's fifth variant on a GPU): chosen when fastest, TF32 or not.
    nhwc = qj.choose_settings({**PROBED, "loop+tf32+nhwc": {"ms": 50.0}})
    assert (nhwc.vectorize, nhwc.tf32, nhwc.channels_last, nhwc.ms) == ("loop", True, True, 50.0)
    assert nhwc.options("cuda") == ["--vectorize", "loop", "--layout", "nhwc", "--tf32"]
    assert nhwc.describe()["channels_last"] is True
    still_exact = qj.choose_settings({**PROBED, "loop+tf32+nhwc": {"ms": 50.0}}, fixed_tf32=False)
    assert (still_exact.vectorize, still_exact.tf32, still_exact.channels_last) == ("loop", False, False)


def test_the_probes_variants_are_the_names_choose_settings_reads(monkeypatch):
    import probe_speed

    from mamlcourse.config import omniglot_preset

    names = [probe_speed.variant_name(v) for v in probe_speed.variants(torch.device("cuda"))]
    assert names == ["vmap", "vmap+tf32", "loop", "loop+tf32", "loop+tf32+nhwc"]
    on_cpu = [probe_speed.variant_name(v) for v in probe_speed.variants(torch.device("cpu"))]
    assert on_cpu == ["vmap", "loop"]
    chosen = qj.choose_settings({name: {"ms": 10.0 + i} for i, name in enumerate(reversed(names))})
    assert (chosen.vectorize, chosen.tf32, chosen.channels_last) == ("loop", True, True)
    # The NHWC variant's settings reach the model it times (on the CPU: the eager step).
    built = []
    real = probe_speed.build_model
    monkeypatch.setattr(probe_speed, "build_model", lambda cfg: built.append(cfg) or real(cfg))
    nhwc_loop = {"vectorize": "loop", "tf32": False, "nhwc": True}
    timed = probe_speed.time_variant(omniglot_preset("quick"), nhwc_loop, torch.device("cpu"), seconds=0.01)
    assert timed["ms"] > 0 and timed["iterations"] >= 3
    assert [(c.vectorize, c.channels_last) for c in built] == [(False, True)]


def test_run_settings_read_the_probe_of_this_device_and_the_checkpoints_precision(tmp_path):
    job = qj.TrainJob("p", "paper-20w1s", "trained/x")
    probe = {"device": "NVIDIA H200", "presets": {"paper-20w1s": PROBED}}
    write(tmp_path / qj.probe_path("table1"), json.dumps(probe))
    assert qj.run_settings(tmp_path, "table1", "NVIDIA H200", job, qj.Progress()).tf32  # not begun: TF32
    begun_exact = qj.Progress(step=500, tf32=False)
    assert qj.run_settings(tmp_path, "table1", "NVIDIA H200", job, begun_exact).options("cuda") == [
        "--vectorize", "loop"]
    other_gpu = qj.run_settings(tmp_path, "table1", "NVIDIA A100", job, qj.Progress())
    assert other_gpu.vectorize is None  # probed on another GPU: not used
    begun_tf32 = qj.Progress(step=500, tf32=True)
    assert qj.run_settings(tmp_path, "table1", "NVIDIA H200", job, begun_tf32).options("cuda") == [
        "--vectorize", "vmap", "--tf32"]
    # The probe's figure projects a run the ledger has not measured.
    ledger = qj.load_ledger(tmp_path, "table1")
    assert qj.rate_ms(ledger, "NVIDIA H200", "paper-20w1s", 1, probed=60.0) == (
        60.0, "projected from the probe (random images, sampling not timed)")


def test_the_queues_5w1s_command_trains_the_papers_strided_network():
    """The paper-5w1s chunk's command, read by the CLI, is the preset's run: the paper's strided
    network (Section 5.2), which the lessons' max-pool checkpoint refuses, naming the option."""
    import dataclasses
    from types import SimpleNamespace

    import queue_runner

    from mamlcourse import cli
    from mamlcourse.checkpoint import CheckpointMismatch, check_compatible, load_checkpoint
    from mamlcourse.config import omniglot_preset

    job = job_named("table1", "paper-5w1s")
    settings = queue_runner.Settings(root=ROOT, code=ROOT, queue="table1", device="cuda", data=None,
                                     budget_s=600.0, out=None)
    window = SimpleNamespace(s=settings, time_limit_flag=True)
    run = qj.run_settings(ROOT, "table1", "NVIDIA H200", job, qj.read_progress(ROOT, job))
    argv = queue_runner.Window.train_argv(window, job, job.target, 30.0, 300.0, run)
    assert argv[1:5] == ["-m", "mamlcourse", "train", "omniglot"] and "--cuda-graph" in argv
    cfg = cli._config_from_args(cli.build_parser().parse_args(argv[3:]))
    assert cfg.num_iterations == job.target == 60_000 and cfg.downsample == "stride"
    assert cfg.run_id() == omniglot_preset("paper-5w1s").run_id()
    maxpool = load_checkpoint(ROOT / "trained/omniglot-5w1s-maxpool/checkpoint.pt")["config"]
    refused = r"downsample \(--downsample\): checkpoint 'maxpool', now 'stride'"
    with pytest.raises(CheckpointMismatch, match=refused):
        check_compatible(maxpool, cfg, job.folder)
    check_compatible(maxpool, dataclasses.replace(cfg, downsample="maxpool"), job.folder)  # all else agrees


def test_runs_not_begun_wait_for_the_probe_that_chooses_their_settings(tmp_path):
    import queue_runner

    def window(**kw):
        return queue_runner.Window(queue_runner.Settings(root=tmp_path, code=ROOT, queue="tiny", device="cpu",
                                                         data=None, budget_s=60.0, out=None, **kw))

    w = window()
    assert w.settings_pending() == "tiny-probe"
    assert w.start_train(job_named("tiny", "tiny-a"), 1) is None  # not begun: waits
    record = {"last": {"device": "cpu", "rc": 0, "stopped": "at the deadline"}}
    w.ledger["commands"]["tiny-probe"] = record
    assert w.settings_pending() == "tiny-probe"  # cut short: still owed
    record["last"]["stopped"] = None
    record["last"]["rc"] = 1
    assert w.settings_pending() is None  # ran and failed: runs begin with the CLI's defaults
    assert window(only=("measure",)).settings_pending() is None  # a window without the probe: no wait
    assert "tiny-a: not begun; it waits for tiny-probe" in (tmp_path / qj.log_path("tiny")).read_text()


COUNTER = """
import os, time
from pathlib import Path
done = Path("work/progress.txt")  # a checkpoint: written whole or not at all
done.parent.mkdir(exist_ok=True)
step = int(done.read_text()) if done.exists() else 0
while step < 12:
    time.sleep(0.25)
    step += 1
    Path("work/progress.tmp").write_text(str(step))
    os.replace("work/progress.tmp", done)
print("counted to", step)
"""


def test_a_resumable_command_cut_at_a_deadline_continues_in_the_next_window(tmp_path, monkeypatch):
    """Lesson 5's full benchmarks keep checkpoints: a window too short for all of one still advances it."""
    import queue_runner

    write(tmp_path / "count.py", COUNTER)
    job = qj.CommandJob("count", ("{python}", str(tmp_path / "count.py")), watch=("work",), estimate_s=3600,
                        needs_cuda=False, resumable=True)
    monkeypatch.setitem(qj.QUEUES, "resume", [job])
    monkeypatch.setattr(qj, "RESUMABLE_MIN_S", 0.5)

    def window(budget_s):
        w = queue_runner.Window(queue_runner.Settings(root=tmp_path, code=ROOT, queue="resume", device="cpu",
                                                      data=None, budget_s=budget_s, out=None, reserve_s=0.0,
                                                      poll_s=0.05))
        w.run()
        return json.loads((tmp_path / qj.ledger_path("resume")).read_text())["commands"]["count"]

    first = window(1.6)  # 3 s of counting needed: cut
    assert first["last"]["stopped"] == "stopped at the window's deadline" and "passed" not in first
    reached = int((tmp_path / "work/progress.txt").read_text())
    assert 0 < reached < 12
    assert first["last"]["outputs"][0] == "work/progress.txt"  # what comes back holds the progress
    second = window(30.0)  # far less than its estimate, more than what is left: it resumes and ends
    assert second["last"]["rc"] == 0 and "cpu" in second["passed"]
    assert (tmp_path / "docs/gpu/count.log").read_text().strip().endswith("counted to 12")
    assert len(second["runs_s"]) == 2 and second["seconds"] == pytest.approx(sum(second["runs_s"]), abs=0.11)
    # Not resumable: a job cut short waits for a window with more time than it has already taken.
    plain_job = dataclasses.replace(job, name="plain", resumable=False, estimate_s=1.0)
    monkeypatch.setitem(qj.QUEUES, "resume", [plain_job])
    (tmp_path / "work/progress.txt").unlink()
    window(1.6)
    plain = json.loads((tmp_path / qj.ledger_path("resume")).read_text())["commands"]["plain"]
    assert plain["last"]["stopped"] and plain["ran_at_least_s"] > 1
    window(1.6)
    assert "plain: needs ~" in (tmp_path / qj.log_path("resume")).read_text()


def test_model_card_reads_results_and_keeps_a_hand_written_card(tmp_path):
    folder = "trained/omniglot-5w1s-maxpool"
    shutil.copytree(ROOT / folder, tmp_path / folder)
    hand_written = (ROOT / folder / "MODEL_CARD.md").read_text()
    card = queue_card.write_card(tmp_path, folder).read_text()
    assert "**98.51% ± 0.22** (95% CI) on 600 test tasks after 3 inner steps" in card
    assert "paper (Table 1): 98.7% ± 0.4" in card and "36,000 iterations" in card
    assert "2x2 max-pooling, not the paper's Omniglot network" in card  # its config predates downsample
    assert "5-way head widened to 20: error 27.2%" in card
    assert card.count("## The card before the queue finished this run") == 1
    assert hand_written.split("\n", 1)[1] in card  # kept whole, its title one level down
    assert queue_card.write_card(tmp_path, folder).read_text() == card  # written again: the same
    assert "| Settings |" not in card
    ledger = {"windows": [{"chunks": [
        {"job": "paper-5w1s", "kind": "train", "settings": {"vectorize": "vmap", "tf32": True, "why": ""}},
        {"job": "paper-5w1s", "kind": "evaluate"},
        {"job": "paper-20w1s", "kind": "train",
         "settings": {"vectorize": "loop", "tf32": False, "why": ""}}]},
        {"chunks": [{"job": "paper-5w1s", "kind": "train", "settings": {"vectorize": "vmap", "tf32": True,
                                                                       "why": ""}}]}]}
    settings = queue_card.chunk_settings(ledger, "paper-5w1s")
    assert settings == "vmap over the tasks, TF32 on (2 chunks)"
    ledger["windows"][1]["chunks"].append({"job": "paper-20w1s", "kind": "train", "settings": {
        "vectorize": "loop", "tf32": True, "channels_last": True, "why": ""}})
    assert queue_card.chunk_settings(ledger, "paper-20w1s") == (
        "loop over the tasks, TF32 off (1 chunk); "
        "loop over the tasks, TF32 on, images channels-last (NHWC) (1 chunk)")
    card = queue_card.write_card(tmp_path, folder, settings=settings).read_text()
    assert "| Settings | vmap over the tasks, TF32 on (2 chunks) (`tools/gpu/probe_speed.py`" in card


def test_a_run_begun_on_a_cpu_says_so_on_its_card_with_each_devices_time(tmp_path):
    folder = "trained/omniglot-5w1s-maxpool"
    shutil.copytree(ROOT / folder, tmp_path / folder)
    results = json.loads((tmp_path / folder / "results.json").read_text())
    results["trained_on"] = {"cpu (AMD EPYC)": {"iterations": 30_000, "seconds": 4500.0},
                             "cuda (NVIDIA H200)": {"iterations": 6_000, "seconds": 60.0}}
    (tmp_path / folder / "results.json").write_text(json.dumps(results))
    card = queue_card.write_card(tmp_path, folder).read_text()
    assert ("; besides, 30,000 iterations on cpu (AMD EPYC) outside the queue, by the same `train` command "
            "with `--device cpu`") in card
    assert ("| Budget | 36,000 iterations, 294 s of training on 2 devices: cpu (AMD EPYC): 30,000 iterations in "
            "4,500 s (150.0 ms/iteration); cuda (NVIDIA H200): 6,000 iterations in 60 s (10.0 ms/iteration) |"
            ) in card
    assert "averaged over all chunks" not in card


def test_a_run_trained_only_on_a_cpu_gets_a_card_naming_the_cpu_commands(tmp_path, capsys):
    folder = "trained/omniglot-5w1s-maxpool"
    shutil.copytree(ROOT / folder, tmp_path / folder)
    (tmp_path / folder / "MODEL_CARD.md").unlink()
    results = json.loads((tmp_path / folder / "results.json").read_text())
    results["device"], results["trained_on"] = "cpu", {"cpu (AMD EPYC)": {"iterations": 36_000, "seconds": 5400.0}}
    (tmp_path / folder / "results.json").write_text(json.dumps(results))
    assert queue_card.main([folder, "--root", str(tmp_path)]) == 0
    card = (tmp_path / folder / "MODEL_CARD.md").read_text()
    assert (f"| Trained by | `python -m mamlcourse train omniglot --preset paper-5w1s --out {folder} --device cpu` "
            "on cpu (AMD EPYC), outside the GPU queue") in card
    assert f"then `python -m mamlcourse eval omniglot --checkpoint {folder} --tasks 600 --lake-runs`" in card
    assert "--cuda-graph" not in card and "GPU windows" not in card
    assert "294 s of training on cpu (AMD EPYC) (" in card  # the device's name, not "cpu"
    by_queue = queue_card.write_card(tmp_path, folder).read_text()  # what the queue writes for its own runs
    assert "| Trained by | the GPU queue" in by_queue and "outside the GPU queue" not in by_queue
    with pytest.raises(SystemExit) as stop:
        queue_card.main(["trained/none", "--root", str(tmp_path)])
    assert stop.value.code == 2 and "no results.json in" in capsys.readouterr().err


def test_bad_options_fail_with_one_line(tmp_path):
    done = subprocess.run(QUEUE + ["--root", str(tmp_path), "--queue", "tiny", "next", "--only", "nope",
                                   "--device", "cpu"], capture_output=True, text=True)
    assert done.returncode == 2 and "no job ['nope'] in queue tiny" in done.stderr
    done = subprocess.run(QUEUE + ["bring-back", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and "no queue-manifest.json" in done.stderr


# ---------------------------------------------------------------------------------------
# Real windows on the CPU.

def window(tmp_path: Path, here: Path, name: str, *options: str) -> tuple[Path, Path,
                                                                          subprocess.CompletedProcess]:
    """Run ``next`` in a fresh copy of ``here`` (as the device tool does); returns (copy, $OUT, result)."""
    gpu, out = tmp_path / f"gpu-{name}", tmp_path / f"out-{name}"
    shutil.copytree(here, gpu)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(QUEUE + ["--root", str(gpu), "--queue", "tiny", "next", "--device", "cpu",
                                   "--out", str(out), *options], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return gpu, out, done


def state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
@needs_omniglot
def test_windows_measure_chunk_bring_back_and_continue(tmp_path):
    here = tmp_path / "here"
    here.mkdir()
    a, b = job_named("tiny", "tiny-a"), job_named("tiny", "tiny-b")

    # Window 1: only the measure job: each run alone, then both at once; all of it real progress.
    gpu1, out1, _ = window(tmp_path, here, "1", "--only", "measure", "--budget", "400", "--max-chunk", "8",
                             "--max-concurrency", "2")
    comes_back(out1)
    ledger = json.loads((gpu1 / qj.ledger_path("tiny")).read_text())
    measured = ledger["measure"]["cpu"]
    assert set(measured["alone_ms"]) == set(measured["together_ms"]) == {"tiny-a", "tiny-b"}
    assert measured["gain"] > 0 and measured["best"]["concurrency"] in (1, 2)
    shared = [c for c in ledger["windows"][0]["chunks"] if c["runs_sharing"] == 2]
    assert {c["job"] for c in shared} == {"tiny-a", "tiny-b"}  # two processes at once
    steps = {j.name: qj.read_progress(gpu1, j).step for j in (a, b)}
    assert all(0 < s < 24 for s in steps.values()), steps  # chunked: not finished

    # Bring back: the tree here now holds exactly what the window wrote.
    copied = queue_bundle.bring_back(out1, here)
    assert "trained/tiny-a/checkpoint.pt" in copied and "docs/gpu/tiny-queue.json" in copied
    for p in copied:
        assert (here / p).read_bytes() == (gpu1 / p).read_bytes()

    # Window 2, from a fresh copy of the tree here: continues both runs to the end, scores them, runs
    # the command job; the measure is not repeated. The chunks score 3 test tasks, so each run's
    # 6-task score is its final `eval`, which the queue copies into the run folder.
    gpu2, out2, done = window(tmp_path, here, "2", "--budget", "500", "--only", "tiny-a,tiny-b,tiny-speed",
                              "--partial-eval-tasks", "3")
    comes_back(out2)
    ledger = json.loads((gpu2 / qj.ledger_path("tiny")).read_text())
    chunks = ledger["windows"][1]["chunks"]
    firsts = {j: next(c for c in chunks if c["job"] == j) for j in ("tiny-a", "tiny-b")}
    assert {j: c["from_step"] for j, c in firsts.items()} == steps  # resumed, not restarted
    assert ledger["windows"][1]["chunks"][0]["kind"] == "train"
    for job in (a, b):
        p = qj.read_progress(gpu2, job)
        assert qj.train_state(job, p) == "done", done.stdout
        assert p.step == p.results_iterations == 24 and p.results_tasks == 6
        assert [c["kind"] for c in chunks if c["job"] == job.name][-1] == "evaluate"
    assert "cpu" in ledger["commands"]["tiny-speed"]["passed"]
    queue_bundle.bring_back(out2, here)
    results = json.loads((here / a.folder / "results.json").read_text())
    card = (here / a.folder / "MODEL_CARD.md").read_text()
    assert f"**{100 * results['eval']['accuracy']:.2f}% ± {100 * results['eval']['ci95']:.2f}**" in card
    status = subprocess.run(QUEUE + ["--root", str(here), "--queue", "tiny", "status"], capture_output=True,
                            text=True, check=True).stdout
    assert re.search(r"tiny-a\s+done\s+24/24\s+nothing left; last eval at 24", status)
    assert "tiny-speed    passed on cpu" in status

    # Chunked over two windows (resumed three times or more) = one uninterrupted run, bit for bit.
    from mamlcourse.cli import run

    torch.set_num_threads(1)
    run(["train", "omniglot", "--preset", "quick", "--out", str(tmp_path / "reference"), "--device", "cpu",
         "--iterations", "24", "--tasks-per-batch", "2", "--tasks", "6", "--no-progress"])
    chunked, whole = state(here / a.folder / "checkpoint.pt"), state(tmp_path / "reference/checkpoint.pt")
    assert chunked["step"] == whole["step"] == 24
    for name, value in whole["model"].items():
        assert torch.equal(chunked["model"][name], value), name


@pytest.mark.slow
@needs_omniglot
def test_the_deadline_stops_a_run_and_keeps_its_last_checkpoint(tmp_path):
    here = tmp_path / "here"
    job = next(j for j in qj.QUEUES["tiny"] if j.name == "tiny-long")
    # A ledger that believes the runs are ~100x faster than they are: the chunk is planned far
    # past what fits, so only the hard guard at the deadline ends it.
    ledger = qj.load_ledger(here, "tiny")
    qj.record_rate(ledger, "cpu", "quick", 1, 4.0)
    ledger["measure"]["cpu"] = {"best": {"concurrency": 1, "mps": False}}
    ledger["starts"]["cpu"] = 1.0
    qj.save_ledger(here, "tiny", ledger)

    gpu1, out1, done = window(tmp_path, here, "1", "--only", "tiny-long", "--budget", "45", "--reserve", "5",
                              "--checkpoint-seconds", "0.02", "--min-chunk-seconds", "1")
    record = json.loads((gpu1 / qj.ledger_path("tiny")).read_text())["windows"][0]
    chunk = record["chunks"][0]
    # 100,000 iterations cannot fit in 45 s on any CPU: the run is cut, by the queue's hard guard
    # at the deadline or, first, by the CLI's own --time-limit (a clean save at the step reached).
    log = (gpu1 / job.folder / "train.log").read_text()
    by_guard = chunk["stopped"] == "stopped at the window's deadline"
    assert by_guard or (chunk["rc"] == 0 and "stopped at the time limit" in log), done.stdout + log[-2000:]
    assert 0 <= chunk["to_step"] < chunk["planned_to"] <= 100_000  # planned past what fits
    if by_guard and f"stopped at the time limit after step {chunk['to_step']} " not in log:
        # Killed by the guard alone: the last checkpoint is at a checkpoint step, every 5 iterations
        # (0.02 s at the believed 4 ms). The CLI's --time-limit may also have saved mid-interval
        # just before the guard's signal arrived (seen in CI): then the step is the one it names.
        assert chunk["to_step"] % 5 == 0
    assert record["wall_s"] < 45
    assert "ms_per_iteration" not in chunk or chunk["ms_per_iteration"] > 4.0  # the ledger learnt the truth
    # What the stop left is a whole checkpoint at a checkpoint step, from which the CLI resumes
    # (its own tests kill -9 a run and resume it bit for bit).
    assert qj.read_progress(gpu1, job).step == chunk["to_step"]
    assert "trained/tiny-long/checkpoint.pt" in queue_bundle.bring_back(out1, here) or chunk["to_step"] == 0


@pytest.mark.slow
@needs_omniglot
def test_a_window_probes_then_trains_with_the_fastest_variant(tmp_path):
    """The probe times the tiny queue's preset each way; the training chunk after it uses the fastest."""
    here = tmp_path / "here"
    here.mkdir()
    gpu, out, done = window(tmp_path, here, "1", "--only", "tiny-probe,tiny-a", "--budget", "300")
    probe = json.loads((gpu / qj.probe_path("tiny")).read_text())
    assert probe["device"] == "cpu" and set(probe["presets"]["quick"]) == {"vmap", "loop"}, probe
    chosen = qj.choose_settings(probe["presets"]["quick"])
    ledger = json.loads((gpu / qj.ledger_path("tiny")).read_text())
    assert "cpu" in ledger["commands"]["tiny-probe"]["passed"]
    chunk = next(c for c in ledger["windows"][0]["chunks"] if c["kind"] == "train")
    assert chunk["job"] == "tiny-a" and chunk["settings"]["vectorize"] == chosen.vectorize, done.stdout
    assert f"--vectorize {chosen.vectorize}" in (gpu / "trained/tiny-a/train.log").read_text()
    assert qj.probe_path("tiny") in queue_bundle.bring_back(out, here)
