"""Interactive explorers for the lessons: ipywidgets over precomputed adaptation trajectories.

Not imported by ``import mamlcourse``: use ``from mamlcourse import widgets``.

- ``SineExplorer``: a sine wave, K support points, an initialisation, a step slider.
- ``LandscapeExplorer``: the support loss on a plane through the adaptation path.
- ``OmniglotExplorer``: a test episode and the adapted model's class probabilities.

Each draws a matplotlib figure into an ``ipywidgets.Image`` as PNG. Its callbacks are
plain methods (``render(step=3)``, ``update()``) that return what is displayed, so tests
and lessons can drive and check them without a browser; ``measure_redraws`` times them.
"""

from .base import Explorer, RedrawTiming, figure_to_png, measure_redraws
from .landscape import LandscapeExplorer, LandscapeView
from .omniglot import OmniglotExplorer, OmniglotView
from .sine import SineExplorer, SineView, sine_loss_curves
from .sources import SineInits, TrainedModel, omniglot_model, sine_inits

__all__ = [
    "Explorer", "RedrawTiming", "figure_to_png", "measure_redraws", "LandscapeExplorer",
    "LandscapeView", "OmniglotExplorer", "OmniglotView", "SineExplorer", "SineView",
    "sine_loss_curves", "SineInits", "TrainedModel", "omniglot_model", "sine_inits",
]
