"""The sine explorer: pick a wave, K support points, an initialisation, and scrub the inner steps.

For the chosen initialisation θ (MAML, pretrained or random), wave (amplitude A,
phase φ), support size K and inner step size α, the explorer computes the adaptation
trajectory θ, θ_1, ..., θ_10 once (``mamlcourse.adaptation_trajectory``) together with
the predictions on a grid and the losses after every step, and caches them by
(init, A, φ, K, α). Moving the step slider then only redraws.

Left: the true wave, the K support points, the prediction at θ (dotted) and after the
chosen number of steps. Right: the support loss and the MSE over the whole input range
[-5, 5] against the number of steps, the chosen step marked; the other initialisations'
MSE is drawn faintly for comparison.

Example:
    >>> explorer = SineExplorer(model, {"maml": maml_params, "pretrained": base_params}, cfg)
    >>> explorer.render(init="maml", amplitude=3.0, phase=1.0, k_shot=5, step=1).query_mse
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter
from torch import nn

from ..config import SineConfig
from ..data.sine import sine
from ..maml import Params, adaptation_trajectory, functional_forward
from ..plotting import COLORS, LABELS
from .base import Explorer, LRUCache, new_figure, torch_threads

DEFAULT_INNER_LRS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
LOSS_AXIS = (1e-3, 1e2)  # the MSE axis: from a near-perfect fit to a diverging one


@dataclass(frozen=True)
class SineTrajectory:
    """One adaptation, precomputed for drawing.

    Attributes:
        x_support: [K] support inputs.
        y_support: [K] their targets.
        predictions: [num_steps + 1, G] the model's output on the grid after 0..num_steps steps.
        support_loss: [num_steps + 1] MSE on the support points after each step.
        query_mse: [num_steps + 1] MSE against the true wave over the grid (the whole input
            range): how well the adapted model generalises.
    """

    x_support: np.ndarray
    y_support: np.ndarray
    predictions: np.ndarray
    support_loss: np.ndarray
    query_mse: np.ndarray


@dataclass(frozen=True)
class SineView:
    """What the sine explorer displays now.

    Attributes:
        init: the initialisation's key (``"maml"``, ``"pretrained"``, ``"random"``).
        amplitude, phase, k_shot, inner_lr, step: the control values.
        x_grid: [G] inputs of the drawn curves.
        truth: [G] the true wave.
        prediction: [G] the prediction after ``step`` inner steps.
        support_loss: MSE on the support points after ``step`` steps.
        query_mse: MSE over the grid after ``step`` steps.
        diverged: some loss along the trajectory is not finite (α too large).
    """

    init: str
    amplitude: float
    phase: float
    k_shot: int
    inner_lr: float
    step: int
    x_grid: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray
    support_loss: float
    query_mse: float
    diverged: bool


class SineExplorer(Explorer[SineView]):
    """Scrub the inner loop of a sine-wave model from several initialisations.

    Args:
        model: the network (its structure only; the parameters come from ``inits``).
        inits: θ for each initialisation, by key: ``"maml"``, ``"pretrained"``,
            ``"random"`` (keys of ``mamlcourse.plotting.COLORS`` get the course colours).
        cfg: the sine config (input, amplitude and phase ranges; default K and α).
        max_steps: the step slider goes from 0 to this.
        max_k: the largest support size offered.
        inner_lrs: the step sizes α offered (``cfg.inner_lr`` is added if missing).
        seed: seeds the support positions; K points are the first K of one fixed draw, so
            a larger K adds points and keeps the others.
        grid_points: G, inputs at which curves are drawn and the MSE is measured.

    Controls: ``init``, ``amplitude``, ``phase``, ``k_shot``, ``inner_lr``, ``step``.
    """

    def __init__(self, model: nn.Module, inits: Mapping[str, Params], cfg: SineConfig, *,
                 max_steps: int = 10, max_k: int = 20, inner_lrs: Sequence[float] = DEFAULT_INNER_LRS,
                 seed: int = 0, grid_points: int = 200):
        super().__init__()
        if not inits:
            raise ValueError("inits is empty: pass at least one initialisation, e.g. {'maml': params}")
        if max_steps < 1 or max_k < 1:
            raise ValueError(f"max_steps and max_k must be >= 1, got {max_steps} and {max_k}")
        self.model = model
        self.inits = {name: {k: v.detach().cpu() for k, v in p.items()} for name, p in inits.items()}
        self.cfg = cfg
        self.max_steps = max_steps
        self.x_grid = torch.linspace(*cfg.x_range, grid_points).unsqueeze(1)  # [G, 1]
        generator = torch.Generator().manual_seed(seed)
        low, high = cfg.x_range
        self.x_pool = torch.rand(max_k, 1, generator=generator) * (high - low) + low  # [max_k, 1]
        self.cache: LRUCache[SineTrajectory] = LRUCache(256)
        lrs = sorted({*inner_lrs, cfg.inner_lr})

        amp_lo, amp_hi = cfg.amplitude_range
        ph_lo, ph_hi = cfg.phase_range
        style = {"description_width": "initial"}
        self.controls = {
            "init": widgets.ToggleButtons(options=[(LABELS.get(k, k), k) for k in self.inits],
                                          description="init", style=style),
            "amplitude": widgets.FloatSlider(value=round(0.8 * amp_hi, 1), min=amp_lo, max=amp_hi,
                                             step=0.1, description="amplitude A", continuous_update=False,
                                             style=style),
            "phase": widgets.FloatSlider(value=round(ph_lo + 0.1 * (ph_hi - ph_lo), 2), min=ph_lo, max=ph_hi,
                                         step=0.05, description="phase φ", continuous_update=False,
                                         style=style),
            "k_shot": widgets.IntSlider(value=min(cfg.k_shot, max_k), min=1, max=max_k,
                                        description="K (support points)", continuous_update=False,
                                        style=style),
            "inner_lr": widgets.SelectionSlider(options=lrs, value=cfg.inner_lr, description="inner lr α",
                                                continuous_update=False, style=style),
            "step": widgets.IntSlider(value=1, min=0, max=max_steps, description="inner step",
                                      continuous_update=True, style=style),
        }
        self._build_figure()
        self._connect([["init"], ["amplitude", "phase"], ["k_shot", "inner_lr"], ["step"]],
                      title="Sine explorer: adapt from an initialisation, one inner step at a time")

    # -- data ----------------------------------------------------------------------------
    def trajectory(self, init: str, amplitude: float, phase: float, k_shot: int,
                   inner_lr: float) -> SineTrajectory:
        """The cached adaptation for these settings (computed on first use)."""
        if init not in self.inits:
            raise ValueError(f"unknown init {init!r}: choose one of {sorted(self.inits)}")
        key = (init, round(float(amplitude), 6), round(float(phase), 6), int(k_shot), float(inner_lr))
        return self.cache.get(key, lambda: self._compute(*key))

    def _compute(self, init: str, amplitude: float, phase: float, k_shot: int,
                 inner_lr: float) -> SineTrajectory:
        with torch_threads(1), torch.no_grad():
            x_support = self.x_pool[:k_shot]                              # [K, 1]
            y_support = sine(x_support, amplitude, phase)                 # [K, 1]
            truth = sine(self.x_grid, amplitude, phase)                   # [G, 1]
            path = adaptation_trajectory(self.model, self.inits[init], x_support, y_support,
                                         loss_fn=F.mse_loss, inner_lr=inner_lr,
                                         num_inner_steps=self.max_steps)
            predictions = torch.stack([functional_forward(self.model, p, self.x_grid) for p in path])
            support = torch.stack([F.mse_loss(functional_forward(self.model, p, x_support), y_support)
                                   for p in path])                   # [S + 1]
            query = ((predictions - truth) ** 2).mean(dim=(1, 2))    # [S + 1]
        return SineTrajectory(x_support[:, 0].numpy(), y_support[:, 0].numpy(),
                              predictions[..., 0].numpy(), support.numpy(), query.numpy())

    # -- drawing -------------------------------------------------------------------------
    def _build_figure(self) -> None:
        self.fig = new_figure(10.5, 4.1)
        grid = self.fig.add_gridspec(1, 2, width_ratios=(3, 2), left=0.055, right=0.985,
                                     bottom=0.27, top=0.91, wspace=0.2)
        ax, ax_loss = self.fig.add_subplot(grid[0]), self.fig.add_subplot(grid[1])
        x = self.x_grid[:, 0].numpy()
        amp_hi = self.cfg.amplitude_range[1]
        ax.set_xlim(*self.cfg.x_range)
        ax.set_ylim(-1.3 * amp_hi, 1.3 * amp_hi)
        ax.set_xlabel("x", labelpad=1)
        ax.set_ylabel("y")
        ax.grid(alpha=0.25)
        zeros = np.zeros_like(x)
        self.artists = {
            "truth": ax.plot(x, zeros, color=COLORS["truth"], lw=1.5)[0],
            "support": ax.plot([], [], "o", color=COLORS["support"], mec="black", mew=0.6, ms=7, zorder=5)[0],
            "start": ax.plot(x, zeros, ls=":", lw=1.6)[0],
            "prediction": ax.plot(x, zeros, lw=2.2)[0],
        }
        # Legends are part of the frame, drawn once: they name line styles, and colours
        # name the initialisations (MAML blue, pretrained vermillion, random grey).
        ax.legend(handles=[
            Line2D([], [], color=COLORS["truth"], lw=1.5, label=LABELS["truth"]),
            Line2D([], [], ls="", marker="o", color=COLORS["support"], mec="black", mew=0.6, ms=7,
                   label=f"{LABELS['support']} (K points)"),
            Line2D([], [], color="dimgrey", ls=":", lw=1.6, label="prediction at θ (step 0)"),
            Line2D([], [], color="dimgrey", lw=2.2, label="prediction after the chosen steps"),
        ], loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
        steps = np.arange(self.max_steps + 1)
        ones = np.ones_like(steps, dtype=float)
        ax_loss.set_yscale("log")
        ax_loss.set_ylim(*LOSS_AXIS)  # fixed, so tasks and initialisations compare at a glance
        ax_loss.yaxis.set_major_formatter(FuncFormatter(_plain))
        ax_loss.set_xlabel("inner steps", labelpad=1)
        ax_loss.set_ylabel("MSE")
        ax_loss.set_xlim(-0.3, self.max_steps + 0.3)
        ax_loss.set_xticks(steps)
        ax_loss.grid(alpha=0.25)
        for name in self.inits:
            self.artists[f"others:{name}"] = ax_loss.plot(steps, ones, lw=1.2, alpha=0.5,
                                                          color=COLORS.get(name))[0]
        self.artists["query_curve"] = ax_loss.plot(steps, ones, "o-", lw=2, ms=4)[0]
        self.artists["support_curve"] = ax_loss.plot(steps, ones, "s--", lw=1.2, ms=3)[0]
        self.artists["step_line"] = ax_loss.axvline(1, color="black", lw=1, alpha=0.6)
        self.artists["step_marker"] = ax_loss.plot([1], [1], "o", ms=11, mfc="none", mec="black", mew=1.5)[0]
        ax_loss.legend(handles=[
            Line2D([], [], color="dimgrey", marker="o", ms=4, lw=2, label=f"MSE over {self._range}"),
            Line2D([], [], color="dimgrey", marker="s", ms=3, lw=1.2, ls="--", label="support loss"),
            *(Line2D([], [], color=COLORS.get(name, "C0"), lw=3, label=LABELS.get(name, name))
              for name in self.inits),
            Line2D([], [], color="dimgrey", lw=1.2, alpha=0.5, label="other inits: MSE"),
        ], loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8, frameon=False)
        self.axes = {"curve": ax, "loss": ax_loss}
        a = self.artists
        # In the order the artists were added, as a full draw paints them.
        self.content = [a["truth"], a["start"], *(a[f"others:{name}"] for name in self.inits),
                        a["query_curve"], a["support_curve"], ax.title]
        # The support points are redrawn with the prediction so that they stay on top of it.
        self.animated = [a["prediction"], a["support"], a["step_line"], a["step_marker"], ax_loss.title]

    def _draw(self, state: dict[str, Any]) -> tuple[SineView, str]:
        init, step = state["init"], int(state["step"])
        amplitude, phase = float(state["amplitude"]), float(state["phase"])
        settings = (amplitude, phase, state["k_shot"], state["inner_lr"])
        traj = self.trajectory(init, *settings)
        others = {name: self.trajectory(name, *settings) for name in self.inits if name != init}
        colour, label = COLORS.get(init, "C0"), LABELS.get(init, init)
        x = self.x_grid[:, 0].numpy()
        truth = amplitude * np.sin(x - phase)
        a = self.artists
        a["truth"].set_ydata(truth)
        a["support"].set_data(traj.x_support, traj.y_support)
        for name in ("start", "prediction", "query_curve", "support_curve"):
            a[name].set_color(colour)
        a["start"].set_ydata(traj.predictions[0])
        a["prediction"].set_ydata(_finite(traj.predictions[step]))
        self.axes["curve"].set_title(f"{label}: y = {amplitude:.1f} sin(x − {phase:.2f}),  "
                                     f"K = {state['k_shot']},  α = {state['inner_lr']:g}", fontsize=10)
        for name in self.inits:
            line = a[f"others:{name}"]
            line.set_visible(name != init)
            if name != init:
                line.set_ydata(_finite(others[name].query_mse))
        a["query_curve"].set_ydata(_finite(traj.query_mse))
        a["support_curve"].set_ydata(_finite(traj.support_loss))
        a["step_line"].set_xdata([step, step])
        a["step_marker"].set_data([step], [_finite(traj.query_mse[step:step + 1])[0]])
        self.axes["loss"].set_title(f"after {step} step{'s' * (step != 1)}: MSE over {self._range} "
                                    f"{traj.query_mse[step]:.3g}", fontsize=10)

        diverged = not (np.isfinite(traj.query_mse).all() and np.isfinite(traj.support_loss).all())
        view = SineView(init, amplitude, phase, int(state["k_shot"]), float(state["inner_lr"]), step, x,
                        truth, traj.predictions[step], float(traj.support_loss[step]),
                        float(traj.query_mse[step]), diverged)
        others_text = ", ".join(f"{LABELS.get(n, n)} {o.query_mse[step]:.3g}" for n, o in others.items())
        status = (f"<b>{label}</b>, step <b>{step}</b> of {self.max_steps}: support loss "
                  f"<b>{traj.support_loss[step]:.4g}</b> (from {traj.support_loss[0]:.4g} at θ), "
                  f"MSE over {self._range} <b>{traj.query_mse[step]:.4g}</b> (from {traj.query_mse[0]:.4g})"
                  + (f"; at the same step: {others_text}" if others_text else "")
                  + (" &mdash; <b>diverged</b>: lower α" if diverged else ""))
        return view, status

    @property
    def _range(self) -> str:
        low, high = self.cfg.x_range
        return f"[{low:g}, {high:g}]"


def _plain(value: float, _position: int) -> str:
    """Tick labels as plain numbers (0.01, 2, 10), not powers of ten."""
    return f"{value:g}"


def _finite(values: np.ndarray, ceiling: float = 1e6) -> np.ndarray:
    """Non-finite or huge values (a diverged run) clipped to ``ceiling`` so the plot stays readable."""
    values = np.asarray(values, dtype=float)
    return np.where(np.isfinite(values), np.minimum(values, ceiling), ceiling)


def sine_loss_curves(explorer: SineExplorer, **settings: Any) -> dict[str, np.ndarray]:
    """MSE over the input range after 0..max_steps steps, for every initialisation, at ``settings``.

    ``settings`` are ``amplitude``, ``phase``, ``k_shot`` and ``inner_lr`` (defaults: the
    explorer's current values). Uses the explorer's cache.

    Returns:
        {init: [max_steps + 1] MSE}.
    """
    state = {name: explorer.controls[name].value for name in ("amplitude", "phase", "k_shot", "inner_lr")}
    unknown = set(settings) - set(state)
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}: use {sorted(state)}")
    state.update(settings)
    return {name: explorer.trajectory(name, **state).query_mse for name in explorer.inits}


__all__ = ["SineExplorer", "SineView", "SineTrajectory", "sine_loss_curves", "DEFAULT_INNER_LRS"]
