"""Matplotlib helpers for the lessons: they take data and return a Figure, and never show or save.

One palette for the whole course, so MAML, the pretrained baseline and a random
initialisation have the same colour in every lesson, widget and exercise.
"""

from __future__ import annotations

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
