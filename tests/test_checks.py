"""The exercise checks: a right answer passes, and plausible wrong answers get the message meant for them.

Each exercise has a right answer (the same maths as its solution notebook) and wrong
answers written the way a student might get it wrong; every wrong answer must fail with
the message that names its mistake.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

import mamlcourse as mc
from conftest import expect_fail, expect_pass
from mamlcourse import checks
from mamlcourse.checks import ExerciseCheckFailed, ExerciseNotDone


# ---------------------------------------------------------------------------------------
# Exercise 1.1: sampling an episode.

def sample_episode(images, *, n_way, k_shot, k_query, generator):
    classes = torch.randperm(images.shape[0], generator=generator)[:n_way]
    support, query = [], []
    for c in classes:
        drawings = torch.randperm(images.shape[1], generator=generator)[:k_shot + k_query]
        support.append(images[c, drawings[:k_shot]])
        query.append(images[c, drawings[k_shot:]])
    labels = torch.arange(n_way)
    return mc.Task(torch.cat(support), labels.repeat_interleave(k_shot),
                   torch.cat(query), labels.repeat_interleave(k_query))


def episode_variant(*, separate_draws=False, class_labels=False, first_classes=False,
                    first_drawings=False, stacked=False, float_labels=False, global_rng=False,
                    query_labels_reversed=False):
    def sample(images, *, n_way, k_shot, k_query, generator):
        g = None if global_rng else generator
        num_classes, num_drawings = images.shape[:2]
        classes = torch.arange(n_way) if first_classes else torch.randperm(num_classes, generator=g)[:n_way]
        support, query = [], []
        for c in classes:
            if first_drawings:
                drawings = torch.arange(k_shot + k_query)
            else:
                drawings = torch.randperm(num_drawings, generator=g)[:k_shot + k_query]
            chosen_query = drawings[k_shot:]
            if separate_draws:  # support and query drawn independently of each other
                chosen_query = torch.randperm(num_drawings, generator=g)[:k_query]
            support.append(images[c, drawings[:k_shot]])
            query.append(images[c, chosen_query])
        labels = classes.clone() if class_labels else torch.arange(n_way)
        query_labels = labels.flip(0) if query_labels_reversed else labels
        x_support, x_query = torch.stack(support), torch.stack(query)
        if not stacked:
            x_support, x_query = x_support.flatten(0, 1), x_query.flatten(0, 1)
        y_support, y_query = labels.repeat_interleave(k_shot), query_labels.repeat_interleave(k_query)
        if float_labels:
            y_support, y_query = y_support.float(), y_query.float()
        return mc.Task(x_support, y_support, x_query, y_query)
    return sample


def test_episode_right_answer_passes(capsys):
    expect_pass(checks.check_sample_episode, sample_episode, capsys, "1.1")


@pytest.mark.parametrize("variant, fragments", [
    (dict(separate_draws=True), ["your support and query sets share images", "torch.randperm"]),
    (dict(class_labels=True), ["labels must be 0..n_way-1", "original class indices"]),
    (dict(first_classes=True), ["you always pick the first n_way classes"]),
    (dict(first_drawings=True), ["you always take the first k_shot + k_query drawings"]),
    (dict(stacked=True), ["put the classes one after the other", "[n_way * k_shot"]),
    (dict(float_labels=True), ["torch.long", "F.cross_entropy"]),
    (dict(global_rng=True), ["same seed gave different episodes", "generator=generator"]),
    (dict(query_labels_reversed=True), ["query labels do not match the support labels"]),
])
def test_episode_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_sample_episode, episode_variant(**variant), "1.1", *fragments)


# ---------------------------------------------------------------------------------------
# Exercise 2: the inner step and the inner loop.

def inner_step(model, params, x_support, y_support, *, loss_fn, inner_lr):
    support_loss = loss_fn(functional_call(model, params, (x_support,)), y_support)
    grads = torch.autograd.grad(support_loss, list(params.values()), create_graph=True)
    return {name: p - inner_lr * g for (name, p), g in zip(params.items(), grads)}


def step_variant(*, create_graph=True, sign=1.0, summed=False, fixed_lr=None, in_place=False,
                 detach=False, into_params=False):
    def step(model, params, x_support, y_support, *, loss_fn, inner_lr):
        predictions = functional_call(model, params, (x_support,))
        support_loss = ((predictions - y_support) ** 2).sum() if summed else loss_fn(predictions, y_support)
        grads = torch.autograd.grad(support_loss, list(params.values()), create_graph=create_graph)
        lr = inner_lr if fixed_lr is None else fixed_lr
        if in_place:
            for p, g in zip(params.values(), grads):
                p.data -= lr * g
            return params
        if into_params:
            for (name, p), g in zip(list(params.items()), grads):
                params[name] = p - lr * g
            return params
        adapted = {name: p - sign * lr * g for (name, p), g in zip(params.items(), grads)}
        return {k: v.detach() for k, v in adapted.items()} if detach else adapted
    return step


def test_inner_step_right_answer_passes(capsys):
    expect_pass(checks.check_inner_step, inner_step, capsys, "2.1")


@pytest.mark.parametrize("variant, fragments", [
    (dict(create_graph=False), ["do not depend on params through the gradient", "create_graph=True"]),
    (dict(sign=-1.0), ["you stepped up the gradient instead of down"]),
    (dict(summed=True), ["5 times too large", "sum the loss"]),
    (dict(fixed_lr=0.01), ["wrong size", "use the inner_lr argument"]),
    (dict(in_place=True), ["the model's own parameters changed", "adapt a copy"]),
    (dict(detach=True), ["do not depend on params at all"]),
    (dict(into_params=True), ["changed the params dict it was given", "build a new dict"]),
])
def test_inner_step_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_inner_step, step_variant(**variant), "2.1", *fragments)


def adapt(model, params, x_support, y_support, *, loss_fn, inner_lr, num_inner_steps):
    adapted_params = params
    for _ in range(num_inner_steps):
        adapted_params = inner_step(model, adapted_params, x_support, y_support, loss_fn=loss_fn,
                                    inner_lr=inner_lr)
    return adapted_params


def adapt_from_params(model, params, x_support, y_support, *, loss_fn, inner_lr, num_inner_steps):
    adapted_params = params
    for _ in range(num_inner_steps):
        adapted_params = inner_step(model, params, x_support, y_support, loss_fn=loss_fn,
                                    inner_lr=inner_lr)
    return adapted_params


def adapt_one_too_many(model, params, x_support, y_support, *, loss_fn, inner_lr, num_inner_steps):
    adapted_params = params
    for _ in range(num_inner_steps + 1):
        adapted_params = inner_step(model, adapted_params, x_support, y_support, loss_fn=loss_fn,
                                    inner_lr=inner_lr)
    return adapted_params


def adapt_detaching(model, params, x_support, y_support, *, loss_fn, inner_lr, num_inner_steps):
    adapted_params = params
    for _ in range(num_inner_steps):
        adapted_params = inner_step(model, adapted_params, x_support, y_support, loss_fn=loss_fn,
                                    inner_lr=inner_lr)
        adapted_params = {k: v.detach().requires_grad_() for k, v in adapted_params.items()}
    return adapted_params


def adapt_without_start(model, params, x_support, y_support, *, loss_fn, inner_lr, num_inner_steps):
    for step in range(num_inner_steps):
        adapted_params = inner_step(model, params if step == 0 else adapted_params,  # noqa: F821
                                    x_support, y_support, loss_fn=loss_fn, inner_lr=inner_lr)
    return adapted_params  # noqa: F821


def test_adapt_right_answer_passes(capsys):
    expect_pass(checks.check_adapt, adapt, capsys, "2.2")


@pytest.mark.parametrize("fn, fragments", [
    (adapt_from_params, ["you took one step where num_inner_steps = 2", "not from params"]),
    (adapt_one_too_many, ["you took 3 steps where num_inner_steps = 2", "range"]),
    (adapt_detaching, ["do not depend on params at all"]),
    (adapt_without_start, ["your adapt_without_start raised UnboundLocalError", "adapted_params"]),
])
def test_adapt_mistakes_are_named(fn, fragments):
    expect_fail(checks.check_adapt, fn, "2.2", *fragments)


# ---------------------------------------------------------------------------------------
# Exercise 3: the meta-loss and the outer update.

def meta_loss_variant(*, adapt_on="support", score_on="query", reduce="mean", first_order=False,
                      item=False, steps=None):
    def compute_meta_loss(model, params, tasks, *, loss_fn, inner_lr, num_inner_steps):
        query_losses = []
        for task in tasks.tasks():
            halves = {"support": (task.x_support, task.y_support),
                      "query": (task.x_query, task.y_query)}
            adapted_params = mc.inner_loop(model, params, *halves[adapt_on], loss_fn=loss_fn,
                                           inner_lr=inner_lr, first_order=first_order,
                                           num_inner_steps=num_inner_steps if steps is None else steps)
            x, y = halves[score_on]
            query_losses.append(loss_fn(functional_call(model, adapted_params, (x,)), y))
        losses = torch.stack(query_losses)
        meta_loss = {"mean": losses.mean(), "sum": losses.sum(), "twice": losses.mean() / len(tasks),
                     "last": losses[-1], "none": losses}[reduce]
        return meta_loss.item() if item else meta_loss
    return compute_meta_loss


compute_meta_loss = meta_loss_variant()


def test_meta_loss_right_answer_passes(capsys):
    expect_pass(checks.check_meta_loss, compute_meta_loss, capsys, "3.1")


@pytest.mark.parametrize("variant, fragments", [
    (dict(adapt_on="query"), ["you used the query set in the inner loop"]),
    (dict(score_on="support"), ["you scored adapted_params on the support set"]),
    (dict(steps=0), ["you scored params, not adapted_params"]),
    (dict(reduce="sum"), ["you summed the query losses over tasks"]),
    (dict(reduce="twice"), ["you averaged the loss over tasks twice"]),
    (dict(reduce="last"), ["the query loss of the last task only"]),
    (dict(reduce="none"), ["one loss per task", "torch.stack(query_losses).mean()"]),
    (dict(first_order=True), ["first-order gradient", "first_order=False"]),
    (dict(item=True), ["not a Python number", ".item()"]),
])
def test_meta_loss_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_meta_loss, meta_loss_variant(**variant), "3.1", *fragments)


def meta_step_variant(*, zero_grad=True, step=True, step_first=False, ascend=False, item=True):
    def meta_step(model, optimizer, tasks, *, loss_fn, inner_lr, num_inner_steps):
        if zero_grad:
            optimizer.zero_grad()
        if step_first:
            optimizer.step()
        meta_loss = compute_meta_loss(model, mc.get_params(model), tasks, loss_fn=loss_fn,
                                      inner_lr=inner_lr, num_inner_steps=num_inner_steps)
        (-meta_loss if ascend else meta_loss).backward()
        if step and not step_first:
            optimizer.step()
        return meta_loss.item() if item else meta_loss
    return meta_step


def test_meta_step_right_answer_passes(capsys):
    expect_pass(checks.check_meta_step, meta_step_variant(), capsys, "3.2")


@pytest.mark.parametrize("variant, fragments", [
    (dict(zero_grad=False), ["gradients from an earlier step were added", "optimizer.zero_grad()"]),
    (dict(step=False), ["the model's parameters did not change", "optimizer.step()"]),
    (dict(step_first=True, zero_grad=False), ["you called optimizer.step() before meta_loss.backward()"]),
    (dict(ascend=True), ["you stepped up the meta-gradient instead of down"]),
    (dict(item=False), ["return meta_loss.item(), a Python float"]),
])
def test_meta_step_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_meta_step, meta_step_variant(**variant), "3.2", *fragments)


# ---------------------------------------------------------------------------------------
# Exercise 4: first-order MAML.

def first_order_step_variant(*, create_graph=False, detach_all=False, sign=1.0):
    def first_order_inner_step(model, params, x_support, y_support, *, loss_fn, inner_lr):
        support_loss = loss_fn(functional_call(model, params, (x_support,)), y_support)
        grads = torch.autograd.grad(support_loss, list(params.values()), create_graph=create_graph)
        adapted = {name: p - sign * inner_lr * g for (name, p), g in zip(params.items(), grads)}
        return {k: v.detach() for k, v in adapted.items()} if detach_all else adapted
    return first_order_inner_step


def test_first_order_step_right_answer_passes(capsys):
    expect_pass(checks.check_first_order_step, first_order_step_variant(), capsys, "4.1")


@pytest.mark.parametrize("variant, fragments", [
    (dict(create_graph=True), ["still carry second-order terms", "create_graph=True"]),
    (dict(detach_all=True), ["do not depend on params at all", "detaches only the gradient"]),
    (dict(sign=-1.0), ["you stepped up the gradient instead of down"]),
])
def test_first_order_step_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_first_order_step, first_order_step_variant(**variant), "4.1", *fragments)


def meta_gradient_variant(*, first_order=True, steps=None, score_on="query", sign=1.0):
    def first_order_meta_gradient(model, params, task, *, loss_fn, inner_lr, num_inner_steps):
        adapted_params = mc.inner_loop(model, params, task.x_support, task.y_support, loss_fn=loss_fn,
                                       inner_lr=inner_lr, first_order=first_order,
                                       num_inner_steps=num_inner_steps if steps is None else steps)
        x, y = (task.x_query, task.y_query) if score_on == "query" else (task.x_support, task.y_support)
        if first_order:
            adapted_params = {k: v.detach().requires_grad_() for k, v in adapted_params.items()}
            wrt = adapted_params
        else:
            wrt = params
        query_loss = loss_fn(functional_call(model, adapted_params, (x,)), y)
        grads = torch.autograd.grad(query_loss, list(wrt.values()))
        return {name: sign * g for name, g in zip(params, grads)}
    return first_order_meta_gradient


def test_first_order_meta_gradient_right_answer_passes(capsys):
    expect_pass(checks.check_first_order_meta_gradient, meta_gradient_variant(), capsys, "4.2")


@pytest.mark.parametrize("variant, fragments", [
    (dict(first_order=False), ["still contains the second-order term", "drops the Hessian"]),
    (dict(steps=0), ["you took the query gradient at params"]),
    (dict(score_on="support"), ["you differentiated the support loss"]),
    (dict(sign=-1.0), ["wrong sign"]),
])
def test_first_order_meta_gradient_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_first_order_meta_gradient, meta_gradient_variant(**variant), "4.2",
                *fragments)


# ---------------------------------------------------------------------------------------
# Exercise 5: evaluation.

def ci_variant(*, correction=0, divide="sqrt", z=1.96, dim=0, variance=False):
    def confidence_interval(values):
        n = values.shape[0]
        mean = values.mean(dim=dim)
        spread = values.var(dim=dim, correction=correction) if variance else \
            values.std(dim=dim, correction=correction)
        scale = {"sqrt": n ** 0.5, "n": n, "none": 1}[divide]
        return mean, z * spread / scale
    return confidence_interval


def test_confidence_interval_right_answer_passes(capsys):
    expect_pass(checks.check_confidence_interval, ci_variant(), capsys, "5.1")


@pytest.mark.parametrize("variant, fragments", [
    (dict(correction=1), ["you used the sample std", "correction=0"]),
    (dict(divide="none"), ["you forgot to divide by sqrt(n)"]),
    (dict(divide="n"), ["you divided by n, not sqrt(n)"]),
    (dict(z=2.0), ["2 times std / sqrt(n)", "1.96"]),
    (dict(variance=True), ["you used the variance"]),
    (dict(dim=-1), ["should have shape [3]", "dim=0"]),
])
def test_confidence_interval_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_confidence_interval, ci_variant(**variant), "5.1", *fragments)


def evaluate_variant(*, adapt_on="support", steps=None, reduce=False, optimizer=False):
    def evaluate_tasks(model, params, tasks, *, loss_fn, inner_lr, num_inner_steps):
        query_losses = []
        for task in tasks.tasks():
            x, y = (task.x_support, task.y_support) if adapt_on == "support" else (task.x_query, task.y_query)
            if optimizer:  # fine-tune the model itself, as one would without functional params
                sgd = torch.optim.SGD(model.parameters(), lr=inner_lr)
                for _ in range(num_inner_steps):
                    sgd.zero_grad()
                    loss_fn(model(x), y).backward()
                    sgd.step()
                adapted_params = dict(model.named_parameters())
            else:
                adapted_params = mc.inner_loop(model, params, x, y, loss_fn=loss_fn, inner_lr=inner_lr,
                                               first_order=True,
                                               num_inner_steps=num_inner_steps if steps is None else steps)
            query_loss = loss_fn(functional_call(model, adapted_params, (task.x_query,)), task.y_query)
            query_losses.append(query_loss.detach())
        query_losses = torch.stack(query_losses)
        return query_losses.mean() if reduce else query_losses
    return evaluate_tasks


def test_evaluate_tasks_right_answer_passes(capsys):
    expect_pass(checks.check_evaluate_tasks, evaluate_variant(), capsys, "5.2")


@pytest.mark.parametrize("variant, fragments", [
    (dict(adapt_on="query"), ["you used the query set in the inner loop"]),
    (dict(steps=0), ["you scored params before adapting"]),
    (dict(reduce=True), ["one score per task", "shape [6]"]),
    (dict(optimizer=True), ["the model's own parameters changed", "adapt a copy"]),
])
def test_evaluate_tasks_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_evaluate_tasks, evaluate_variant(**variant), "5.2", *fragments)


# ---------------------------------------------------------------------------------------
# Exercise 6: Reptile and ANIL.

def reptile_variant(*, update="toward", keep_graph=False, in_place=False, support_only=False):
    def reptile_step(model, params, task, *, loss_fn, inner_lr, num_inner_steps, outer_lr):
        start = params if keep_graph else {k: p.detach() for k, p in params.items()}
        x, y = torch.cat([task.x_support, task.x_query]), torch.cat([task.y_support, task.y_query])
        if support_only:
            x, y = task.x_support, task.y_support
        adapted_params = mc.inner_loop(model, start, x, y, loss_fn=loss_fn, inner_lr=inner_lr,
                                       num_inner_steps=num_inner_steps, first_order=True)
        if in_place:
            with torch.no_grad():
                for k, p in params.items():
                    p += outer_lr * (adapted_params[k] - p)
            return params
        rules = {
            "toward": lambda p, a: p + outer_lr * (a - p),
            "away": lambda p, a: p - outer_lr * (a - p),
            "replace": lambda p, a: a,
        }
        new_params = {k: rules[update](p, adapted_params[k]) for k, p in start.items()}
        return new_params if keep_graph else {k: v.detach() for k, v in new_params.items()}
    return reptile_step


def test_reptile_right_answer_passes(capsys):
    expect_pass(checks.check_reptile_step, reptile_variant(), capsys, "6.1")


@pytest.mark.parametrize("variant, fragments", [
    (dict(update="away"), ["you moved params away from adapted_params"]),
    (dict(update="replace"), ["you returned adapted_params", "a fraction outer_lr"]),
    (dict(keep_graph=True), ["return detached tensors"]),
    (dict(in_place=True), ["the model's own parameters changed", "returns the new params"]),
    (dict(support_only=True), ["you trained on the support set only", "no use for the split"]),
])
def test_reptile_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_reptile_step, reptile_variant(**variant), "6.1", *fragments)


def anil_variant(*, adapt_body=False, create_graph=True, drop_body=False, steps=None):
    def anil_inner_loop(model, params, x_support, y_support, *, loss_fn, inner_lr, num_inner_steps,
                        head_names):
        adapted = {k: p for k, p in params.items() if adapt_body or k in head_names}
        for _ in range(num_inner_steps if steps is None else steps):
            support_loss = loss_fn(functional_call(model, {**params, **adapted}, (x_support,)), y_support)
            grads = torch.autograd.grad(support_loss, list(adapted.values()), create_graph=create_graph)
            adapted = {k: p - inner_lr * g for (k, p), g in zip(adapted.items(), grads)}
        return adapted if drop_body else {**params, **adapted}
    return anil_inner_loop


def test_anil_right_answer_passes(capsys):
    expect_pass(checks.check_anil_inner_loop, anil_variant(), capsys, "6.2")


@pytest.mark.parametrize("variant, fragments", [
    (dict(adapt_body=True), ["you adapted the body too"]),
    (dict(create_graph=False), ["the adapted head does not depend on params through the gradient"]),
    (dict(drop_body=True), ["adapted_params is missing", "layers.0.weight"]),
    (dict(steps=0), ["the head did not change"]),
])
def test_anil_mistakes_are_named(variant, fragments):
    expect_fail(checks.check_anil_inner_loop, anil_variant(**variant), "6.2", *fragments)


# ---------------------------------------------------------------------------------------
# How failures are reported.

def test_unwritten_exercise_is_reported_as_not_done():
    def inner_step(model, params, x_support, y_support, *, loss_fn, inner_lr):
        raise NotImplementedError("Exercise 2.1: take one gradient step on the support loss")

    with pytest.raises(ExerciseNotDone) as info:
        checks.check_inner_step(inner_step)
    assert isinstance(info.value, NotImplementedError)
    assert str(info.value).startswith("Exercise 2.1: inner_step is not written yet: replace its `raise "
                                      "NotImplementedError(...)` line with your code")


def test_a_crash_in_student_code_names_the_exercise_and_the_line():
    def inner_step(model, params, x_support, y_support, *, loss_fn, inner_lr):
        support_loss = loss_fn(functional_call(model, params, (x_support,)), y_support)
        grads = torch.autograd.grad(support_loss, list(params.values()), create_graph=True)
        return {name: p - inner_lr * g for name, p, g in zip(params, grads)}

    message = expect_fail(checks.check_inner_step, inner_step, "2.1", "your inner_step raised ValueError",
                          "not enough values to unpack")
    assert "line" in message and "for name, p, g in zip(params, grads)" in message
    assert "_core.py" not in message


def test_the_failure_renders_as_one_line_in_ipython():
    err = ExerciseCheckFailed("2.1", "you stepped up the gradient instead of down")
    lines = err._render_traceback_()
    assert len(lines) == 1
    assert "Exercise 2.1: you stepped up the gradient instead of down" in lines[0]


def test_passing_something_that_is_not_a_function_is_explained():
    expect_fail(checks.check_inner_step, None, "2.1", "pass your function itself")


def test_checks_leave_the_global_random_state_alone(capsys):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_inner_step(inner_step)
    assert torch.equal(torch.rand(3), expected)


def test_wrong_result_types_are_explained():
    expect_fail(checks.check_inner_step, lambda *a, **k: None, "2.1", "returned None",
                "return adapted_params")
    expect_fail(checks.check_inner_step, lambda model, params, *a, **k: list(params.values()), "2.1",
                "must be a dict")
