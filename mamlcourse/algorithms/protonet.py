"""Prototypical Networks (Snell, Swersky & Zemel 2017): adapt by averaging, not by gradient steps.

An embedding network f_θ maps images to vectors. A task's support set gives one
prototype per class, the mean embedding of its examples,

    c_k = 1/|S_k| Σ_{x ∈ S_k} f_θ(x)

and a query image is classified by its squared Euclidean distance to each prototype:

    p(y = k | x) = softmax_k(−‖f_θ(x) − c_k‖²)

Meta-training minimises the query cross-entropy; there is no inner loop, so nothing
second-order and nothing to tune at test. It is the metric-based member of the family
(the network here is ConvNet4 without its head).

Example:
    >>> model, history = train_algorithm(PROTONET, omniglot_sampler, cfg)
    >>> accuracy = PROTONET.score(model, test_tasks, cfg, 0)        # [num_tasks, 1]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..config import MetaConfig, OmniglotConfig
from ..maml import Params, detach_params, get_params, place_tasks
from ..models import ConvNet4
from ..tasks import TaskBatch
from .base import Algorithm, over_tasks, pick_vectorize


class ProtoNet(nn.Module):
    """An embedding network: images [n, C, H, W] -> embeddings [n, d].

    Args:
        encoder: any module returning [n, ...]; its output is flattened to [n, d].
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x).flatten(1)


def build_protonet(cfg: MetaConfig) -> ProtoNet:
    """ConvNet4's four conv blocks as the embedding, flattened: for 28x28 Omniglot 64 features
    with max-pooling, 256 (64 x 2 x 2) with strided convolutions (``cfg.downsample``).

    Raises:
        ValueError: ``cfg`` is not a classification config.
    """
    if not isinstance(cfg, OmniglotConfig):
        raise ValueError(f"Prototypical Networks classify; {cfg.task} is {cfg.loss} regression: "
                         "use them with an OmniglotConfig")
    convnet = ConvNet4(cfg.n_way, num_filters=cfg.num_filters, image_size=cfg.image_size,
                       downsample=cfg.downsample)
    return ProtoNet(convnet.features)


def prototypes(embeddings: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Mean embedding of each class: [n_support, d], labels [n_support] in 0..n_way-1 -> [n_way, d].

    Every class needs a support example (``protonet_loss`` checks); runs under ``vmap``.
    """
    one_hot = F.one_hot(labels, n_way).to(embeddings.dtype)        # [n_support, n_way]
    counts = one_hot.sum(0)                                         # [n_way]
    # c_k = 1/|S_k| Σ_{i: y_i = k} f(x_i)
    return (one_hot.T @ embeddings) / counts[:, None]


def squared_distances(queries: Tensor, centres: Tensor) -> Tensor:
    """‖q_i − c_k‖² for queries [n, d] and centres [m, d] -> [n, m]."""
    return (queries[:, None, :] - centres[None, :, :]).pow(2).sum(-1)


def task_logits(model: nn.Module, params: Params, x_support: Tensor, y_support: Tensor, x_query: Tensor,
                n_way: int) -> Tensor:
    """Logits −‖f(x_query) − c_k‖² [n_query, n_way] for one task.

    Support and query images are embedded in one batch (batch norm uses batch statistics,
    as in the course's MAML, whose query predictions also depend on the query batch).
    """
    embeddings = functional_call(model, params, (torch.cat([x_support, x_query]),))
    support, query = embeddings[:x_support.shape[0]], embeddings[x_support.shape[0]:]
    return -squared_distances(query, prototypes(support, y_support, n_way))


def protonet_loss(model: nn.Module, params: Params, tasks: TaskBatch, cfg: OmniglotConfig, *,
                  vectorize: bool | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean query cross-entropy of the prototype classifier over T tasks.

    Returns:
        loss: scalar.
        metrics: ``"query_loss"`` [T], ``"accuracy"`` [T].

    Raises:
        ValueError: some task has a class without support examples (no prototype).
    """
    tasks = place_tasks(tasks, params)
    counts = F.one_hot(tasks.y_support, cfg.n_way).sum(1)          # [T, n_way]
    if bool((counts == 0).any()):
        raise ValueError(f"every class 0..{cfg.n_way - 1} needs a support example in every task; "
                         f"check n_way={cfg.n_way} matches the sampler's labels")

    def one_task(p: Params, x_support: Tensor, y_support: Tensor, x_query: Tensor, y_query: Tensor
                 ) -> tuple[Tensor, Tensor]:
        logits = task_logits(model, p, x_support, y_support, x_query, cfg.n_way)
        return F.cross_entropy(logits, y_query), (logits.argmax(-1) == y_query).float().mean()

    query_loss, accuracy = over_tasks(one_task, params, tasks,
                                      vectorize=pick_vectorize(model, tasks, cfg, vectorize))
    return query_loss.mean(), {"query_loss": query_loss.detach(), "accuracy": accuracy.detach()}


def score_protonet(model: nn.Module, tasks: TaskBatch, cfg: OmniglotConfig, num_steps: int = 0) -> Tensor:
    """[T, 1] query accuracy of each test task (no inner steps: ``num_steps`` is ignored)."""
    with torch.no_grad():
        _, metrics = protonet_loss(model, detach_params(get_params(model)), tasks, cfg)
    return metrics["accuracy"][:, None].cpu()


PROTONET = Algorithm(
    name="protonet", label="ProtoNets", reference="Snell, Swersky & Zemel, NeurIPS 2017",
    build=build_protonet, objective=protonet_loss, score=score_protonet,
    task_kinds=("cross_entropy",), adapts_by_gradient=False)
