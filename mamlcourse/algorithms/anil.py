"""ANIL, Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals 2020): only the head adapts.

Split θ into a body θ_b (every layer but the last) and a head θ_h (the last linear
layer). The inner loop adapts the head alone, on the body's features:

    z = f_{θ_b}(x)                                   features, computed once per task
    θ_h' = θ_h − α ∇_{θ_h} L_support(θ_h; z_support)   the body gets no inner update
    meta_loss = 1/T Σ_i L_query(θ_h'; z_query)

The body still learns: the meta-gradient reaches θ_b through the features, both
directly and through the head's adaptation (which depends on z_support). So ANIL is
MAML with α = 0 on the body, and the tests check exactly that, but it runs the inner
loop on a linear layer instead of the whole network, which is far cheaper.

In code, ANIL is the course's ``meta_loss`` applied to the head, on tasks whose inputs
are the body's features.

Example:
    >>> model, history = train_algorithm(ANIL, sampler, cfg)
    >>> adapted_params = adapt(model, get_params(model), x_support, y_support, cfg)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..config import MetaConfig
from ..evaluate import adaptation_curve
from ..maml import Params, detach_params, get_params, inner_loop, loss_function, meta_loss, place_tasks
from ..models import build_model
from ..tasks import TaskBatch
from .base import Algorithm, over_tasks, pick_vectorize, split_prefix


class _Body(nn.Module):
    """``model.body`` as a module's ``forward``, so that ``functional_call`` runs it with other params."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.body(x)


@dataclass(frozen=True)
class BodyHead:
    """A network seen as body (feature extractor) then head (last linear layer).

    Attributes:
        body_module: the model's ``body`` wrapped as a module (see ``body``).
        head: the head module, called with ``functional_call`` on the features.
        head_prefix: how the head's parameter names start in the model (``"head."``).
    """

    body_module: nn.Module
    head: nn.Module
    head_prefix: str

    def body(self, body_params: Params, x: Tensor) -> Tensor:
        """f_{θ_b}(x): features [n, d], body_params named as in the model."""
        return functional_call(self.body_module, {"model." + n: p for n, p in body_params.items()}, (x,))

    def partition(self, params: Params) -> tuple[Params, Params]:
        """(body params, head params), the latter renamed as the head module names them."""
        body = {n: p for n, p in params.items() if not n.startswith(self.head_prefix)}
        return body, split_prefix(params, self.head_prefix)


def body_and_head(model: nn.Module) -> BodyHead:
    """The body and head the model declares (``body(x)``, ``head``, ``head_prefix``, see ``models.py``).

    Raises:
        TypeError: the model does not declare them; give it a ``body(x) -> features [n, d]``
            method, a ``head`` module and a ``head_prefix`` string, as ``SineMLP`` and ``ConvNet4``.
    """
    missing = [name for name in ("body", "head", "head_prefix") if not hasattr(model, name)]
    if missing:
        raise TypeError(f"ANIL needs to know the body and head of {type(model).__name__}, which has no "
                        f"{', '.join(missing)}: give it a `body(x) -> features` method, a `head` module "
                        "and a `head_prefix` string naming the head's parameters (as SineMLP and "
                        "ConvNet4 have, see mamlcourse/models.py)")
    return BodyHead(_Body(model), model.head, model.head_prefix)


def feature_tasks(model: nn.Module, params: Params, tasks: TaskBatch, cfg: MetaConfig, *,
                  vectorize: bool | None = None) -> TaskBatch:
    """The tasks with every image (or x) replaced by its body features, task by task.

    Support and query sets go through the body separately, as they do through the whole
    network in MAML (batch norm normalises each with its own statistics).

    Returns:
        TaskBatch with x_support [T, n_support, d] and x_query [T, n_query, d],
        differentiable with respect to the body parameters in ``params``.
    """
    split = body_and_head(model)
    body_params, _ = split.partition(params)
    tasks = place_tasks(tasks, params)  # the labels below are used beside the features

    def features(p: Params, x_support: Tensor, y_support: Tensor, x_query: Tensor, y_query: Tensor
                 ) -> tuple[Tensor, Tensor]:
        return split.body(p, x_support), split.body(p, x_query)

    z_support, z_query = over_tasks(features, body_params, tasks,
                                    vectorize=pick_vectorize(model, tasks, cfg, vectorize))
    return TaskBatch(z_support, tasks.y_support, z_query, tasks.y_query)


def anil_loss(model: nn.Module, params: Params, tasks: TaskBatch, cfg: MetaConfig, *,
              vectorize: bool | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """ANIL's meta-loss: MAML's ``meta_loss`` on the head, over the body's features.

    Args:
        model: a network with a body and a head, as ``SineMLP`` and ``ConvNet4`` (see ``body_and_head``).
        params: θ, body and head, named as in the model.
        tasks: T tasks.
        cfg: inner_lr, num_inner_steps, first_order and the loss, as for MAML.

    Returns:
        meta_loss: scalar, differentiable with respect to body and head.
        metrics: as ``maml.meta_loss`` (``"query_loss"`` [T], ``"accuracy"`` [T]).
    """
    split = body_and_head(model)
    _, head_params = split.partition(params)
    features = feature_tasks(model, params, tasks, cfg, vectorize=vectorize)
    return meta_loss(split.head, head_params, features, cfg)


def adapt(model: nn.Module, params: Params, x_support: Tensor, y_support: Tensor, cfg: MetaConfig, *,
          num_inner_steps: int | None = None) -> Params:
    """θ' for one task: the body's tensors unchanged, the head adapted on the support features.

    Shapes: x_support [n_support, *x_shape], y_support [n_support, *y_shape].
    """
    split = body_and_head(model)
    body_params, head_params = split.partition(params)
    steps = cfg.num_inner_steps if num_inner_steps is None else num_inner_steps
    # θ_h' = θ_h − α ∇_{θ_h} L_support(θ_h; f_{θ_b}(x_support)); θ_b' = θ_b
    adapted_head = inner_loop(split.head, head_params, split.body(body_params, x_support), y_support,
                              loss_fn=loss_function(cfg.loss), inner_lr=cfg.inner_lr,
                              num_inner_steps=steps, first_order=cfg.first_order)
    return {**body_params, **{split.head_prefix + n: p for n, p in adapted_head.items()}}


def score_anil(model: nn.Module, tasks: TaskBatch, cfg: MetaConfig, num_steps: int) -> Tensor:
    """[T, num_steps + 1] scores after 0..num_steps head-only steps of ``cfg.inner_lr``."""
    split = body_and_head(model)
    params = detach_params(get_params(model))
    with torch.no_grad():
        features = feature_tasks(model, params, tasks, cfg)
    _, head_params = split.partition(params)
    return adaptation_curve(split.head, head_params, features, cfg, num_steps=num_steps)


ANIL = Algorithm(
    name="anil", label="ANIL", reference="Raghu, Raghu, Bengio & Vinyals, ICLR 2020",
    build=build_model, objective=anil_loss, score=score_anil)
