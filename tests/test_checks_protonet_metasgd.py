"""Exercise 8's checks: the right answers pass, plausible wrong answers get the message that names them."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from conftest import expect_fail, expect_pass
from mamlcourse import checks


# 8.1: prototypes and logits

def logits_variant(*, squared=True, negative=True, reduce="mean", order="label"):
    def protonet_logits(support_embeddings, y_support, query_embeddings, n_way):
        classes = range(n_way) if order == "label" else list(dict.fromkeys(y_support.tolist()))
        rows = []
        for k in classes:
            members = support_embeddings[y_support == k]
            rows.append({"mean": members.mean(0), "sum": members.sum(0), "first": members[0]}[reduce])
        centres = torch.stack(rows)
        distances = torch.cdist(query_embeddings, centres)
        distances = distances.pow(2) if squared else distances
        return -distances if negative else distances
    return protonet_logits


def test_protonet_logits_right_answer_passes(capsys):
    expect_pass(checks.check_protonet_logits, logits_variant(), capsys, "8.1")


@pytest.mark.parametrize("variant, fragments", [
    (dict(negative=False), ["smaller* logit"]),
    (dict(squared=False), ["use its square"]),
    (dict(reduce="first"), ["*mean* embedding"]),
    (dict(reduce="sum"), ["summed"]),
    (dict(order="appearance"), ["column k must be the prototype of label k"]),
])
def test_protonet_logits_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_protonet_logits, logits_variant(**variant), "8.1", *fragments)


def test_protonet_logits_of_the_wrong_shape_are_explained():
    expect_fail(checks.check_protonet_logits, lambda s, y, q, n: -torch.cdist(s, q).pow(2), "8.1", "[n_query, n_way]")


# 8.2: Meta-SGD's inner step

def meta_sgd_variant(*, create_graph=True, sign=-1.0, scalar=False, detach=False):
    def meta_sgd_inner_step(model, params, inner_lrs, x_support, y_support, *, loss_fn):
        loss = loss_fn(functional_call(model, params, (x_support,)), y_support)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        adapted = {}
        for (name, p), g in zip(params.items(), grads):
            lr = inner_lrs[name].detach() if detach else inner_lrs[name]
            adapted[name] = p + sign * (lr.mean() if scalar else lr) * g
        return adapted
    return meta_sgd_inner_step


def test_meta_sgd_right_answer_passes(capsys):
    expect_pass(checks.check_meta_sgd_inner_step, meta_sgd_variant(), capsys, "8.2")


@pytest.mark.parametrize("variant, fragments", [
    (dict(sign=+1.0), ["stepped up the gradient"]),
    (dict(scalar=True), ["own α, elementwise"]),
    (dict(detach=True), ["inner_lrs get no meta-gradient"]),
    (dict(create_graph=False), ["first order", "create_graph=True"]),
])
def test_meta_sgd_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_meta_sgd_inner_step, meta_sgd_variant(**variant), "8.2", *fragments)
