"""Exercise 7: Hessian-vector products, the meta-gradient by hand, and timing an HVP."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch.func import grad

from .. import meta_gradient as mg
from ..maml import Params, inner_loop
from ._core import (
    call,
    check_model_untouched,
    check_params,
    close,
    fail,
    largest_difference,
    passed,
    single_threaded,
    snapshot,
)
from ._setup import SEEDS, sine_model, sine_tasks

INNER_LRS = (0.05, 0.1, 0.03)   # one per seed: a hard-coded step size cannot pass
K_STEPS = (3, 2, 4)


def _float64_setup(seed: int):
    """A float64 sine MLP, its params (detached), one task and a random direction v."""
    model, params = sine_model(seed)
    model = model.double()
    params = {n: p.detach() for n, p in model.named_parameters()}
    task = sine_tasks(seed, 1)[0]
    task = type(task)(*(t.double() for t in task))
    g = torch.Generator().manual_seed(500 + seed)
    v = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in params.items()}
    return model, params, task, v


def _check_hvp(exercise: str, fn, how: str) -> None:
    name = getattr(fn, "__name__", "hvp")
    for seed in SEEDS:
        model, params, task, v = _float64_setup(seed)
        f = mg.task_loss_fn(model, task.x_support, task.y_support, F.mse_loss)
        before = snapshot(params)
        result = call(exercise, fn, f, params, v)
        check_params(exercise, name, result, params, what="hv")
        if any(not torch.equal(params[k], before[k]) for k in params):
            raise fail(exercise, f"your {name} changed params in place: leave them as they are")
        expected = mg.hvp_double_backward(f, params, v)
        difference = mg.hvp_finite_difference(f, params, v)
        if close(result, expected, rtol=1e-6):
            if not close(result, difference, rtol=1e-5):  # cannot happen for a right answer; guards the check
                raise fail(exercise, "your H v matches autograd's but not a finite difference: report this")
            continue
        gradient = grad(f)(params)
        ones = {k: torch.ones_like(p) for k, p in params.items()}
        candidates = [
            (gradient, "you returned the gradient ∇L itself, not H v: differentiate a second time"),
            (mg.hvp_double_backward(f, params, ones),
             "you returned H times a vector of ones: differentiate <∇L, v> (the dot product of the gradient "
             "with the vector), not the sum of the gradient's entries"),
            ({k: -t for k, t in expected.items()}, "your H v has the wrong sign"),
            (v, "you returned the vector v unchanged"),
        ]
        for candidate, message in candidates:
            if close(result, candidate, rtol=1e-6):
                raise fail(exercise, message)
        label, diff = largest_difference(result, expected)
        raise fail(exercise, f"your H v differs from a central finite difference (∇L(θ + εv) − ∇L(θ − εv)) / 2ε "
                   f"by up to {diff:.3g} in {label!r}. {how}")
    passed(exercise, "your H v equals autograd's and a float64 finite difference of the gradient, on 3 tasks.")


@single_threaded
def check_hvp_double_backward(hvp_double_backward) -> None:
    """Exercise 7.1: ``hvp_double_backward(f, params, vector) -> Params``, H v by reverse over reverse."""
    _check_hvp("7.1", hvp_double_backward,
               "Take grads = torch.autograd.grad(f(leaves), ..., create_graph=True), then the gradient of "
               "Σ <grads, v> with respect to the same leaves")


@single_threaded
def check_hvp_forward_over_reverse(hvp_forward_over_reverse) -> None:
    """Exercise 7.2: ``hvp_forward_over_reverse(f, params, vector) -> Params``, jvp over grad."""
    exercise = "7.2"
    model, params, task, v = _float64_setup(SEEDS[0])
    f = mg.task_loss_fn(model, task.x_support, task.y_support, F.mse_loss)
    result = call(exercise, hvp_forward_over_reverse, f, params, v)
    swapped = torch.func.jvp(grad(f), (v,), (params,))[1]
    if isinstance(result, tuple) and len(result) == 2:
        raise fail(exercise, "you returned both outputs of jvp: (∇L(θ), H v). Return only the second, "
                   "the tangent: `_, hv = jvp(...)`")
    if isinstance(result, dict) and close(result, swapped, rtol=1e-6):
        raise fail(exercise, "you swapped the point and the direction: jvp(grad(f), (params,), (vector,)) "
                   "takes the point θ first and the direction v second")
    _check_hvp(exercise, hvp_forward_over_reverse,
               "Use `_, hv = torch.func.jvp(torch.func.grad(f), (params,), (vector,))`")


def _by_hand_cases():
    for seed, inner_lr, k in zip(SEEDS, INNER_LRS, K_STEPS):
        model, params, task, _ = _float64_setup(seed)
        yield model, params, task, inner_lr, k


def _library(model, params, task, inner_lr, k) -> Params:
    return mg.meta_gradient_by_hand(model, params, task, loss_fn=F.mse_loss, inner_lr=inner_lr, num_inner_steps=k)


def _variant(model, params, task, inner_lr, k, *, hessian_at="own", order="backward", sign=-1.0,
             loss="support", first_order=False) -> Params:
    """Wrong (and right) ways to assemble ∏(I − αH_j) ∇L_query(θ_k)."""
    path = inner_loop(model, params, task.x_support, task.y_support, loss_fn=F.mse_loss, inner_lr=inner_lr,
                      num_inner_steps=k, first_order=True, trajectory=True)
    g = grad(mg.task_loss_fn(model, task.x_query, task.y_query, F.mse_loss))(path[-1])
    if first_order:
        return g
    xs, ys = (task.x_support, task.y_support) if loss == "support" else (task.x_query, task.y_query)
    f = mg.task_loss_fn(model, xs, ys, F.mse_loss)
    points = {"own": path[:-1], "theta": [path[0]] * k, "adapted": path[1:]}[hessian_at]
    points = list(reversed(points)) if order == "backward" else list(points)
    for point in points:
        hg = mg.hvp_double_backward(f, point, g)
        g = {n: g[n] + sign * inner_lr * hg[n] for n in g}
    return g


def _check_by_hand(exercise: str, fn, *, one_step: bool) -> None:
    name = getattr(fn, "__name__", "meta_gradient")
    for model, params, task, inner_lr, k in _by_hand_cases():
        k = 1 if one_step else k
        before = snapshot(dict(model.named_parameters()))
        # squared_error: F.mse_loss's values, and it also works under jvp (F.mse_loss does not, torch 2.13)
        kwargs = dict(loss_fn=mg.squared_error, inner_lr=inner_lr)
        if not one_step:
            kwargs["num_inner_steps"] = k
        result = call(exercise, fn, model, params, task, **kwargs)
        check_model_untouched(exercise, model, before, fix="leave params as they are")
        check_params(exercise, name, result, params, what="meta_gradient")
        expected = _library(model, params, task, inner_lr, k)
        if close(result, expected, rtol=1e-6):
            continue
        args = (model, params, task, inner_lr, k)
        candidates = [
            (_variant(*args, first_order=True),
             "you returned ∇L_query(θ') alone: that is first-order MAML. MAML's meta-gradient subtracts "
             "α H ∇L_query(θ'), with H the support Hessian"),
            (_variant(*args, sign=+1.0),
             "you added α H g: the Jacobian of θ' = θ − α∇L_support(θ) is (I − αH), so subtract it"),
            (_variant(*args, loss="query"),
             "you took the Hessian of the query loss: the inner step differentiates the support loss, so H "
             "is ∇²L_support"),
            (_variant(*args, hessian_at="adapted"),
             "you took each Hessian one step too late (at θ_{j+1}, for one step at adapted_params): the "
             "factor of step j is (I − αH_j) with H_j the support Hessian at θ_j, the point the step started from"),
        ]
        if not one_step:
            candidates += [
                (_variant(*args, hessian_at="theta"),
                 "you used the Hessian at θ for every factor: each step has its own, H_j at θ_j. Keep the "
                 "inner iterates (trajectory=True) and take H_j at each"),
                (_variant(*args, order="forward"),
                 "you applied the factors in the wrong order: the backward pass starts from the last step, "
                 "so apply (I − αH_{k−1}) first and (I − αH_0) last. The factors do not commute"),
                (_variant(model, params, task, inner_lr, 1) if k > 1 else None,
                 "you applied only one factor (I − αH_0) ∇L_query(θ_1): adapt with num_inner_steps steps and "
                 "apply one factor per step"),
            ]
        for candidate, message in candidates:
            if candidate is not None and close(result, candidate, rtol=1e-6):
                raise fail(exercise, message)
        label, diff = largest_difference(result, expected)
        raise fail(exercise, f"your meta-gradient differs from autograd's by up to {diff:.3g} in {label!r}: "
                   f"start from g = ∇L_query(θ_k), then for each step from the last to the first replace g by "
                   f"g − α H_j g")
    what = ("(I − αH)∇L_query(θ')" if one_step else "(I − αH_0)···(I − αH_{k−1})∇L_query(θ_k)")
    passed(exercise, f"your {what} equals autograd's meta-gradient through the library's inner loop, on 3 tasks.")


@single_threaded
def check_one_step_meta_gradient(one_step_meta_gradient) -> None:
    """Exercise 7.3: ``one_step_meta_gradient(model, params, task, *, loss_fn, inner_lr) -> Params``."""
    _check_by_hand("7.3", one_step_meta_gradient, one_step=True)


@single_threaded
def check_k_step_meta_gradient(k_step_meta_gradient) -> None:
    """Exercise 7.4: ``k_step_meta_gradient(model, params, task, *, loss_fn, inner_lr, num_inner_steps)``."""
    _check_by_hand("7.4", k_step_meta_gradient, one_step=False)


# Exercise 7.5: call durations (ms) of a fake function: a slow first call, then the timed ones,
# two of them slow (the machine busy elsewhere). Median 5 ms; mean 19 ms; median with the warm-up 22.5 ms.
WARM_UP_MS = 80.0
TIMED_MS = (5.0, 40.0, 5.0, 40.0, 5.0)


def check_median_ms(median_ms) -> None:
    """Exercise 7.5: ``median_ms(fn, repeats) -> float``: one untimed warm-up call, then the median in ms."""
    exercise = "7.5"
    calls = []

    def fake() -> None:
        duration = WARM_UP_MS if not calls else TIMED_MS[(len(calls) - 1) % len(TIMED_MS)]
        calls.append(duration)
        time.sleep(duration / 1000)

    result = call(exercise, median_ms, fake, len(TIMED_MS))
    if not isinstance(result, (int, float)) or isinstance(result, bool) or not math.isfinite(result):
        raise fail(exercise, f"median_ms must return a number of milliseconds, got {result!r}")
    if len(calls) == len(TIMED_MS):
        raise fail(exercise, "you called fn only `repeats` times: call it once first, untimed (the warm-up pays "
                   "one-off costs such as allocating memory), then time `repeats` calls")
    if len(calls) != len(TIMED_MS) + 1:
        raise fail(exercise, f"fn was called {len(calls)} times for repeats = {len(TIMED_MS)}: call it once to warm "
                   f"up, then exactly `repeats` times, timing each")
    if result < 1.0:
        raise fail(exercise, f"you returned {result:.4g}: that looks like seconds. Multiply by 1000 for milliseconds")
    if 15.0 <= result <= 21.0:
        raise fail(exercise, f"you returned {result:.1f} ms, the mean: two slow calls (the machine busy elsewhere) "
                   f"pull it up. Return the median, statistics.median(times)")
    if 21.0 < result <= 35.0:
        raise fail(exercise, f"you returned {result:.1f} ms: the warm-up call's time is in your list. Time only the "
                   f"`repeats` calls after it")
    if not 4.0 <= result < 15.0:
        raise fail(exercise, f"you returned {result:.1f} ms; the timed calls took 5, 40, 5, 40 and 5 ms, so the median "
                   f"is about 5 ms. Time each call with time.perf_counter() before and after")
    passed(exercise, f"your median is {result:.1f} ms for calls of 5, 40, 5, 40, 5 ms after a warm-up: robust "
           "to the slow ones.")

