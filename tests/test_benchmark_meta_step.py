"""benchmarks/meta_step.py: the peers' meta-gradients agree with ours; a wrong one is refused.

Only the gradient check runs here (tiny configs, float64, a few seconds); the timings are a
script's job, not a test's. Peers that are not installed are skipped.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from conftest import load_script
from mamlcourse.config import OmniglotConfig, SineConfig
from mamlcourse.models import ConvNet4, SineMLP
from mamlcourse.tasks import seeded_generator

ROOT = Path(__file__).resolve().parents[1]


meta_step = load_script(ROOT / "benchmarks" / "meta_step.py", "meta_step")
INSTALLED = [name for name in meta_step.PEERS if meta_step.peer_version(name) is not None]

SINE = SineConfig(k_shot=5, k_query=5, num_inner_steps=2, inner_lr=0.05, tasks_per_batch=3)
CONV = OmniglotConfig(n_way=3, k_shot=1, k_query=2, num_inner_steps=2, inner_lr=0.4, tasks_per_batch=2,
                      num_filters=4, image_size=16)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: one thread is as fast, and a second OpenMP thread on a busy 2-core CPU
    slows every small op down by orders of magnitude."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def sine_setup():
    torch.manual_seed(0)
    tasks = meta_step.SineTasks.from_config(SINE).sample(SINE.tasks_per_batch, seeded_generator(0))
    return SineMLP((8, 8)), tasks, SINE


def conv_setup():
    torch.manual_seed(0)
    tasks = meta_step.random_image_tasks(CONV, seeded_generator(0))
    return ConvNet4(CONV.n_way, num_filters=CONV.num_filters, image_size=CONV.image_size), tasks, CONV


@pytest.mark.skipif(not INSTALLED, reason="no peer library installed (benchmarks/install_peers.sh)")
@pytest.mark.parametrize("setup", [sine_setup, conv_setup], ids=["mlp", "conv-bn"])
def test_installed_peers_compute_our_meta_gradient_in_float64(float64, setup):
    model, tasks, cfg = setup()
    backwards = {"mamlcourse": meta_step.mamlcourse_backward(vectorize=False)}
    backwards.update({name: meta_step.PEER_FACTORIES[name]() for name in INSTALLED})
    rel_diffs, refused = meta_step.gradient_agreement(backwards, model, tasks, cfg, rtol=1e-10)
    assert refused == {}, refused
    assert set(rel_diffs) == set(INSTALLED)


def test_an_implementation_with_another_gradient_is_refused(float64):
    """First-order MAML posing as a peer: its meta-gradient differs, so it must not be timed."""
    model, tasks, cfg = sine_setup()
    first_order = dataclasses.replace(cfg, first_order=True)
    loop = meta_step.mamlcourse_backward(vectorize=False)
    backwards = {
        "mamlcourse": meta_step.mamlcourse_backward(vectorize=True),
        "loop": loop,
        "first-order": lambda model, tasks, cfg: loop(model, tasks, first_order),
    }
    rel_diffs, refused = meta_step.gradient_agreement(backwards, model, tasks, cfg, rtol=1e-10)
    assert rel_diffs["loop"] < 1e-10
    assert list(refused) == ["first-order"]
    assert "above --rtol" in refused["first-order"]


def test_the_script_prints_one_json_object(capsys):
    assert meta_step.main(["--config", "sine", "--iterations", "2", "--warmup", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["config"] == "sine" and result["mamlcourse_path"] == "vmap"
    assert set(result["ms_per_iteration"]) == {"mamlcourse", *INSTALLED}
    assert set(result["not_installed"]) == set(meta_step.PEERS) - set(INSTALLED)
    assert result["refused"] == {}


def test_paper_configs_without_omniglot_fail_with_a_fix(tmp_path, capsys):
    code = meta_step.main(["--config", "paper-5w1s", "--data", str(tmp_path), "--iterations", "1"])
    assert code == 2
    assert "--random-images" in capsys.readouterr().err
