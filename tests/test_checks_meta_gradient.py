"""Exercise 7's checks: the right answers pass, plausible wrong answers get the message that names them."""

from __future__ import annotations

import statistics
import time

import pytest
import torch
from torch.func import functional_call, grad, jvp

import mamlcourse as mc
from conftest import expect_fail, expect_pass
from mamlcourse import checks


# 7.1 and 7.2: Hessian-vector products

def hvp_variant(*, create_graph=True, dot=True, second=True, sign=1.0):
    def hvp_double_backward(f, params, vector):
        leaves = {k: p.detach().requires_grad_() for k, p in params.items()}
        grads = torch.autograd.grad(f(leaves), list(leaves.values()), create_graph=create_graph)
        if not second:
            return {k: g.detach() for k, g in zip(leaves, grads)}
        inner = sum(((g * vector[k]) if dot else g).sum() for g, k in zip(grads, leaves))
        return {k: sign * h for k, h in zip(leaves, torch.autograd.grad(inner, list(leaves.values())))}
    return hvp_double_backward


def test_hvp_double_backward_right_answer_passes(capsys):
    expect_pass(checks.check_hvp_double_backward, hvp_variant(), capsys, "7.1")


@pytest.mark.parametrize("variant, fragments", [
    (dict(second=False), ["returned the gradient ∇L itself"]),
    (dict(dot=False), ["vector of ones", "dot product"]),
    (dict(sign=-1.0), ["wrong sign"]),
    (dict(create_graph=False), ["raised RuntimeError"]),
])
def test_hvp_double_backward_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_hvp_double_backward, hvp_variant(**variant), "7.1", *fragments)


def jvp_variant(*, both=False, swapped=False, primal=False):
    def hvp_forward_over_reverse(f, params, vector):
        point, direction = (vector, params) if swapped else (params, vector)
        out = jvp(grad(f), (point,), (direction,))
        return out if both else out[0] if primal else out[1]
    return hvp_forward_over_reverse


def test_hvp_forward_over_reverse_right_answer_passes(capsys):
    expect_pass(checks.check_hvp_forward_over_reverse, jvp_variant(), capsys, "7.2")


@pytest.mark.parametrize("variant, fragments", [
    (dict(both=True), ["both outputs of jvp", "`_, hv = jvp(...)`"]),
    (dict(swapped=True), ["swapped the point and the direction"]),
    (dict(primal=True), ["returned the gradient ∇L itself"]),
])
def test_hvp_forward_over_reverse_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_hvp_forward_over_reverse, jvp_variant(**variant), "7.2", *fragments)


# 7.3 and 7.4: the meta-gradient by hand

def by_hand_variant(*, sign=-1.0, hessian_loss="support", at="own", order="backward", first_order=False,
                    only_one=False, k_arg=True):
    def meta_gradient(model, params, task, *, loss_fn, inner_lr, num_inner_steps=1):
        k = 1 if only_one else num_inner_steps
        path = [params]
        for _ in range(num_inner_steps):
            p = path[-1]
            g = grad(lambda q: loss_fn(functional_call(model, q, (task.x_support,)), task.y_support))(p)
            path.append({n: p[n] - inner_lr * g[n] for n in p})
        g = grad(lambda q: loss_fn(functional_call(model, q, (task.x_query,)), task.y_query))(path[k if only_one else -1])
        if first_order:
            return g
        x, y = (task.x_support, task.y_support) if hessian_loss == "support" else (task.x_query, task.y_query)

        def f(q):
            return loss_fn(functional_call(model, q, (x,)), y)

        points = {"own": path[:k], "theta": [params] * k, "adapted": path[1:k + 1]}[at]
        for point in (reversed(points) if order == "backward" else points):
            _, hg = jvp(grad(f), (point,), (g,))
            g = {n: g[n] + sign * inner_lr * hg[n] for n in g}
        return g

    if k_arg:
        return meta_gradient

    def one_step_meta_gradient(model, params, task, *, loss_fn, inner_lr):
        return meta_gradient(model, params, task, loss_fn=loss_fn, inner_lr=inner_lr)
    return one_step_meta_gradient


def test_one_step_right_answer_passes(capsys):
    expect_pass(checks.check_one_step_meta_gradient, by_hand_variant(k_arg=False), capsys, "7.3")


@pytest.mark.parametrize("variant, fragments", [
    (dict(first_order=True), ["first-order MAML"]),
    (dict(sign=+1.0), ["you added α H g", "(I − αH)"]),
    (dict(hessian_loss="query"), ["Hessian of the query loss"]),
    (dict(at="adapted"), ["one step too late"]),
])
def test_one_step_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_one_step_meta_gradient, by_hand_variant(k_arg=False, **variant), "7.3", *fragments)


def test_k_step_right_answer_passes(capsys):
    expect_pass(checks.check_k_step_meta_gradient, by_hand_variant(), capsys, "7.4")


@pytest.mark.parametrize("variant, fragments", [
    (dict(at="theta"), ["Hessian at θ for every factor"]),
    (dict(order="forward"), ["wrong order", "do not commute"]),
    (dict(only_one=True), ["only one factor"]),
    (dict(first_order=True), ["first-order MAML"]),
])
def test_k_step_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_k_step_meta_gradient, by_hand_variant(**variant), "7.4", *fragments)


# 7.5: timing

def timing_variant(*, warm_up=True, reduce=statistics.median, unit=1000.0, time_warm_up=False):
    def median_ms(fn, repeats):
        times = []
        if warm_up:
            tic = time.perf_counter()
            fn()
            if time_warm_up:
                times.append(unit * (time.perf_counter() - tic))
        for _ in range(repeats):
            tic = time.perf_counter()
            fn()
            times.append(unit * (time.perf_counter() - tic))
        return reduce(times)
    return median_ms


def test_median_ms_right_answer_passes(capsys):
    expect_pass(checks.check_median_ms, timing_variant(), capsys, "7.5")


@pytest.mark.parametrize("variant, fragments", [
    (dict(reduce=statistics.mean), ["the mean", "median"]),
    (dict(warm_up=False), ["call it once first"]),
    (dict(unit=1.0), ["looks like seconds"]),
    (dict(time_warm_up=True), ["warm-up call's time is in your list"]),
])
def test_median_ms_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_median_ms, timing_variant(**variant), "7.5", *fragments)


def test_the_checks_are_listed_in_the_package():
    for name in ("check_hvp_double_backward", "check_hvp_forward_over_reverse", "check_one_step_meta_gradient",
                 "check_k_step_meta_gradient", "check_median_ms"):
        assert name in checks.__all__ and mc.checks is checks
