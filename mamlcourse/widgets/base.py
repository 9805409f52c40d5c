"""What every explorer shares: controls, a PNG image redrawn from cached data, timings.

An explorer draws a matplotlib ``Figure`` (never pyplot: no global state, nothing shown
by itself) into an ``ipywidgets.Image`` as PNG bytes. Changing a control calls
``update``, a plain method: it reads every control, redraws from precomputed data and
returns a ``view``, a small record of what is now displayed. Tests and lessons call
``render(step=3)`` (which sets the controls, then updates once) and assert on that view,
because an exception inside a widget callback triggered from the browser can go unseen.

Example:
    >>> explorer = SineExplorer(model, inits, cfg)
    >>> explorer                     # the last line of a cell displays the widget
    >>> explorer.render(step=3).step
    3
    >>> measure_redraws(explorer, "step").median_ms   # median wall time of a redraw, in ms
"""

from __future__ import annotations

import io
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import ipywidgets as widgets
import torch
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

V = TypeVar("V")
T = TypeVar("T")

# zlib level 1, its fastest: PNGs a little larger than the default level 6's, encoded sooner.
PNG_COMPRESS_LEVEL = 1


def new_figure(width: float, height: float, dpi: int = 100) -> Figure:
    """A figure with its own Agg canvas, outside pyplot (so it is never shown by itself)."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_to_png(fig: Figure) -> bytes:
    """Draw ``fig`` and encode it as PNG bytes (what an ``ipywidgets.Image`` displays)."""
    fig.canvas.draw()
    return canvas_to_png(fig.canvas)


def canvas_to_png(canvas: FigureCanvasAgg) -> bytes:
    """Encode what the Agg ``canvas`` holds now as PNG bytes (no redraw)."""
    width, height = canvas.get_width_height()
    image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="png", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


@contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num_threads)``, restoring the old value after.

    The explorers adapt one task at a time: the sine network's operations (40-unit
    layers, a few dozen points) are too small to split between threads, and one Omniglot
    episode (80 images) hardly gains from a second thread. On a machine whose cores are
    busy (or a JupyterHub node shared by a class) a second thread waits for a free core
    at every operation, so the explorers compute on one.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LRUCache(Generic[T]):
    """A small least-recently-used cache: ``get(key, compute)`` computes each key once.

    Explorers keep one entry per adaptation trajectory (a few kB each), so moving the
    step slider back and forth, or returning to an earlier task, never recomputes.
    """

    def __init__(self, max_entries: int = 128):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._data: OrderedDict[Hashable, T] = OrderedDict()
        self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key in self._data:
            self._data.move_to_end(key)
            return self._data[key]
        self.misses += 1
        value = compute()
        self._data[key] = value
        if len(self._data) > self.max_entries:
            self._data.popitem(last=False)
        return value

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


class Explorer(Generic[V]):
    """Base class: named controls, an image, a status line, and ``render``/``update``.

    Subclasses fill ``self.controls`` (name -> widget) and implement ``_draw(state)``,
    which updates the artists of ``self.fig`` for the control values in ``state`` and
    returns ``(view, status_html)``.

    Redraws are layered, so that most updates draw only a few artists:

    - the *frame* (axes, ticks, legends, colour bars) is drawn once, and again only when a
      control named in ``frame_controls`` changes (one that moves axis limits, say);
    - the *content* (``self.content``: the task's curves, the episode's images) is drawn
      on a copy of the frame when any control other than the step controls changes;
    - the *animated* artists (``self.animated``: the prediction after the chosen step, the
      step marker) are drawn on a copy of the content at every update.

    Moving the step slider thus restores a saved picture and draws a handful of artists.

    Attributes:
        controls: the input widgets by name (the names ``render`` accepts).
        image: the ``ipywidgets.Image`` showing the figure as PNG.
        status: an ``ipywidgets.HTML`` line with the numbers behind the picture.
        widget: the whole explorer as one ``ipywidgets.VBox``.
        view: what is displayed now (set by the first ``update``).
        timings_ms: wall time of each update, in milliseconds.
    """

    fig: Figure
    step_controls: tuple[str, ...] = ("step",)
    frame_controls: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.controls: dict[str, widgets.ValueWidget] = {}
        self.content: list[Artist] = []
        self.animated: list[Artist] = []
        self._frame: Any = None
        self._frame_key: Any = None
        self._content: Any = None
        self._content_key: Any = None
        self.full_redraws = 0
        self.content_redraws = 0
        self.cpu_ms: list[float] = []
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))
        self.status = widgets.HTML()
        self.widget: widgets.VBox = widgets.VBox()
        self.view: V | None = None
        self.timings_ms: list[float] = []
        self._setting = False

    # -- wiring ------------------------------------------------------------------------
    def _connect(self, rows: Iterable[Iterable[str | widgets.Widget]], title: str = "") -> None:
        """Lay out the controls (one ``HBox`` per row of names or widgets), observe them, draw once."""
        boxes = [widgets.HBox([self.controls[item] if isinstance(item, str) else item for item in row])
                 for row in rows]
        header = [widgets.HTML(f"<b>{title}</b>")] if title else []
        self.widget = widgets.VBox([*header, *boxes, self.image, self.status])
        for control in self.controls.values():
            control.observe(self.update, names="value")
        self.update()

    def _repr_mimebundle_(self, **kwargs: Any):
        """Displaying the explorer displays its widget (the last line of a cell, or ``display``)."""
        return self.widget._repr_mimebundle_(**kwargs)

    # -- the two callbacks -------------------------------------------------------------
    def render(self, **changes: Any) -> V:
        """Set controls by name, then redraw once; returns the new view.

        Example:
            >>> explorer.render(init="pretrained", step=1).support_loss
        """
        unknown = sorted(set(changes) - set(self.controls))
        if unknown:
            raise ValueError(f"unknown control(s) {unknown}: this explorer has {sorted(self.controls)}")
        for name, value in changes.items():
            _check_in_range(name, self.controls[name], value)
        self._setting = True
        try:
            for name, value in changes.items():
                self.controls[name].value = value
        finally:
            self._setting = False
        return self.update()

    def update(self, change: dict | None = None) -> V:
        """The controls' callback: redraw for their current values; returns the view.

        ``change`` is the traitlets change dict ipywidgets passes; it is not needed,
        since every control is read afresh.
        """
        if self._setting:  # ``render`` is setting several controls: draw once, at the end
            return self.view  # type: ignore[return-value]
        tic, cpu = time.perf_counter(), time.process_time()
        state = {name: control.value for name, control in self.controls.items()}
        view, status = self._draw(state)
        self.image.value = self._layered_png(state)
        self.status.value = status
        self.view = view
        self.timings_ms.append(1000 * (time.perf_counter() - tic))
        self.cpu_ms.append(1000 * (time.process_time() - cpu))
        return view

    def _draw(self, state: dict[str, Any]) -> tuple[V, str]:
        raise NotImplementedError

    def _layered_png(self, state: dict[str, Any]) -> bytes:
        """PNG of the figure, redrawing only the layers whose controls changed (see the class doc)."""
        canvas = self.fig.canvas
        frame_key = tuple(state[name] for name in self.frame_controls)
        content_key = tuple(value for name, value in state.items() if name not in self.step_controls)
        if self._frame is None or frame_key != self._frame_key:
            for artist in (*self.content, *self.animated):
                artist.set_animated(True)  # left out of canvas.draw(): drawn by hand below
            canvas.draw()
            self._frame, self._frame_key = canvas.copy_from_bbox(self.fig.bbox), frame_key
            self._content = None
            self.full_redraws += 1
        if self._content is None or content_key != self._content_key:
            canvas.restore_region(self._frame)
            self._draw_artists(self.content)
            self._content, self._content_key = canvas.copy_from_bbox(self.fig.bbox), content_key
            self.content_redraws += 1
        else:
            canvas.restore_region(self._content)
        self._draw_artists(self.animated)
        return canvas_to_png(canvas)

    def _draw_artists(self, artists: list[Artist]) -> None:
        for artist in sorted(artists, key=lambda a: a.get_zorder()):
            if artist.get_visible():
                self.fig.draw_artist(artist)

    def full_figure_png(self) -> bytes:
        """The figure drawn in one ordinary pass, every artist included (for checking the layers)."""
        for artist in (*self.content, *self.animated):
            artist.set_animated(False)
        png = figure_to_png(self.fig)
        self.invalidate()
        return png

    def invalidate(self) -> None:
        """Forget the saved layers, so the next update draws everything afresh."""
        self._frame = self._frame_key = self._content = self._content_key = None


def _check_in_range(name: str, control: widgets.ValueWidget, value: Any) -> None:
    """Sliders clamp out-of-range values silently; refuse them instead, with the range."""
    lo, hi = getattr(control, "min", None), getattr(control, "max", None)
    if lo is not None and hi is not None and not isinstance(control, widgets.FloatLogSlider):
        if not lo <= value <= hi:
            raise ValueError(f"{name}={value!r} is outside the slider's range [{lo}, {hi}]")
    options = getattr(control, "options", None)
    if options is not None:
        values = [o[1] if isinstance(o, tuple) else o for o in options]
        if value not in values:
            raise ValueError(f"{name}={value!r} is not one of the choices {values}")


@dataclass(frozen=True)
class RedrawTiming:
    """Wall time of the redraws that followed control changes.

    Wall time is what a student waits; CPU time is the work itself. On a machine shared
    with other jobs the wall time also counts the waits for a free core, so CPU time is
    the figure to compare between machines and runs.

    Attributes:
        control: the control that was moved.
        count: redraws timed.
        median_ms, max_ms: median and slowest wall time, in milliseconds.
        median_cpu_ms: median CPU time of this process, in milliseconds.
    """

    control: str
    count: int
    median_ms: float
    max_ms: float
    median_cpu_ms: float

    def __str__(self) -> str:
        return (f"{self.control}: median {self.median_ms:.0f} ms (CPU {self.median_cpu_ms:.0f} ms), "
                f"slowest {self.max_ms:.0f} ms over {self.count} redraws")


def measure_redraws(explorer: Explorer, control: str = "step", values: Iterable[Any] | None = None,
                    *, repeats: int = 1) -> RedrawTiming:
    """Time the callback that runs when ``control`` moves, as a student would move it.

    Each value is set on the widget itself, so the time is that of the real callback
    (``update``: read the controls, redraw, encode the PNG). Values whose data is not
    cached yet are visited once first, so the figure is the redraw alone, not the
    trajectory's computation.

    Args:
        explorer: a built explorer.
        control: the name of the control to move (``explorer.controls``).
        values: the values to visit (default: every value of a slider or choice).
        repeats: passes over ``values``.

    Returns:
        RedrawTiming with the median and slowest redraw in milliseconds.
    """
    if control not in explorer.controls:
        raise ValueError(f"unknown control {control!r}: this explorer has {sorted(explorer.controls)}")
    widget = explorer.controls[control]
    values = list(values) if values is not None else _all_values(widget)
    if len(values) < 2:
        raise ValueError(f"measure_redraws needs at least two values of {control!r} to move between")
    start = widget.value
    for value in values:  # warm the caches: what is timed below is the redraw
        explorer.render(**{control: value})
    times: list[float] = []
    cpu: list[float] = []
    for _ in range(repeats):
        for value in values:
            if widget.value == value:
                continue
            before = len(explorer.timings_ms)
            widget.value = value  # the observer runs update(), exactly as a drag does
            if len(explorer.timings_ms) != before + 1:
                raise RuntimeError(f"moving {control!r} did not redraw the explorer once")
            times.append(explorer.timings_ms[-1])
            cpu.append(explorer.cpu_ms[-1])
    explorer.render(**{control: start})
    return RedrawTiming(control, len(times), statistics.median(times), max(times), statistics.median(cpu))


def _all_values(widget: widgets.ValueWidget) -> list[Any]:
    options = getattr(widget, "options", None)
    if options is not None:
        return [o[1] if isinstance(o, tuple) else o for o in options]
    if isinstance(widget, widgets.IntSlider):
        return list(range(widget.min, widget.max + 1, widget.step))
    raise ValueError("pass values= for a control that is not an integer slider or a choice")
