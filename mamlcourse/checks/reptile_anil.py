"""Exercise 6: Reptile (Nichol et al. 2018) and ANIL (Raghu et al. 2020), MAML's two simplifications.

The references are the library's, ``mamlcourse.algorithms``:

- Reptile (``reptile.task_weights``): θ' = k SGD steps on all of the task's examples,
  support and query; θ <- θ + ε (θ' - θ). No meta-gradient at all.
- ANIL (``anil.adapt``): the inner loop adapts only the head (the last layer); the body
  keeps θ. The meta-gradient still reaches the body through the head's inner steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..algorithms import anil, reptile
from ..config import SineConfig
from ..maml import Params, inner_loop
from ..tasks import Task, TaskBatch, seeded_generator
from ._core import (
    call,
    check_model_untouched,
    check_params,
    close,
    fail,
    largest_difference,
    passed,
    probe_gradient,
    random_like,
    single_threaded,
    snapshot,
)
from ._setup import SEEDS, gradient, sine_model, sine_tasks
from .inner_loop import INNER_LRS, diagnose_order

REPTILE_CASES = ((0.1, 3, 0.5), (0.03, 5, 0.25), (0.25, 1, 0.1))  # (inner_lr, steps, outer_lr)
ANIL_STEPS = (1, 2, 3)
HEAD = ("layers.2.weight", "layers.2.bias")   # SineMLP's last layer


def reptile_reference(model, params: Params, task: Task, *, inner_lr: float, num_inner_steps: int,
                      outer_lr: float, halves: str = "both") -> Params:
    """θ + ε (θ' - θ), θ' after ``num_inner_steps`` SGD steps on the task's examples.

    ``halves`` ("both", "support" or "query") says which examples; the library trains on both.
    """
    x, y = {"both": (torch.cat([task.x_support, task.x_query]), torch.cat([task.y_support, task.y_query])),
            "support": (task.x_support, task.y_support), "query": (task.x_query, task.y_query)}[halves]
    cfg = SineConfig(inner_lr=inner_lr, num_inner_steps=num_inner_steps)
    # task_weights trains on cat(x_support, x_query): an empty query set leaves exactly (x, y).
    one = TaskBatch.stack([Task(x, y, x[:0], y[:0])])
    phi, _ = reptile.task_weights(model, params, one, cfg, vectorize=False)
    return {k: (p + outer_lr * (phi[k][0] - p)).detach() for k, p in params.items()}


def anil_reference(model, params: Params, x_support, y_support, *, inner_lr: float,
                   num_inner_steps: int) -> Params:
    """The library's ANIL inner loop: MAML's steps on the head, the body as it is."""
    cfg = SineConfig(inner_lr=inner_lr, num_inner_steps=num_inner_steps)
    return anil.adapt(model, params, x_support, y_support, cfg)


@single_threaded
def check_reptile_step(reptile_step) -> None:
    """Exercise 6.1: ``reptile_step(model, params, task, *, loss_fn, inner_lr, num_inner_steps, outer_lr)``.

    Returns the new params θ + ε (θ' - θ), detached, θ' trained on all of the task's
    examples; compared with ``mamlcourse.algorithms.reptile`` on 3 tasks.
    """
    exercise = "6.1"
    name = getattr(reptile_step, "__name__", "reptile_step")
    for seed, (inner_lr, steps, outer_lr) in zip(SEEDS, REPTILE_CASES):
        model, params = sine_model(seed)
        task = sine_tasks(seed, 1)[0]
        before = snapshot(params)
        result = call(exercise, reptile_step, model, params, task, loss_fn=F.mse_loss,
                      inner_lr=inner_lr, num_inner_steps=steps, outer_lr=outer_lr)
        check_model_untouched(exercise, model, before, fix="reptile_step returns the new params "
                              "and leaves the model as it is; adapt a copy")
        check_params(exercise, name, result, params, what="new_params")
        kwargs = dict(inner_lr=inner_lr, num_inner_steps=steps, outer_lr=outer_lr)
        expected = reptile_reference(model, params, task, **kwargs)
        if not close(result, expected):
            adapted = reptile_reference(model, params, task, **{**kwargs, "outer_lr": 1.0})
            toward = {k: adapted[k] - p for k, p in before.items()}
            candidates = [
                (before, "new_params equal params: move params toward adapted_params, "
                 "params + outer_lr * (adapted_params - params)"),
                (adapted, "you returned adapted_params: Reptile moves params only a fraction "
                 "outer_lr of the way toward them, params + outer_lr * (adapted_params - params)"),
                ({k: p - outer_lr * toward[k] for k, p in before.items()},
                 "you moved params away from adapted_params: Reptile moves toward them, "
                 "params + outer_lr * (adapted_params - params)"),
                ({k: adapted[k] - outer_lr * toward[k] for k in before},
                 "you swapped params and adapted_params: the update starts from params, "
                 "params + outer_lr * (adapted_params - params)"),
                (reptile_reference(model, params, task, halves="support", **kwargs),
                 "you trained on the support set only: Reptile has no use for the split, its inner "
                 "loop trains on all of the task's examples, torch.cat([task.x_support, "
                 "task.x_query]) and the same for y"),
                (reptile_reference(model, params, task, halves="query", **kwargs),
                 "you trained on the query set only: Reptile's inner loop trains on all of the "
                 "task's examples, support and query together"),
            ]
            if steps > 1:
                candidates.append((reptile_reference(model, params, task, **{**kwargs, "num_inner_steps": 1}),
                                   f"you took one inner step where num_inner_steps = {steps}"))
            for candidate, message in candidates:
                if close(result, candidate):
                    raise fail(exercise, message)
            label, diff = largest_difference(result, expected)
            raise fail(exercise, f"new_params differ from params + outer_lr * (adapted_params - "
                       f"params) by up to {diff:.3g} in {label!r}, with adapted_params after "
                       f"num_inner_steps SGD steps on all of the task's examples")
        if any(t.grad_fn is not None for t in result.values()):
            raise fail(exercise, "return detached tensors (.detach()): Reptile never "
                       "backpropagates through its inner loop, and a graph kept from step to step "
                       "grows until memory runs out")
    passed(exercise, "your update is params + outer_lr * (adapted_params - params) on 3 tasks, "
           "with no graph kept.")


@single_threaded
def check_anil_inner_loop(anil_inner_loop) -> None:
    """Exercise 6.2: ``anil_inner_loop(model, params, x_support, y_support, *, loss_fn, inner_lr,
    num_inner_steps, head_names)``.

    The head (``head_names``) must take MAML's inner steps, second order; every other
    parameter must come back as it is in params. Compared with ``mamlcourse.algorithms.anil``.
    """
    exercise = "6.2"
    name = getattr(anil_inner_loop, "__name__", "anil_inner_loop")
    for seed, inner_lr, steps in zip(SEEDS, INNER_LRS, ANIL_STEPS):
        model, params = sine_model(seed)
        task = sine_tasks(seed, 1)[0]
        before = snapshot(params)
        result = call(exercise, anil_inner_loop, model, params, task.x_support, task.y_support,
                      loss_fn=F.mse_loss, inner_lr=inner_lr, num_inner_steps=steps,
                      head_names=set(HEAD))
        check_model_untouched(exercise, model, before)
        check_params(exercise, name, result, params)
        kwargs = dict(inner_lr=inner_lr, num_inner_steps=steps)
        expected = anil_reference(model, params, task.x_support, task.y_support, **kwargs)
        body = [k for k in params if k not in HEAD]
        if not close({k: result[k] for k in body}, {k: params[k] for k in body}):
            maml = inner_loop(model, params, task.x_support, task.y_support, loss_fn=F.mse_loss,
                              **kwargs)
            if close({k: result[k] for k in body}, {k: maml[k] for k in body}):
                raise fail(exercise, "you adapted the body too: ANIL's inner loop changes only the "
                           "head (the names in head_names); every other parameter stays as it is "
                           "in params")
            raise fail(exercise, "the body changed: parameters not in head_names must come back "
                       "as they are in params")
        head = {k: result[k] for k in HEAD}
        if not close(head, {k: expected[k] for k in HEAD}):
            if close(head, {k: params[k] for k in HEAD}):
                raise fail(exercise, "the head did not change: take num_inner_steps gradient steps "
                           "on the head's parameters, head - inner_lr * ∇_head L_support")
            if steps > 1 and close(head, {k: anil_reference(
                    model, params, task.x_support, task.y_support,
                    **{**kwargs, "num_inner_steps": 1})[k] for k in HEAD}):
                raise fail(exercise, f"the head took one step where num_inner_steps = {steps}: "
                           f"take each step from the previous step's head")
            grads = gradient(model, params, task.x_support, task.y_support)
            if steps == 1 and close(head, {k: params[k] + inner_lr * grads[k] for k in HEAD}):
                raise fail(exercise, "you stepped up the gradient instead of down: "
                           "head - inner_lr * ∇_head L_support")
            label, diff = largest_difference(head, {k: expected[k] for k in HEAD})
            raise fail(exercise, f"the adapted head differs from MAML's inner steps on the head by "
                       f"up to {diff:.3g} in {label!r}: compute the support loss with the whole "
                       f"model (body from params, head adapted so far) and step the head only")
        weights = random_like(params, seeded_generator(seed))
        # Every inner gradient a constant (what create_graph=False gives): MAML's first-order
        # inner loop with step size 0 on the body.
        lrs = {k: (inner_lr if k in HEAD else 0.0) for k in params}
        first = inner_loop(model, params, task.x_support, task.y_support, loss_fn=F.mse_loss,
                           inner_lr=lrs, num_inner_steps=steps, first_order=True)
        problem = diagnose_order(probe_gradient(params, result, weights),
                                 probe_gradient(params, expected, weights),
                                 probe_gradient(params, first, weights), want_second=True,
                                 first_order_message="the adapted head does not depend on params "
                                 "through the gradient: pass create_graph=True, so the meta-"
                                 "gradient reaches the body through the head's inner steps")
        if problem:
            raise fail(exercise, problem)
    passed(exercise, "only the head moved, by MAML's second-order inner steps, and the body came "
           "back as it is in params, on 3 tasks.")
