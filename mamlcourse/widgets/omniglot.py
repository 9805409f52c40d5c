"""The Omniglot explorer: one test episode, its support images, and the adapted model's beliefs.

For an N-way K-shot test episode the explorer adapts θ on the support images with
0..S inner steps (``mamlcourse.adaptation_trajectory``) and keeps, for every step, the
class probabilities of every query image. A table shows a few query images (rows)
against the classes (columns, headed by their support images), each cell the
probability the adapted model gives that class; the true class is framed. Beside it, the
accuracy on the whole query set after each number of steps, the chosen one marked.

Predictions use batch statistics of the query set, exactly as ``mamlcourse.evaluate``
does, so the accuracy shown is the one ``evaluate`` reports for the same episode.

Example:
    >>> tasks = OmniglotTasks.from_config(cfg, "test", device="cpu")
    >>> explorer = OmniglotExplorer(model, cfg, tasks)
    >>> explorer.render(episode=3, step=1).accuracy
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle
from torch import nn

from ..config import OmniglotConfig
from ..maml import adaptation_trajectory, detach_params, functional_forward, get_params
from ..plotting import COLORS
from ..tasks import EVAL_SEED, Task, TaskSampler, seeded_generator
from .base import Explorer, LRUCache, new_figure, torch_threads

CORRECT, WRONG = COLORS["query"], "#D55E00"  # green and vermillion (the course palette)


@dataclass(frozen=True)
class EpisodeData:
    """One adapted episode, precomputed for drawing.

    Attributes:
        task: the episode (x_support [N*K, 1, S, S], y_support [N*K], x_query [N*Q, 1, S, S],
            y_query [N*Q]).
        probabilities: [steps + 1, N*Q, N] softmax of the adapted model's logits after each step.
        accuracy: [steps + 1] fraction of query images classified correctly after each step.
        support_loss: [steps + 1] cross-entropy on the support images after each step.
    """

    task: Task
    probabilities: np.ndarray
    accuracy: np.ndarray
    support_loss: np.ndarray


@dataclass(frozen=True)
class OmniglotView:
    """What the Omniglot explorer displays now.

    Attributes:
        episode, step: the control values.
        probabilities: [N*Q, N] class probabilities of every query image at this step.
        predicted: [N*Q] the most probable class of each query image.
        y_query: [N*Q] the true classes.
        accuracy: accuracy on the whole query set at this step.
        accuracy_per_step: [steps + 1] the same after 0..steps steps.
        shown: indices of the query images drawn in the table.
    """

    episode: int
    step: int
    probabilities: np.ndarray
    predicted: np.ndarray
    y_query: np.ndarray
    accuracy: float
    accuracy_per_step: np.ndarray
    shown: np.ndarray


class OmniglotExplorer(Explorer[OmniglotView]):
    """Adapt a meta-trained classifier to test episodes and watch its probabilities move.

    Args:
        model: a ConvNet4 (its own parameters are θ).
        cfg: its config (``n_way``, α, ``eval_max_steps``).
        tasks: the test episodes (an ``OmniglotTasks`` of the test split, or any sampler
            whose ``sample(1, generator)`` returns image tasks).
        max_steps: the step slider's maximum (default ``cfg.eval_max_steps``).
        inner_lr: α at test (default ``cfg.inner_lr``).
        shown_per_class: query images per class drawn in the table (all are scored).
        seed: episode e is ``tasks.sample(1, seeded_generator(seed + e))``.

    Controls: ``episode`` (with a "new episode" button) and ``step``.
    """

    def __init__(self, model: nn.Module, cfg: OmniglotConfig, tasks: TaskSampler, *,
                 max_steps: int | None = None, inner_lr: float | None = None, shown_per_class: int = 2,
                 seed: int = EVAL_SEED):
        super().__init__()
        self.model = model.eval()
        self.params = detach_params(get_params(model))
        self.cfg = cfg
        self.tasks = tasks
        self.max_steps = cfg.eval_max_steps if max_steps is None else max_steps
        self.inner_lr = cfg.inner_lr if inner_lr is None else inner_lr
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        self.seed = seed
        self.cache: LRUCache[EpisodeData] = LRUCache(16)
        first = self.episode(0)
        n_query = len(first.task.y_query)
        self.n_way = int(first.task.y_support.max()) + 1
        per_class = n_query // self.n_way
        if shown_per_class < 1 or shown_per_class > per_class:
            raise ValueError(f"shown_per_class must be in 1..{per_class} (query images per class), "
                             f"got {shown_per_class}")
        labels = first.task.y_query.numpy()
        self.shown = np.concatenate([np.flatnonzero(labels == c)[:shown_per_class]
                                     for c in range(self.n_way)])

        style = {"description_width": "initial"}
        self.controls = {
            "episode": widgets.BoundedIntText(value=0, min=0, max=10**6, description="episode",
                                              layout=widgets.Layout(width="160px"), style=style),
            "step": widgets.IntSlider(value=min(cfg.eval_inner_steps, self.max_steps) or 1, min=0,
                                      max=self.max_steps, description="inner step", continuous_update=True,
                                      style=style),
        }
        self.new_episode_button = widgets.Button(description="new episode", icon="refresh",
                                                 tooltip="draw another test episode")
        self.new_episode_button.on_click(lambda _button: self.new_episode())
        self._build_figure()
        self._connect([["episode", self.new_episode_button, "step"]],
                      title=f"Omniglot explorer: {self.n_way}-way test episodes, adapted step by step")

    # -- data ----------------------------------------------------------------------------
    def task(self, episode: int) -> Task:
        """Test episode number ``episode`` (the same every time)."""
        return self.tasks.sample(1, seeded_generator(self.seed + int(episode)))[0]  # type: ignore[return-value]

    def episode(self, episode: int) -> EpisodeData:
        """The adapted episode (computed on first use, then cached)."""
        return self.cache.get(int(episode), lambda: self._compute(int(episode)))

    def _compute(self, episode: int) -> EpisodeData:
        device = next(self.model.parameters()).device
        task = self.task(episode).to(device)
        with torch_threads(1), torch.no_grad():
            path = adaptation_trajectory(self.model, self.params, task.x_support, task.y_support,
                                         loss_fn=F.cross_entropy, inner_lr=self.inner_lr,
                                         num_inner_steps=self.max_steps)
            # The whole query set in one batch at every step: batch norm sees what evaluate sees.
            logits = torch.stack([functional_forward(self.model, p, task.x_query) for p in path])
            accuracy = (logits.argmax(-1) == task.y_query).float().mean(-1)
            support_loss = torch.stack([F.cross_entropy(functional_forward(self.model, p, task.x_support),
                                                        task.y_support) for p in path])
        return EpisodeData(task.to("cpu"), logits.softmax(-1).cpu().numpy(), accuracy.cpu().numpy(),
                           support_loss.cpu().numpy())

    def new_episode(self) -> OmniglotView:
        """The "new episode" button: move to the next episode (a plain method, testable)."""
        self.controls["episode"].value += 1  # the observer redraws
        return self.view  # type: ignore[return-value]

    # -- drawing -------------------------------------------------------------------------
    def _build_figure(self) -> None:
        rows, n = len(self.shown), self.n_way
        self.fig = new_figure(9.0, 0.45 * (rows + 2) + 1.2)
        grid = self.fig.add_gridspec(1, 2, width_ratios=(0.9, 1), left=0.03, right=0.98, bottom=0.15,
                                     top=0.91, wspace=0.12)
        ax = self.fig.add_subplot(grid[0])
        ax_acc = self.fig.add_subplot(grid[1])
        ax.set_xlim(-2.0, n - 0.5 + 0.9)
        ax.set_ylim(rows - 0.5, -2.0)
        ax.set_aspect("equal")
        ax.axis("off")
        blank = np.zeros((rows, n))
        self.prob_image = ax.imshow(blank, cmap="Blues", vmin=0, vmax=1, interpolation="nearest",
                                    extent=(-0.5, n - 0.5, rows - 0.5, -0.5))
        self.support_images = [ax.imshow(np.zeros((2, 2)), cmap="gray_r", vmin=0, vmax=1,
                                         extent=(j - 0.45, j + 0.45, -0.6, -1.5)) for j in range(n)]
        self.support_frames = [ax.add_patch(Rectangle((j - 0.45, -1.5), 0.9, 0.9, fill=False,
                                                      ec=COLORS["support"], lw=2)) for j in range(n)]
        for j in range(n):
            ax.text(j, -1.6, str(j), ha="center", va="bottom", fontsize=8.5)
        ax.text(-0.6, -1.6, "class", ha="right", va="bottom", fontsize=8.5)
        self.query_images = [ax.imshow(np.zeros((2, 2)), cmap="gray_r", vmin=0, vmax=1,
                                       extent=(-1.45, -0.55, i + 0.45, i - 0.45)) for i in range(rows)]
        ax.text(-1.6, -1.05, "support", ha="right", va="center", fontsize=8.5, color=COLORS["support"],
                fontweight="bold")
        ax.text(-1.6, (rows - 1) / 2, "query images", ha="right", va="center", fontsize=8.5,
                color=COLORS["query"], fontweight="bold", rotation=90)
        self.truth_boxes = [ax.add_patch(Rectangle((0, 0), 1, 1, fill=False, ec=COLORS["query"], lw=2.2))
                            for _ in range(rows)]
        self.cell_texts = [[ax.text(j, i, "", ha="center", va="center", fontsize=8) for j in range(n)]
                           for i in range(rows)]
        self.row_marks = [ax.text(n - 0.5 + 0.45, i, "", ha="center", va="center", fontsize=12,
                                  fontweight="bold") for i in range(rows)]
        self.axes = {"table": ax, "accuracy": ax_acc}

        steps = np.arange(self.max_steps + 1)
        ax_acc.set_xlim(-0.3, self.max_steps + 0.3)
        ax_acc.set_ylim(0, 1.04)
        ax_acc.set_xticks(steps)
        ax_acc.set_xlabel("inner steps", labelpad=1)
        ax_acc.set_ylabel("fraction of the query set")
        ax_acc.grid(alpha=0.25)
        zeros = np.zeros_like(steps, dtype=float)
        ax_acc.axhline(1 / n, color="grey", ls=":", lw=1, label=f"chance (1/{n})")
        self.artists = {
            "accuracy": ax_acc.plot(steps, zeros, "o-", color=COLORS["maml"], lw=2, ms=4,
                                    label="accuracy")[0],
            "true_prob": ax_acc.plot(steps, zeros, "s--", color=COLORS["query"], lw=1.2, ms=3,
                                     label="mean probability of the true class")[0],
            "step_line": ax_acc.axvline(1, color="black", lw=1, alpha=0.6),
            "step_marker": ax_acc.plot([1], [0], "o", ms=11, mfc="none", mec="black", mew=1.5)[0],
        }
        ax_acc.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=8, frameon=False,
                      handlelength=1.8, columnspacing=1.2)
        # In the order the artists were added, as a full draw paints them.
        self.content = [*self.support_images, *self.support_frames, *self.query_images,
                        self.artists["accuracy"], self.artists["true_prob"], ax.title]
        # The true-class frames sit on the probability image, so they are redrawn after it.
        self.animated = [self.prob_image, *self.truth_boxes, *(t for row in self.cell_texts for t in row),
                         *self.row_marks, self.artists["step_line"], self.artists["step_marker"],
                         ax_acc.title]

    def _draw(self, state: dict[str, Any]) -> tuple[OmniglotView, str]:
        episode, step = int(state["episode"]), int(state["step"])
        data = self.episode(episode)
        task = data.task
        y_query = task.y_query.numpy()
        probs = data.probabilities[step]                                   # [N*Q, N]
        predicted = probs.argmax(-1)
        shown = self.shown
        for j in range(self.n_way):
            self.support_images[j].set_data(task.x_support[task.y_support == j][0, 0].numpy())
        for i, q in enumerate(shown):
            self.query_images[i].set_data(task.x_query[q, 0].numpy())
            self.truth_boxes[i].set_xy((y_query[q] - 0.5, i - 0.5))
            right = predicted[q] == y_query[q]
            self.row_marks[i].set_text("✓" if right else "✗")
            self.row_marks[i].set_color(CORRECT if right else WRONG)
            for j, text in enumerate(self.cell_texts[i]):
                p = probs[q, j]
                text.set_text(f"{p:.2f}")
                text.set_color("white" if p > 0.55 else "black")
                text.set_fontweight("bold" if j == predicted[q] else "normal")
        self.prob_image.set_data(probs[shown])
        n_query = len(y_query)
        self.axes["table"].set_title(f"episode {episode}: class probabilities\nof {len(shown)} of its "
                                     f"{n_query} query images", fontsize=10)
        true_prob = data.probabilities[:, np.arange(n_query), y_query].mean(-1)
        self.artists["accuracy"].set_ydata(data.accuracy)
        self.artists["true_prob"].set_ydata(true_prob)
        self.artists["step_line"].set_xdata([step, step])
        self.artists["step_marker"].set_data([step], [data.accuracy[step]])
        correct = int(round(data.accuracy[step] * n_query))
        self.axes["accuracy"].set_title(f"after {step} step{'s' * (step != 1)}: accuracy "
                                        f"{100 * data.accuracy[step]:.1f}% ({correct}/{n_query})",
                                        fontsize=10)
        view = OmniglotView(episode, step, probs, predicted, y_query, float(data.accuracy[step]),
                            data.accuracy, shown)
        status = (f"episode <b>{episode}</b>, step <b>{step}</b> of {self.max_steps} "
                  f"(α = {self.inner_lr:g}): accuracy on all {n_query} query images "
                  f"<b>{100 * data.accuracy[step]:.1f}%</b> "
                  f"(before adapting: {100 * data.accuracy[0]:.1f}%), support loss "
                  f"{data.support_loss[step]:.3g}")
        return view, status


__all__ = ["OmniglotExplorer", "OmniglotView", "EpisodeData"]
