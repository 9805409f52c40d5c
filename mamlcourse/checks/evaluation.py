"""Exercise 5: evaluation, a score per test task and a 95% confidence interval."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import SineConfig
from ..evaluate import adaptation_curve, confidence_interval
from ..tasks import seeded_generator
from ._core import call, check_model_untouched, close, fail, passed, shape, single_threaded, snapshot
from ._setup import SEEDS, per_task_losses, sine_model, sine_tasks

SHAPES = ((5,), (8, 3), (50,), (12, 4))
EVAL_CASES = ((0.1, 1, 6), (0.03, 3, 5), (0.25, 2, 7))  # (inner_lr, num_inner_steps, num_tasks)


def _ci_mistake(ci95: Tensor, values: Tensor) -> str | None:
    """Which plausible mistake gives ``ci95`` for ``values`` [n, ...], or None."""
    n = values.shape[0]
    population, sample = values.std(0, correction=0), values.std(0, correction=1)
    standard_error = population / math.sqrt(n)
    candidates = [
        (1.96 * sample / math.sqrt(n),
         "you used the sample std (correction=1, torch.std's default); the course, like the "
         "paper's code (NumPy's default), uses the population std: values.std(dim=0, correction=0)"),
        (1.96 * population, "you forgot to divide by sqrt(n): the interval is about the mean, so "
         "it shrinks as 1/sqrt(num_tasks), 1.96 * std / sqrt(n)"),
        (1.96 * sample, "you forgot to divide by sqrt(n), and used the sample std: the half-width "
         "is 1.96 * values.std(dim=0, correction=0) / sqrt(n)"),
        (1.96 * population / n, "you divided by n, not sqrt(n): 1.96 * std / sqrt(n)"),
        (1.96 * population ** 2 / math.sqrt(n), "you used the variance: take the standard "
         "deviation, its square root"),
        (2 * 1.96 * standard_error, "ci95 is the half-width (the interval is mean ± ci95), you "
         "returned the full width"),
    ]
    for expected, message in candidates:
        if close(ci95, expected):
            return message
    ratio = (ci95 / standard_error).flatten()
    if close(ratio, torch.full_like(ratio, float(ratio[0]))):
        return (f"your interval is {float(ratio[0]):.4g} times std / sqrt(n): a 95% interval uses "
                f"1.96, the 97.5% quantile of the normal distribution")
    return None


@single_threaded
def check_confidence_interval(confidence_interval_fn) -> None:
    """Exercise 5.1: ``confidence_interval(values) -> (mean, ci95)``, reducing over dim 0.

    Compared with ``mamlcourse.confidence_interval`` (1.96 * population std / sqrt(n)) on
    1-D and 2-D inputs of 5 to 50 tasks.
    """
    exercise = "5.1"
    name = getattr(confidence_interval_fn, "__name__", "confidence_interval")
    for seed, size in enumerate(SHAPES):
        values = torch.rand(size, generator=seeded_generator(seed)) * 2 + 0.1
        given = values.clone()
        result = call(exercise, confidence_interval_fn, values)
        if not torch.equal(values, given):
            raise fail(exercise, "your function changed the values it was given: compute new "
                       "tensors, don't modify values in place")
        if not (isinstance(result, tuple) and len(result) == 2):
            raise fail(exercise, f"return two things, (mean, ci95); your {name} returned "
                       f"{type(result).__name__}")
        mean, ci95 = (torch.as_tensor(r, dtype=values.dtype) for r in result)
        expected_mean, expected_ci = confidence_interval(values)
        for label, got in (("mean", mean), ("ci95", ci95)):
            if got.shape != expected_mean.shape:
                raise fail(exercise, f"for values of shape {shape(values)} (tasks first) {label} "
                           f"should have shape {shape(expected_mean)}, yours has {shape(got)}: "
                           f"reduce over the tasks only, dim=0")
        if not close(mean, expected_mean):
            raise fail(exercise, "mean is not the average over tasks: values.mean(dim=0)")
        if not close(ci95, expected_ci):
            raise fail(exercise, _ci_mistake(ci95, values) or
                       "ci95 should be 1.96 * std / sqrt(n), with the population std "
                       "values.std(dim=0, correction=0) and n the number of tasks")
    passed(exercise, "mean and 1.96 * std / sqrt(n) match mamlcourse.confidence_interval on 1-D "
           "and 2-D inputs.")


@single_threaded
def check_evaluate_tasks(evaluate_tasks) -> None:
    """Exercise 5.2: ``evaluate_tasks(model, params, tasks, *, loss_fn, inner_lr, num_inner_steps)``.

    Returns one query MSE per task after adapting on its support set; compared with
    ``mamlcourse.evaluate.adaptation_curve``; the model's own parameters must not change.
    """
    exercise = "5.2"
    name = getattr(evaluate_tasks, "__name__", "evaluate_tasks")
    for seed, (inner_lr, steps, num_tasks) in zip(SEEDS, EVAL_CASES):
        model, params = sine_model(seed)
        tasks = sine_tasks(seed, num_tasks)
        before = snapshot(params)
        result = call(exercise, evaluate_tasks, model, params, tasks, loss_fn=F.mse_loss,
                      inner_lr=inner_lr, num_inner_steps=steps)
        check_model_untouched(exercise, model, before, fix="adapt a copy; evaluating must leave "
                              "θ as it was, or each test task starts from a different model")
        if result is None:
            raise fail(exercise, f"your {name} returned None: did you forget `return query_losses`?")
        if not isinstance(result, Tensor):
            raise fail(exercise, f"return a tensor of shape [num_tasks] (torch.stack(query_losses)), "
                       f"your {name} returned {type(result).__name__}")
        if result.shape != (num_tasks,):
            raise fail(exercise, f"return one score per task, shape [{num_tasks}] for {num_tasks} "
                       f"tasks; yours has shape {shape(result)}. The confidence interval needs "
                       f"every task's score, not their mean")
        cfg = SineConfig(inner_lr=inner_lr)
        expected = adaptation_curve(model, params, tasks, cfg, num_steps=steps, vectorize=False)[:, steps]
        if close(result, expected):
            continue
        candidates = [
            (per_task_losses(model, params, tasks, inner_lr, steps, adapt_on="query"),
             "you used the query set in the inner loop: adapt on the support set and score on the "
             "query set, or the score says nothing about new data"),
            (per_task_losses(model, params, tasks, inner_lr, steps, score_on="support"),
             "you scored on the support set: score adapted_params on each task's query set"),
            (per_task_losses(model, params, tasks, inner_lr, 0),
             "you scored params before adapting: run num_inner_steps inner steps on each task's "
             "support set first"),
        ]
        for other in (steps - 1, steps + 1):
            candidates.append((per_task_losses(model, params, tasks, inner_lr, other),
                               f"you took {other} inner steps where num_inner_steps = {steps}"))
        for candidate, message in candidates:
            if close(result, candidate.detach()):
                raise fail(exercise, message)
        raise fail(exercise, "your scores differ from the query MSE after adaptation: for each "
                   "task adapt params on (x_support, y_support) with num_inner_steps steps, then "
                   "return loss_fn(predictions on x_query, y_query)")
    passed(exercise, "your scores equal each task's query MSE after adaptation, and the model is "
           "untouched.")
