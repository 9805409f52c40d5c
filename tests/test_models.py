"""The networks: parameter names fixed (the shipped checkpoints load by them), and the body/head split."""

from __future__ import annotations

import pytest
import torch

from mamlcourse.config import OmniglotConfig
from mamlcourse.models import ConvNet4, SameConv2d, SineMLP, channels_last

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


def test_the_strided_network_is_the_original_codes_omniglot_network():
    """Section 5.2: "For Omniglot, we used strided convolutions instead of max-pooling": four
    [3x3 conv of stride 2, batch norm on batch statistics, ReLU], 28 -> 14 -> 7 -> 4 -> 2, then
    the mean over the last 2x2 (the original's reduce_mean) and the linear head."""
    torch.manual_seed(0)
    strided = ConvNet4(n_way=5, downsample="stride").double()
    assert list(strided.state_dict()) == CONV_NAMES  # the same names and shapes as max-pooling
    assert [p.shape for p in strided.parameters()] == [p.shape for p in ConvNet4().parameters()]
    images = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    sizes = []
    for module in strided.features:
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))
    out = strided(images)
    assert sizes == [(14, 14), (7, 7), (4, 4), (2, 2)]
    p = dict(strided.named_parameters())
    x = images
    for block in range(4):
        conv, norm = f"features.{4 * block}", f"features.{4 * block + 1}"
        x = torch.nn.functional.conv2d(x, p[conv + ".weight"], p[conv + ".bias"], stride=2, padding=1)
        x = torch.nn.functional.batch_norm(x, None, None, p[norm + ".weight"], p[norm + ".bias"],
                                           training=True)
        x = torch.relu(x)
    by_hand = torch.nn.functional.linear(x.mean(dim=(2, 3)), p["head.weight"], p["head.bias"])
    assert torch.allclose(out, by_hand, rtol=1e-12, atol=1e-12)
    nchw = ConvNet4(n_way=5, downsample="stride", channels_last=False).double()
    nchw.load_state_dict(strided.state_dict())
    assert torch.allclose(nchw(images), out, rtol=1e-12, atol=1e-12)  # the layout changes nothing here either


NETWORK_CHOICES = pytest.mark.parametrize("field, choices, bad", [
    ("downsample", ("maxpool", "stride"), "pool"),
    ("conventions", ("pytorch", "original"), "tf"),
])


@NETWORK_CHOICES
def test_a_bad_network_choice_is_refused_naming_the_choices(field, choices, bad):
    first, second = choices
    with pytest.raises(ValueError, match=rf"{field} must be one of \('{first}', '{second}'\), got '{bad}'"):
        ConvNet4(**{field: bad})
    refused = rf"{field} \(--{field}\) must be '{first}' or '{second}', got '{bad}'"
    with pytest.raises(ValueError, match=refused):
        OmniglotConfig(**{field: bad})


@NETWORK_CHOICES
def test_build_model_follows_the_configs_network_choice(field, choices, bad):
    from mamlcourse.models import build_model
    for choice in choices:
        assert getattr(build_model(OmniglotConfig(**{field: choice})), field) == choice


def test_same_padding_is_tensorflows():
    """TensorFlow's "SAME": ceil(size / stride) outputs; an odd total padding puts its extra
    row and column after. A 3x3 stride-2 convolution pads 28 and 14 by (0, 1), 7 by (1, 1)."""
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, 3, stride=2).double()
    for size, (before, after) in ((28, (0, 1)), (14, (0, 1)), (7, (1, 1)), (4, (0, 1))):
        x = torch.randn(2, 2, size, size, dtype=torch.float64)
        want = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (before, after, before, after)),
                                          conv.weight, conv.bias, stride=2)
        got = conv(x)
        assert got.shape[-1] == -(-size // 2)
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    x = torch.randn(2, 2, 7, 7, dtype=torch.float64)
    symmetric = torch.nn.functional.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)
    assert torch.allclose(conv(x), symmetric)  # on an odd size both paddings agree ...
    x = torch.randn(2, 2, 28, 28, dtype=torch.float64)
    shifted = torch.nn.functional.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)
    assert not torch.allclose(conv(x), shifted)  # ... on an even one PyTorch's grid is shifted


def test_the_original_conventions_are_the_original_codes_network():
    """conventions="original": maml.py/utils.py's Omniglot network. Batch norm is
    tf.contrib.layers.batch_norm's defaults (an offset, no scale, eps 1e-3) whose offsets are
    not fast weights; Glorot-uniform convolutions, zero biases, a head drawn from N(0, 1)."""
    torch.manual_seed(0)
    net = ConvNet4(n_way=5, downsample="stride", conventions="original").double()
    names = [n for n, _ in net.named_parameters()]
    scales = {f"features.{4 * b + 1}.weight" for b in range(4)}  # batch norm has no scale
    assert names == [n for n in CONV_NAMES if n not in scales]
    assert net.not_adapted == {f"features.{4 * b + 1}.bias" for b in range(4)}
    assert ConvNet4(n_way=5, downsample="stride").not_adapted == frozenset()
    p = dict(net.named_parameters())
    for b in range(4):
        fan = 9 * (1 if b == 0 else 64) + 9 * 64
        assert p[f"features.{4 * b}.weight"].abs().max() <= (6 / fan) ** 0.5  # Glorot-uniform's bound
        assert (p[f"features.{4 * b}.bias"] == 0).all() and (p[f"features.{4 * b + 1}.bias"] == 0).all()
    assert 0.85 < p["head.weight"].std() < 1.15 and (p["head.bias"] == 0).all()
    images = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    x = images
    for b in range(4):
        x = torch.nn.functional.pad(x, (0, 1, 0, 1) if x.shape[-1] % 2 == 0 else (1, 1, 1, 1))
        conv = f"features.{4 * b}"
        x = torch.nn.functional.conv2d(x, p[conv + ".weight"], p[conv + ".bias"], stride=2)
        x = torch.nn.functional.batch_norm(x, None, None, None, p[f"features.{4 * b + 1}.bias"],
                                           training=True, eps=1e-3)
        x = torch.relu(x)
    by_hand = torch.nn.functional.linear(x.mean(dim=(2, 3)), p["head.weight"], p["head.bias"])
    assert torch.allclose(net(images), by_hand, rtol=1e-12, atol=1e-12)
