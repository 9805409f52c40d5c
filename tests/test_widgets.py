"""The explorers, built without a browser: controls set programmatically, what they display asserted.

Callbacks are plain methods (``render``, ``update``, ``new_episode``) and are tested
directly, and also through the widgets themselves (setting a slider's value runs the
observer as a browser drag does), because an exception inside a callback triggered from a
browser can pass unseen.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import omniglot_root
from mamlcourse.config import omniglot_preset, sine_preset
from mamlcourse.data.sine import sine
from mamlcourse.evaluate import evaluate
from mamlcourse.maml import functional_forward, get_params, inner_loop
from mamlcourse.models import build_model
from mamlcourse.plotting import COLORS
from mamlcourse.tasks import TaskBatch
from mamlcourse.widgets import (
    LandscapeExplorer,
    OmniglotExplorer,
    SineExplorer,
    measure_redraws,
    omniglot_model,
    sine_inits,
)
from mamlcourse.widgets.base import LRUCache
from mamlcourse.widgets.landscape import flatten, path_plane, unflatten

SINE_CFG = sine_preset("quick")
# The course's target: a redraw after a slider move, once the data is computed. Asserted on
# CPU time: on a machine shared with other jobs the wall time also counts waits for a core.
REDRAW_BUDGET_MS = 200


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The explorers compute on one thread (see ``widgets.base.torch_threads``); so do these
    tests' own computations, which on a busy 2-core machine were several times slower on two."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def sine_params(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach() for k, v in get_params(build_model(SINE_CFG)).items()}


@pytest.fixture(scope="module")
def sine_model():
    torch.manual_seed(0)
    return build_model(SINE_CFG)


@pytest.fixture(scope="module")
def inits():
    return {"maml": sine_params(1), "pretrained": sine_params(2), "random": sine_params(3)}


@pytest.fixture
def sine_explorer(sine_model, inits):
    return SineExplorer(sine_model, inits, SINE_CFG)


def pixels(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "the image widget should hold PNG bytes"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def assert_same_picture(layered: np.ndarray, full: np.ndarray, max_fraction: float = 0.001) -> None:
    """Layered drawing paints artists in another order than one full pass (a line over an
    axis spine, say), so a few pixels may differ; a missing or misplaced artist changes
    thousands (a 2-pixel curve across the plot is ~0.5% of the figure)."""
    assert layered.shape == full.shape
    differing = np.any(layered != full, axis=-1).mean()
    assert differing < max_fraction, f"{100 * differing:.2f}% of the pixels differ from a full redraw"


# ---------------------------------------------------------------------------------------
# Sine explorer


def test_sine_prediction_line_is_the_adapted_model(sine_explorer, sine_model, inits):
    view = sine_explorer.render(init="maml", amplitude=3.0, phase=0.5, k_shot=5, inner_lr=0.01, step=3)
    assert view.step == 3 and view.k_shot == 5
    x_support = sine_explorer.x_pool[:5]
    y_support = sine(x_support, 3.0, 0.5)
    adapted = inner_loop(sine_model, inits["maml"], x_support, y_support, loss_fn=F.mse_loss, inner_lr=0.01,
                         num_inner_steps=3)
    expected = functional_forward(sine_model, adapted, sine_explorer.x_grid)[:, 0].detach().numpy()
    line = sine_explorer.artists["prediction"]
    np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(line.get_xdata(), sine_explorer.x_grid[:, 0].numpy())
    np.testing.assert_allclose(sine_explorer.artists["truth"].get_ydata(),
                               3.0 * np.sin(line.get_xdata() - 0.5), atol=1e-6)
    xs, ys = sine_explorer.artists["support"].get_data()
    np.testing.assert_allclose(xs, x_support[:, 0].numpy())
    np.testing.assert_allclose(ys, y_support[:, 0].numpy())
    expected_loss = F.mse_loss(functional_forward(sine_model, adapted, x_support), y_support).item()
    assert view.support_loss == pytest.approx(expected_loss, rel=1e-5)
    assert "step <b>3</b>" in sine_explorer.status.value


def test_sine_step_slider_redraws_without_recomputing(sine_explorer):
    sine_explorer.render(step=0)
    misses = sine_explorer.cache.misses
    full, content = sine_explorer.full_redraws, sine_explorer.content_redraws
    before = pixels(sine_explorer.image.value)
    sine_explorer.controls["step"].value = 5  # what a browser drag does: the observer runs update()
    assert sine_explorer.view.step == 5
    assert sine_explorer.cache.misses == misses, "moving the step slider recomputed a trajectory"
    assert (sine_explorer.full_redraws, sine_explorer.content_redraws) == (full, content), \
        "moving the step slider redrew more than the animated artists"
    assert not np.array_equal(before, pixels(sine_explorer.image.value)), "the image did not change"
    assert sine_explorer.artists["step_line"].get_xdata()[0] == 5
    sine_explorer.render(amplitude=2.0)
    assert sine_explorer.cache.misses == misses + len(sine_explorer.inits)
    sine_explorer.render(amplitude=sine_explorer.controls["amplitude"].min)
    sine_explorer.render(amplitude=2.0)  # cached: back without recomputing
    assert sine_explorer.cache.misses == misses + 2 * len(sine_explorer.inits)
    assert sine_explorer.full_redraws == full, "the sine explorer's frame never needs redrawing"


def test_sine_layers_draw_what_a_full_redraw_draws(sine_explorer):
    """The fast path (saved frame and content, then the animated artists) matches one full draw."""
    sine_explorer.render(step=0)
    layered = pixels(sine_explorer.render(step=7) and sine_explorer.image.value)
    assert_same_picture(layered, pixels(sine_explorer.full_figure_png()))
    full = sine_explorer.full_redraws
    sine_explorer.update()
    assert sine_explorer.full_redraws == full + 1, "full_figure_png() should invalidate the saved layers"
    np.testing.assert_array_equal(layered, pixels(sine_explorer.image.value))


def test_sine_init_choice_changes_colours_and_comparison_lines(sine_explorer):
    sine_explorer.render(init="pretrained")
    assert sine_explorer.artists["prediction"].get_color() == COLORS["pretrained"]
    assert not sine_explorer.artists["others:pretrained"].get_visible()
    assert sine_explorer.artists["others:maml"].get_visible()
    maml_curve = sine_explorer.trajectory("maml", *(sine_explorer.controls[n].value for n in
                                                    ("amplitude", "phase", "k_shot", "inner_lr"))).query_mse
    np.testing.assert_allclose(sine_explorer.artists["others:maml"].get_ydata(), maml_curve)
    assert "pretrained" in sine_explorer.status.value


def test_sine_render_refuses_bad_values(sine_explorer):
    with pytest.raises(ValueError, match="unknown control"):
        sine_explorer.render(steps=3)
    with pytest.raises(ValueError, match=r"outside the slider's range \[0, 10\]"):
        sine_explorer.render(step=11)
    with pytest.raises(ValueError, match="not one of the choices"):
        sine_explorer.render(init="maml++")
    with pytest.raises(ValueError, match="inits is empty"):
        SineExplorer(sine_explorer.model, {}, SINE_CFG)


def test_sine_divergence_is_reported(sine_model):
    big = {k: v * 3 for k, v in sine_params(4).items()}  # steep: α = 0.1 overshoots
    explorer = SineExplorer(sine_model, {"random": big}, SINE_CFG)
    view = explorer.render(amplitude=5.0, inner_lr=0.1, k_shot=20, step=10)
    assert view.diverged
    assert "diverged" in explorer.status.value
    assert np.isfinite(explorer.artists["query_curve"].get_ydata()).all(), "non-finite values must be clipped"


# ---------------------------------------------------------------------------------------
# Landscape


def test_path_plane_holds_the_first_step_and_the_end(sine_model, inits):
    x = torch.linspace(-4, 4, 10).unsqueeze(1)
    path = inner_loop(sine_model, inits["maml"], x, sine(x, 4.0, 0.3), loss_fn=F.mse_loss, inner_lr=0.01,
                      num_inner_steps=5, trajectory=True)
    path = [{k: v.detach() for k, v in p.items()} for p in path]
    plane = path_plane(path)
    assert plane.v_kind == "path"
    assert plane.u.norm().item() == pytest.approx(1) and plane.v.norm().item() == pytest.approx(1)
    assert abs(plane.u @ plane.v) < 1e-12
    points = torch.stack([flatten(p).double() for p in path])
    a, b, off = plane.coordinates(points)
    assert off[0] == 0 and off[1] < 1e-6 and off[-1] < 1e-6
    assert a[1].item() == pytest.approx((points[1] - points[0]).norm().item(), rel=1e-9)
    assert abs(b[1].item()) < 1e-9
    round_trip = unflatten(flatten(path[2]), path[2])
    assert all(torch.equal(round_trip[k], path[2][k]) for k in path[2])


def test_path_plane_of_a_straight_path_uses_a_random_orthogonal_direction(inits):
    theta = inits["maml"]
    step = {k: torch.full_like(v, 0.01) for k, v in theta.items()}
    path = [{k: theta[k] + i * step[k] for k in theta} for i in range(4)]
    plane = path_plane(path)
    assert plane.v_kind == "random"
    assert abs(plane.u @ plane.v) < 1e-12
    with pytest.raises(ValueError, match="length zero"):
        path_plane([theta, theta])


def test_landscape_shows_the_path_and_the_loss_on_the_plane(sine_model, inits):
    explorer = LandscapeExplorer(sine_model, {"maml": inits["maml"], "pretrained": inits["pretrained"]},
                                 SINE_CFG, resolution=9)
    view = explorer.render(amplitude=3.0, phase=1.0, step=3)
    data = explorer.data(3.0, 1.0)
    y_support = sine(explorer.x_support, 3.0, 1.0)
    path = inner_loop(sine_model, inits["maml"], explorer.x_support, y_support, loss_fn=F.mse_loss,
                      inner_lr=SINE_CFG.inner_lr, num_inner_steps=explorer.max_steps, trajectory=True)
    moved = (flatten(path[3]) - flatten(path[0])).norm().item()
    assert view.distance["maml"] == pytest.approx(moved, rel=1e-4)
    loss3 = F.mse_loss(functional_forward(sine_model, path[3], explorer.x_support), y_support).item()
    assert view.support_loss["maml"] == pytest.approx(loss3, rel=1e-4)
    marker = explorer.artists["now:maml"].get_data()
    assert (marker[0][0], marker[1][0]) == pytest.approx(view.position["maml"])
    done = explorer.artists["done:maml"].get_data()
    assert len(done[0]) == 4, "the path up to step 3 has four points"

    # A grid value is the support loss at θ_0 + a u + b v, computed here independently.
    plane = path_plane([{k: v.detach() for k, v in p.items()} for p in path])
    i, j = 2, 6
    a = np.linspace(*data.a_range, explorer.resolution)[j]
    b = np.linspace(*data.b_range, explorer.resolution)[i]
    theta = unflatten(plane.points(torch.tensor([a], dtype=torch.float64),
                                   torch.tensor([b], dtype=torch.float64))[0].float(), path[0])
    expected = F.mse_loss(functional_forward(sine_model, theta, explorer.x_support), y_support).item()
    assert data.panels["maml"].grid_loss[i, j] == pytest.approx(expected, rel=1e-4)

    before = pixels(explorer.image.value)
    explorer.controls["step"].value = 0
    assert explorer.view.step == 0 and explorer.view.distance["maml"] == 0
    assert not np.array_equal(before, pixels(explorer.image.value))
    with pytest.raises(ValueError, match="inner_lr must be > 0"):
        LandscapeExplorer(sine_model, inits, SINE_CFG, inner_lr=0.0)


# ---------------------------------------------------------------------------------------
# Omniglot explorer (a synthetic episode sampler: no data needed; the real one below)


class PrototypeTasks:
    """5-way episodes of noisy copies of random 28x28 prototypes (a stand-in for Omniglot)."""

    def __init__(self, n_way: int = 5, k_shot: int = 1, k_query: int = 4):
        self.n_way, self.k_shot, self.k_query = n_way, k_shot, k_query

    def sample(self, num_tasks, generator, **_):
        def draw(prototypes, k):
            noise = torch.rand(num_tasks, self.n_way, k, 1, 28, 28, generator=generator) < 0.1
            x = (prototypes[:, :, None] + noise).clamp(max=1)
            return x.flatten(1, 2), torch.arange(self.n_way).repeat_interleave(k).expand(num_tasks, -1)

        prototypes = (torch.rand(num_tasks, self.n_way, 1, 28, 28, generator=generator) < 0.2).float()
        x_support, y_support = draw(prototypes, self.k_shot)
        x_query, y_query = draw(prototypes, self.k_query)
        return TaskBatch(x_support, y_support, x_query, y_query)


OMNI_CFG = dataclasses.replace(omniglot_preset("quick"), num_filters=8, eval_max_steps=4, inner_lr=0.5)


@pytest.fixture(scope="module")
def omni_model():
    torch.manual_seed(0)
    return build_model(OMNI_CFG)


@pytest.fixture
def omni_explorer(omni_model):
    return OmniglotExplorer(omni_model, OMNI_CFG, PrototypeTasks(), shown_per_class=2)


def test_omniglot_accuracy_matches_evaluate(omni_explorer, omni_model):
    for episode in (0, 3):
        view = omni_explorer.render(episode=episode, step=2)
        task = omni_explorer.task(episode)
        result = evaluate(omni_model, TaskBatch.stack([task]), OMNI_CFG, num_steps=omni_explorer.max_steps)
        np.testing.assert_array_equal(view.accuracy_per_step, result.per_task[0].numpy())
        assert view.accuracy == pytest.approx(result.per_task[0, 2].item())


def test_omniglot_probabilities_and_table(omni_explorer):
    view = omni_explorer.render(episode=1, step=3)
    np.testing.assert_allclose(view.probabilities.sum(-1), 1, atol=1e-5)
    assert view.probabilities.shape == (20, 5)
    np.testing.assert_array_equal(view.predicted, view.probabilities.argmax(-1))
    assert len(view.shown) == 10 and (np.bincount(view.y_query[view.shown]) == 2).all()
    np.testing.assert_allclose(omni_explorer.prob_image.get_array(), view.probabilities[view.shown])
    for row, q in enumerate(view.shown):
        texts = [t.get_text() for t in omni_explorer.cell_texts[row]]
        assert texts == [f"{p:.2f}" for p in view.probabilities[q]]
        mark = omni_explorer.row_marks[row].get_text()
        assert mark == ("✓" if view.predicted[q] == view.y_query[q] else "✗")
        x, _ = omni_explorer.truth_boxes[row].get_xy()
        assert x + 0.5 == view.y_query[q], "the frame marks the true class"
    correct = int(round(view.accuracy * 20))
    assert f"{100 * view.accuracy:.1f}%" in omni_explorer.status.value
    assert f"({correct}/20)" in omni_explorer.axes["accuracy"].get_title()


def test_omniglot_new_episode_button(omni_explorer):
    view = omni_explorer.render(episode=0, step=1)
    support = omni_explorer.support_images[0].get_array().copy()
    before = pixels(omni_explorer.image.value)
    omni_explorer.new_episode_button.click()  # runs the on_click handler, as a browser click does
    assert omni_explorer.view.episode == view.episode + 1
    assert not np.array_equal(support, omni_explorer.support_images[0].get_array())
    assert not np.array_equal(before, pixels(omni_explorer.image.value))
    assert omni_explorer.new_episode().episode == view.episode + 2  # the same, as a plain method
    with pytest.raises(ValueError, match="shown_per_class"):
        OmniglotExplorer(omni_explorer.model, OMNI_CFG, PrototypeTasks(), shown_per_class=5)


def test_omniglot_layers_draw_what_a_full_redraw_draws(omni_explorer):
    omni_explorer.render(episode=2, step=0)
    full, content = omni_explorer.full_redraws, omni_explorer.content_redraws
    layered = pixels(omni_explorer.render(step=4) and omni_explorer.image.value)
    assert (omni_explorer.full_redraws, omni_explorer.content_redraws) == (full, content)
    assert_same_picture(layered, pixels(omni_explorer.full_figure_png()))


def test_omniglot_explorer_on_real_test_episodes(omni_model):
    omniglot_root(("images_background", "images_evaluation"))  # found or downloaded as the course does
    from mamlcourse.data.omniglot import OmniglotTasks

    cfg = dataclasses.replace(OMNI_CFG, eval_k_query=3)
    tasks = OmniglotTasks.from_config(cfg, "test", device="cpu", progress=False)
    explorer = OmniglotExplorer(omni_model, cfg, tasks)
    view = explorer.render(episode=5, step=1)
    assert view.probabilities.shape == (15, 5)
    result = evaluate(omni_model, TaskBatch.stack([explorer.task(5)]), cfg, num_steps=explorer.max_steps)
    np.testing.assert_array_equal(view.accuracy_per_step, result.per_task[0].numpy())
    images = explorer.task(5).x_support
    assert set(images.unique().tolist()) <= {0.0, 1.0}, "Omniglot strokes are 1 on 0"


# ---------------------------------------------------------------------------------------
# Response time, sources, import hygiene


def test_redraws_are_fast_enough(sine_explorer, sine_model, inits, omni_explorer):
    landscape = LandscapeExplorer(sine_model, {"maml": inits["maml"], "pretrained": inits["pretrained"]},
                                  SINE_CFG, resolution=21)
    timings = {
        "sine step": measure_redraws(sine_explorer, "step"),
        "sine init": measure_redraws(sine_explorer, "init"),
        "sine K": measure_redraws(sine_explorer, "k_shot", [5, 10, 20]),
        "landscape step": measure_redraws(landscape, "step"),
        "omniglot step": measure_redraws(omni_explorer, "step"),
    }
    for name, timing in timings.items():
        print(f"{name}: {timing}")
        assert timing.count >= 2
        assert timing.median_cpu_ms < REDRAW_BUDGET_MS, f"{name} redraws too slowly: {timing}"


def test_measure_redraws_refuses_unknown_controls(sine_explorer):
    with pytest.raises(ValueError, match="unknown control"):
        measure_redraws(sine_explorer, "zoom")
    with pytest.raises(ValueError, match="at least two values"):
        measure_redraws(sine_explorer, "step", [3])


def test_lru_cache_computes_each_key_once_and_evicts_the_oldest():
    cache: LRUCache[int] = LRUCache(2)
    calls = []
    for key in ("a", "b", "a", "c", "b"):
        cache.get(key, lambda k=key: calls.append(k) or len(calls))
    assert calls == ["a", "b", "c", "b"], "'b' was evicted by 'c' (after 'a' was used again)"
    assert "a" not in cache and len(cache) == 2


def test_sine_inits_train_then_load_without_touching_the_global_rng(tmp_path):
    cfg = dataclasses.replace(SINE_CFG, num_iterations=4, checkpoint_every=2, log_every=2)
    state = torch.get_rng_state()
    first = sine_inits(cfg, trained_dir=tmp_path / "absent", checkpoint_dir=tmp_path / "run", progress=False)
    assert torch.equal(state, torch.get_rng_state()), "sine_inits changed the global random state"
    assert "absent not found" in first.origin and "trained 4 iterations" in first.origin
    assert sorted(first.params) == ["maml", "pretrained", "random"]
    again = sine_inits(cfg, checkpoint_dir=tmp_path / "run", progress=False)
    assert again.origin.count("loaded from") == 2
    shipped = sine_inits(trained_dir=tmp_path / "run", progress=False)
    assert shipped.origin.startswith("loaded MAML (4 iterations)")
    for name in ("maml", "pretrained"):
        for key, value in first.params[name].items():
            assert torch.equal(value, shipped.params[name][key])
    assert not torch.equal(first.params["maml"]["layers.0.weight"], first.params["random"]["layers.0.weight"])
    with pytest.raises(ValueError, match="not an Omniglot one"):
        omniglot_model(trained_dir=tmp_path / "run")


def test_omniglot_model_trains_a_stand_in_when_the_shipped_one_is_missing(tmp_path):
    omniglot_root(("images_background", "images_evaluation"))
    cfg = dataclasses.replace(OMNI_CFG, num_iterations=2, checkpoint_every=1, log_every=1)
    first = omniglot_model(trained_dir=tmp_path / "absent", checkpoint_dir=tmp_path / "run", cfg=cfg,
                           progress=False)
    assert not first.shipped
    assert "absent not found" in first.origin and "trained 2 iterations" in first.origin
    again = omniglot_model(checkpoint_dir=tmp_path / "run", cfg=cfg, progress=False)
    assert "loaded from" in again.origin
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key])
    shipped = omniglot_model(trained_dir=tmp_path / "run")  # a run folder with checkpoint.pt loads as is
    assert shipped.shipped and shipped.origin.startswith("loaded the trained model")


def test_importing_mamlcourse_does_not_import_the_widgets():
    code = "import sys, mamlcourse; print('mamlcourse.widgets' in sys.modules, 'ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
