"""One meta-iteration captured as a CUDA graph, replayed with new tasks each step (GPU only).

On a GPU a MAML step on small Omniglot tasks is a few hundred tiny kernels, so the time
goes into launching them from Python, not into arithmetic. A CUDA graph records the whole
step once (meta-loss, backward through the inner loop, Adam) and replays it with one
launch. The maths is unchanged: the same ``objective`` runs, on tensors whose addresses
stay fixed, and each step copies the new tasks into them before the replay.

Capturing needs a few warm-up steps (CUDA allocates lazily); they would move θ, so θ and
Adam's state are saved before them and restored after the capture, and the run follows
the same trajectory as an eager one (up to floating-point reordering).

A graph cannot branch on a value, so the finiteness check of the eager step (no update
from a non-finite gradient) becomes a flag: each replay ORs "some gradient was not finite"
into ``nonfinite``, which the training loop reads before it logs or saves anything. A
non-finite step has then already updated θ, but no checkpoint is written after it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .config import MetaConfig
from .tasks import TaskBatch

WARMUP_STEPS = 3


class GraphedMetaStep:
    """``step(tasks) -> (loss, metrics)`` doing objective, backward and optimizer step in one replay.

    Args:
        model: the network (on a CUDA device).
        params: its parameters by name (``get_params(model)``).
        optimizer: an optimizer created with ``capturable=True`` (Adam supports it).
        objective: ``objective(model, params, tasks, cfg) -> (loss, metrics)``.
        cfg: passed to the objective.
        example: a batch with the shapes every later batch will have.
    """

    def __init__(self, model: nn.Module, params: dict[str, Tensor], optimizer: torch.optim.Optimizer,
                 objective: Callable, cfg: MetaConfig, example: TaskBatch):
        if example.device.type != "cuda":
            raise ValueError("CUDA graphs need the model and tasks on a CUDA device (--device cuda)")
        self.static = TaskBatch(*(t.clone() for t in example))
        saved_params = [p.detach().clone() for p in model.parameters()]
        saved_state = {id(p): {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in s.items()}
                       for p, s in optimizer.state.items()}

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                optimizer.zero_grad(set_to_none=True)
                loss, _ = objective(model, params, self.static, cfg)
                loss.backward()
                optimizer.step()
        torch.cuda.current_stream().wait_stream(side)

        self.graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=example.device)
        with torch.cuda.graph(self.graph):
            loss, metrics = objective(model, params, self.static, cfg)
            loss.backward()
            self.nonfinite.logical_or_(~finite_gradients(loss, model.parameters()))
            optimizer.step()
        self.loss, self.metrics = loss, metrics

        # Undo the warm-up: θ and Adam's moments as they were (fresh state: zeros, step 0).
        with torch.no_grad():
            for p, saved in zip(model.parameters(), saved_params):
                p.copy_(saved)
            for p, state in optimizer.state.items():
                before = saved_state.get(id(p))
                for key, value in state.items():
                    if isinstance(value, Tensor):
                        value.copy_(before[key]) if before is not None else value.zero_()

    def __call__(self, tasks: TaskBatch) -> tuple[Tensor, dict[str, Tensor]]:
        for static, new in zip(self.static, tasks):
            static.copy_(new, non_blocking=True)
        self.graph.replay()
        # The outputs live in the graph's memory and are overwritten by the next replay.
        return self.loss.detach().clone(), {k: v.clone() for k, v in self.metrics.items()}


def finite_gradients(loss: Tensor, parameters) -> Tensor:
    """A 0-d bool tensor on the loss's device: the loss and every gradient are finite."""
    checks = [torch.isfinite(loss).all()] + [torch.isfinite(p.grad).all() for p in parameters
                                             if p.grad is not None]
    return torch.stack(checks).all()
