"""The training state on this CPU: what broke on GPUs (capturable Adam, RNG placement) and the run folder.

A device other than the CPU is imitated with PyTorch's ``meta`` device: tensors with shapes
and no data, on which every operation checks devices like CUDA's do. Loading a checkpoint
for a model on ``meta`` is what loading it for a model on ``cuda`` was: before the fix the
RNG states were moved there and ``Generator.set_state`` refused them.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_same_run, device_under_test

from mamlcourse.checkpoint import CheckpointMismatch, checkpoint_path, load_checkpoint, save_checkpoint
from mamlcourse.config import config_from_dict, sine_preset
from mamlcourse.data.sine import SineTasks
from mamlcourse.machine import device_name
from mamlcourse.models import build_model
from mamlcourse.train import meta_train
from mamlcourse.training_state import RunFolder, RunFolderError, TrainingState

# Copying real values into meta parameters is a no-op, which is the point of the imitation.
pytestmark = pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")

CFG = dataclasses.replace(sine_preset("quick"), num_iterations=60, checkpoint_every=20, log_every=10,
                          eval_tasks=50)
SHIPPED = Path(__file__).resolve().parent.parent / "trained" / "omniglot-5w1s-maxpool" / "checkpoint.pt"


def fresh_model(cfg=CFG):
    torch.manual_seed(cfg.seed)
    return build_model(cfg).to(device_under_test())


def saved_run(folder: Path, iterations: int) -> Path:
    cfg = dataclasses.replace(CFG, num_iterations=iterations)
    meta_train(fresh_model(cfg), SineTasks.from_config(cfg), cfg, checkpoint_dir=folder, progress=False)
    return checkpoint_path(folder)


def test_a_checkpoint_written_with_capturable_adam_resumes_without_it(tmp_path):
    """Fault 1: the shipped checkpoint came from a --cuda-graph run, whose Adam had capturable=True."""
    straight = fresh_model()
    meta_train(straight, SineTasks.from_config(CFG), CFG, progress=False)
    path = saved_run(tmp_path, 40)
    state = load_checkpoint(path)
    for group in state["optimizer"]["param_groups"]:
        group["capturable"] = True  # what a CUDA-graph run saves
    save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})

    resumed = fresh_model()
    meta_train(resumed, SineTasks.from_config(CFG), CFG, checkpoint_dir=tmp_path, progress=False)
    assert_same_run(resumed.state_dict(), straight.state_dict())
    assert load_checkpoint(path)["optimizer"]["param_groups"][0]["capturable"] is False


def test_a_checkpoint_without_capturable_loads_into_a_capturable_run_on_another_device(tmp_path):
    """The other way round: a CUDA-graph run resuming an eager checkpoint keeps Adam's step on its device."""
    path = saved_run(tmp_path, 20)
    model = build_model(CFG).to("meta")
    state = TrainingState.create(model, CFG, device="meta", capturable=True)
    state.load(path)
    assert state.optimizer.param_groups[0]["capturable"] is True
    steps = [s["step"] for s in state.optimizer.state.values()]
    assert steps and all(s.device.type == "meta" for s in steps)
    assert all(m.device.type == "meta" for s in state.optimizer.state.values() for m in
               (s["exp_avg"], s["exp_avg_sq"]))


def test_loading_for_a_model_on_another_device_keeps_the_rng_states_on_the_cpu(tmp_path):
    """Fault 2: ``map_location=device`` moved the RNG ByteTensors off the CPU, and set_state refused."""
    path = saved_run(tmp_path, 20)
    saved = load_checkpoint(path)
    state = TrainingState.create(build_model(CFG).to("meta"), CFG, device="meta")
    torch.manual_seed(123)  # the global RNG is then set from the checkpoint, not left alone
    state.load(path)
    assert state.step == 20 and next(state.model.parameters()).device.type == "meta"
    assert torch.equal(state.generator.get_state(), saved["generator"])
    assert torch.equal(torch.get_rng_state(), saved["torch_rng"])
    assert state.generator.get_state().device.type == "cpu"


def test_a_new_learning_rate_is_this_runs_not_the_checkpoints(tmp_path):
    path = saved_run(tmp_path, 20)
    state = TrainingState.create(fresh_model(), CFG, device=device_under_test())
    state.optimizer.param_groups[0]["lr"] = 0.5  # as if this run were configured so
    state.load(path)
    assert state.optimizer.param_groups[0]["lr"] == 0.5


