"""Exercise 8: a prototypical network's logits, and Meta-SGD's inner step, on Omniglot-shaped inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..algorithms.protonet import prototypes, squared_distances
from ..maml import Params, inner_loop
from ..models import ConvNet4
from ._core import call, check_params, close, fail, largest_difference, passed, single_threaded
from ._setup import SEEDS


def _embedding_task(seed: int, n_way: int = 4, k_shot: int = 3, n_query: int = 7, dim: int = 16):
    """Random support/query embeddings, the support in shuffled order (labels not sorted)."""
    g = torch.Generator().manual_seed(700 + seed)
    labels = torch.arange(n_way).repeat_interleave(k_shot)
    labels = labels[torch.randperm(len(labels), generator=g)]
    centres = 3 * torch.randn(n_way, dim, generator=g)
    support = centres[labels] + torch.randn(len(labels), dim, generator=g)
    query = centres[torch.randint(n_way, (n_query,), generator=g)] + torch.randn(n_query, dim, generator=g)
    return support, labels, query, n_way


def _first_example_prototypes(support, labels, n_way):
    return torch.stack([support[(labels == k).nonzero()[0, 0]] for k in range(n_way)])


def _appearance_order_prototypes(support, labels, n_way):
    order = list(dict.fromkeys(labels.tolist()))
    return torch.stack([support[labels == k].mean(0) for k in order])


@single_threaded
def check_protonet_logits(protonet_logits) -> None:
    """Exercise 8.1: ``protonet_logits(support_embeddings, y_support, query_embeddings, n_way)`` -> [n_query, n_way].

    The logits must be −‖f(x_query) − c_k‖², c_k the mean support embedding of class k.
    """
    exercise = "8.1"
    name = getattr(protonet_logits, "__name__", "protonet_logits")
    for seed in SEEDS:
        support, labels, query, n_way = _embedding_task(seed)
        result = call(exercise, protonet_logits, support, labels, query, n_way)
        if not isinstance(result, torch.Tensor):
            raise fail(exercise, f"your {name} must return a tensor of logits, got {type(result).__name__}")
        if result.shape != (len(query), n_way):
            raise fail(exercise, f"your logits have shape {list(result.shape)}; they must be [n_query, n_way] = "
                       f"[{len(query)}, {n_way}]: one row per query embedding, one column per class")
        centres = prototypes(support, labels, n_way)
        expected = -squared_distances(query, centres)
        if close(result, expected):
            continue
        candidates = [
            (squared_distances(query, centres),
             "your logits are +‖q − c_k‖²: a larger distance must give a *smaller* logit, use the negative"),
            (-torch.cdist(query, centres),
             "you used the Euclidean distance ‖q − c_k‖; Prototypical Networks use its square, −‖q − c_k‖²"),
            (-squared_distances(query, _first_example_prototypes(support, labels, n_way)),
             "your prototypes are one support example per class: a prototype is the *mean* embedding of all "
             "the class's support examples"),
            (-squared_distances(query, centres * torch.bincount(labels, minlength=n_way)[:, None]),
             "you summed the support embeddings of each class: divide by the number of examples (the mean)"),
            (-squared_distances(query, _appearance_order_prototypes(support, labels, n_way)),
             "your classes are in the order they first appear in the support set: column k must be the "
             "prototype of label k (index by label, e.g. support[y_support == k].mean(0))"),
        ]
        for candidate, message in candidates:
            if close(result, candidate):
                raise fail(exercise, message)
        diff = float((result.detach() - expected).abs().max())
        raise fail(exercise, f"your logits differ from −‖q − c_k‖² by up to {diff:.3g}: c_k is the mean support "
                   f"embedding of class k, and the logit of class k is minus the squared distance to it")
    passed(exercise, "your logits are −‖f(x_query) − c_k‖² with c_k the class means, on 3 shuffled support sets.")


def _conv_setup(seed: int):
    """A small ConvNet4 (8 filters), 5-way 1-shot images, and positive per-weight step sizes α."""
    g = torch.Generator().manual_seed(800 + seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConvNet4(5, num_filters=8)
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    inner_lrs = {n: (0.2 + 0.8 * torch.rand(p.shape, generator=g)).requires_grad_() for n, p in params.items()}
    x = (torch.rand(10, 1, 28, 28, generator=g) > 0.85).float()
    y = torch.arange(5).repeat(2)
    return model, params, inner_lrs, x[:5], y[:5], x[5:], y[5:]


def _meta_sgd_step(model, params, inner_lrs, x, y, *, create_graph=True, sign=-1.0, scalar=False,
                   detach_lrs=False) -> Params:
    loss = F.cross_entropy(functional_call(model, params, (x,)), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    out = {}
    for (name, p), g in zip(params.items(), grads):
        lr = inner_lrs[name].detach() if detach_lrs else inner_lrs[name]
        lr = lr.mean() if scalar else lr
        out[name] = p + sign * lr * g
    return out


def _gradients(model, params, inner_lrs, adapted, x_query, y_query) -> dict[str, torch.Tensor]:
    """∂L_query(θ')/∂θ and ∂L_query(θ')/∂α, names prefixed ``theta:`` and ``alpha:`` (zeros where unused)."""
    loss = F.cross_entropy(functional_call(model, adapted, (x_query,)), y_query)
    inputs = {**{f"theta:{n}": p for n, p in params.items()}, **{f"alpha:{n}": a for n, a in inner_lrs.items()}}
    grads = torch.autograd.grad(loss, list(inputs.values()), allow_unused=True)
    return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(inputs.items(), grads)}


@single_threaded
def check_meta_sgd_inner_step(meta_sgd_inner_step) -> None:
    """Exercise 8.2: ``meta_sgd_inner_step(model, params, inner_lrs, x_support, y_support, *, loss_fn)``.

    The values must be θ − α ⊙ ∇L_support(θ), and the query loss at them must be differentiable
    in θ (second order) and in every α.
    """
    exercise = "8.2"
    name = getattr(meta_sgd_inner_step, "__name__", "meta_sgd_inner_step")
    for seed in SEEDS:
        model, params, inner_lrs, x_s, y_s, x_q, y_q = _conv_setup(seed)
        result = call(exercise, meta_sgd_inner_step, model, params, inner_lrs, x_s, y_s, loss_fn=F.cross_entropy)
        check_params(exercise, name, result, params)
        expected = inner_loop(model, params, x_s, y_s, loss_fn=F.cross_entropy, inner_lr=inner_lrs,
                              num_inner_steps=1)
        wrong_values = [
            (_meta_sgd_step(model, params, inner_lrs, x_s, y_s, sign=+1.0),
             "you stepped up the gradient: θ' = θ − α ⊙ ∇L_support(θ)"),
            (_meta_sgd_step(model, params, inner_lrs, x_s, y_s, scalar=True),
             "you used one step size for all the weights of a tensor (a mean or a scalar): Meta-SGD multiplies "
             "each gradient entry by its own α, elementwise: inner_lrs[name] * g"),
            (params, "adapted_params equal params: no step was taken"),
        ]
        if not close(result, expected):
            for candidate, message in wrong_values:
                if close(result, candidate):
                    raise fail(exercise, message)
            label, diff = largest_difference(result, expected)
            raise fail(exercise, f"adapted_params differ from θ − α ⊙ ∇L_support(θ) by up to {diff:.3g} in {label!r}")
        if not any(t.requires_grad for t in result.values()):
            raise fail(exercise, "adapted_params do not depend on params or inner_lrs: no meta-gradient can reach "
                       "them. Build them from params and inner_lrs without .detach() or torch.no_grad()")
        got = _gradients(model, params, inner_lrs, result, x_q, y_q)
        want = _gradients(model, params, inner_lrs, expected, x_q, y_q)
        if close(got, want):
            continue
        alpha = {k: v for k, v in got.items() if k.startswith("alpha:")}
        if all(float(v.abs().max()) == 0 for v in alpha.values()):
            raise fail(exercise, "inner_lrs get no meta-gradient: you detached them (or used their values only). "
                       "Meta-SGD learns α by differentiating through the step, so use inner_lrs[name] as given")
        first_order = _gradients(model, params, inner_lrs,
                                 _meta_sgd_step(model, params, inner_lrs, x_s, y_s, create_graph=False), x_q, y_q)
        if close(got, first_order):
            raise fail(exercise, "the meta-gradient of params is first order: pass create_graph=True to "
                       "torch.autograd.grad so the outer loop differentiates through ∇L_support(θ)")
        label, diff = largest_difference(got, want)
        raise fail(exercise, f"the meta-gradient through your step differs from the library's by up to {diff:.3g} "
                   f"in {label!r}: keep the graph of the inner gradient and of inner_lrs")
    passed(exercise, "your step is θ − α ⊙ ∇L_support(θ), and the query loss after it is differentiable in θ "
           "(second order) and in every α, on 3 Omniglot-shaped tasks.")
