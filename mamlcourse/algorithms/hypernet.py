"""A hypernetwork for sine tasks: model-based meta-learning, adaptation by one forward pass.

MAML maps a support set to adapted weights with gradient steps, θ' = θ − α ∇L_support(θ).
A hypernetwork learns that map instead:

    z  = 1/K Σ_k g_ψ(x_k, y_k)          a task embedding: mean over support pairs (order-free)
    θ' = θ + W z                        adapted weights of the same SineMLP

and is meta-trained end to end on the query loss at θ', like MAML's outer loop, but
with no inner loop at all. ``W`` starts at zero, so training starts from θ' = θ (a plain
regressor, like MAML before its first step). It is fast at test (one forward pass) but
cannot keep improving with more steps or more data the way gradient descent can.

Example:
    >>> model, history = train_algorithm(HYPERNET, SineTasks.from_config(cfg), cfg)
    >>> mse = HYPERNET.score(model, test_tasks, cfg, 0)          # [num_tasks, 1]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..config import MetaConfig, SineConfig
from ..maml import Params, detach_params, get_params, loss_function
from ..models import SineMLP
from ..tasks import TaskBatch
from .base import Algorithm, over_tasks


class SineHyperNetwork(nn.Module):
    """Support set -> weights of a ``SineMLP``.

    Args:
        hidden_sizes: the target MLP's hidden layers (the paper's 40-40).
        embed_dim: size of the task embedding z.
        encoder_hidden: width of the pair encoder g_ψ.

    Shapes: x_support [K, 1], y_support [K, 1], x_query [n, 1] -> predictions [n, 1].
    """

    def __init__(self, hidden_sizes: tuple[int, ...] = (40, 40), embed_dim: int = 32,
                 encoder_hidden: int = 64):
        super().__init__()
        self.target = SineMLP(hidden_sizes)
        self.encoder = nn.Sequential(nn.Linear(2, encoder_hidden), nn.ReLU(),
                                     nn.Linear(encoder_hidden, encoder_hidden), nn.ReLU(),
                                     nn.Linear(encoder_hidden, embed_dim))
        self.shapes = {name: p.shape for name, p in self.target.named_parameters()}
        total = sum(p.numel() for p in self.target.parameters())
        self.generator = nn.Linear(embed_dim, total)
        nn.init.zeros_(self.generator.weight)  # θ' = θ at the start
        nn.init.zeros_(self.generator.bias)

    def adapted_params(self, x_support: Tensor, y_support: Tensor) -> Params:
        """θ' = θ + W z for one task (a dict of the target MLP's tensors)."""
        z = self.encoder(torch.cat([x_support, y_support], -1)).mean(0)   # [embed_dim]
        delta = self.generator(z).split([s.numel() for s in self.shapes.values()])
        return {name: p + d.view(self.shapes[name])
                for (name, p), d in zip(self.target.named_parameters(), delta)}

    def forward(self, x_support: Tensor, y_support: Tensor, x_query: Tensor) -> Tensor:
        return functional_call(self.target, self.adapted_params(x_support, y_support), (x_query,))


def build_hypernet(cfg: MetaConfig) -> SineHyperNetwork:
    """A hypernetwork whose target is the paper's sine MLP.

    Raises:
        ValueError: ``cfg`` is not a sine config.
    """
    if not isinstance(cfg, SineConfig):
        raise ValueError(f"this hypernetwork writes SineMLP weights; {cfg.task} needs another target "
                         "network: use it with a SineConfig")
    return SineHyperNetwork(cfg.hidden_sizes)


def hypernet_loss(model: SineHyperNetwork, params: Params, tasks: TaskBatch, cfg: MetaConfig
                  ) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean query loss of the generated weights over T tasks (no inner loop).

    Returns:
        loss: scalar; metrics: ``"query_loss"`` [T].
    """
    loss_fn = loss_function(cfg.loss)

    def one_task(p: Params, x_support: Tensor, y_support: Tensor, x_query: Tensor, y_query: Tensor
                 ) -> tuple[Tensor]:
        return (loss_fn(functional_call(model, p, (x_support, y_support, x_query)), y_query),)

    (query_loss,) = over_tasks(one_task, params, tasks, vectorize=True)
    return query_loss.mean(), {"query_loss": query_loss.detach()}


def score_hypernet(model: SineHyperNetwork, tasks: TaskBatch, cfg: MetaConfig, num_steps: int = 0) -> Tensor:
    """[T, 1] query MSE of the generated weights (``num_steps`` is ignored: there are none)."""
    with torch.no_grad():
        _, metrics = hypernet_loss(model, detach_params(get_params(model)), tasks, cfg)
    return metrics["query_loss"][:, None].cpu()


HYPERNET = Algorithm(
    name="hypernet", label="hypernetwork", reference="Ha, Dai & Le, ICLR 2017 (hypernetworks)",
    build=build_hypernet, objective=hypernet_loss, score=score_hypernet,
    task_kinds=("mse",), adapts_by_gradient=False)
