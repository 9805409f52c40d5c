"""Sine-wave regression tasks (paper, Section 5.1): y = A sin(x - φ).

Each task is one wave, amplitude A ~ U[0.1, 5] and phase φ ~ U[0, π]; its support and
query points are x ~ U[-5, 5]. Regression targets have shape [n, 1].

Example:
    >>> tasks = SineTasks.from_config(sine_preset("quick"))
    >>> batch = tasks.sample(25, seeded_generator(0))
    >>> batch.x_support.shape, batch.y_query.shape
    (torch.Size([25, 10, 1]), torch.Size([25, 10, 1]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import SineConfig
from ..tasks import TaskBatch


def sine(x: Tensor, amplitude: Tensor | float, phase: Tensor | float) -> Tensor:
    """y = A sin(x - φ), broadcasting ``amplitude`` and ``phase`` over ``x``."""
    return amplitude * torch.sin(x - phase)


@dataclass(frozen=True)
class SineWaves:
    """The hidden parameters of a batch of sine tasks.

    Attributes:
        amplitude: [num_tasks] A of each wave.
        phase: [num_tasks] φ of each wave.
    """

    amplitude: Tensor
    phase: Tensor

    def __len__(self) -> int:
        return self.amplitude.shape[0]

    def __call__(self, x: Tensor) -> Tensor:
        """True values: x [num_tasks, n, 1] -> y [num_tasks, n, 1]."""
        return sine(x, self.amplitude.view(-1, 1, 1), self.phase.view(-1, 1, 1))


@dataclass(frozen=True)
class SineTasks:
    """The distribution of sine-wave regression tasks.

    Attributes:
        amplitude_range: (low, high) of A.
        phase_range: (low, high) of φ.
        x_range: (low, high) of the inputs.
        k_shot: support points per task.
        k_query: query points per task.
    """

    amplitude_range: tuple[float, float] = (0.1, 5.0)
    phase_range: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)
    k_shot: int = 10
    k_query: int = 10

    @classmethod
    def from_config(cls, cfg: SineConfig) -> SineTasks:
        return cls(cfg.amplitude_range, cfg.phase_range, cfg.x_range, cfg.k_shot, cfg.k_query)

    def draw_waves(self, num_tasks: int, generator: torch.Generator) -> SineWaves:
        """``num_tasks`` random waves (amplitude and phase)."""
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        return SineWaves(_uniform(num_tasks, self.amplitude_range, generator),
                         _uniform(num_tasks, self.phase_range, generator))

    def tasks_for(self, waves: SineWaves, generator: torch.Generator, *, k_shot: int | None = None,
                  k_query: int | None = None,
                  support_range: tuple[float, float] | None = None) -> TaskBatch:
        """Support and query points on given waves.

        Args:
            waves: the waves, one per task.
            generator: draws the x positions.
            k_shot: support points per task (default ``self.k_shot``).
            k_query: query points per task (default ``self.k_query``).
            support_range: draw support x from this interval instead of ``x_range``
                (the half-range experiment uses (-5, 0)); query x always span ``x_range``.

        Returns:
            TaskBatch with x and y of shape [num_tasks, k, 1].
        """
        k_shot = self.k_shot if k_shot is None else k_shot
        k_query = self.k_query if k_query is None else k_query
        if k_shot < 1 or k_query < 1:
            raise ValueError(f"k_shot and k_query must be >= 1, got {k_shot} and {k_query}")
        n = len(waves)
        x_support = _uniform((n, k_shot, 1), support_range or self.x_range, generator)
        x_query = _uniform((n, k_query, 1), self.x_range, generator)
        return TaskBatch(x_support, waves(x_support), x_query, waves(x_query))

    def sample(self, num_tasks: int, generator: torch.Generator, *, k_shot: int | None = None,
               k_query: int | None = None) -> TaskBatch:
        """``num_tasks`` fresh tasks: random waves, then random points on them."""
        waves = self.draw_waves(num_tasks, generator)
        return self.tasks_for(waves, generator, k_shot=k_shot, k_query=k_query)


def _uniform(shape, bounds: tuple[float, float], generator: torch.Generator) -> Tensor:
    low, high = bounds
    shape = (shape,) if isinstance(shape, int) else shape
    return torch.rand(shape, generator=generator) * (high - low) + low
