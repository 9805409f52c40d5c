"""Meta-SGD (Li, Zhou, Chen & Li 2017): learn a step size for every weight, along with θ.

The inner step uses a tensor α of the same shape as θ, multiplied elementwise:

    θ' = θ − α ⊙ ∇L_support(θ)

and the outer loop learns (θ, α) together, since the meta-loss is differentiable in
α as well. α sets both the size and the direction of each step (an entry may turn
negative). The learned α live in ``MetaSGD``, an ``nn.Module`` that holds the network and
the step sizes, so ``meta_train``'s Adam updates them and its checkpoints save them.

Example:
    >>> model = MetaSGD(build_model(cfg), inner_lr=cfg.inner_lr)
    >>> history = meta_train(model, sampler, cfg, objective=meta_sgd_loss)
    >>> model.inner_lrs_dict()["layers.0.weight"].shape
    torch.Size([40, 1])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import MetaConfig
from ..evaluate import adaptation_curve
from ..maml import Params, get_params, meta_loss
from ..models import build_model
from ..tasks import TaskBatch
from .base import Algorithm, param_name, safe_key, split_prefix


class MetaSGD(nn.Module):
    """A network ``net`` and one learned step size per weight, ``inner_lrs`` (same shapes).

    Args:
        net: the network whose parameters are θ.
        inner_lr: the initial value of every step size (the paper initialises them
            randomly in a small range; a constant α makes the start equal to MAML's).

    Parameter names: ``net.<name>`` for θ, ``inner_lrs.<safe name>`` for α.
    """

    def __init__(self, net: nn.Module, inner_lr: float):
        super().__init__()
        self.net = net
        self.inner_lrs = nn.ParameterDict({
            safe_key(name): nn.Parameter(torch.full_like(p.detach(), float(inner_lr)))
            for name, p in net.named_parameters()})

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def inner_lrs_dict(self) -> Params:
        """α by the network's parameter names."""
        return {param_name(key): lr for key, lr in self.inner_lrs.items()}

    @staticmethod
    def split(params: Params) -> tuple[Params, Params]:
        """(θ, α) from the wrapper's params (``get_params(model)``), both keyed by ``net``'s names."""
        return split_prefix(params, "net."), {param_name(k): v
                                              for k, v in split_prefix(params, "inner_lrs.").items()}


def build_meta_sgd(cfg: MetaConfig) -> MetaSGD:
    """The paper's network for ``cfg`` wrapped with step sizes initialised to ``cfg.inner_lr``."""
    return MetaSGD(build_model(cfg), cfg.inner_lr)


def meta_sgd_loss(model: MetaSGD, params: Params, tasks: TaskBatch, cfg: MetaConfig
                  ) -> tuple[Tensor, dict[str, Tensor]]:
    """MAML's ``meta_loss`` with α ⊙ ∇ steps; differentiable in θ and in α.

    Args:
        model: a ``MetaSGD``.
        params: ``get_params(model)``: θ under ``net.``, α under ``inner_lrs.``.
        tasks, cfg: as ``maml.meta_loss`` (``cfg.inner_lr`` is ignored: α is learned).
    """
    net_params, inner_lrs = MetaSGD.split(params)
    return meta_loss(model.net, net_params, tasks, cfg, inner_lr=inner_lrs)


def score_meta_sgd(model: MetaSGD, tasks: TaskBatch, cfg: MetaConfig, num_steps: int) -> Tensor:
    """[T, num_steps + 1] scores after 0..num_steps steps θ ← θ − α ⊙ ∇L with the learned α."""
    net_params, inner_lrs = MetaSGD.split(get_params(model))
    inner_lrs = {name: lr.detach() for name, lr in inner_lrs.items()}
    return adaptation_curve(model.net, net_params, tasks, cfg, num_steps=num_steps, inner_lr=inner_lrs)


META_SGD = Algorithm(
    name="meta_sgd", label="Meta-SGD", reference="Li, Zhou, Chen & Li, arXiv:1707.09835, 2017",
    build=build_meta_sgd, objective=meta_sgd_loss, score=score_meta_sgd)
