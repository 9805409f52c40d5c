"""Tasks and the sine task distribution: shapes, seeding, fixed evaluation sets, bad input."""

from __future__ import annotations

import pytest
import torch

from mamlcourse.config import sine_preset
from mamlcourse.data.sine import SineTasks, SineWaves, sine
from mamlcourse.tasks import EVAL_SEED, Task, TaskBatch, fixed_tasks, seeded_generator


def test_sine_batch_shapes_and_ranges():
    sampler = SineTasks.from_config(sine_preset("paper"))
    batch = sampler.sample(25, seeded_generator(0))
    assert batch.x_support.shape == (25, 10, 1) and batch.y_support.shape == (25, 10, 1)
    assert batch.x_query.shape == (25, 10, 1) and batch.y_query.shape == (25, 10, 1)
    assert batch.x_support.min() >= -5 and batch.x_support.max() <= 5
    assert batch.y_support.abs().max() <= 5


def test_targets_lie_on_the_tasks_wave():
    sampler = SineTasks()
    g = seeded_generator(3)
    waves = sampler.draw_waves(4, g)
    batch = sampler.tasks_for(waves, g, k_shot=7, k_query=100)
    for i in range(4):
        expected = sine(batch.x_query[i], waves.amplitude[i], waves.phase[i])
        assert torch.allclose(batch.y_query[i], expected)
    assert ((waves.amplitude >= 0.1) & (waves.amplitude <= 5)).all()
    assert ((waves.phase >= 0) & (waves.phase <= torch.pi)).all()


def test_support_range_restricts_only_the_support_points():
    sampler = SineTasks()
    g = seeded_generator(0)
    batch = sampler.tasks_for(sampler.draw_waves(50, g), g, k_shot=10, k_query=200,
                              support_range=(-5.0, 0.0))
    assert batch.x_support.max() <= 0
    assert batch.x_query.max() > 0


def test_same_seed_same_tasks_other_seed_other_tasks():
    sampler = SineTasks()
    a = sampler.sample(5, seeded_generator(1))
    b = sampler.sample(5, seeded_generator(1))
    c = sampler.sample(5, seeded_generator(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.x_support, c.x_support)


def test_fixed_tasks_are_fixed():
    sampler = SineTasks()
    a = fixed_tasks(sampler, 10, k_shot=5)
    b = fixed_tasks(sampler, 10, k_shot=5)
    assert torch.equal(a.x_support, b.x_support) and a.x_support.shape == (10, 5, 1)
    assert torch.equal(a.x_support, sampler.sample(10, seeded_generator(EVAL_SEED), k_shot=5).x_support)


def test_task_batch_indexing_stacking_and_splitting():
    batch = SineTasks().sample(6, seeded_generator(0))
    first = batch[0]
    assert isinstance(first, Task) and first.x_support.shape == (10, 1)
    assert len(batch[1:4]) == 3
    restacked = TaskBatch.stack(list(batch.tasks()))
    assert torch.equal(restacked.y_query, batch.y_query)
    assert [len(b) for b in batch.split(4)] == [4, 2]


def test_task_batch_refuses_mismatched_tensors():
    x = torch.zeros(3, 5, 1)
    with pytest.raises(ValueError, match="same number of tasks"):
        TaskBatch(x, x, x[:2], x[:2])
    with pytest.raises(ValueError, match="same number of examples"):
        TaskBatch(x, x[:, :4], x, x)
    with pytest.raises(ValueError, match="empty"):
        TaskBatch.stack([])


@pytest.mark.parametrize("kwargs", [{"k_shot": 0}, {"k_query": -1}])
def test_bad_counts_are_refused(kwargs):
    with pytest.raises(ValueError, match="k_shot and k_query must be >= 1"):
        SineTasks().sample(2, seeded_generator(0), **kwargs)
    with pytest.raises(ValueError, match="num_tasks"):
        SineTasks().sample(0, seeded_generator(0))


def test_waves_evaluate_per_task():
    waves = SineWaves(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
    x = torch.full((2, 1, 1), torch.pi / 2)
    assert torch.allclose(waves(x).flatten(), torch.tensor([1.0, 2.0]))
