"""The family around MAML, each algorithm a small module over the course's ``inner_loop``,
``meta_loss`` and ``meta_train``.

=================  ==============================================  ============================
name               what changes from MAML                          module
=================  ==============================================  ============================
``maml``           nothing (second order)                          ``maml_variants``
``fomaml``         inner gradients treated as constants            ``maml_variants``
``reptile``        θ moves toward the task-trained weights φ      ``reptile``
``anil``           only the head adapts in the inner loop          ``anil``
``meta_sgd``       a learned step size per weight                  ``meta_sgd``
``imaml``          proximal inner problem, implicit meta-gradient  ``imaml``
``maml_pp``        multi-step loss, learned per-step step sizes    ``maml_plus_plus``
``protonet``       no inner loop: nearest class-mean embedding     ``protonet``
``hypernet``       no inner loop: a network writes the weights     ``hypernet``
=================  ==============================================  ============================

Example:
    >>> from mamlcourse.algorithms import get_algorithm, train_algorithm
    >>> algo = get_algorithm("anil")
    >>> model, history = train_algorithm(algo, sampler, cfg, checkpoint_dir="runs/family")
    >>> algo.score(model, test_tasks, cfg, 5).mean(0)      # mean score after 0..5 steps
"""

from __future__ import annotations

from .anil import ANIL
from .base import Algorithm, train_algorithm
from .hypernet import HYPERNET
from .imaml import IMAML
from .maml_plus_plus import MAML_PLUS_PLUS
from .maml_variants import FIRST_ORDER_MAML, MAML
from .meta_sgd import META_SGD
from .protonet import PROTONET
from .reptile import REPTILE

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    MAML, FIRST_ORDER_MAML, REPTILE, ANIL, META_SGD, IMAML, MAML_PLUS_PLUS, PROTONET, HYPERNET)}


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called ``name``.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}: choose one of {list(ALGORITHMS)}")
    return ALGORITHMS[name]


__all__ = ["Algorithm", "ALGORITHMS", "get_algorithm", "train_algorithm", "MAML", "FIRST_ORDER_MAML",
           "REPTILE", "ANIL", "META_SGD", "IMAML", "MAML_PLUS_PLUS", "PROTONET", "HYPERNET"]
