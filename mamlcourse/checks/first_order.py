"""Exercise 4: first-order MAML, and the second-order term it drops."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
from ._setup import SEEDS, gradient, loss_at, sine_model, sine_tasks
from .inner_loop import INNER_LRS, check_one_step

STEPS = (1, 2, 1)


@single_threaded
def check_first_order_step(first_order_inner_step) -> None:
    """Exercise 4.1: ``first_order_inner_step(model, params, x_support, y_support, *, loss_fn, inner_lr)``.

    The values must be those of θ - α∇L_support(θ); the gradient of adapted_params with
    respect to params must be the identity (the inner gradient is a constant).
    """
    check_one_step("4.1", first_order_inner_step, first_order=True,
                   description="your step equals θ - α∇L_support(θ) on 3 tasks, and its gradient "
                   "with respect to params is the identity: the inner gradient is a constant.")


def _meta_gradient(model, params: Params, task, inner_lr: float, steps: int, *,
                   first_order: bool = True, score_on: str = "query") -> Params:
    adapted = inner_loop(model, params, task.x_support, task.y_support, loss_fn=F.mse_loss,
                         inner_lr=inner_lr, num_inner_steps=steps, first_order=first_order)
    x, y = (task.x_query, task.y_query) if score_on == "query" else (task.x_support, task.y_support)
    return dict(zip(params, torch.autograd.grad(loss_at(model, adapted, x, y), list(params.values()))))


@single_threaded
def check_first_order_meta_gradient(first_order_meta_gradient) -> None:
    """Exercise 4.2: ``first_order_meta_gradient(model, params, task, *, loss_fn, inner_lr,
    num_inner_steps) -> grads``.

    The result must be ∇L_query at adapted_params, a dict shaped like params, on 3 tasks.
    """
    exercise = "4.2"
    name = getattr(first_order_meta_gradient, "__name__", "first_order_meta_gradient")
    for seed, inner_lr, steps in zip(SEEDS, INNER_LRS, STEPS):
        model, params = sine_model(seed)
        task = sine_tasks(seed, 1)[0]
        before = snapshot(params)
        result = call(exercise, first_order_meta_gradient, model, params, task, loss_fn=F.mse_loss,
                      inner_lr=inner_lr, num_inner_steps=steps)
        check_model_untouched(exercise, model, before, fix="leave params as they are")
        check_params(exercise, name, result, params, what="grads")
        expected = _meta_gradient(model, params, task, inner_lr, steps)
        if close(result, expected):
            continue
        adapted = inner_loop(model, params, task.x_support, task.y_support, loss_fn=F.mse_loss,
                             inner_lr=inner_lr, num_inner_steps=steps, first_order=True)
        candidates = [
            (_meta_gradient(model, params, task, inner_lr, steps, first_order=False),
             "your gradient still contains the second-order term: it is MAML's full "
             "meta-gradient (I - α∇²L_support) ∇L_query(θ'). First-order MAML drops the Hessian "
             "and keeps only ∇L_query(θ'): take the gradient with respect to adapted_params, "
             "detached from params"),
            (gradient(model, params, task.x_query, task.y_query),
             "you took the query gradient at params: first-order MAML takes it at "
             "adapted_params, after the inner loop"),
            (gradient(model, {k: v.detach().requires_grad_() for k, v in adapted.items()},
                      task.x_support, task.y_support),
             "you differentiated the support loss: the meta-gradient is the gradient of the "
             "query loss at adapted_params"),
            ({k: -g for k, g in expected.items()},
             "your gradient has the wrong sign: return ∇L_query, the optimizer subtracts it"),
        ]
        for candidate, message in candidates:
            if close(result, candidate):
                raise fail(exercise, message)
        label, diff = largest_difference(result, expected)
        raise fail(exercise, f"your gradient differs from ∇L_query(θ') by up to {diff:.3g} in "
                   f"{label!r}: adapt with num_inner_steps steps on the support set, then take the "
                   f"gradient of the query loss with respect to adapted_params")
    passed(exercise, "your gradient equals ∇L_query at adapted_params on 3 tasks: first-order "
           "MAML's meta-gradient.")