def test_the_shipped_cuda_graph_checkpoint_takes_an_adam_step_on_the_cpu():
    """The shipped 5-way 1-shot model (capturable=True, saved on an H200) resumes here."""
    saved = load_checkpoint(SHIPPED)
    assert saved["optimizer"]["param_groups"][0]["capturable"] is True  # the fault's precondition
    cfg = config_from_dict(saved["config"])
    state = TrainingState.create(build_model(cfg), cfg, device="cpu")
    state.load(SHIPPED)
    assert state.step == 36_000
    before = [p.detach().clone() for p in state.model.parameters()]
    for p in state.model.parameters():
        p.grad = torch.ones_like(p)
    state.optimizer.step()  # raised "If capturable=True, params and state_steps must be on supported devices"
    assert all(not torch.equal(a, b) for a, b in zip(before, state.model.parameters()))
    assert state.optimizer.state[next(state.model.parameters())]["step"].item() == 36_001


def test_a_gpu_run_is_not_resumed_with_other_tf32_arithmetic(tmp_path, monkeypatch):
    path = saved_run(tmp_path, 20)
    state = load_checkpoint(path)
    state["precision"] = {"tf32": True, "cudnn_benchmark": True}
    save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
    monkeypatch.setattr("mamlcourse.training_state.precision_settings",
                        lambda device: {"tf32": False, "cudnn_benchmark": True})
    with pytest.raises(CheckpointMismatch, match=r"trained with TF32 arithmetic; resume it with --tf32"):
        TrainingState.create(fresh_model(), CFG, device=device_under_test()).load(path)


def test_a_second_writer_is_refused_with_the_folder_and_the_holder(tmp_path):
    """Fault 4: two processes training into one folder."""
    folder = tmp_path / "run"
    with RunFolder(folder):
        result = subprocess.run([sys.executable, "-m", "mamlcourse", "train", "sine", "--preset", "quick",
                                 "--out", str(folder), "--iterations", "20", "--no-progress"],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: the run folder {folder} is in use by process {os.getpid()}: "
                                     "wait for it to finish, or train into another folder (--out)")
    assert not checkpoint_path(folder).exists()
    with RunFolder(folder), RunFolder(folder):  # re-entrant in one process; released after
        pass
    with RunFolder(folder):
        pass


class CountingSampler:
    def __init__(self):
        self.inner, self.calls = SineTasks.from_config(CFG), 0

    def sample(self, *args, **kwargs):
        self.calls += 1
        return self.inner.sample(*args, **kwargs)


def test_an_unwritable_folder_fails_before_the_first_iteration(tmp_path, monkeypatch):
    """Fault 5: a full disk (or read-only folder) was found only at the first checkpoint."""
    sampler = CountingSampler()

    def disk_full(obj, f):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("mamlcourse.checkpoint.torch.save", disk_full)
    with pytest.raises(RunFolderError,
                       match=r"cannot write a checkpoint to .*run \(No space left on device\)"):
        meta_train(fresh_model(), sampler, CFG, checkpoint_dir=tmp_path / "run", progress=False)
    assert sampler.calls == 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(RunFolderError, match=r"cannot write to the run folder .*file/run"):
        meta_train(fresh_model(), sampler, CFG, checkpoint_dir=tmp_path / "file" / "run", progress=False)


def test_training_time_is_counted_by_device_across_resumptions(tmp_path):
    """A run resumed on another device (a GPU window continuing a CPU run) says what each did."""
    path = saved_run(tmp_path, 40)
    spent = load_checkpoint(path)["history"]["devices"]
    here = device_name(device_under_test())
    assert list(spent) == [here] and spent[here]["iterations"] == 40
    state = load_checkpoint(path)
    state["history"]["devices"] = {"cuda (NVIDIA H200)": state["history"]["devices"].pop(here)}  # as if
    save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
    meta_train(fresh_model(), SineTasks.from_config(CFG), CFG, checkpoint_dir=tmp_path, progress=False)
    history = load_checkpoint(path)["history"]
    assert {name: d["iterations"] for name, d in history["devices"].items()} == {
        "cuda (NVIDIA H200)": 40, here: 20}
    assert sum(d["seconds"] for d in history["devices"].values()) == pytest.approx(history["wall_seconds"])


def test_a_checkpoint_saved_before_time_was_counted_by_device_gives_its_time_to_its_device(tmp_path):
    path = saved_run(tmp_path, 40)
    state = load_checkpoint(path)
    del state["history"]["devices"]  # what the code before it saved
    save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
    loaded = TrainingState.create(fresh_model(), CFG, device=device_under_test())
    loaded.load(path)
    (name, spent), = loaded.history.devices.items()
    assert name == f"{state['device']} (the checkpoint's device; saved before time was counted by device)"
    assert spent == {"iterations": 40, "seconds": state["history"]["wall_seconds"]}
