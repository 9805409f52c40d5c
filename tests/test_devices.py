"""One device path: tasks made on one device are scored by a model on another, everywhere.

There is no GPU here, so the second device is PyTorch's ``meta`` device: tensors with shapes
and no data, whose operations refuse to mix devices exactly as CUDA's do ("Tensor on device
cpu is not on the expected device meta!"). The tasks are made on the CPU, as the sine sampler
and fixed test tasks make them; the model lives on ``meta``, as it would on ``cuda``. Before
``maml.over_tasks`` put the tasks on the parameters' device, ``choose_finetune_lr`` failed
this way on every CUDA machine (``train sine``, lesson 2 in full mode).

Results are copied back to the CPU at the end of evaluation, and a few algorithms read a
number from the device (MAML++'s iteration count, ProtoNets' label check); a meta tensor has
no values, so ``MetaToCpu`` turns those reads into zeros: the tests are about devices, not
numbers.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mamlcourse.algorithms import ALGORITHMS
from mamlcourse.baseline import choose_finetune_lr, joint_loss
from mamlcourse.config import OmniglotConfig, sine_preset
from mamlcourse.data.sine import SineTasks
from mamlcourse.evaluate import adaptation_curve, evaluate
from mamlcourse.maml import get_params, meta_loss, over_tasks, place_tasks
from mamlcourse.models import build_model
from mamlcourse.tasks import TaskBatch, fixed_tasks, seeded_generator

OTHER = torch.device("meta")
SINE = dataclasses.replace(sine_preset("quick"), tasks_per_batch=3, eval_k_shots=(5,), eval_max_steps=2)
CONV = OmniglotConfig(n_way=3, k_shot=1, k_query=2, num_inner_steps=1, inner_lr=0.4, tasks_per_batch=3,
                      num_filters=4, image_size=16)


class MetaToCpu(TorchDispatchMode):
    """Copies from ``meta`` to the CPU give zeros of the right shape, ``.item()`` gives 0."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not (args and isinstance(args[0], torch.Tensor)):
            return func(*args, **kwargs)
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device == OTHER:
            return False if args[0].dtype == torch.bool else 0
        if (func is torch.ops.aten._to_copy.default and args[0].device == OTHER
                and kwargs.get("device") == torch.device("cpu")):
            return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        return func(*args, **kwargs)


def cpu_tasks(cfg) -> TaskBatch:
    if cfg.loss == "mse":
        return SineTasks.from_config(cfg).sample(3, seeded_generator(0))
    g = seeded_generator(0)
    return TaskBatch(torch.randn(3, 3, 1, 16, 16, generator=g), torch.arange(3).repeat(3, 1),
                     torch.randn(3, 6, 1, 16, 16, generator=g),
                     torch.arange(3).repeat_interleave(2).repeat(3, 1))


def test_the_imitation_refuses_mixed_devices_as_cuda_does():
    with pytest.raises(RuntimeError, match="not on the expected device"):
        torch.ones(2, device=OTHER) + torch.ones(2)


@pytest.mark.parametrize("cfg", [SINE, CONV], ids=["sine", "convnet"])
@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "loop"])
def test_meta_loss_scores_cpu_tasks_on_the_models_device(cfg, vectorize):
    model = build_model(cfg).to(OTHER)
    loss, metrics = meta_loss(model, get_params(model), cpu_tasks(cfg), cfg, vectorize=vectorize)
    loss.backward()
    assert loss.device == OTHER and all(v.device == OTHER for v in metrics.values())
    assert all(p.grad.device == OTHER for p in model.parameters())


@pytest.mark.parametrize("cfg", [SINE, CONV], ids=["sine", "convnet"])
@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "loop"])
def test_evaluation_scores_cpu_tasks_on_the_models_device(cfg, vectorize):
    model = build_model(cfg).to(OTHER)
    with MetaToCpu():
        curve = adaptation_curve(model, get_params(model), cpu_tasks(cfg), cfg, num_steps=2,
                                 vectorize=vectorize, chunk_size=2)
        result = evaluate(model, cpu_tasks(cfg), cfg, num_steps=1)
    assert curve.shape == (3, 3) and curve.device.type == "cpu"
    assert result.per_task.shape == (3, 2)


def test_the_baselines_step_size_search_runs_on_the_models_device():
    """Fault 3: ``train sine`` on CUDA died here, after training both networks."""
    model = build_model(SINE).to(OTHER)
    with MetaToCpu():
        lr, scores = choose_finetune_lr(model, SineTasks.from_config(SINE), SINE, num_tasks=4)
    assert lr in SINE.baseline_lrs and set(scores) == set(SINE.baseline_lrs)
    loss, _ = joint_loss(model, get_params(model), cpu_tasks(SINE), SINE)
    assert loss.device == OTHER


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_trains_and_scores_cpu_tasks_on_the_models_device(name):
    algorithm = ALGORITHMS[name]
    cfg = SINE if "mse" in algorithm.task_kinds else CONV
    model = algorithm.build(cfg).to(OTHER)
    with MetaToCpu():
        loss, metrics = algorithm.objective(model, get_params(model), cpu_tasks(cfg), cfg)
        loss.backward()
        scores = algorithm.score(model, cpu_tasks(cfg), cfg, 1)
    assert loss.device == OTHER and all(v.device == OTHER for v in metrics.values())
    assert scores.shape[0] == 3


def test_over_tasks_places_the_tasks_and_stacks_outputs_in_task_order():
    params = {"w": torch.ones(2, device=OTHER)}
    tasks = cpu_tasks(SINE)
    assert place_tasks(tasks, params).device == OTHER
    assert place_tasks(tasks, {"w": torch.ones(2)}) is tasks

    def task_fn(p, x_support, y_support, x_query, y_query):
        return (p["w"].sum() * x_support.sum(),)

    cpu = {"w": torch.ones(2)}
    for vectorize in (True, False):
        (out,) = over_tasks(task_fn, cpu, tasks, vectorize=vectorize, chunk_size=2)
        assert torch.allclose(out, 2 * tasks.x_support.sum((1, 2)))
        (out,) = over_tasks(task_fn, params, tasks, vectorize=vectorize)
        assert out.device == OTHER and out.shape == (3,)


def test_fixed_test_tasks_made_on_the_cpu_score_a_model_elsewhere():
    model = build_model(SINE).to(OTHER)
    tasks = fixed_tasks(SineTasks.from_config(SINE), 4)
    with MetaToCpu():
        result = evaluate(model, tasks, SINE, num_steps=1)
    assert result.num_tasks == 4
