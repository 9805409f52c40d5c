"""Meta-training: it learns, checkpoints resume exactly, failures keep the last good state."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

from conftest import assert_same_run, max_abs_diff, device_under_test
from mamlcourse.checkpoint import (
    CheckpointMismatch,
    checkpoint_path,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from mamlcourse.config import sine_preset
from mamlcourse.data.sine import SineTasks
from mamlcourse.evaluate import evaluate
from mamlcourse.maml import meta_loss
from mamlcourse.models import build_model
from mamlcourse.tasks import TaskBatch, fixed_tasks
from mamlcourse.train import StoppedAtTimeLimit, TrainingDiverged, meta_train

CFG = dataclasses.replace(sine_preset("quick"), num_iterations=60, checkpoint_every=20, log_every=10,
                          eval_tasks=50)


def fresh_model(cfg=CFG):
    torch.manual_seed(cfg.seed)
    return build_model(cfg).to(device_under_test())


class Interrupt(Exception):
    pass


class FaultySampler:
    """Sine tasks that go wrong on the ``fail_at``-th draw: raise (a kill) or return NaN targets."""

    def __init__(self, fail_at: int, mode: str):
        self.inner, self.calls, self.fail_at, self.mode = SineTasks.from_config(CFG), 0, fail_at, mode

    def sample(self, num_tasks, generator, **kwargs):
        self.calls += 1
        batch = self.inner.sample(num_tasks, generator, **kwargs)
        if self.calls >= self.fail_at:
            if self.mode == "kill":
                raise Interrupt
            return TaskBatch(batch.x_support, batch.y_support * float("nan"), batch.x_query, batch.y_query)
        return batch


def test_sine_query_loss_falls_within_a_few_dozen_steps():
    cfg = dataclasses.replace(CFG, num_iterations=80)
    model = fresh_model(cfg)
    tasks = fixed_tasks(SineTasks.from_config(cfg), 100)
    before = evaluate(model, tasks, cfg, num_steps=1).mean[1]
    history = meta_train(model, SineTasks.from_config(cfg), cfg, progress=False)
    after = evaluate(model, tasks, cfg, num_steps=1).mean[1]
    assert after < 0.9 * before, (before, after)
    assert history.step[-1] == 80 and history.meta_loss[-1] < history.meta_loss[0]
    assert history.ms_per_iteration > 0


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    straight = fresh_model()
    meta_train(straight, SineTasks.from_config(CFG), CFG, checkpoint_dir=tmp_path / "a", progress=False)

    interrupted = fresh_model()
    with pytest.raises(Interrupt):
        meta_train(interrupted, FaultySampler(fail_at=47, mode="kill"), CFG,
                   checkpoint_dir=tmp_path / "b", progress=False)
    assert load_checkpoint(checkpoint_path(tmp_path / "b"))["step"] == 40

    resumed = fresh_model()  # a new process would start from scratch, then load the checkpoint
    history = meta_train(resumed, SineTasks.from_config(CFG), CFG, checkpoint_dir=tmp_path / "b",
                         progress=False)
    assert_same_run(resumed.state_dict(), straight.state_dict())
    assert history.step[-1] == 60
    a, b = load_checkpoint(checkpoint_path(tmp_path / "a")), load_checkpoint(checkpoint_path(tmp_path / "b"))
    assert_same_run(a["optimizer"]["state"][0], b["optimizer"]["state"][0])
    assert torch.equal(a["generator"], b["generator"])


def test_checkpoint_round_trip_restores_step_optimizer_and_config(tmp_path):
    model = fresh_model()
    meta_train(model, SineTasks.from_config(CFG), CFG, checkpoint_dir=tmp_path, progress=False)
    loaded, cfg, state = load_model(tmp_path)
    assert cfg == CFG and state["step"] == 60
    assert max_abs_diff(loaded.state_dict(), model.state_dict()) == 0.0
    assert state["optimizer"]["state"][0]["step"].item() == 60
    # A finished run called again does no more work and returns its history.
    history = meta_train(fresh_model(), SineTasks.from_config(CFG), CFG, checkpoint_dir=tmp_path,
                         progress=False)
    assert history.step[-1] == 60


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    model = fresh_model()
    with pytest.raises(TrainingDiverged, match=r"non-finite at step 25 \(meta-loss nan\); θ was not updated; "
                                               r"the last good checkpoint \(step 20\)"):
        meta_train(model, FaultySampler(fail_at=25, mode="nan"), CFG, checkpoint_dir=tmp_path,
                   progress=False)
    state = load_checkpoint(checkpoint_path(tmp_path))
    assert state["step"] == 20
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_finite_loss_with_non_finite_gradients_updates_nothing(tmp_path):
    """sqrt(|θ - θ|) adds 0 to the loss and an infinite gradient: the loss alone would pass."""
    calls = []

    def objective(model, params, tasks, cfg):
        loss, metrics = meta_loss(model, params, tasks, cfg)
        calls.append(1)
        if len(calls) == 25:
            weight = params["layers.0.weight"]
            loss = loss + torch.sqrt((weight - weight.detach()).abs()).sum()
        return loss, metrics

    model = fresh_model()
    with pytest.raises(TrainingDiverged, match=r"non-finite at step 25 \(meta-loss [0-9.]+\); θ was not "
                                               r"updated; the last good checkpoint \(step 20\)"):
        meta_train(model, SineTasks.from_config(CFG), CFG, checkpoint_dir=tmp_path, progress=False,
                   objective=objective)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.isfinite(v).all() for v in load_checkpoint(checkpoint_path(tmp_path))["model"].values())


def test_a_run_stopped_at_its_time_limit_resumes_to_the_same_parameters_and_history(tmp_path, monkeypatch):
    """A fake clock that ticks once per iteration stops the run at step 27, mid-interval."""
    straight = fresh_model()
    straight_history = meta_train(straight, SineTasks.from_config(CFG), CFG, checkpoint_dir=tmp_path / "a",
                                  progress=False)
    clock = iter(range(10_000))
    monkeypatch.setattr("mamlcourse.train.time.monotonic", lambda: next(clock))
    stopped = fresh_model()
    with pytest.raises(StoppedAtTimeLimit, match=r"after step 27 of 60; the run is saved in .*b: run the "
                                                 "same command again to continue"):
        meta_train(stopped, SineTasks.from_config(CFG), CFG, checkpoint_dir=tmp_path / "b", progress=False,
                   deadline=26)
    monkeypatch.undo()
    assert load_checkpoint(checkpoint_path(tmp_path / "b"))["step"] == 27
    resumed = fresh_model()
    history = meta_train(resumed, SineTasks.from_config(CFG), CFG, checkpoint_dir=tmp_path / "b",
                         progress=False)
    assert_same_run(resumed.state_dict(), straight.state_dict())
    assert history.step == straight_history.step
    assert history.meta_loss == pytest.approx(straight_history.meta_loss, rel=0, abs=0)


def test_resuming_with_other_settings_is_refused(tmp_path):
    meta_train(fresh_model(), SineTasks.from_config(CFG), CFG, checkpoint_dir=tmp_path, progress=False)
    other = dataclasses.replace(CFG, inner_lr=0.02)
    with pytest.raises(CheckpointMismatch, match=r"inner_lr \(--inner-lr\): checkpoint 0.01, now 0.02"):
        meta_train(fresh_model(other), SineTasks.from_config(other), other, checkpoint_dir=tmp_path,
                   progress=False)
    # More iterations is a continuation, not another configuration.
    longer = dataclasses.replace(CFG, num_iterations=80)
    history = meta_train(fresh_model(longer), SineTasks.from_config(longer), longer,
                         checkpoint_dir=tmp_path, progress=False)
    assert history.step[-1] == 80


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the junk file below is a raw pickle
def test_checkpoints_load_with_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save({"format": 1, "payload": Interrupt()}, f)  # a pickled class: not plain data
    with pytest.raises(ValueError, match="not a readable mamlcourse checkpoint"):
        load_checkpoint(path)
    save_checkpoint(tmp_path / "ok.pt", {"step": 3, "weights": torch.ones(2)})
    assert load_checkpoint(tmp_path / "ok.pt")["step"] == 3
    (tmp_path / "junk.pt").write_bytes(pickle.dumps([1, 2, 3])[:5])
    with pytest.raises(ValueError):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_writes_leave_no_temporary_file(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"step": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]


def test_a_failed_checkpoint_write_removes_its_temporary_file_and_keeps_the_last(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "c.pt", {"step": 1})

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("mamlcourse.checkpoint.torch.save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path / "c.pt", {"step": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown on a machine without CUDA")
def test_cuda_graphs_on_the_cpu_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="CUDA graphs need the model and tasks on a CUDA device"):
        meta_train(fresh_model(), SineTasks.from_config(CFG), CFG, progress=False, cuda_graph=True)
