"""The course's experiments and comparisons, apart from the library they run.

This package runs the course's experiments and comparisons: the sine and Omniglot runs behind
``python -m mamlcourse`` (``sine``, ``omniglot``), the algorithms side by side of lesson 5
(``compare``), and what a meta-iteration costs in time and memory (``cost``). It imports the
library (``mamlcourse.maml``, ``train``, ``evaluate``, ``algorithms``, ...); the library never
imports it, so a reader of the library can leave this package unread.
"""
