"""Exercise 3: the meta-loss over a batch of tasks, and the outer update."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import SineConfig
from ..maml import meta_loss
from ..tasks import seeded_generator
from ._core import (
    call,
    check_model_untouched,
    close,
    fail,
    largest_difference,
    passed,
    single_threaded,
    snapshot,
)
from ._setup import SEEDS, per_task_losses, sine_model, sine_tasks, step

CASES = ((0.1, 1, 4), (0.03, 2, 3), (0.25, 1, 5))  # (inner_lr, num_inner_steps, tasks_per_batch)
OUTER_LR = 0.05


def _value_mistake(value: Tensor, model, params, tasks, inner_lr, steps) -> str | None:
    """Which plausible mistake gives ``value``, or None when none does."""
    per_task = per_task_losses(model, params, tasks, inner_lr, steps)
    candidates = [
        (per_task_losses(model, params, tasks, inner_lr, steps, adapt_on="query").mean(),
         "you used the query set in the inner loop: adapt on x_support, y_support and score the "
         "adapted_params on x_query, y_query, data the inner loop has not seen"),
        (per_task_losses(model, params, tasks, inner_lr, steps, score_on="support").mean(),
         "you scored adapted_params on the support set: the meta-loss is the query loss, on data "
         "the inner loop has not seen"),
        (per_task_losses(model, params, tasks, inner_lr, 0).mean(),
         "you scored params, not adapted_params: run the inner loop on each task's support set "
         "first, then score the result on its query set"),
        (per_task.sum(),
         "you summed the query losses over tasks: meta_loss is their mean (divide by the number "
         "of tasks), so that its size does not depend on tasks_per_batch"),
        (per_task.mean() / len(tasks),
         "you averaged the loss over tasks twice: take the mean of the per-task query losses "
         "once (each query loss is already a mean over its examples)"),
        (per_task[-1], "your meta_loss is the query loss of the last task only: keep every "
         "task's query loss (append it to a list) and average them"),
        (per_task[0], "your meta_loss is the query loss of the first task only: average the "
         "query losses of all tasks"),
    ]
    for expected, message in candidates:
        if close(value, expected):
            return message
    return None


@single_threaded
def check_meta_loss(compute_meta_loss) -> None:
    """Exercise 3.1: ``compute_meta_loss(model, params, tasks, *, loss_fn, inner_lr, num_inner_steps)``.

    Compared with ``mamlcourse.meta_loss`` on batches of 3 to 5 sine tasks: the value, and
    its second-order gradient with respect to params.
    """
    exercise = "3.1"
    name = getattr(compute_meta_loss, "__name__", "compute_meta_loss")
    for seed, (inner_lr, steps, num_tasks) in zip(SEEDS, CASES):
        model, params = sine_model(seed)
        tasks = sine_tasks(seed, num_tasks)
        before = snapshot(params)
        value = call(exercise, compute_meta_loss, model, params, tasks, loss_fn=F.mse_loss,
                     inner_lr=inner_lr, num_inner_steps=steps)
        check_model_untouched(exercise, model, before)
        if value is None:
            raise fail(exercise, f"your {name} returned None: did you forget `return meta_loss`?")
        if isinstance(value, numbers.Number):
            raise fail(exercise, "meta_loss must be a tensor that depends on params, not a Python "
                       "number: don't call .item() or float() on it, backward() needs the graph")
        if not isinstance(value, Tensor):
            raise fail(exercise, f"meta_loss must be a scalar tensor, your {name} returned "
                       f"{type(value).__name__}")
        if value.shape == (num_tasks,):
            raise fail(exercise, f"meta_loss has shape [{num_tasks}], one loss per task: average "
                       f"them into one number, torch.stack(query_losses).mean()")
        if value.numel() != 1:
            raise fail(exercise, f"meta_loss must be one number, yours has shape {list(value.shape)}")
        cfg = SineConfig(inner_lr=inner_lr, num_inner_steps=steps, vectorize=False)
        expected, _ = meta_loss(model, params, tasks, cfg)
        if not close(value.reshape(()), expected):
            mistake = _value_mistake(value.reshape(()), model, params, tasks, inner_lr, steps)
            raise fail(exercise, mistake or f"your meta_loss is {float(value):.5g} where "
                       f"mamlcourse.meta_loss gives {float(expected):.5g}: adapt each task on its "
                       f"support set, score it on its query set, and average over tasks")
        if not value.requires_grad:
            raise fail(exercise, "meta_loss does not depend on params: don't detach it or compute "
                       "it under torch.no_grad(); the outer update backpropagates through it")
        student = torch.autograd.grad(value.reshape(()), list(params.values()), allow_unused=True)
        student = {k: torch.zeros_like(p) if g is None else g for (k, p), g in zip(params.items(), student)}
        wanted = dict(zip(params, torch.autograd.grad(expected, list(params.values()))))
        first = per_task_losses(model, params, tasks, inner_lr, steps, first_order=True).mean()
        first = dict(zip(params, torch.autograd.grad(first, list(params.values()))))
        if not close(student, wanted):
            if close(student, first):
                raise fail(exercise, "your meta_loss has the right value but a first-order "
                           "gradient: adapt with first_order=False (the default), so that the "
                           "gradient flows through the inner step")
            label, diff = largest_difference(student, wanted)
            raise fail(exercise, f"your meta_loss has the right value but its gradient differs "
                       f"from MAML's (by up to {diff:.3g} in {label!r}): compute it from params "
                       f"itself, without .data, detach() or copies")
    passed(exercise, "your meta_loss equals mamlcourse.meta_loss, value and second-order "
           "gradient, on 3 batches of tasks.")


@single_threaded
def check_meta_step(meta_step) -> None:
    """Exercise 3.2: ``meta_step(model, optimizer, tasks, *, loss_fn, inner_lr, num_inner_steps) -> float``.

    Runs one outer step with SGD (β = 0.05) from parameters that still hold gradients of a
    previous step, and compares the new parameters with θ - β∇meta_loss(θ).
    """
    exercise = "3.2"
    name = getattr(meta_step, "__name__", "meta_step")
    for seed, (inner_lr, steps, num_tasks) in zip(SEEDS, CASES):
        model, params = sine_model(seed)
        tasks = sine_tasks(seed, num_tasks)
        generator = seeded_generator(seed)
        stale = {k: torch.randn(p.shape, generator=generator) for k, p in params.items()}
        for k, p in params.items():
            p.grad = stale[k].clone()  # what a previous step left behind
        cfg = SineConfig(inner_lr=inner_lr, num_inner_steps=steps, vectorize=False)
        expected_loss, _ = meta_loss(model, params, tasks, cfg)
        grads = dict(zip(params, torch.autograd.grad(expected_loss, list(params.values()))))
        before = snapshot(params)
        optimizer = torch.optim.SGD(model.parameters(), lr=OUTER_LR)
        value = call(exercise, meta_step, model, optimizer, tasks, loss_fn=F.mse_loss,
                     inner_lr=inner_lr, num_inner_steps=steps)
        after = snapshot(params)
        if not close(after, step(before, grads, OUTER_LR)):
            both = {k: grads[k] + stale[k] for k in grads}
            candidates = [
                (before, "the model's parameters did not change: call optimizer.step() after "
                 "meta_loss.backward()"),
                (step(before, both, OUTER_LR), "gradients from an earlier step were added to this "
                 "one: call optimizer.zero_grad() before meta_loss.backward()"),
                (step(before, stale, OUTER_LR), "you called optimizer.step() before "
                 "meta_loss.backward(), so it used the gradients left over from an earlier step: "
                 "zero_grad(), backward(), then step()"),
                (step(before, grads, -OUTER_LR), "you stepped up the meta-gradient instead of "
                 "down: minimise meta_loss, call meta_loss.backward() (not (-meta_loss))"),
            ]
            for candidate, message in candidates:
                if close(after, candidate):
                    raise fail(exercise, message)
            label, diff = largest_difference(after, step(before, grads, OUTER_LR))
            raise fail(exercise, f"after your step the parameters differ from θ - β∇meta_loss(θ) "
                       f"by up to {diff:.3g} in {label!r}: compute meta_loss on params = "
                       f"mc.get_params(model) (does check_meta_loss pass?), then zero_grad, "
                       f"backward, step")
        if isinstance(value, Tensor):
            raise fail(exercise, "return meta_loss.item(), a Python float, not the tensor: a list "
                       "of tensors would keep every step's graph alive in memory")
        if not isinstance(value, numbers.Real):
            raise fail(exercise, f"return meta_loss.item(), a float; your {name} returned "
                       f"{type(value).__name__}")
        if not close(value, expected_loss):
            after_loss, _ = meta_loss(model, params, tasks, cfg)
            if close(value, after_loss):
                raise fail(exercise, "you returned the meta-loss after the update: return the one "
                           "you called backward() on")
            raise fail(exercise, f"you returned {value:.5g}, but the meta-loss of this batch "
                       f"before the step is {float(expected_loss):.5g}")
    passed(exercise, "one step of your meta_step moves params to θ - β∇meta_loss(θ) and "
           "returns the meta-loss, on 3 batches of tasks.")

