"""mamlcourse.meta_gradient: HVPs three ways agree, the hand-assembled meta-gradient equals autograd's."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import mamlcourse as mc
from mamlcourse import meta_gradient as mg


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sine_setup(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    model = mc.SineMLP().to(dtype)
    params = {n: p.detach() for n, p in mc.get_params(model).items()}
    task = mc.data.sine.SineTasks(k_shot=5, k_query=10).sample(1, mc.seeded_generator(seed))[0]
    return model, params, mc.Task(*(t.to(dtype) for t in task))


def test_the_three_hessian_vector_products_agree():
    model, params, task = sine_setup()
    f = mg.task_loss_fn(model, task.x_support, task.y_support, F.mse_loss)
    v = {n: torch.randn_like(p) for n, p in params.items()}
    reverse = mg.flat(mg.hvp_double_backward(f, params, v))
    forward = mg.flat(mg.hvp_forward_over_reverse(f, params, v))
    difference = mg.flat(mg.hvp_finite_difference(f, params, v))
    assert torch.allclose(reverse, forward, rtol=1e-10, atol=1e-12)
    assert torch.allclose(reverse, difference, rtol=1e-6, atol=1e-8)
    assert reverse.abs().max() > 1e-3


def test_the_squared_error_stands_in_for_mse_loss_with_the_same_values():
    a, b = torch.randn(7, 1), torch.randn(7, 1)
    assert torch.allclose(mg.squared_error(a, b), F.mse_loss(a, b))


@pytest.mark.parametrize("steps", [1, 3])
def test_the_meta_gradient_by_hand_equals_autograd(steps):
    model, params, task = sine_setup()
    by_hand = mg.flat(mg.meta_gradient_by_hand(model, params, task, loss_fn=F.mse_loss, inner_lr=0.05,
                                               num_inner_steps=steps))
    leaves = {n: p.clone().requires_grad_() for n, p in params.items()}
    adapted = mc.inner_loop(model, leaves, task.x_support, task.y_support, loss_fn=F.mse_loss, inner_lr=0.05,
                            num_inner_steps=steps)
    query = F.mse_loss(torch.func.functional_call(model, adapted, (task.x_query,)), task.y_query)
    expected = torch.cat([g.flatten() for g in torch.autograd.grad(query, list(leaves.values()))])
    assert torch.allclose(by_hand, expected, rtol=1e-10, atol=1e-12)


def test_the_second_order_share_is_the_one_step_hessian_term():
    cfg = dataclasses.replace(mc.sine_preset("quick"), inner_lr=0.05)
    model, params, _ = sine_setup(torch.float32, seed=1)
    tasks = mc.data.sine.SineTasks.from_config(cfg).sample(4, mc.seeded_generator(3))
    share = mg.second_order_share(model, params, tasks, cfg, num_inner_steps=1)
    # By hand: mean over tasks of α H ∇L_query(θ') against mean of ∇L_query(θ').
    first, term = [], []
    for task in tasks.tasks():
        adapted = mc.inner_loop(model, params, task.x_support, task.y_support, loss_fn=F.mse_loss,
                                inner_lr=0.05, num_inner_steps=1)
        g = torch.func.grad(mg.task_loss_fn(model, task.x_query, task.y_query, F.mse_loss))(adapted)
        h = mg.hvp_double_backward(mg.task_loss_fn(model, task.x_support, task.y_support, F.mse_loss), params, g)
        first.append(mg.flat(g))
        term.append(0.05 * mg.flat(h))
    ratio = torch.stack(term).mean(0).norm() / torch.stack(first).mean(0).norm()
    assert share["ratio"] == pytest.approx(float(ratio), rel=1e-3)
    assert -1 <= share["cosine"] <= 1 and share["ratio"] > 0
