"""Plot helpers: they return Figures that draw what they were given, in the course palette."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from mamlcourse import plotting
from mamlcourse.algorithms.published import SINE_5SHOT, sine_reference
from mamlcourse.evaluate import EvalResult
from mamlcourse.tasks import Task
from mamlcourse.train import History

PAPER_SINE_5SHOT = {name: sine_reference(name) for name in SINE_5SHOT}  # {name: {steps: MSE}}
PALETTE = {name: to_hex(c) for name, c in plotting.COLORS.items()}  # to_hex writes lower case


def draws(fig: Figure) -> Figure:
    """Render to PNG (catches mathtext and layout errors that only show when drawing)."""
    fig.savefig(io.BytesIO(), format="png", dpi=40)
    return fig


def line_colors(ax) -> list[str]:
    return [to_hex(line.get_color()) for line in ax.get_lines()]


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """Helpers never go through pyplot: nothing is left open to show or to leak."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt
        assert plt.get_fignums() == []


def test_palette_names_every_colour():
    assert set(plotting.LABELS) == set(plotting.COLORS)
    assert plotting.COLORS["maml"] != plotting.COLORS["pretrained"]
    assert plotting.color("maml") == plotting.COLORS["maml"]
    assert plotting.color("something else", 0) != plotting.color("something else", 1)
    assert plotting.label("maml") == "MAML" and plotting.label("new method") == "new method"


def test_to_numpy_takes_tensors_with_grad():
    t = torch.ones(3, requires_grad=True) * 2
    np.testing.assert_array_equal(plotting.to_numpy(t), [2.0, 2.0, 2.0])


def test_adaptation_curves_draw_means_bands_and_reference():
    per_task = torch.arange(40.0).view(4, 10)
    maml = EvalResult("mse", per_task)
    fig = draws(plotting.plot_adaptation_curves(
        {"K = 5": {"maml": maml, "pretrained": (np.full(10, 5.0), np.full(10, 0.5))},
         "K = 10": {"maml": maml}},
        reference={"K = 5": PAPER_SINE_5SHOT}))
    assert isinstance(fig, Figure)
    left, right = fig.axes[:2]
    assert [ax.get_title() for ax in (left, right)] == ["K = 5", "K = 10"]
    maml_line = left.get_lines()[0]
    assert to_hex(maml_line.get_color()) == PALETTE["maml"]
    np.testing.assert_allclose(maml_line.get_ydata(), maml.mean.numpy())
    # The band spans mean ± ci95.
    band = [c for c in left.collections if isinstance(c, PolyCollection)][1]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(4.5) and ys.max() == pytest.approx(5.5)
    # The paper's numbers sit at their steps.
    offsets = [c.get_offsets() for c in left.collections if not isinstance(c, PolyCollection)]
    np.testing.assert_allclose(offsets[0], [[1, 0.67], [5, 0.38], [10, 0.35]])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["MAML", "pretrained", "paper: MAML", "paper: pretrained", "shaded: 95% CI of the mean"]


def test_adaptation_curves_reject_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        plotting.plot_adaptation_curves({"a": {"maml": (np.zeros(3), np.zeros(4))}})
    with pytest.raises(ValueError, match="panels that do not exist"):
        plotting.plot_adaptation_curves({"a": {"maml": (np.zeros(3), np.zeros(3))}},
                                        reference={"b": PAPER_SINE_5SHOT})
    with pytest.raises(ValueError, match="at least one"):
        plotting.plot_adaptation_curves({})


def sine_fit(title="K = 5", models=("maml", "pretrained"), support_range=None):
    x = np.linspace(-5, 5, 50)
    preds = {m: {0: np.zeros(50), 1: np.sin(x) / 2, 10: np.sin(x)} for m in models}
    return plotting.SineFit(x, np.sin(x), x[:5], np.sin(x[:5]), preds, title=title,
                            support_range=support_range)


def test_sine_fits_one_row_per_task_one_column_per_model():
    fig = draws(plotting.plot_sine_fits([sine_fit("K = 5"), sine_fit("K = 10", support_range=(-5, 0))]))
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes] == ["K = 5: MAML", "K = 5: pretrained",
                                                  "K = 10: MAML", "K = 10: pretrained"]
    maml_panel, pretrained_panel = fig.axes[:2]
    # True curve, then one line per number of steps in the model's colour; the last is solid.
    assert line_colors(maml_panel) == ["#000000"] + [PALETTE["maml"]] * 3
    assert line_colors(pretrained_panel)[1:] == [PALETTE["pretrained"]] * 3
    assert [line.get_linestyle() for line in maml_panel.get_lines()[1:]] == [":", "--", "-"]
    np.testing.assert_allclose(maml_panel.get_lines()[3].get_ydata(), np.sin(np.linspace(-5, 5, 50)))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:4] == ["true function", "before adaptation", "after 1 step", "after 10 steps"]
    assert "where support points are drawn" in legend


def test_sine_fits_need_the_same_models_in_every_row():
    with pytest.raises(ValueError, match="same models"):
        plotting.plot_sine_fits([sine_fit(), sine_fit(models=("maml",))])
    with pytest.raises(ValueError, match="at least one"):
        plotting.plot_sine_fits([])


