"""The networks: parameter names fixed (the shipped checkpoints load by them), and the body/head split."""

from __future__ import annotations

import pytest
import torch

from mamlcourse.config import OmniglotConfig
from mamlcourse.models import ConvNet4, SineMLP, channels_last

# The names of trained/*/checkpoint.pt: a change here breaks loading the shipped models.
SINE_NAMES = [f"layers.{i}.{kind}" for i in range(3) for kind in ("weight", "bias")]
CONV_NAMES = [f"features.{4 * i + j}.{kind}" for i in range(4) for j in (0, 1) for kind in ("weight", "bias")
              ] + ["head.weight", "head.bias"]


def test_parameter_names_are_the_checkpoints():
    assert list(SineMLP().state_dict()) == SINE_NAMES
    assert list(ConvNet4().state_dict()) == CONV_NAMES


@pytest.mark.parametrize("model, head", [
    (SineMLP(), ["layers.2.weight", "layers.2.bias"]),
    (SineMLP((8, 8, 8)), ["layers.3.weight", "layers.3.bias"]),
    (ConvNet4(), ["head.weight", "head.bias"]),
], ids=["mlp", "mlp-3-hidden", "conv"])
def test_head_prefix_names_the_last_linear_layer(model, head):
    assert [n for n, _ in model.named_parameters() if n.startswith(model.head_prefix)] == head
    assert [f"{model.head_prefix}{n}" for n, _ in model.head.named_parameters()] == head


def test_forward_is_head_of_body():
    torch.manual_seed(0)
    mlp = SineMLP()
    x = torch.randn(7, 1)
    assert mlp.body(x).shape == (7, 40)
    assert torch.equal(mlp(x), mlp.head(mlp.body(x)))
    conv = ConvNet4(n_way=5)
    images = torch.randn(6, 1, 28, 28)
    assert conv.body(images).shape == (6, 64)
    assert torch.equal(conv(images), conv.head(conv.body(channels_last(images))))


def test_convnet4s_layout_changes_memory_order_not_results():
    torch.manual_seed(0)
    images = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    outputs, grads = {}, {}
    for layout in (None, True, False):
        torch.manual_seed(1)
        conv = ConvNet4(n_way=5, channels_last=layout).double()
        out = conv(images)
        outputs[layout] = out
        grads[layout] = torch.autograd.grad(out.square().sum(), list(conv.parameters()))
    assert torch.allclose(outputs[True], outputs[False], rtol=1e-12, atol=1e-12)
    assert torch.equal(outputs[None], outputs[True])  # the CPU's default is channels-last
    for a, b in zip(grads[True], grads[False]):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="channels_last must be True, False or None, got 'nhwc'"):
        ConvNet4(channels_last="nhwc")
    with pytest.raises(ValueError, match=r"channels_last \(--layout\) must be True, False or None"):
        OmniglotConfig(channels_last="nhwc")
