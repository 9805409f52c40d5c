"""Exercise 2: one inner step θ' = θ - α∇L_support(θ), then k of them, second order."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..maml import Params, inner_loop
from ..tasks import seeded_generator
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
from ._setup import SEEDS, gradient, sine_model, sine_tasks, step

INNER_LRS = (0.1, 0.03, 0.25)   # one per seed: a hard-coded step size cannot pass
STEPS = (2, 3, 0, 1)            # num_inner_steps per case of Exercise 2.2


def diagnose_step(result: Params, params: Params, grads: Params, inner_lr: float,
                  n_support: int) -> str | None:
    """What is wrong with ``result`` as one step θ - α∇L(θ), or None if it is right."""
    if close(result, step(params, grads, inner_lr)):
        return None
    if close(result, params):
        return ("adapted_params equal params: no step was taken. Compute "
                "{name: p - inner_lr * g} and return that new dict")
    if close(result, step(params, grads, -inner_lr)):
        return ("you stepped up the gradient instead of down: the inner step is "
                "θ' = θ - α ∇L_support(θ), p - inner_lr * g")
    delta = torch.cat([(result[k] - p).detach().flatten() for k, p in params.items()])
    down = torch.cat([-g.detach().flatten() for g in grads.values()])
    size = float(delta @ down / (down @ down))
    if close(delta, size * down, rtol=1e-3):
        if abs(size / (inner_lr * n_support) - 1) < 1e-3:
            return (f"your step is {n_support} times too large, one per support example: "
                    f"did you sum the loss over examples? Use loss_fn, which averages")
        return (f"your step points the right way but has the wrong size ({size:.4g} times the "
                f"gradient, while inner_lr = {inner_lr}): use the inner_lr argument, not a number")
    name, diff = largest_difference(result, step(params, grads, inner_lr))
    return (f"adapted_params differ from θ - α∇L_support(θ) (by up to {diff:.3g} in {name!r}). "
            f"Check that support_loss = loss_fn(predictions on x_support, y_support) and that "
            f"each parameter moves by -inner_lr times its own gradient (zip the names and "
            f"gradients in the same order)")


NO_CREATE_GRAPH = ("the adapted parameters do not depend on params through the gradient: did you "
                   "pass create_graph=True to torch.autograd.grad? Without it you get first-order "
                   "MAML (Exercise 4), not MAML")


def diagnose_order(student: Params | None, second: Params, first: Params, *,
                   want_second: bool, first_order_message: str = NO_CREATE_GRAPH) -> str | None:
    """Is the dependence of adapted_params on params second order (``want_second``) or first?

    ``student``, ``second`` and ``first`` are probe gradients (``_core.probe_gradient``);
    ``first_order_message`` is the complaint when second order was wanted and first found.
    """
    if student is None:
        return ("adapted_params do not depend on params at all, so no meta-gradient can reach "
                "params: don't detach them or compute them under torch.no_grad()"
                + ("" if want_second else "; first-order MAML detaches only the gradient, "
                   "θ' = θ - α·g with g a constant, so dθ'/dθ = I"))
    if want_second and close(student, first) and not close(first, second):
        return first_order_message
    if not want_second and close(student, second) and not close(first, second):
        return ("your adapted_params still carry second-order terms: first-order MAML treats the "
                "inner gradient as a constant, so compute it without create_graph=True (or "
                "detach it) and keep θ' = θ - α·g attached to θ")
    if not close(student, second if want_second else first):
        return ("adapted_params have the right values but depend on params in an unexpected "
                "way: build each one as p - inner_lr * g from params itself, without .data, "
                "detach() or new leaf tensors")
    return None


def _second_and_first(model, params, x_support, y_support, inner_lr, steps, weights):
    kwargs = dict(loss_fn=F.mse_loss, inner_lr=inner_lr, num_inner_steps=steps)
    second = inner_loop(model, params, x_support, y_support, **kwargs)
    first = inner_loop(model, params, x_support, y_support, first_order=True, **kwargs)
    return (second, probe_gradient(params, second, weights) if steps else None,
            probe_gradient(params, first, weights) if steps else None)


def check_one_step(exercise: str, inner_step, *, first_order: bool, description: str) -> None:
    """Shared by Exercise 2.1 (second order) and 4.1 (first order)."""
    name = getattr(inner_step, "__name__", "inner_step")
    for seed, inner_lr in zip(SEEDS, INNER_LRS):
        model, params = sine_model(seed)
        task = sine_tasks(seed, 1)[0]
        before = snapshot(params)
        result = call(exercise, inner_step, model, params, task.x_support, task.y_support,
                      loss_fn=F.mse_loss, inner_lr=inner_lr)
        check_model_untouched(exercise, model, before)
        check_params(exercise, name, result, params)
        grads = gradient(model, params, task.x_support, task.y_support)
        problem = diagnose_step(result, params, grads, inner_lr, len(task.x_support))
        if problem:
            raise fail(exercise, problem)
        weights = random_like(params, seeded_generator(seed))
        _, second, first = _second_and_first(model, params, task.x_support, task.y_support,
                                             inner_lr, 1, weights)
        problem = diagnose_order(probe_gradient(params, result, weights), second, first,
                                 want_second=not first_order)
        if problem:
            raise fail(exercise, problem)
    passed(exercise, description)


@single_threaded
def check_inner_step(inner_step) -> None:
    """Exercise 2.1: ``inner_step(model, params, x_support, y_support, *, loss_fn, inner_lr)``.

    Compared with θ - α∇L_support(θ) on three sine tasks and step sizes, then its gradient
    with respect to params with second-order MAML's, I - α∇²L_support.
    """
    check_one_step("2.1", inner_step, first_order=False,
                   description="your step equals θ - α∇L_support(θ) on 3 tasks, leaves the model "
                   "alone, and keeps the second-order dependence on params.")


@single_threaded
def check_adapt(adapt) -> None:
    """Exercise 2.2: ``adapt(model, params, x_support, y_support, *, loss_fn, inner_lr, num_inner_steps)``.

    Compared with ``mamlcourse.inner_loop`` for 0 to 3 steps, values and second-order gradient.
    """
    exercise = "2.2"
    name = getattr(adapt, "__name__", "adapt")
    for case, steps in enumerate(STEPS):
        seed, inner_lr = SEEDS[case % len(SEEDS)], INNER_LRS[case % len(INNER_LRS)]
        model, params = sine_model(seed)
        task = sine_tasks(seed, 1)[0]
        before = snapshot(params)
        result = call(exercise, adapt, model, params, task.x_support, task.y_support,
                      loss_fn=F.mse_loss, inner_lr=inner_lr, num_inner_steps=steps)
        check_model_untouched(exercise, model, before)
        if steps == 0 and result is None:
            raise fail(exercise, "with num_inner_steps = 0 your function returned None: start "
                       "from adapted_params = params, so that zero steps return params")
        check_params(exercise, name, result, params)
        weights = random_like(params, seeded_generator(seed))
        expected, second, first = _second_and_first(model, params, task.x_support, task.y_support,
                                                    inner_lr, steps, weights)
        if not close(result, expected):
            grads = gradient(model, params, task.x_support, task.y_support)
            one = inner_loop(model, params, task.x_support, task.y_support, loss_fn=F.mse_loss,
                             inner_lr=inner_lr, num_inner_steps=1)
            if steps >= 2 and close(result, step(params, grads, steps * inner_lr)):
                raise fail(exercise, "every step used the gradient at params: compute each step's "
                           "gradient at the adapted_params of the step before")
            if steps >= 2 and close(result, one):
                raise fail(exercise, f"you took one step where num_inner_steps = {steps}: each step "
                           f"must start from the previous one, adapted_params = inner_step(model, "
                           f"adapted_params, ...), not from params")
            for other in (steps - 1, steps + 1):
                if other >= 0 and close(result, inner_loop(
                        model, params, task.x_support, task.y_support, loss_fn=F.mse_loss,
                        inner_lr=inner_lr, num_inner_steps=other)):
                    raise fail(exercise, f"you took {other} steps where num_inner_steps = {steps}: "
                               f"check the range of your loop")
            if steps == 0:
                raise fail(exercise, "with num_inner_steps = 0, adapted_params must be params "
                           "unchanged")
            problem = diagnose_step(result, params, grads, inner_lr, len(task.x_support))
            hint = f" ({problem})" if steps == 1 and problem else ""
            label, diff = largest_difference(result, expected)
            raise fail(exercise, f"after {steps} steps adapted_params differ from "
                       f"mamlcourse.inner_loop's by up to {diff:.3g} in {label!r}{hint}. Does "
                       f"check_inner_step pass?")
        if steps:
            problem = diagnose_order(
                probe_gradient(params, result, weights), second, first, want_second=True,
                first_order_message=f"after {steps} steps the adapted parameters depend on params "
                "only to first order: does inner_step pass create_graph=True, and does your loop "
                "keep each step's result as it is (no detach between steps)?")
            if problem:
                raise fail(exercise, problem)
    passed(exercise, "0 to 3 steps match mamlcourse.inner_loop, values and second-order "
           "gradients.")
