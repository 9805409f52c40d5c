"""The shipped checkpoints, written before run ids existed, load, keep their run and resume by run id.

A checkpoint stores its config as a dict; its run id is computed from that dict, so the
shipped ones (trained/) are compared exactly as new ones are: a resume with more
iterations (or other evaluation, logging, checkpoint settings) goes on; one that changes
what the run computes is refused, naming the setting and the fix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mamlcourse.checkpoint import CheckpointMismatch, check_compatible, load_checkpoint, load_model
from mamlcourse.config import MetaConfig, config_from_dict, omniglot_preset, sine_preset
from mamlcourse.models import build_model
from mamlcourse.training_state import TrainingState

TRAINED = Path(__file__).resolve().parent.parent / "trained"
# The lessons' Omniglot model: paper-5w1s with max-pooling (it predates the strided network of the
# paper presets; its checkpoint's config has no ``downsample``, which reads as max-pooling).
MAXPOOL_5W1S = dataclasses.replace(omniglot_preset("paper-5w1s"), downsample="maxpool")
SHIPPED = [("omniglot-5w1s-maxpool/checkpoint.pt", MAXPOOL_5W1S, 36_000),
           ("sine-paper/checkpoint.pt", sine_preset("paper"), 70_000),
           ("sine-paper/baseline.pt", sine_preset("paper"), 70_000)]
IDS = [name for name, _, _ in SHIPPED]


@pytest.fixture(autouse=True)
def keep_torch_rng():
    """``TrainingState.load`` sets torch's global RNG from the checkpoint: put it back after."""
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


def resume(name: str, cfg: MetaConfig) -> TrainingState:
    state = TrainingState.create(build_model(cfg), cfg, device="cpu")
    state.load(TRAINED / name)
    return state


@pytest.mark.parametrize("name, preset, step", SHIPPED, ids=IDS)
def test_a_shipped_checkpoint_has_the_run_id_of_its_preset(name, preset, step):
    saved = load_checkpoint(TRAINED / name)
    assert saved["step"] == step and set(saved["config"]) >= {"task", "preset", "inner_lr"}
    cfg = config_from_dict(saved["config"])
    assert cfg.run_id() == preset.run_id()
    assert cfg.run_settings() == preset.run_settings()
    model, loaded_cfg, _ = load_model(TRAINED / name)
    assert loaded_cfg == cfg and sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name, preset, step", SHIPPED, ids=IDS)
def test_a_shipped_checkpoint_resumes_with_more_iterations(name, preset, step):
    longer = dataclasses.replace(preset, num_iterations=step + 24_000, eval_tasks=100, checkpoint_every=250,
                                 log_every=10, vectorize=not preset.vectorize)
    state = resume(name, longer)
    assert state.step == step and state.cfg is longer


@pytest.mark.parametrize("name, preset, step", SHIPPED, ids=IDS)
def test_a_shipped_checkpoint_refuses_another_inner_lr(name, preset, step):
    other = dataclasses.replace(preset, inner_lr=preset.inner_lr / 2)
    message = rf"inner_lr \(--inner-lr\): checkpoint {preset.inner_lr}, now {other.inner_lr}\)"
    with pytest.raises(CheckpointMismatch, match=message):
        resume(name, other)


def test_a_mismatch_names_every_differing_setting_and_only_the_task_across_tasks():
    saved = load_checkpoint(TRAINED / "omniglot-5w1s-maxpool" / "checkpoint.pt")["config"]
    other = dataclasses.replace(MAXPOOL_5W1S, seed=3, n_way=20, num_iterations=5)
    with pytest.raises(CheckpointMismatch) as err:
        check_compatible(saved, other, "trained/omniglot-5w1s-maxpool")
    assert str(err.value) == (
        "the checkpoint in trained/omniglot-5w1s-maxpool was made with other settings "
        "(seed (--seed): checkpoint 0, "
        "now 3; n_way (--n-way): checkpoint 5, now 20). Resume it with its own settings, or train into "
        "another folder (--out).")
    with pytest.raises(CheckpointMismatch, match=r"settings \(task: checkpoint 'omniglot', now 'sine'\)\."):
        check_compatible(saved, sine_preset("paper"), "trained/omniglot-5w1s-maxpool")


def test_the_max_pool_model_does_not_resume_as_the_strided_paper_preset():
    """The paper presets now use the paper's strided network: the lessons' max-pool model is
    another run, and the refusal names the option that tells them apart."""
    saved = load_checkpoint(TRAINED / "omniglot-5w1s-maxpool" / "checkpoint.pt")["config"]
    assert "downsample" not in saved  # written before the option existed: max-pooling, the default
    with pytest.raises(CheckpointMismatch, match=r"\(downsample \(--downsample\): checkpoint 'maxpool', "
                                                 r"now 'stride'\)"):
        check_compatible(saved, omniglot_preset("paper-5w1s"), "trained/omniglot-5w1s-maxpool")


def test_a_field_the_saved_config_lacks_takes_its_default():
    """A run field added later (with the default that keeps old behaviour) keeps old checkpoints resumable."""
    saved = load_checkpoint(TRAINED / "sine-paper" / "checkpoint.pt")["config"]
    older = {key: value for key, value in saved.items() if key != "hidden_sizes"}
    check_compatible(older, sine_preset("paper"), "trained/sine-paper")
    with pytest.raises(CheckpointMismatch, match=r"hidden_sizes: checkpoint \[40, 40\], now \[40\]"):
        check_compatible(older, dataclasses.replace(sine_preset("paper"), hidden_sizes=(40,)), "x")
