"""Matplotlib helpers for the lessons: they take data and return a Figure, and never show or save.

One palette for the whole course, so MAML, the pretrained baseline and a random
initialisation have the same colour in every lesson, widget and exercise.

The figures are ``matplotlib.figure.Figure`` objects made without ``pyplot``, so
nothing is drawn until you ask: a notebook cell that ends with a figure displays it
(after ``%matplotlib inline``), ``fig.savefig(path)`` writes it to a file.

Example:
    >>> fig = plot_adaptation_curves({"K = 5": {"maml": maml_result, "pretrained": baseline_result}})
    >>> fig.savefig("figure3.png")
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
from matplotlib.ticker import FuncFormatter, LogFormatter

# The course palette (colour-blind safe: Okabe & Ito).
COLORS = {
    "maml": "#0072B2",        # blue
    "pretrained": "#D55E00",  # vermillion
    "random": "#999999",      # grey
    "first_order": "#56B4E9",  # sky blue
    "truth": "#000000",       # the true function
    "support": "#E69F00",     # orange: support points / images
    "query": "#009E73",       # green: query points / images
    "paper": "#CC79A7",       # reddish purple: the paper's published numbers
}

LABELS = {"maml": "MAML", "pretrained": "pretrained", "random": "random init",
          "first_order": "first-order MAML", "truth": "true function", "support": "support set",
          "query": "query set", "paper": "paper"}

# Colours for names outside the palette (other methods a lesson compares), in order of use.
_EXTRA_COLORS = ("#332288", "#44AA99", "#882255", "#DDCC77", "#117733", "#AA4499")


def color(name: str, index: int = 0) -> str:
    """The palette colour of ``name``; names outside the palette get a fixed extra colour by ``index``."""
    return COLORS.get(name, _EXTRA_COLORS[index % len(_EXTRA_COLORS)])


def label(name: str) -> str:
    """How ``name`` is written in legends (``"maml"`` -> ``"MAML"``); unknown names as they are."""
    return LABELS.get(name, name)


def to_numpy(values: Any) -> np.ndarray:
    """A float NumPy array from a tensor (any device, with or without grad), list or array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=float)


def _mean_ci(result: Any) -> tuple[np.ndarray, np.ndarray]:
    """(mean, 95% half-width) from an ``EvalResult``, or from a ``(mean, ci95)`` pair."""
    if hasattr(result, "mean") and hasattr(result, "ci95"):
        mean, ci = result.mean, result.ci95
    else:
        mean, ci = result
    mean, ci = to_numpy(mean), to_numpy(ci)
    if mean.shape != ci.shape:
        raise ValueError(f"mean and ci95 must have the same shape, got {mean.shape} and {ci.shape}")
    return mean, ci


