"""Few-shot tasks: a support set to adapt on, a query set to score the adapted model.

A ``Task`` is one episode; a ``TaskBatch`` is a meta-batch of episodes of equal shape,
stacked along a leading task dimension so MAML can run them in parallel. Samplers (the
sine and Omniglot task distributions) return ``TaskBatch``es and take an explicit
``torch.Generator``, so the same seed always gives the same tasks.

Example:
    >>> x = torch.zeros(4, 10, 1)
    >>> batch = TaskBatch(x, x, x, x)
    >>> len(batch), batch[0].x_support.shape
    (4, torch.Size([10, 1]))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class Task:
    """One few-shot episode.

    Attributes:
        x_support: [n_support, *x_shape] inputs the model adapts on.
        y_support: [n_support, *y_shape] their targets (class ids 0..n_way-1, or values).
        x_query: [n_query, *x_shape] inputs the adapted model is scored on.
        y_query: [n_query, *y_shape] their targets.
    """

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor

    def to(self, device: torch.device | str) -> Task:
        """A copy of the task on ``device``."""
        return Task(*(t.to(device) for t in self))

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.x_support, self.y_support, self.x_query, self.y_query))


@dataclass(frozen=True)
class TaskBatch:
    """A meta-batch of episodes with the same shapes, stacked on dimension 0.

    Attributes:
        x_support: [num_tasks, n_support, *x_shape]
        y_support: [num_tasks, n_support, *y_shape]
        x_query: [num_tasks, n_query, *x_shape]
        y_query: [num_tasks, n_query, *y_shape]
    """

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor

    def __post_init__(self) -> None:
        sizes = {t.shape[0] for t in self}
        if len(sizes) != 1:
            raise ValueError(f"a TaskBatch needs the same number of tasks in all four tensors, got {sizes}")
        if self.x_support.shape[1] != self.y_support.shape[1]:
            raise ValueError("x_support and y_support must hold the same number of examples per task")
        if self.x_query.shape[1] != self.y_query.shape[1]:
            raise ValueError("x_query and y_query must hold the same number of examples per task")

    def __len__(self) -> int:
        return self.x_support.shape[0]

    def __getitem__(self, index: int | slice) -> Task | TaskBatch:
        if isinstance(index, slice):
            return TaskBatch(*(t[index] for t in self))
        return Task(*(t[index] for t in self))

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.x_support, self.y_support, self.x_query, self.y_query))

    def tasks(self) -> Iterator[Task]:
        """The episodes one by one."""
        for i in range(len(self)):
            yield self[i]  # type: ignore[misc]

    def to(self, device: torch.device | str) -> TaskBatch:
        """A copy of the batch on ``device``."""
        return TaskBatch(*(t.to(device) for t in self))

    @property
    def device(self) -> torch.device:
        return self.x_support.device

    @staticmethod
    def stack(tasks: Sequence[Task]) -> TaskBatch:
        """Stack episodes of equal shapes into a batch."""
        if not tasks:
            raise ValueError("cannot stack an empty list of tasks")
        return TaskBatch(*(torch.stack(parts) for parts in zip(*tasks)))

    def split(self, chunk_size: int) -> Iterator[TaskBatch]:
        """Consecutive sub-batches of at most ``chunk_size`` tasks (for memory-bounded evaluation)."""
        for start in range(0, len(self), chunk_size):
            yield self[start:start + chunk_size]  # type: ignore[misc]


class TaskSampler(Protocol):
    """What training and evaluation need from a task distribution."""

    def sample(self, num_tasks: int, generator: torch.Generator, **overrides) -> TaskBatch:
        """``num_tasks`` fresh episodes drawn with ``generator``; ``overrides`` (for example
        ``k_shot=5``) change the task shape for this draw."""
        ...


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``: every sampler draws from one of these."""
    return torch.Generator().manual_seed(int(seed))


# Seeds of the fixed task sets, far from the small seeds used for training streams.
EVAL_SEED = 2017_0309      # the test tasks every run is scored on
VALIDATION_SEED = 2017_0310  # tasks used to choose settings (never the test tasks)


def random_image_tasks(cfg, generator: torch.Generator) -> TaskBatch:
    """A meta-batch of random images with the shapes of ``cfg`` (an ``OmniglotConfig``).

    What the conv net costs, without data: the same kernels on the same sizes take the same
    time as real episodes, so the speed benchmarks and the GPU probe time ConvNet4 on these.

    Shapes: x_support [T, n_way * k_shot, 1, S, S], x_query [T, n_way * k_query, 1, S, S];
    labels 0..n_way-1, grouped by class (T = ``cfg.tasks_per_batch``, S = ``cfg.image_size``).
    """
    T, n, s = cfg.tasks_per_batch, cfg.n_way, cfg.image_size
    x_support = torch.rand(T, n * cfg.k_shot, 1, s, s, generator=generator)
    x_query = torch.rand(T, n * cfg.k_query, 1, s, s, generator=generator)
    y_support = torch.arange(n).repeat_interleave(cfg.k_shot).expand(T, -1).contiguous()
    y_query = torch.arange(n).repeat_interleave(cfg.k_query).expand(T, -1).contiguous()
    return TaskBatch(x_support, y_support, x_query, y_query)


def fixed_tasks(sampler: TaskSampler, num_tasks: int, *, seed: int = EVAL_SEED, **kwargs) -> TaskBatch:
    """The same ``num_tasks`` episodes every time: a seeded draw from ``sampler``.

    Evaluation uses ``EVAL_SEED`` so every run is scored on the same tasks; extra keyword
    arguments go to ``sampler.sample`` (for example ``k_shot=5``).
    """
    return sampler.sample(num_tasks, seeded_generator(seed), **kwargs)
