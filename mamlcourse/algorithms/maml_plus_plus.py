"""MAML++ (Antoniou, Edwards & Storkey 2019): the two fixes to MAML that matter most here.

1. Multi-step loss (MSL). The meta-loss scores the query set after *every* inner step,
   weighted, instead of only after the last:

       meta_loss = 1/T Σ_i Σ_{s=1..N} v_s L_query_i(θ_s)

   Early in training the weights v are uniform (1/N each), which gives every step a
   direct gradient and stabilises training; they are annealed linearly so that after
   ``anneal_iterations`` only the last step counts, as in the paper's code.
2. Learned per-layer per-step inner learning rates (LSLR). Step s updates parameter
   tensor ℓ with its own learned scalar α_{s,ℓ}:

       θ_{s+1}[ℓ] = θ_s[ℓ] − α_{s,ℓ} ∇_ℓ L_support(θ_s)

   (Meta-SGD learns one α per weight; MAML++ one per tensor and step: far fewer.)

The paper's other fixes (per-step batch-norm weights and running statistics, annealing
the derivative order, cosine-annealed outer learning rate) are left out: the course's
networks keep no running statistics, and ``cfg.first_order`` already chooses the order.

``MAMLPlusPlus`` holds the network, the step sizes and an iteration counter (a buffer, so
a resumed run continues the annealing where it stopped).

Example:
    >>> model = MAMLPlusPlus(build_model(cfg), num_inner_steps=5, inner_lr=0.01, anneal_iterations=500)
    >>> history = meta_train(model, sampler, cfg, objective=maml_plus_plus_loss)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..config import MetaConfig
from ..evaluate import adaptation_curve
from ..maml import Params, get_params, inner_loop, loss_function, place_tasks
from ..models import build_model
from ..tasks import TaskBatch
from .base import Algorithm, over_tasks, param_name, pick_vectorize, safe_key, split_prefix

# The paper's floor for the non-final weights while annealing: 0.03 / N.
MIN_NON_FINAL_WEIGHT = 0.03


def multi_step_weights(iteration: int, num_inner_steps: int, anneal_iterations: int) -> Tensor:
    """The MSL weights v_1..v_N at ``iteration`` (Antoniou et al.'s schedule, per iteration).

    With progress p = iteration / anneal_iterations, the first N − 1 weights are
    max((1 − p) / N, 0.03 / N) and the last is min((1 + (N − 1) p) / N, 1 − (N − 1) 0.03 / N),
    so they start uniform, always sum to 1, and move weight to the last step. From
    ``anneal_iterations`` on, only the last step's loss counts (weights [0, ..., 0, 1]).

    Returns:
        [num_inner_steps] float tensor summing to 1.
    """
    if num_inner_steps < 1:
        raise ValueError("MAML++ needs num_inner_steps >= 1 (one query loss per step), "
                         f"got {num_inner_steps}")
    if anneal_iterations < 1:
        raise ValueError(f"anneal_iterations must be >= 1, got {anneal_iterations}")
    n = num_inner_steps
    if iteration >= anneal_iterations:
        return torch.nn.functional.one_hot(torch.tensor(n - 1), n).float()
    progress = iteration / anneal_iterations
    floor = MIN_NON_FINAL_WEIGHT / n
    weights = torch.full((n,), max((1 - progress) / n, floor))
    weights[-1] = min((1 + (n - 1) * progress) / n, 1 - (n - 1) * floor)
    return weights


class MAMLPlusPlus(nn.Module):
    """A network ``net``, learned step sizes α [num_inner_steps] per parameter tensor, a counter.

    Args:
        net: the network whose parameters are θ.
        num_inner_steps: N, inner steps during meta-training (one α per step and tensor).
        inner_lr: the initial value of every α.
        anneal_iterations: meta-iterations over which the multi-step loss weights move
            from uniform to the last step only.

    Parameter names: ``net.<name>`` for θ, ``inner_lrs.<safe name>`` [N] for α.
    Buffer ``iteration``: meta-iterations done (saved in checkpoints).
    """

    def __init__(self, net: nn.Module, *, num_inner_steps: int, inner_lr: float, anneal_iterations: int):
        super().__init__()
        multi_step_weights(0, num_inner_steps, anneal_iterations)  # validates both
        self.net = net
        self.num_inner_steps = num_inner_steps
        self.anneal_iterations = anneal_iterations
        self.inner_lrs = nn.ParameterDict({
            safe_key(name): nn.Parameter(torch.full((num_inner_steps,), float(inner_lr)))
            for name, _ in net.named_parameters()})
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def step_weights(self) -> Tensor:
        """The multi-step loss weights [N] at the current iteration."""
        return multi_step_weights(int(self.iteration), self.num_inner_steps, self.anneal_iterations)

    @staticmethod
    def split(params: Params, num_steps: int) -> tuple[Params, list[Params]]:
        """(θ, [α_1, ..., α_num_steps]) from the wrapper's params; α_s maps names to scalars.

        Steps beyond the trained ones reuse the last step's α (for longer adaptation at test).
        """
        lrs = {param_name(k): v for k, v in split_prefix(params, "inner_lrs.").items()}
        trained = next(iter(lrs.values())).shape[0]
        per_step = [{name: lr[min(s, trained - 1)] for name, lr in lrs.items()} for s in range(num_steps)]
        return split_prefix(params, "net."), per_step


def build_maml_plus_plus(cfg: MetaConfig, *, anneal_fraction: float = 0.1) -> MAMLPlusPlus:
    """MAML++ around the paper's network: α starts at ``cfg.inner_lr`` for every step and tensor.

    The multi-step loss anneals over the first ``anneal_fraction`` of ``cfg.num_iterations``
    (the paper: 10 of 150 epochs, about 7%).
    """
    return MAMLPlusPlus(build_model(cfg), num_inner_steps=cfg.num_inner_steps, inner_lr=cfg.inner_lr,
                        anneal_iterations=max(1, round(anneal_fraction * cfg.num_iterations)))


def maml_plus_plus_loss(model: MAMLPlusPlus, params: Params, tasks: TaskBatch, cfg: MetaConfig, *,
                        vectorize: bool | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The weighted multi-step meta-loss Σ_s v_s mean_i L_query_i(θ_s), with learned α_{s,ℓ}.

    Each call counts one meta-iteration (``model.iteration``), which drives the annealing.

    Args:
        model: a ``MAMLPlusPlus``; its ``num_inner_steps`` (not ``cfg``'s) sets N.
        params: ``get_params(model)``.
        tasks: T tasks.
        cfg: the loss and ``first_order``.

    Returns:
        meta_loss: scalar, differentiable in θ and every α_{s,ℓ}.
        metrics: ``"query_loss"`` [T] after the last step, ``"step_query_loss"`` [T, N],
            ``"accuracy"`` [T] after the last step (classification).
    """
    loss_fn = loss_function(cfg.loss)
    net_params, step_lrs = MAMLPlusPlus.split(params, model.num_inner_steps)
    tasks = place_tasks(tasks, net_params)
    weights = model.step_weights().to(tasks.device)

    def task_losses(p: Params, x_support: Tensor, y_support: Tensor, x_query: Tensor, y_query: Tensor
                    ) -> tuple[Tensor, Tensor]:
        path = inner_loop(model.net, p, x_support, y_support, loss_fn=loss_fn, inner_lr=step_lrs,
                          num_inner_steps=model.num_inner_steps, first_order=cfg.first_order,
                          trajectory=True)
        predictions = [functional_call(model.net, q, (x_query,)) for q in path[1:]]
        # L_query(θ_s) for s = 1..N
        return torch.stack([loss_fn(pred, y_query) for pred in predictions]), predictions[-1]

    step_losses, predictions = over_tasks(task_losses, net_params, tasks,
                                          vectorize=pick_vectorize(model.net, tasks, cfg, vectorize))
    model.iteration += 1
    # meta_loss = Σ_s v_s · mean_i L_query_i(θ_s)
    loss = (step_losses.mean(0) * weights).sum()
    metrics = {"query_loss": step_losses[:, -1].detach(), "step_query_loss": step_losses.detach()}
    if cfg.loss == "cross_entropy":
        metrics["accuracy"] = (predictions.detach().argmax(-1) == tasks.y_query).float().mean(-1)
    return loss, metrics


def score_maml_plus_plus(model: MAMLPlusPlus, tasks: TaskBatch, cfg: MetaConfig, num_steps: int) -> Tensor:
    """[T, num_steps + 1] scores with the learned per-step α (the last step's α beyond N)."""
    net_params, step_lrs = MAMLPlusPlus.split(get_params(model), num_steps)
    step_lrs = [{name: lr.detach() for name, lr in lrs.items()} for lrs in step_lrs]
    return adaptation_curve(model.net, net_params, tasks, cfg, num_steps=num_steps, inner_lr=step_lrs)


MAML_PLUS_PLUS = Algorithm(
    name="maml_pp", label="MAML++", reference="Antoniou, Edwards & Storkey, ICLR 2019",
    build=build_maml_plus_plus, objective=maml_plus_plus_loss, score=score_maml_plus_plus)
