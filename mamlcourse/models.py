"""The paper's two networks: an MLP for sine waves and a 4-block conv net for Omniglot.

Both are plain ``nn.Module``s. MAML never touches their attributes: it reads
``dict(model.named_parameters())`` once and calls the model with other parameters
through ``torch.func.functional_call`` (see ``maml.py``).

A network may also name parameters that the inner loop leaves as they are
(``not_adapted``, a set of names; none by default): they are meta-learned only.

Each network also says how it splits into a body and a head, for the algorithms that
adapt only the head (ANIL): ``body(x)`` gives the features [n, d] the head sees,
``head`` is the last linear layer, and ``head_prefix`` is how the head's parameter
names start (every other parameter is the body's). ``forward`` is ``head(body(x))``.

Example:
    >>> model = ConvNet4(n_way=5)
    >>> model(torch.zeros(10, 1, 28, 28)).shape
    torch.Size([10, 5])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import CONVENTIONS, DOWNSAMPLES, MetaConfig, OmniglotConfig, SineConfig


class SineMLP(nn.Module):
    """1 -> 40 -> 40 -> 1 with ReLU (paper, Section 5.1).

    Starts from PyTorch's default initialisation. ``init_std=0.01`` instead draws weights
    from a truncated normal of that standard deviation with zero biases, as the original
    code; after 70,000 iterations that start scored worse in the course's sine run
    (docs/results.md, "Sine waves, the paper's settings"), so it is not the default.

    Shapes: x [n, 1] -> y [n, 1].
    """

    def __init__(self, hidden_sizes: tuple[int, ...] = (40, 40), init_std: float | None = None):
        super().__init__()
        sizes = (1, *hidden_sizes, 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        if init_std is not None:
            for layer in self.layers:
                nn.init.trunc_normal_(layer.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
                nn.init.zeros_(layer.bias)

    @property
    def head(self) -> nn.Linear:
        """The last layer, hidden_sizes[-1] -> 1."""
        return self.layers[-1]

    @property
    def head_prefix(self) -> str:
        """How the head's parameter names start (``"layers.2."``); the other parameters are the body."""
        return f"layers.{len(self.layers) - 1}."

    def body(self, x: Tensor) -> Tensor:
        """The hidden layers' output, what the head sees: x [n, 1] -> features [n, hidden_sizes[-1]]."""
        # Unpacked rather than sliced: ``self.layers[:-1]`` builds a new ModuleList per call.
        *hidden, _ = self.layers
        for layer in hidden:
            x = F.relu(layer(x))
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class BatchStatNorm(nn.Module):
    """Batch norm that always normalises with the current batch's statistics.

    MAML's original code does this at training *and* test time, so a prediction depends
    on the other images of its batch: evaluation is transductive (each task's query set
    is normalised with its own statistics). No running averages are kept.

    The affine part is applied by hand after a plain normalisation: under
    ``torch.func.vmap``, ``F.batch_norm(..., weight, bias)`` gives wrong second-order
    gradients (``tests/test_maml.py``, ``test_the_trap_is_real_for_fused_affine_batch_norm``).
    ``scale=False`` keeps the offset (``bias``) and drops the scale (``weight`` is None), as
    TensorFlow's ``tf.contrib.layers.batch_norm`` does by default, which the original code used.

    Shapes: x [n, C, H, W] -> [n, C, H, W].
    """

    def __init__(self, num_features: int, eps: float = 1e-5, scale: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features)) if scale else None
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        x = F.batch_norm(x, None, None, training=True, eps=self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.weight is None:
            return x + self.bias.view(shape)
        # bias + x * weight in one pass over x
        return torch.addcmul(self.bias.view(shape), x, self.weight.view(shape))


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding: ceil(size / stride) outputs, and where
    the padding is odd the extra row and column go after (bottom, right), not before.

    For a 3x3 stride-2 convolution of an even-sized map that is 0 rows before and 1 after,
    where ``nn.Conv2d(padding=1)`` puts 1 on each side: the same output size, its grid shifted
    by one pixel. Built with ``padding=0``; the padding is added in ``forward``.

    Shapes: x [n, C_in, H, W] -> [n, C_out, ceil(H / stride), ceil(W / stride)].
    """

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]  # F.pad's order: (left, right, top, bottom)
        return super().forward(F.pad(x, pads))


def channels_last(x: Tensor) -> Tensor:
    """The same [n, C, H, W] tensor, stored channels-last (NHWC) in memory.

    The CPU's convolution and pooling kernels (oneDNN) have faster paths for this
    layout. Written with permutes rather than ``x.to(memory_format=torch.channels_last)``
    so that it also runs under ``torch.func.vmap``.
    """
    # clone rather than contiguous: with one channel, x is already "contiguous" as NHWC and
    # would keep the stride that makes the convolution choose NCHW.
    return x.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format).permute(0, 3, 1, 2)


class ConvNet4(nn.Module):
    """Four blocks of [3x3 conv (64 filters), batch norm, ReLU], each halving the image, then a linear head.

    The network of the paper's Section 5.2 (the embedding of Vinyals et al. 2016), which
    adds: "For Omniglot, we used strided convolutions instead of max-pooling". Both are here:

    - ``downsample="maxpool"`` (the default): 3x3 convolutions of stride 1, then a 2x2
      max-pool. 28x28 inputs shrink to 14, 7, 3 and 1 pixels, so the head sees
      ``num_filters`` features. Each block pools before its ReLU: the same function and the
      same gradients as ReLU then pooling (ReLU is monotonic, so it commutes with a max),
      with the ReLU on a quarter of the values.
    - ``downsample="stride"``: the original code's Omniglot network. 3x3 convolutions of
      stride 2 (padding 1; TensorFlow's SAME padding puts the extra row after, not before,
      on an even size), no pooling: 28 -> 14 -> 7 -> 4 -> 2, then the mean over the last
      2x2 (as the original), so the head also sees ``num_filters`` features. Each
      convolution computes a quarter of the outputs a stride-1 one does: fewer operations.

    Both keep the same parameter names and shapes (a stride block holds an ``nn.Identity``
    where the pool was), so code that walks ``features`` four modules a block works on both.

    ``conventions`` settles the details the paper leaves open (README, "Choices that differ
    from, or pin down, the paper"):

    - ``"pytorch"`` (the default): batch norm with a scale and an offset (ε = 1e-5), which
      the inner loop adapts like every other parameter; PyTorch's default initialisation;
      one pixel of padding on each side.
    - ``"original"``: the original code's (``maml.py``, ``utils.py``). Batch norm as
      ``tf.contrib.layers.batch_norm``'s defaults: an offset, no scale, ε = 1e-3, and the
      offsets are ``not_adapted``: meta-learned, left alone by the inner loop (they are not
      among the original's fast weights). Glorot-uniform convolution weights, zero biases, a
      head drawn from N(0, 1). The strided convolutions pad as TensorFlow's "SAME"
      (``SameConv2d``); with max-pooling the padding is the same either way.

    ``channels_last`` is how the images are stored in memory, not what is computed: True
    stores them channels-last (NHWC, see ``channels_last``) before the first convolution, so
    that every block works in that layout; False keeps PyTorch's NCHW; None (the default)
    picks NHWC on the CPU, whose oneDNN kernels are faster so, and NCHW elsewhere. On a GPU
    the Omniglot probe (``tools/gpu/probe_speed.py``) times NHWC, whose tensor-core (TF32)
    convolutions need no layout conversion, against NCHW.

    Shapes: x [n, in_channels, image_size, image_size] -> logits [n, n_way].
    """

    head_prefix = "head."  # the head's parameter names start so; the other parameters are the body

    def __init__(self, n_way: int = 5, in_channels: int = 1, num_filters: int = 64,
                 image_size: int = 28, channels_last: bool | None = None,
                 downsample: str = "maxpool", conventions: str = "pytorch"):
        super().__init__()
        if channels_last not in (None, True, False):
            raise ValueError(f"channels_last must be True, False or None, got {channels_last!r}")
        if downsample not in DOWNSAMPLES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLES}, got {downsample!r}")
        if conventions not in CONVENTIONS:
            raise ValueError(f"conventions must be one of {CONVENTIONS}, got {conventions!r}")
        self.channels_last = channels_last
        self.downsample = downsample
        self.conventions = conventions
        original = conventions == "original"
        stride = downsample == "stride"

        def norm() -> BatchStatNorm:
            if original:  # tf.contrib.layers.batch_norm's defaults
                return BatchStatNorm(num_filters, eps=1e-3, scale=False)
            return BatchStatNorm(num_filters)

        blocks = []
        channels, size = in_channels, image_size
        for _ in range(4):
            if stride:
                conv = (SameConv2d(channels, num_filters, 3, stride=2) if original
                        else nn.Conv2d(channels, num_filters, 3, stride=2, padding=1))
                blocks += [conv, norm(), nn.Identity(), nn.ReLU()]
                size = (size + 1) // 2
            else:
                blocks += [nn.Conv2d(channels, num_filters, 3, padding=1), norm(), nn.MaxPool2d(2), nn.ReLU()]
                size = size // 2
            channels = num_filters
        if size < 1:
            raise ValueError(f"image_size {image_size} is too small for four 2x2 max-pools (needs >= 16)")
        self.features = nn.Sequential(*blocks)
        # The strided network averages its last feature map (the original code's reduce_mean).
        self.head = nn.Linear(num_filters if stride else num_filters * size * size, n_way)
        # The original's batch-norm offsets are not among its fast weights (inner loop: maml.inner_loop).
        offsets = (f"features.{4 * b + 1}.bias" for b in range(4))
        self.not_adapted = frozenset(offsets) if original else frozenset()
        if original:
            self._original_initialisation()

    def _original_initialisation(self) -> None:
        """The original code's: Glorot-uniform convolutions, zero biases, the head's weights N(0, 1)."""
        with torch.no_grad():
            for module in self.features:
                if isinstance(module, nn.Conv2d):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)
            nn.init.normal_(self.head.weight, std=1.0)
            nn.init.zeros_(self.head.bias)

    def body(self, x: Tensor) -> Tensor:
        """The four blocks, flattened (maxpool) or averaged over space (stride):
        x [n, C, H, W] -> features [n, head.in_features]."""
        x = self.features(x)
        return x.mean(dim=(2, 3)) if self.downsample == "stride" else x.flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        nhwc = x.device.type == "cpu" if self.channels_last is None else self.channels_last
        if nhwc:
            x = channels_last(x)
        return self.head(self.body(x))


def build_model(cfg: MetaConfig) -> nn.Module:
    """The paper's network for ``cfg``'s task, freshly initialised (seed it first)."""
    if isinstance(cfg, SineConfig):
        return SineMLP(cfg.hidden_sizes)
    if isinstance(cfg, OmniglotConfig):
        return ConvNet4(cfg.n_way, num_filters=cfg.num_filters, image_size=cfg.image_size,
                        channels_last=cfg.channels_last, downsample=cfg.downsample,
                        conventions=cfg.conventions)
    raise TypeError(f"no model for config type {type(cfg).__name__}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