def test_sine_tasks_show_every_curve_and_the_task():
    x = torch.linspace(-5, 5, 30)
    curves = torch.stack([a * torch.sin(x) for a in (1.0, 2.0, 3.0)])
    fig = draws(plotting.plot_sine_tasks(x, curves, true_y=curves[0], x_support=x[:4, None],
                                         y_support=curves[0, :4, None], x_query=x[4:9],
                                         y_query=curves[0, 4:9]))
    left, right = fig.axes
    assert len(left.get_lines()) == 3
    support, query = right.collections
    assert len(support.get_offsets()) == 4 and len(query.get_offsets()) == 5
    assert "support set (K = 4)" in [t.get_text() for t in right.get_legend().get_texts()]
    with pytest.raises(ValueError, match="curves must be"):
        plotting.plot_sine_tasks(x, curves[:, :10], true_y=curves[0], x_support=x, y_support=x)


def test_training_curves_plot_each_history():
    maml = History(step=[10, 20, 30], meta_loss=[3.0, 2.0, 1.0])
    fig = draws(plotting.plot_training_curves({"maml": maml, "first_order": maml},
                                              labels={"maml": "second order"}))
    ax = fig.axes[0]
    assert line_colors(ax) == [PALETTE["maml"], PALETTE["first_order"]]
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [3.0, 2.0, 1.0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["second order", "first-order MAML"]
    assert ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="has 2 steps but 3 losses"):
        plotting.plot_training_curves({"maml": History(step=[1, 2], meta_loss=[1.0, 2.0, 3.0])})


def test_score_bars_lengths_errors_and_reference_lines():
    fig = draws(plotting.plot_score_bars(
        {"accuracy": {"from scratch": (0.4, 0.05), "nearest neighbour": 0.5},
         "ms": {"maml": 2.0, "first_order": 1.0}},
        reference_lines={"accuracy": {"chance": 0.2}}, labels={"maml": "second order"}))
    acc, ms = fig.axes
    widths = [p.get_width() for p in acc.patches]
    assert widths == pytest.approx([0.4, 0.5])
    assert [p.get_width() for p in ms.patches] == pytest.approx([2.0, 1.0])
    assert to_hex(ms.patches[0].get_facecolor()) == PALETTE["maml"]
    assert [t.get_text() for t in acc.get_yticklabels()] == ["from scratch", "nearest neighbour"]
    assert [t.get_text() for t in ms.get_yticklabels()] == ["second order", "first-order MAML"]
    assert any(line.get_xdata()[0] == 0.2 for line in acc.get_lines())
    assert [t.get_text() for t in acc.get_legend().get_texts()] == ["chance (0.2)"]
    assert ms.get_legend() is None
    assert any("0.4 ± 0.05" in t.get_text() for t in acc.texts)
    with pytest.raises(ValueError, match="a number or a"):
        plotting.plot_score_bars({"a": {"x": (1, 2, 3)}})


def test_image_grid_fills_rows_and_labels_them():
    images = torch.rand(7, 1, 28, 28)
    fig = draws(plotting.plot_image_grid(images, ncols=4, row_titles=["first", "second"],
                                         titles=[str(i) for i in range(7)]))
    assert len(fig.axes) == 8
    assert [len(ax.images) for ax in fig.axes] == [1] * 7 + [0]
    np.testing.assert_allclose(fig.axes[5].images[0].get_array(), images[5, 0].numpy())
    assert fig.axes[4].get_ylabel() == "second"
    with pytest.raises(ValueError, match="row titles"):
        plotting.plot_image_grid(images, ncols=4, row_titles=["only one"])
    with pytest.raises(ValueError, match=r"\[n, H, W\]"):
        plotting.plot_image_grid(torch.rand(28, 28))


def test_episode_puts_each_class_in_a_column():
    n_way, k_query = 5, 2
    labels = torch.arange(n_way)
    x_support = labels.float().view(-1, 1, 1, 1).expand(-1, 1, 4, 4)
    x_query = labels.repeat(k_query).float().view(-1, 1, 1, 1).expand(-1, 1, 4, 4)
    task = Task(x_support, labels, x_query, labels.repeat(k_query))
    fig = draws(plotting.plot_episode(task, title="5-way 1-shot"))
    assert len(fig.axes) == (1 + k_query) * n_way
    grid = np.array(fig.axes).reshape(1 + k_query, n_way)
    for c in range(n_way):  # every image in column c shows class c
        assert all(ax.images[0].get_array().mean() == c for ax in grid[:, c])
    assert [ax.get_title() for ax in grid[0]] == [f"label {c}" for c in range(n_way)]
    assert to_hex(grid[0, 0].spines["top"].get_edgecolor()) == PALETTE["support"]
    assert to_hex(grid[1, 0].spines["top"].get_edgecolor()) == PALETTE["query"]
    bad = Task(x_support, labels, x_query, labels.repeat(k_query) + 1)
    with pytest.raises(ValueError, match="support set lacks"):
        plotting.plot_episode(bad)


def test_sketches_draw_each_kind():
    fig = draws(plotting.sketch_meta_learning())
    assert [ax.get_title() for ax in fig.axes] == [
        "1. Learn an initialisation (MAML)", "2. Generate the weights (hypernetwork)",
        "3. Learn the optimiser"]
    assert len(draws(plotting.sketch_meta_learning(["initialisation"])).axes) == 1
    with pytest.raises(ValueError, match="choose from"):
        plotting.sketch_meta_learning(["gradient boosting"])
