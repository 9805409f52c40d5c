"""Exercise 1: sampling an N-way K-shot episode from images grouped by class."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from ..tasks import Task, seeded_generator
from ._core import call, fail, passed, shape, single_threaded

# (num_classes, num_drawings, n_way, k_shot, k_query): the last case uses every drawing.
CASES = ((12, 8, 5, 1, 3), (10, 6, 3, 2, 2), (9, 6, 4, 3, 2), (7, 5, 4, 2, 3))


def _identify(exercise: str, x: Tensor, images: Tensor, half: str) -> list[tuple[int, int]]:
    """(class, drawing) of each image in ``x``, found by exact equality in ``images``."""
    num_classes, num_drawings = images.shape[:2]
    flat = images.reshape(num_classes * num_drawings, -1)
    matches = (x.reshape(x.shape[0], 1, -1) == flat[None]).all(-1)
    found = []
    for i, row in enumerate(matches):
        hits = row.nonzero().flatten()
        if len(hits) == 0:
            raise fail(exercise, f"{half}[{i}] is not one of the images you were given: return "
                       f"images[c, d] themselves, with no arithmetic on them")
        found.append(divmod(int(hits[0]), num_drawings))
    return found


def _labels(exercise: str, y: Tensor, name: str, expected_len: int, n_way: int) -> list[int]:
    if not isinstance(y, Tensor):
        raise fail(exercise, f"{name} must be a tensor, got {type(y).__name__}")
    if y.dtype != torch.long:
        raise fail(exercise, f"{name} has dtype {y.dtype}: labels are integer class ids, "
                   f"torch.long, as F.cross_entropy expects (torch.full(..., c) or "
                   f"torch.arange(n_way).repeat_interleave(k) give that)")
    if y.shape != (expected_len,):
        raise fail(exercise, f"{name} has shape {shape(y)}, expected [{expected_len}]: one label "
                   f"per image, in the same order as the images")
    return [int(v) for v in y]


def _check_one(exercise: str, fn, images: Tensor, n_way: int, k_shot: int, k_query: int,
               seed: int) -> tuple[set[int], set[int]]:
    """Check one episode; returns the classes and drawings it used."""
    image_shape = tuple(images.shape[2:])
    task = call(exercise, fn, images, n_way=n_way, k_shot=k_shot, k_query=k_query,
                generator=seeded_generator(seed))
    if not isinstance(task, Task):
        raise fail(exercise, f"return a Task(x_support, y_support, x_query, y_query), "
                   f"got {type(task).__name__}")
    for name, x, k in (("x_support", task.x_support, k_shot), ("x_query", task.x_query, k_query)):
        expected = (n_way * k, *image_shape)
        if not isinstance(x, Tensor):
            raise fail(exercise, f"{name} must be a tensor, got {type(x).__name__}")
        if tuple(x.shape) == (n_way, k, *image_shape):
            raise fail(exercise, f"{name} has shape {shape(x)}: put the classes one after the "
                       f"other in a single dimension, [n_way * {'k_shot' if k == k_shot else 'k_query'}"
                       f", ...] = {list(expected)} (use .reshape or torch.cat)")
        if tuple(x.shape) != expected:
            raise fail(exercise, f"{name} has shape {shape(x)}, expected {list(expected)} for "
                       f"n_way={n_way}, k_shot={k_shot}, k_query={k_query} and images of shape "
                       f"{list(image_shape)}")
    y_support = _labels(exercise, task.y_support, "y_support", n_way * k_shot, n_way)
    y_query = _labels(exercise, task.y_query, "y_query", n_way * k_query, n_way)
    support = _identify(exercise, task.x_support, images, "x_support")
    query = _identify(exercise, task.x_query, images, "x_query")

    for half, ids in (("support", support), ("query", query)):
        if len(set(ids)) < len(ids):
            raise fail(exercise, f"your {half} set holds the same drawing twice: draw without "
                       f"replacement (torch.randperm, not torch.randint)")
    shared = set(support) & set(query)
    if shared:
        c, d = sorted(shared)[0]
        raise fail(exercise, f"your support and query sets share images (for example class {c}, "
                   f"drawing {d}): draw k_shot + k_query different drawings per class in one "
                   f"torch.randperm, then split them")
    classes = {c for c, _ in support}
    if len(classes) != n_way or {c for c, _ in query} != classes:
        raise fail(exercise, f"your episode should hold drawings of n_way = {n_way} classes, the "
                   f"same in both halves; its support set has {len(classes)} classes and its query "
                   f"set {len({c for c, _ in query})}, {len({c for c, _ in query} - classes)} of "
                   f"them not in the support set")
    for half, ids, k in (("support", support, k_shot), ("query", query, k_query)):
        counts = defaultdict(int)
        for c, _ in ids:
            counts[c] += 1
        if any(v != k for v in counts.values()):
            raise fail(exercise, f"each class needs {k} drawings in the {half} set, yours has "
                       f"{sorted(counts.values())}")

    if set(y_support) != set(range(n_way)) or set(y_query) != set(range(n_way)):
        labels = sorted(set(y_support) | set(y_query))
        if all(y == c for y, (c, _) in zip(y_support + y_query, support + query)):
            raise fail(exercise, f"labels must be 0..n_way-1: you kept the original class indices "
                       f"({labels}). Label the chosen classes 0, 1, ..., n_way-1 in the order you "
                       f"drew them: the model has n_way outputs")
        raise fail(exercise, f"labels must be 0..n_way-1 = {list(range(n_way))}, yours are {labels}")
    meaning: dict[int, int] = {}
    for y, (c, _) in zip(y_support, support):
        if meaning.setdefault(y, c) != c:
            raise fail(exercise, f"in your support set label {y} is given to two different classes "
                       f"({meaning[y]} and {c}): give every image of a class the same label")
    for y, (c, _) in zip(y_query, query):
        if meaning[y] != c:
            other = next(label for label, cls in meaning.items() if cls == c)
            raise fail(exercise, f"the query labels do not match the support labels: a class "
                       f"labelled {other} in the support set is labelled {y} in the query set. "
                       f"Use the same label for a class in both halves")

    again = call(exercise, fn, images, n_way=n_way, k_shot=k_shot, k_query=k_query,
                 generator=seeded_generator(seed))
    if not all(torch.equal(a, b) for a, b in zip(task, again)):
        raise fail(exercise, "two calls with generators of the same seed gave different episodes: "
                   "pass generator=generator to every random call (torch.randperm(n, "
                   "generator=generator)), so that a seed always gives the same episode")
    return classes, {d for _, d in support + query}


@single_threaded
def check_sample_episode(sample_episode) -> None:
    """Exercise 1.1: ``sample_episode(images, *, n_way, k_shot, k_query, generator) -> Task``.

    Checked on random images (so every image can be told apart) for several sizes and
    seeds: shapes, integer labels 0..n_way-1 that mean the same class in both halves,
    support and query disjoint, k_shot and k_query drawings of each of n_way classes,
    classes and drawings chosen at random, the same seed giving the same episode.
    """
    exercise = "1.1"
    used_classes, used_drawings, first = [], [], []
    for seed, (num_classes, num_drawings, n_way, k_shot, k_query) in enumerate(CASES):
        images = torch.rand(num_classes, num_drawings, 1, 3, 3, generator=seeded_generator(seed))
        classes, drawings = _check_one(exercise, sample_episode, images, n_way, k_shot, k_query,
                                       seed=seed + 100)
        used_classes.append(classes)
        used_drawings.append(drawings)
        first.append(max(drawings) < k_shot + k_query)
    if all(classes == set(range(len(classes))) for classes in used_classes):
        raise fail(exercise, "you always pick the first n_way classes: choose them at random, "
                   "torch.randperm(num_classes, generator=generator)[:n_way]")
    if all(first):
        raise fail(exercise, "you always take the first k_shot + k_query drawings of a class: "
                   "choose them at random, torch.randperm(num_drawings, generator=generator)")
    passed(exercise, f"{len(CASES)} episodes had the right shapes, labels 0..n_way-1 meaning the "
           f"same class in both halves, random classes and drawings, and no image in both the "
           f"support and the query set.")
