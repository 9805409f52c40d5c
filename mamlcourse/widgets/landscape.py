"""The inner-loop landscape: the support loss on a plane through the adaptation path.

The sine network has 1,761 parameters, so its support loss L(θ) lives over a
1,761-dimensional space. We look at one plane of it, chosen to hold the path the inner
loop takes, and draw L on that plane, the path projected onto it, and a step slider.

The plane is θ_0 + a·u + b·v with

- u: the direction of the first inner step, θ_1 − θ_0 = −α∇L(θ_0), made unit length;
- v: the rest of the path, θ_S − θ_0 with its component along u removed, made unit length
  (S = the last step; a seeded random direction orthogonal to u if the path is straight).

So θ_0, θ_1 and θ_S lie exactly in the plane, the other steps nearly (``off_plane``
says how nearly), and a and b are plain Euclidean distances in parameter space: both
panels share their axes and colour scale, so the length of the path is comparable between
initialisations. (Li et al. 2018 instead rescale each parameter tensor of *random*
directions to the norm of θ's tensor, to compare networks whose layers differ in scale;
rescaling the gradient that way would bend the first step out of the plane, and our two
networks have the same architecture and similar weight norms.)

Example:
    >>> explorer = LandscapeExplorer(model, {"maml": maml_params, "pretrained": base_params}, cfg)
    >>> view = explorer.render(amplitude=4.0, step=1)
    >>> view.distance["maml"], view.distance["pretrained"]   # how far one step went
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import Normalize
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..config import SineConfig
from ..data.sine import sine
from ..maml import Params, adaptation_trajectory
from ..plotting import COLORS, LABELS
from .base import Explorer, LRUCache, new_figure, torch_threads


def flatten(params: Params) -> Tensor:
    """All parameters as one vector [P] (in the dict's order)."""
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten(vector: Tensor, like: Params) -> Params:
    """A vector [..., P] back into a dict shaped like ``like`` (leading dimensions kept)."""
    out, start = {}, 0
    lead = vector.shape[:-1]
    for name, p in like.items():
        out[name] = vector[..., start:start + p.numel()].reshape(*lead, *p.shape)
        start += p.numel()
    return out


@dataclass(frozen=True)
class Plane:
    """A plane through θ_0 spanned by two orthonormal directions.

    Attributes:
        origin: [P] θ_0 flattened.
        u: [P] unit vector along the first inner step.
        v: [P] unit vector orthogonal to u (the rest of the path, or random).
        v_kind: ``"path"`` or ``"random"``: how v was chosen.
    """

    origin: Tensor
    u: Tensor
    v: Tensor
    v_kind: str

    def coordinates(self, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Project points [N, P]: (a [N], b [N], off-plane fraction [N]).

        The off-plane fraction is |residual| / |θ − θ_0| (0 for a point in the plane).
        """
        delta = points - self.origin
        a, b = delta @ self.u, delta @ self.v
        residual = delta - a[:, None] * self.u - b[:, None] * self.v
        norm = delta.norm(dim=1)
        off = torch.where(norm > 0, residual.norm(dim=1) / norm.clamp_min(1e-30), torch.zeros_like(norm))
        return a, b, off

    def points(self, a: Tensor, b: Tensor) -> Tensor:
        """θ_0 + a·u + b·v for a, b [N] -> [N, P]."""
        return self.origin + a[:, None] * self.u + b[:, None] * self.v


def path_plane(path: list[Params], *, seed: int = 0, straight_tol: float = 1e-4) -> Plane:
    """The plane through θ_0 holding the first step and the end of ``path`` (see module doc).

    Args:
        path: [θ_0, θ_1, ..., θ_S], S >= 1.
        seed: seeds the random second direction used when the path is straight.
        straight_tol: the path counts as straight when the end's distance from the line of
            the first step is below this fraction of its distance from θ_0.

    Raises:
        ValueError: fewer than two points, or a first step of length zero (α = 0, or a
            support loss already at a stationary point).
    """
    if len(path) < 2:
        raise ValueError("the path needs at least θ_0 and θ_1: use max_steps >= 1")
    origin = flatten(path[0]).double()
    first = flatten(path[1]).double() - origin
    if first.norm() == 0:
        raise ValueError("the first inner step has length zero (α = 0?): no direction to look along")
    u = first / first.norm()
    end = flatten(path[-1]).double() - origin
    rest = end - (end @ u) * u
    if rest.norm() > straight_tol * end.norm():
        v, kind = rest / rest.norm(), "path"
    else:
        generator = torch.Generator().manual_seed(seed)
        r = torch.randn(origin.shape, generator=generator, dtype=torch.float64)
        r = r - (r @ u) * u
        v, kind = r / r.norm(), "random"
    return Plane(origin, u, v, kind)


@dataclass(frozen=True)
class Panel:
    """One initialisation's landscape, precomputed.

    Attributes:
        a, b: [S + 1] the path's coordinates in its plane.
        off_plane: [S + 1] each step's distance from the plane, as a fraction of its distance from θ_0.
        path_loss: [S + 1] the support loss at θ_s itself (not at its projection).
        distance: [S + 1] |θ_s − θ_0|.
        grid_loss: [R, R] support loss on the grid (rows: b, columns: a).
        v_kind: how the second direction was chosen (``"path"`` or ``"random"``).
    """

    a: np.ndarray
    b: np.ndarray
    off_plane: np.ndarray
    path_loss: np.ndarray
    distance: np.ndarray
    grid_loss: np.ndarray
    v_kind: str


@dataclass(frozen=True)
class LandscapeData:
    """Both panels for one task, on a shared extent.

    Attributes:
        panels: {init: Panel}.
        a_range, b_range: (low, high) of the shared axes.
        x_support, y_support: [K] the task's support points.
    """

    panels: dict[str, Panel]
    a_range: tuple[float, float]
    b_range: tuple[float, float]
    x_support: np.ndarray
    y_support: np.ndarray


@dataclass(frozen=True)
class LandscapeView:
    """What the landscape explorer displays now.

    Attributes:
        amplitude, phase, step: the control values.
        support_loss: {init: support loss at θ_step}.
        distance: {init: |θ_step − θ_0|}, Euclidean, in parameter space.
        position: {init: (a, b) of the marked point}.
        off_plane: {init: largest off-plane fraction along the path}.
    """

    amplitude: float
    phase: float
    step: int
    support_loss: dict[str, float]
    distance: dict[str, float]
    position: dict[str, tuple[float, float]]
    off_plane: dict[str, float]


class LandscapeExplorer(Explorer[LandscapeView]):
    """The support loss around each initialisation, with the inner loop's path on it.

    Args:
        model: the sine network (structure only).
        inits: θ by key, usually ``{"maml": ..., "pretrained": ...}``: one panel each.
        cfg: the sine config (ranges; default K and α).
        max_steps: S, the path's length and the step slider's maximum.
        k_shot: support points (default ``cfg.k_shot``).
        inner_lr: α (default ``cfg.inner_lr``).
        resolution: R, grid points per axis (R² loss evaluations per panel).
        seed: seeds the support positions and any random direction.

    Controls: ``amplitude``, ``phase``, ``step``.
    """

    # A new task moves the axes (their extent holds its paths): redraw the frame.
    frame_controls = ("amplitude", "phase")

    def __init__(self, model: nn.Module, inits: Mapping[str, Params], cfg: SineConfig, *,
                 max_steps: int = 10, k_shot: int | None = None, inner_lr: float | None = None,
                 resolution: int = 41, seed: int = 0):
        super().__init__()
        if not inits:
            raise ValueError("inits is empty: pass e.g. {'maml': maml_params, 'pretrained': base_params}")
        if max_steps < 1 or resolution < 3:
            raise ValueError(f"need max_steps >= 1 and resolution >= 3, got {max_steps} and {resolution}")
        self.model = model
        self.inits = {name: {k: v.detach().cpu() for k, v in p.items()} for name, p in inits.items()}
        self.cfg = cfg
        self.max_steps = max_steps
        self.k_shot = cfg.k_shot if k_shot is None else k_shot
        self.inner_lr = cfg.inner_lr if inner_lr is None else inner_lr
        if self.inner_lr <= 0:
            raise ValueError(f"inner_lr must be > 0 to take a step, got {self.inner_lr}")
        self.resolution = resolution
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        low, high = cfg.x_range
        self.x_support = torch.rand(self.k_shot, 1, generator=generator) * (high - low) + low  # [K, 1]
        self.cache: LRUCache[LandscapeData] = LRUCache(32)

        amp_lo, amp_hi = cfg.amplitude_range
        ph_lo, ph_hi = cfg.phase_range
        style = {"description_width": "initial"}
        self.controls = {
            "amplitude": widgets.FloatSlider(value=round(0.8 * amp_hi, 1), min=amp_lo, max=amp_hi, step=0.1,
                                             description="amplitude A", continuous_update=False,
                                             style=style),
            "phase": widgets.FloatSlider(value=round(ph_lo + 0.1 * (ph_hi - ph_lo), 2), min=ph_lo, max=ph_hi,
                                         step=0.05, description="phase φ", continuous_update=False,
                                         style=style),
            "step": widgets.IntSlider(value=1, min=0, max=max_steps, description="inner step",
                                      continuous_update=True, style=style),
        }
        self._build_figure()
        self._connect([["amplitude", "phase"], ["step"]],
                      title="Inner-loop landscape: support loss on the plane of the adaptation path")

    # -- data ----------------------------------------------------------------------------
    def data(self, amplitude: float, phase: float) -> LandscapeData:
        """Paths, planes and loss grids for one task (computed on first use, then cached)."""
        key = (round(float(amplitude), 6), round(float(phase), 6))
        return self.cache.get(key, lambda: self._compute(*key))

    def _support_loss(self, y_support: Tensor):
        def loss(p: Params) -> Tensor:
            return F.mse_loss(functional_call(self.model, p, (self.x_support,)), y_support)
        return loss

    def _compute(self, amplitude: float, phase: float) -> LandscapeData:
        with torch_threads(1), torch.no_grad():
            y_support = sine(self.x_support, amplitude, phase)                      # [K, 1]
            loss = self._support_loss(y_support)
            paths, planes, coords = {}, {}, {}
            for name, params in self.inits.items():
                path = adaptation_trajectory(self.model, params, self.x_support, y_support,
                                             loss_fn=F.mse_loss, inner_lr=self.inner_lr,
                                             num_inner_steps=self.max_steps)
                plane = path_plane(path, seed=self.seed)
                points = torch.stack([flatten(p).double() for p in path])            # [S + 1, P]
                paths[name], planes[name], coords[name] = path, plane, plane.coordinates(points)
            a_range, b_range = _shared_extent([c[0] for c in coords.values()],
                                              [c[1] for c in coords.values()])
            a_axis = torch.linspace(*a_range, self.resolution, dtype=torch.float64)
            b_axis = torch.linspace(*b_range, self.resolution, dtype=torch.float64)
            bb, aa = torch.meshgrid(b_axis, a_axis, indexing="ij")                   # [R, R]
            panels = {}
            for name, path in paths.items():
                plane, (a, b, off) = planes[name], coords[name]
                like = path[0]
                grid = unflatten(plane.points(aa.reshape(-1), bb.reshape(-1)).float(), like)  # R² sets of θ
                grid_loss = vmap(loss)(grid).reshape(self.resolution, self.resolution)
                path_loss = torch.stack([loss(p) for p in path])
                distance = (torch.stack([flatten(p).double() for p in path]) - plane.origin).norm(dim=1)
                panels[name] = Panel(a.numpy(), b.numpy(), off.numpy(), path_loss.numpy(), distance.numpy(),
                                     grid_loss.numpy(), plane.v_kind)
        return LandscapeData(panels, a_range, b_range, self.x_support[:, 0].numpy(), y_support[:, 0].numpy())

    # -- drawing -------------------------------------------------------------------------
    def _build_figure(self) -> None:
        n = len(self.inits)
        self.fig = new_figure(4.6 * n + 1.0, 4.6)
        grid = self.fig.add_gridspec(1, n + 1, width_ratios=(*([1] * n), 0.05), left=0.07, right=0.93,
                                     bottom=0.12, top=0.88, wspace=0.18)
        self.axes, self.artists = {}, {}
        self._images = {}
        blank = np.zeros((self.resolution, self.resolution))
        self.norm = Normalize(-2, 1)
        for i, name in enumerate(self.inits):
            ax = self.fig.add_subplot(grid[i])
            colour = COLORS.get(name, f"C{i}")
            self._images[name] = ax.imshow(blank, origin="lower", cmap="Greys", norm=self.norm,
                                           aspect="equal", interpolation="bilinear")
            self.artists[f"path:{name}"] = ax.plot([], [], "o:", color=colour, lw=1, ms=3, alpha=0.6)[0]
            self.artists[f"start:{name}"] = ax.plot([0], [0], "*", color=colour, ms=14, mec="white",
                                                    mew=1, zorder=4)[0]
            self.artists[f"done:{name}"] = ax.plot([], [], "o-", color=colour, lw=2.5, ms=5, mec="white",
                                                   mew=0.8, zorder=5)[0]
            self.artists[f"now:{name}"] = ax.plot([], [], "o", color=colour, ms=12, mec="white", mew=2,
                                                  zorder=6)[0]
            ax.set_xlabel("a: along the first inner step", labelpad=2)
            if i == 0:
                ax.set_ylabel("b: across, toward the rest of the path")
            self.axes[name] = ax
        cax = self.fig.add_subplot(grid[n])
        self.colorbar = self.fig.colorbar(self._images[next(iter(self.inits))], cax=cax)
        self.colorbar.set_label("support loss (MSE), log scale")
        self._contours: list[Any] = []
        self.animated = [a for key, a in self.artists.items() if key.split(":")[0] in ("done", "now")]
        self.animated += [ax.title for ax in self.axes.values()]

    def _draw(self, state: dict[str, Any]) -> tuple[LandscapeView, str]:
        amplitude, phase, step = float(state["amplitude"]), float(state["phase"]), int(state["step"])
        data = self.data(amplitude, phase)
        log_losses = np.concatenate([np.log10(np.maximum(p.grid_loss, 1e-8)).ravel()
                                     for p in data.panels.values()])
        finite = log_losses[np.isfinite(log_losses)]
        self.norm.vmin, self.norm.vmax = np.percentile(finite, 1), np.percentile(finite, 99)
        for contour in self._contours:
            contour.remove()
        self._contours = []
        extent = (*data.a_range, *data.b_range)
        levels = np.linspace(self.norm.vmin, self.norm.vmax, 9)
        for name, panel in data.panels.items():
            ax = self.axes[name]
            image = self._images[name]
            z = np.log10(np.maximum(panel.grid_loss, 1e-8))
            image.set_data(z)
            image.set_extent(extent)
            a_axis = np.linspace(*data.a_range, self.resolution)
            b_axis = np.linspace(*data.b_range, self.resolution)
            self._contours.append(ax.contour(a_axis, b_axis, z, levels=levels, colors="white",
                                             linewidths=0.6, alpha=0.7, negative_linestyles="solid"))
            self.artists[f"path:{name}"].set_data(panel.a, panel.b)
            self.artists[f"done:{name}"].set_data(panel.a[:step + 1], panel.b[:step + 1])
            self.artists[f"now:{name}"].set_data(panel.a[step:step + 1], panel.b[step:step + 1])
            ax.set_xlim(*data.a_range)
            ax.set_ylim(*data.b_range)
            ax.set_title(f"{LABELS.get(name, name)} init, step {step}: support loss "
                         f"{panel.path_loss[step]:.3g}\n(at θ: {panel.path_loss[0]:.3g}; "
                         f"moved {panel.distance[step]:.2f})", fontsize=10)
        self.colorbar.update_normal(self._images[next(iter(self.inits))])
        self._set_colorbar_ticks()
        view = LandscapeView(
            amplitude, phase, step,
            {n: float(p.path_loss[step]) for n, p in data.panels.items()},
            {n: float(p.distance[step]) for n, p in data.panels.items()},
            {n: (float(p.a[step]), float(p.b[step])) for n, p in data.panels.items()},
            {n: float(p.off_plane.max()) for n, p in data.panels.items()})
        parts = [f"<b>{LABELS.get(n, n)}</b>: support loss <b>{p.path_loss[step]:.4g}</b> "
                 f"(from {p.path_loss[0]:.4g}), moved <b>{p.distance[step]:.3f}</b> from θ"
                 for n, p in data.panels.items()]
        status = f"step <b>{step}</b> of {self.max_steps}, y = {amplitude:.1f} sin(x − {phase:.2f}): " + \
            "; ".join(parts)
        return view, status

    def _set_colorbar_ticks(self) -> None:
        lo, hi = self.norm.vmin, self.norm.vmax
        ticks = np.arange(np.ceil(lo), np.floor(hi) + 1)
        if len(ticks) < 2:
            ticks = np.linspace(lo, hi, 4)
        self.colorbar.set_ticks(ticks)
        self.colorbar.set_ticklabels([f"{10 ** t:.2g}" for t in ticks])


def _shared_extent(a_values: list[Tensor], b_values: list[Tensor], pad: float = 0.25
                   ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Square axis ranges (equal units on both axes) holding every path, θ_0 and a margin."""
    a = torch.cat([torch.zeros(1, dtype=torch.float64), *a_values])
    b = torch.cat([torch.zeros(1, dtype=torch.float64), *b_values])
    a_lo, a_hi, b_lo, b_hi = a.min().item(), a.max().item(), b.min().item(), b.max().item()
    half = max(a_hi - a_lo, b_hi - b_lo, 1e-3) * (0.5 + pad)
    a_mid, b_mid = (a_lo + a_hi) / 2, (b_lo + b_hi) / 2
    return (a_mid - half, a_mid + half), (b_mid - half, b_mid + half)


__all__ = ["LandscapeExplorer", "LandscapeView", "LandscapeData", "Panel", "Plane", "path_plane",
           "flatten", "unflatten"]
