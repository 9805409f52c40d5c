"""MAML (Finn, Abbeel & Levine 2017) and its first-order approximation, as ``Algorithm``s.

Both are the course's ``maml.meta_loss`` unchanged; first-order MAML only sets
``first_order=True``, which treats every inner gradient as a constant:

    second order: ∇_θ L_query(θ') = (I - α ∇²L_support(θ)) ∇_θ' L_query(θ')
    first order:  ∇_θ L_query(θ') ≈ ∇_θ' L_query(θ')

so no Hessian-vector products and no inner graph are kept (see ``experiments.cost``).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..config import MetaConfig
from ..evaluate import adaptation_curve
from ..maml import Params, get_params, meta_loss
from ..models import build_model
from ..tasks import TaskBatch
from .base import Algorithm


def first_order_loss(model: nn.Module, params: Params, tasks: TaskBatch, cfg: MetaConfig
                     ) -> tuple[Tensor, dict[str, Tensor]]:
    """``meta_loss`` with the inner gradients detached, whatever ``cfg.first_order`` says."""
    return meta_loss(model, params, tasks, cfg, first_order=True)


def second_order_loss(model: nn.Module, params: Params, tasks: TaskBatch, cfg: MetaConfig
                      ) -> tuple[Tensor, dict[str, Tensor]]:
    """``meta_loss`` through the inner gradients (the full MAML), whatever ``cfg.first_order`` says."""
    return meta_loss(model, params, tasks, cfg, first_order=False)


def score_maml(model: nn.Module, tasks: TaskBatch, cfg: MetaConfig, num_steps: int) -> Tensor:
    """[T, num_steps + 1] scores after 0..num_steps plain gradient steps of ``cfg.inner_lr``."""
    return adaptation_curve(model, get_params(model), tasks, cfg, num_steps=num_steps)


MAML = Algorithm(
    name="maml", label="MAML", reference="Finn, Abbeel & Levine, ICML 2017",
    build=build_model, objective=second_order_loss, score=score_maml)

FIRST_ORDER_MAML = Algorithm(
    name="fomaml", label="first-order MAML", reference="Finn, Abbeel & Levine, ICML 2017 (Section 5.2)",
    build=build_model, objective=first_order_loss, score=score_maml)