def _value_ci(value: Any) -> tuple[float, float | None]:
    """(value, half-width or None) from a number, a ``(value, ci95)`` pair, or ``EvalResult.at(k)``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"a bar is a number or a (value, ci95) pair, got {value!r}")
        return float(value[0]), (None if value[1] is None else float(value[1]))
    return float(value), None


# ---------------------------------------------------------------------------------------
# Sine-wave regression


def plot_sine_tasks(x: Any, curves: Any, *, true_y: Any, x_support: Any, y_support: Any,
                    x_query: Any = None, y_query: Any = None) -> Figure:
    """The task distribution (many waves) beside one task as the learner sees it.

    Args:
        x: [n] a dense grid of inputs.
        curves: [num_tasks, n] several tasks' true values on the grid.
        true_y: [n] the one task's true values on the grid.
        x_support, y_support: [K] (or [K, 1]) its support points.
        x_query, y_query: [M] its query points (optional).

    Returns:
        A Figure with two panels.
    """
    x, curves, true_y = to_numpy(x), to_numpy(curves), to_numpy(true_y).ravel()
    if curves.ndim != 2 or curves.shape[1] != x.shape[0] or true_y.shape != x.shape:
        raise ValueError(f"curves must be [num_tasks, {x.shape[0]}] and true_y [{x.shape[0]}], "
                         f"got {curves.shape} and {true_y.shape}")
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    shades = np.linspace(0.25, 0.85, len(curves))
    for y, shade in zip(curves, shades):
        left.plot(x, y, color=str(shade), linewidth=1.2)
    left.set_title(f"{len(curves)} tasks from the distribution")
    right.plot(x, true_y, color=COLORS["truth"], linestyle="--", linewidth=1.2,
               label="true function (hidden)")
    right.scatter(to_numpy(x_support).ravel(), to_numpy(y_support).ravel(), s=55, zorder=3,
                  color=COLORS["support"], edgecolors="black", linewidths=0.6,
                  label=f"support set (K = {to_numpy(x_support).size})")
    if x_query is not None and y_query is not None:
        right.scatter(to_numpy(x_query).ravel(), to_numpy(y_query).ravel(), s=30, zorder=2,
                      facecolors="none", edgecolors=COLORS["query"], linewidths=1.3,
                      label=f"query set ({to_numpy(x_query).size} points)")
    right.set_title("One task: what the learner is given and scored on")
    right.legend(loc="upper right", fontsize=8, framealpha=0.9)
    for ax in (left, right):
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
    left.set_ylabel("y = A sin(x − φ)")
    return fig


@dataclass(frozen=True)
class SineFit:
    """One sine task and what each model predicts on it after some gradient steps.

    Attributes:
        x: [n] a dense grid of inputs.
        true_y: [n] the task's true values on the grid.
        x_support, y_support: [K] the points the models adapted on.
        predictions: model name -> {number of steps -> [n] predictions on the grid}.
        title: names the row (for example ``"K = 5"``).
        support_range: (low, high): shade the interval the support points were drawn from.
    """

    x: Any
    true_y: Any
    x_support: Any
    y_support: Any
    predictions: Mapping[str, Mapping[int, Any]]
    title: str = ""
    support_range: tuple[float, float] | None = None


_STEP_STYLES = {"first": dict(linestyle=":", linewidth=1.6, alpha=0.9),
                "middle": dict(linestyle="--", linewidth=1.6, alpha=0.9),
                "last": dict(linestyle="-", linewidth=2.2, alpha=1.0)}


def _step_style(i: int, n: int) -> dict:
    return _STEP_STYLES["last" if i == n - 1 else "first" if i == 0 else "middle"]


def _step_label(step: int) -> str:
    return "before adaptation" if step == 0 else f"after {step} step{'s' if step > 1 else ''}"


def plot_sine_fits(fits: Sequence[SineFit]) -> Figure:
    """The paper's Figure 2: one row per task, one column per model, fits after a few steps.

    Each panel shows the true curve, the support points and the model's predictions
    after each number of steps in ``fit.predictions[model]`` (0 steps dotted, the last
    number solid).

    Returns:
        A Figure with ``len(fits)`` rows and one column per model.
    """
    if not fits:
        raise ValueError("plot_sine_fits needs at least one SineFit")
    models = list(fits[0].predictions)
    if any(list(f.predictions) != models for f in fits):
        raise ValueError("every SineFit must have predictions for the same models, in the same order")
    fig = Figure(figsize=(5.2 * len(models), 3.3 * len(fits)), layout="constrained")
    axes = fig.subplots(len(fits), len(models), squeeze=False, sharex=True, sharey="row")
    for row, fit in zip(axes, fits):
        x, true_y = to_numpy(fit.x), to_numpy(fit.true_y).ravel()
        for ax, name in zip(row, models):
            if fit.support_range is not None:
                ax.axvspan(*fit.support_range, color=COLORS["support"], alpha=0.12, linewidth=0)
            ax.plot(x, true_y, color=COLORS["truth"], linewidth=1.4)
            steps = sorted(fit.predictions[name])
            for i, step in enumerate(steps):
                ax.plot(x, to_numpy(fit.predictions[name][step]).ravel(), color=color(name),
                        **_step_style(i, len(steps)))
            ax.scatter(to_numpy(fit.x_support).ravel(), to_numpy(fit.y_support).ravel(), s=50,
                       zorder=3, color=COLORS["support"], edgecolors="black", linewidths=0.6)
            ax.set_title(f"{fit.title}: {label(name)}" if fit.title else label(name))
            ax.grid(alpha=0.3)
        row[0].set_ylabel("y")
        low = min(true_y.min(), to_numpy(fit.y_support).min())
        high = max(true_y.max(), to_numpy(fit.y_support).max())
        pad = 0.35 * (high - low) + 0.5
        row[0].set_ylim(low - pad, high + pad)  # predictions that run away are clipped, not rescaled
    for ax in axes[-1]:
        ax.set_xlabel("x")
    # One legend for the figure: line styles (in grey) stand for the number of steps,
    # colours for the models (named in the panel titles).
    steps = sorted({s for f in fits for p in f.predictions.values() for s in p})
    handles = [Line2D([], [], color=COLORS["truth"], linewidth=1.4, label=label("truth"))]
    handles += [Line2D([], [], color="#666666", label=_step_label(s), **_step_style(i, len(steps)))
                for i, s in enumerate(steps)]
    handles.append(Line2D([], [], linestyle="none", marker="o", markersize=7, color=COLORS["support"],
                          markeredgecolor="black", label="support points"))
    if any(f.support_range is not None for f in fits):
        handles.append(Patch(color=COLORS["support"], alpha=0.12, label="where support points are drawn"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    return fig


def plot_adaptation_curves(panels: Mapping[str, Mapping[str, Any]], *, ylabel: str = "MSE on the query set",
                           xlabel: str = "gradient steps at test time",
                           reference: Mapping[str, Mapping[str, Mapping[int, float]]] | None = None,
                           reference_label: str = "paper", title: str | None = None) -> Figure:
    """The paper's Figure 3: the score after 0..k steps, a line per model with its 95% CI band.

    Args:
        panels: panel title -> {model name -> ``EvalResult`` or ``(mean, ci95)``, each [k + 1]}.
        ylabel, xlabel: axis labels (use ``ylabel="accuracy"`` for classification).
        reference: panel title -> {model name -> {step -> value}}: published numbers drawn
            as open diamonds (for example ``{"K = 5": PAPER_SINE_5SHOT}``).
        reference_label: how the reference is named in the legend.
        title: a title over all panels.

    Returns:
        A Figure with one panel per entry of ``panels``, sharing the y axis.
    """
    if not panels:
        raise ValueError("plot_adaptation_curves needs at least one panel")
    reference = reference or {}
    unknown = set(reference) - set(panels)
    if unknown:
        raise ValueError(f"reference names panels that do not exist: {sorted(unknown)}")
    fig = Figure(figsize=(4.3 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (panel_title, curves) in zip(axes, panels.items()):
        for i, (name, result) in enumerate(curves.items()):
            mean, ci = _mean_ci(result)
            steps = np.arange(len(mean))
            ax.fill_between(steps, mean - ci, mean + ci, color=color(name, i), alpha=0.22, linewidth=0)
            ax.plot(steps, mean, color=color(name, i), marker="o", markersize=3.5, linewidth=1.8,
                    label=label(name))
        for i, (name, points) in enumerate(reference.get(panel_title, {}).items()):
            ax.scatter(list(points), list(points.values()), marker="D", s=42, zorder=4,
                       facecolors="white", edgecolors=color(name, i), linewidths=1.6,
                       label=f"{reference_label}: {label(name)}")
        ax.set_title(panel_title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel(ylabel)
    # One legend under the panels, each entry once (models and reference markers of every panel).
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(text, handle)
    entries["shaded: 95% CI of the mean"] = Patch(color="#BBBBBB", alpha=0.5)
    fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncol=len(entries),
               fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def plot_training_curves(histories: Mapping[str, Any], *, labels: Mapping[str, str] | None = None,
                         ylabel: str = "training loss", logy: bool = True,
                         title: str | None = None) -> Figure:
    """Loss against iteration for one or more runs (``History`` objects, or anything with
    ``.step`` and ``.meta_loss`` lists).

    Args:
        histories: run name (a palette name such as ``"maml"``) -> history.
        labels: run name -> legend text (default: the palette's label).
        ylabel: what the loss is.
        logy: logarithmic y axis.
    """
    if not histories:
        raise ValueError("plot_training_curves needs at least one history")
    labels = labels or {}
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, (name, history) in enumerate(histories.items()):
        if len(history.step) != len(history.meta_loss):
            raise ValueError(f"history {name!r} has {len(history.step)} steps but "
                             f"{len(history.meta_loss)} losses")
        ax.plot(history.step, history.meta_loss, color=color(name, i), linewidth=1.6,
                label=labels.get(name, label(name)))
    if logy:
        ax.set_yscale("log")
        # 0.5, 1, 2 rather than 5x10^-1; minor ticks are labelled only on short ranges.
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def plot_score_bars(panels: Mapping[str, Mapping[str, Any]], *,
                    reference_lines: Mapping[str, Mapping[str, float]] | None = None,
                    labels: Mapping[str, str] | None = None, fmt: str = "{:.3g}",
                    xmax: float | None = None, title: str | None = None) -> Figure:
    """Horizontal bars, one panel per metric: compare a few methods at a glance.

    Args:
        panels: metric title -> {method name -> value, or (value, ci95)}; a palette name
            (``"maml"``, ``"first_order"``) gets its colour and label.
        reference_lines: metric title -> {line label -> value}, drawn as vertical lines
            (chance level, a paper's number) named in a legend under the panel.
        labels: method name -> how it is written (default: the palette's label).
        fmt: how the value beside each bar is written.
        xmax: right end of the value axis (default: room for the longest bar and its label).
        title: a title over all panels.
    """
    if not panels:
        raise ValueError("plot_score_bars needs at least one panel")
    reference_lines = reference_lines or {}
    labels = labels or {}
    longest = max(len(m) for m in panels.values())
    fig = Figure(figsize=(4.6 * len(panels), 0.55 * longest + 1.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (metric, bars) in zip(axes, panels.items()):
        names = list(bars)
        values = [_value_ci(bars[n]) for n in names]
        ys = np.arange(len(names))[::-1]
        for i, (y, name, (value, ci)) in enumerate(zip(ys, names, values)):
            ax.barh(y, value, xerr=ci, color=color(name, i), height=0.6, capsize=4,
                    error_kw=dict(elinewidth=1.2))
            text = fmt.format(value) + (f" ± {fmt.format(ci)}" if ci is not None else "")
            ax.text(value + (ci or 0), y, "  " + text, va="center", fontsize=8)
        lines = reference_lines.get(metric, {})
        for j, (line_label, value) in enumerate(lines.items()):
            ax.axvline(value, color=("black", COLORS["paper"], "#666666")[j % 3],
                       linestyle=("--", ":", "-.")[j % 3], linewidth=1.5,
                       label=f"{line_label} ({fmt.format(value)})")
        if lines:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(lines), fontsize=8,
                      frameon=False)
        ax.set_yticks(ys, [labels.get(n, label(n)) for n in names])
        right = max(v + (c or 0) for v, c in values)
        ax.set_xlim(0, xmax if xmax is not None else 1.45 * max(right, *lines.values(), 1e-12))
        ax.set_title(metric)
        ax.grid(alpha=0.3, axis="x")
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------
# Images (Omniglot)


def _images(images: Any) -> np.ndarray:
    """[n, H, W] from [n, H, W] or [n, 1, H, W]."""
    images = to_numpy(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"images must be [n, H, W] or [n, 1, H, W], got shape {images.shape}")
    return images


def _show(ax: Axes, image: np.ndarray, frame: str | None = None, cmap: str = "gray_r") -> None:
    ax.imshow(image, cmap=cmap, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_edgecolor(frame)
            spine.set_linewidth(2.5)


def plot_image_grid(images: Any, *, ncols: int = 10, titles: Sequence[str] | None = None,
                    row_titles: Sequence[str] | None = None, title: str | None = None,
                    cmap: str = "gray_r", cell_size: float = 0.9) -> Figure:
    """Images in a grid, filled row by row.

    Args:
        images: [n, H, W] or [n, 1, H, W] (ink = high values with the default ``cmap``,
            drawn dark on white).
        ncols: images per row.
        titles: [n] a caption above each image.
        row_titles: one label per row, written left of the row (for example alphabet names).
        title: a title over the grid.
        cmap: matplotlib colour map.
        cell_size: inches per image.
    """
    images = _images(images)
    n = len(images)
    nrows = math.ceil(n / ncols)
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} images")
    if row_titles is not None and len(row_titles) != nrows:
        raise ValueError(f"got {len(row_titles)} row titles for {nrows} rows of {ncols} images")
    extra = 1.6 if row_titles is not None else 0.0
    fig = Figure(figsize=(cell_size * ncols + extra, cell_size * nrows + (0.4 if title else 0)),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            _show(ax, images[i], cmap=cmap)
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
        else:
            ax.axis("off")
    for ax, row_title in zip(axes[:, 0], row_titles or []):
        ax.set_ylabel(row_title, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_episode(task: Any, *, title: str | None = None, class_names: Sequence[str] | None = None,
                 max_query: int | None = None, cmap: str = "gray_r", cell_size: float = 0.75) -> Figure:
    """An N-way K-shot episode: one column per class, support images above, query images below.

    Support images have an orange frame, query images a green one (the course palette).

    Args:
        task: a ``Task`` with image inputs ([n, 1, H, W]) and class labels 0..N-1.
        title: a title over the episode.
        class_names: [N] a caption above each column (default: the label).
        max_query: show at most this many query images per class.
    """
    x_support, x_query = _images(task.x_support), _images(task.x_query)
    y_support = to_numpy(task.y_support).astype(int)
    y_query = to_numpy(task.y_query).astype(int)
    classes = sorted(set(y_support.tolist()))
    if set(y_query.tolist()) - set(classes):
        raise ValueError("the query set has labels that the support set lacks")
    if class_names is not None and len(class_names) != len(classes):
        raise ValueError(f"got {len(class_names)} class names for {len(classes)} classes")
    support = [x_support[y_support == c] for c in classes]
    query = [x_query[y_query == c][:max_query] for c in classes]
    k_shot = max(len(s) for s in support)
    k_query = max(len(q) for q in query)
    fig = Figure(figsize=(cell_size * len(classes) + 0.9, cell_size * (k_shot + k_query) + 0.5),
                 layout="constrained")
    axes = fig.subplots(k_shot + k_query, len(classes), squeeze=False)
    for c in range(len(classes)):
        for r in range(k_shot + k_query):
            ax = axes[r, c]
            images, r_in, frame = (support[c], r, COLORS["support"]) if r < k_shot else \
                (query[c], r - k_shot, COLORS["query"])
            if r_in < len(images):
                _show(ax, images[r_in], frame=frame, cmap=cmap)
            else:
                ax.axis("off")
        caption = class_names[c] if class_names is not None else f"label {classes[c]}"
        axes[0, c].set_title(caption, fontsize=7)
    axes[0, 0].set_ylabel("support", color=COLORS["support"], fontsize=9, fontweight="bold")
    if k_query:
        axes[k_shot, 0].set_ylabel("query", color=COLORS["query"], fontsize=9, fontweight="bold")
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------
# Diagrams


def _box(ax: Axes, xy: tuple[float, float], text: str, color: str = "#EEEEEE", width: float = 0.3,
         height: float = 0.15, fontsize: float = 8.5) -> None:
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.012", facecolor=color, edgecolor="black",
                                linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)


def _tint(hex_color: str, amount: float = 0.35) -> str:
    """``hex_color`` mixed with white: a light fill that keeps black text readable."""
    rgb = [int(hex_color[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 - amount * (255 - c)):02X}" for c in rgb)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], *, color: str = "black",
           linestyle: str = "-", rad: float = 0.0, text: str | None = None,
           text_offset: tuple[float, float] = (0.0, 0.03), fontsize: float = 8.5) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=color,
                                 linestyle=linestyle, linewidth=1.2,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2))
    if text:
        mid = ((start[0] + end[0]) / 2 + text_offset[0], (start[1] + end[1]) / 2 + text_offset[1])
        ax.text(*mid, text, ha="center", va="center", fontsize=fontsize, color=color)


def _sketch_initialisation(ax: Axes) -> None:
    """The paper's Figure 1: meta-learning moves θ to where one step reaches every task's optimum."""
    path = np.array([[0.05, 0.1], [0.17, 0.3], [0.3, 0.36], [0.42, 0.5]])
    ax.plot(path[:, 0], path[:, 1], color=COLORS["maml"], linewidth=3, solid_capstyle="round")
    ax.text(0.32, 0.14, "meta-learning\n(outer loop)", color=COLORS["maml"], fontsize=8.5, ha="center")
    ax.plot(*path[-1], "o", color=COLORS["maml"], markersize=8)
    ax.text(path[-1][0] - 0.07, path[-1][1] + 0.03, r"$\theta$", fontsize=14, color=COLORS["maml"])
    targets = [(0.88, 0.8), (0.92, 0.45), (0.72, 0.12)]
    for i, target in enumerate(targets, start=1):
        _arrow(ax, tuple(path[-1]), target, color="#555555", linestyle="--", rad=-0.15)
        ax.plot(*target, "*", color=COLORS["query"], markersize=12)
        ax.text(target[0] + 0.03, target[1] + 0.04, rf"$\theta^*_{i}$", fontsize=12)
    ax.text(0.5, 0.9, "adaptation (inner loop):\n"
            r"$\theta'_i = \theta - \alpha \nabla_\theta \mathcal{L}_{\mathcal{T}_i}(\theta)$",
            fontsize=9, ha="center", color="#333333")


def _sketch_generator(ax: Axes) -> None:
    """A network reads the support set and writes another network's weights."""
    _box(ax, (0.2, 0.82), "support set\n(x, y) × K", _tint(COLORS["support"]))
    _box(ax, (0.2, 0.47), "generator\nnetwork $g_\\phi$", _tint(COLORS["maml"]))
    _box(ax, (0.76, 0.47), "learner $f_\\theta$ with\n$\\theta = g_\\phi$(support)", width=0.38)
    _box(ax, (0.76, 0.82), "query x", _tint(COLORS["query"]), width=0.22)
    _box(ax, (0.76, 0.12), "prediction ŷ", "#FFFFFF", width=0.26)
    _arrow(ax, (0.2, 0.74), (0.2, 0.55))
    _arrow(ax, (0.35, 0.47), (0.57, 0.47), text="weights", text_offset=(0, 0.05))
    _arrow(ax, (0.76, 0.74), (0.76, 0.55))
    _arrow(ax, (0.76, 0.39), (0.76, 0.2))
    ax.text(0.22, 0.16, "meta-learned: $\\phi$\n(no gradient steps\nat test time)", fontsize=8.5,
            ha="center", color="#333333")


def _sketch_optimizer(ax: Axes) -> None:
    """A learned update rule replaces gradient descent's θ ← θ − α∇L."""
    _box(ax, (0.2, 0.78), "learner $f_{\\theta_t}$", width=0.3)
    _box(ax, (0.78, 0.78), "loss on the\nsupport set", _tint(COLORS["support"]), width=0.34)
    _box(ax, (0.78, 0.36), "optimiser network\n$m_\\phi$ (an LSTM)", _tint(COLORS["maml"]), width=0.38)
    _box(ax, (0.2, 0.36), "$\\theta_{t+1} = \\theta_t$\n$+\\, m_\\phi(\\nabla\\mathcal{L})$", "#FFFFFF",
         width=0.34)
    _arrow(ax, (0.35, 0.78), (0.61, 0.78))
    _arrow(ax, (0.78, 0.7), (0.78, 0.44), text="$\\nabla\\mathcal{L}$", text_offset=(0.07, 0))
    _arrow(ax, (0.59, 0.36), (0.37, 0.36), text="update", text_offset=(0, 0.05))
    _arrow(ax, (0.2, 0.44), (0.2, 0.7), text="repeat", text_offset=(-0.11, 0))
    ax.text(0.5, 0.1, "meta-learned: $\\phi$, the update rule itself", fontsize=8.5, ha="center",
            color="#333333")


_SKETCHES = {
    "initialisation": ("1. Learn an initialisation (MAML)", _sketch_initialisation),
    "generator": ("2. Generate the weights (hypernetwork)", _sketch_generator),
    "optimizer": ("3. Learn the optimiser", _sketch_optimizer),
}


def sketch_meta_learning(kinds: Sequence[str] = ("initialisation", "generator", "optimizer")) -> Figure:
    """Schematic diagrams of three kinds of meta-learning, one panel each.

    Args:
        kinds: any of ``"initialisation"`` (MAML: a starting point that one gradient step
            adapts to any task, the paper's Figure 1), ``"generator"`` (a network writes
            another network's weights from the support set) and ``"optimizer"`` (a learned
            update rule replaces gradient descent).
    """
    unknown = [k for k in kinds if k not in _SKETCHES]
    if unknown or not kinds:
        raise ValueError(f"unknown sketch kinds {unknown}: choose from {list(_SKETCHES)}")
    fig = Figure(figsize=(4.4 * len(kinds), 3.5), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        heading, draw = _SKETCHES[kind]
        draw(ax)
        ax.set_title(heading, fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.axis("off")
    return fig


__all__ = [
    "COLORS", "LABELS", "color", "label", "to_numpy", "SineFit", "plot_sine_tasks", "plot_sine_fits",
    "plot_adaptation_curves", "plot_training_curves", "plot_score_bars", "plot_image_grid",
    "plot_episode", "sketch_meta_learning",
]
