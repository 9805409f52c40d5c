"""Configs: the paper's presets, validation naming the option, the run id, mode and device."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from mamlcourse.config import (
    CALL,
    CONFIG_CLASSES,
    PRESETS,
    RUN,
    OmniglotConfig,
    SineConfig,
    config_from_dict,
    get_preset,
    omniglot_preset,
    resolve_device,
    resolve_mode,
    sine_preset,
)


def test_paper_sine_preset_matches_the_paper():
    cfg = sine_preset("paper")
    assert (cfg.amplitude_range, cfg.phase_range, cfg.x_range) == ((0.1, 5.0), (0.0, math.pi), (-5.0, 5.0))
    assert cfg.hidden_sizes == (40, 40) and cfg.k_shot == 10 and cfg.num_inner_steps == 1
    assert (cfg.inner_lr, cfg.outer_lr, cfg.tasks_per_batch, cfg.num_iterations) == (0.01, 1e-3, 25, 70_000)
    assert cfg.eval_tasks == 600


@pytest.mark.parametrize("name, n_way, k_shot, steps, tasks", [
    ("paper-5w1s", 5, 1, 1, 32), ("paper-5w5s", 5, 5, 1, 32),
    ("paper-20w1s", 20, 1, 5, 16), ("paper-20w5s", 20, 5, 5, 16)])
def test_paper_omniglot_presets(name, n_way, k_shot, steps, tasks):
    cfg = omniglot_preset(name)
    assert (cfg.n_way, cfg.k_shot, cfg.num_inner_steps, cfg.tasks_per_batch) == (n_way, k_shot, steps, tasks)
    assert cfg.num_iterations == 60_000 and cfg.k_query == k_shot
    # The original's α (0.4 for 5-way, 0.1 for 20-way) on a loss summed over N*K examples and
    # divided by K is N times the mean: both are 2.0 on our mean loss.
    original_alpha = 0.4 if n_way == 5 else 0.1
    assert cfg.inner_lr == pytest.approx(original_alpha * n_way)


@pytest.mark.parametrize("field, value, message", [
    ("tasks_per_batch", 0, r"tasks_per_batch \(--tasks-per-batch\) must be an integer >= 1, got 0"),
    ("num_iterations", -5, r"num_iterations \(--iterations\) must be an integer >= 1"),
    ("k_shot", 0, r"k_shot \(--k-shot\) must be an integer >= 1"),
    ("num_inner_steps", -1, r"num_inner_steps \(--inner-steps\) must be an integer >= 0"),
    ("inner_lr", -0.1, r"inner_lr \(--inner-lr\) must be a finite number >= 0, got -0.1"),
    ("inner_lr", float("nan"), r"inner_lr \(--inner-lr\) must be a finite number >= 0, got nan"),
    ("outer_lr", 0.0, r"outer_lr \(--outer-lr\) must be a finite number > 0"),
    ("outer_lr", float("inf"), r"outer_lr \(--outer-lr\) must be a finite number > 0"),
    ("k_query", 1.5, r"k_query \(--k-query\) must be an integer >= 1"),
])
def test_invalid_values_name_the_option_and_the_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(sine_preset("paper"), **{field: value})


def test_invalid_ranges_and_omniglot_values():
    with pytest.raises(ValueError, match="amplitude_range"):
        SineConfig(amplitude_range=(5.0, 0.1))
    with pytest.raises(ValueError, match=r"n_way \(--n-way\) must be >= 2"):
        OmniglotConfig(n_way=1)
    with pytest.raises(ValueError, match="split must be 'paper' or 'lake'"):
        OmniglotConfig(split="random")


def test_unknown_presets_list_the_valid_ones():
    message = r"unknown preset 'papr' for sine: choose one of \['paper', 'quick'\]"
    with pytest.raises(ValueError, match=message):
        get_preset("sine", "papr")
    with pytest.raises(ValueError, match="unknown task"):
        get_preset("mnist", "paper")


def test_config_round_trips_through_a_plain_dict():
    for cfg in (sine_preset("paper"), omniglot_preset("paper-20w5s")):
        data = cfg.to_dict()
        assert all(isinstance(v, (int, float, str, bool, list, type(None))) for v in data.values())
        assert config_from_dict(data) == cfg
    with pytest.raises(ValueError, match=r"unknown task 'mnist': expected one of \['omniglot', 'sine'\]"):
        config_from_dict({"task": "mnist"})


# The settings a run may change when it is resumed: how long it goes, how it is logged,
# checkpointed, validated and scored, vmap or loop, and the memory layout. Everything else defines the run.
CALL_FIELDS = {"num_iterations", "checkpoint_every", "log_every", "eval_tasks", "eval_inner_steps",
               "eval_max_steps", "vectorize", "validate_every", "validation_tasks", "eval_k_shots",
               "eval_query_points", "eval_k_query", "baseline_lrs", "channels_last"}


def all_fields():
    return [(cls, f) for cls in CONFIG_CLASSES.values() for f in dataclasses.fields(cls)]


def test_every_field_declares_its_role_and_the_call_fields_are_these():
    """A new field without run_field/call_field fails here, and so does a field moved across."""
    roles = {f.name: f.metadata.get("role") for _, f in all_fields()}
    assert set(roles.values()) == {RUN, CALL}, [name for name, role in roles.items()
                                                if role not in (RUN, CALL)]
    assert {name for name, role in roles.items() if role == CALL} == CALL_FIELDS


def other_value(value):
    """A valid value different from ``value``, for any field type of the configs."""
    if isinstance(value, bool) or value is None:
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return {"paper": "lake", "lake": "paper", "maxpool": "stride", "stride": "maxpool",
                "pytorch": "original", "original": "pytorch"}.get(value, value + "-other")
    return tuple(other_value(v) for v in value)


@pytest.mark.parametrize("cls, f", all_fields(), ids=lambda x: getattr(x, "name", getattr(x, "__name__", "")))
def test_run_id_changes_with_every_run_field_and_no_call_field(cls, f):
    cfg = cls()
    changed = dataclasses.replace(cfg, **{f.name: other_value(getattr(cfg, f.name))})
    assert changed != cfg
    assert (changed.run_id() != cfg.run_id()) == (f.metadata["role"] == RUN)


def test_run_id_is_a_hash_of_the_run_settings_and_the_task():
    for cls in CONFIG_CLASSES.values():
        run_fields = {f.name for f in dataclasses.fields(cls) if f.metadata["role"] == RUN}
        assert set(cls().run_settings()) == {"task"} | run_fields
    cfg = omniglot_preset("paper-5w1s")
    assert cfg.run_settings()["task"] == "omniglot" and len(cfg.run_id()) == 12
    # Equal numbers are equal settings, as Python compares them: 2 == 2.0.
    assert dataclasses.replace(cfg, inner_lr=2).run_id() == cfg.run_id()
    # Every preset is its own run.
    ids = [c.run_id() for presets in PRESETS.values() for c in presets.values()]
    assert len(set(ids)) == len(ids)


def test_mode_from_argument_environment_and_hardware(monkeypatch):
    monkeypatch.setenv("MAMLCOURSE_MODE", "full")
    assert resolve_mode() == "full"
    assert resolve_mode("quick") == "quick"
    monkeypatch.delenv("MAMLCOURSE_MODE")
    assert resolve_mode() == ("full" if torch.cuda.is_available() else "quick")
    monkeypatch.setenv("MAMLCOURSE_MODE", "fast")
    with pytest.raises(ValueError, match="MAMLCOURSE_MODE must be 'quick' or 'full', got 'fast'"):
        resolve_mode()


def test_devices_are_checked():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available here: use --device cpu"):
            resolve_device("cuda")
