"""N-way K-shot Omniglot tasks (paper, Section 5.2): splits, rotations, episodes, Lake's runs.

Splits of the 1623 characters, each drawn by 20 people:

* ``"paper"``: 1200 characters for training, drawn with a fixed seed regardless of
  alphabet, and the other 423 for testing, as the original code did; the last
  ``validation_characters`` (default 100) of the 1200 are held out for validation.
* ``"lake"``: Lake et al.'s background alphabets (964 characters) for training and
  evaluation alphabets (659) for testing; validation is carved out of the background.

With ``rotations`` every character rotated by 90, 180 and 270 degrees is a new class of
the same split (a rotated test character is a test class), so each split has 4x classes.

Example:
    >>> cfg = omniglot_preset("paper-5w1s")
    >>> tasks = OmniglotTasks.from_config(cfg, "train", device="cpu")
    >>> batch = tasks.sample(32, seeded_generator(0))
    >>> batch.x_support.shape, batch.y_support[0]
    (torch.Size([32, 5, 1, 28, 28]), tensor([0, 1, 2, 3, 4]))
"""

from __future__ import annotations

import os
import random
import zipfile
from collections.abc import Sequence

import torch
from torch import Tensor

from ..config import OmniglotConfig, resolve_device
from ..tasks import Task, TaskBatch
from .download import CorruptArchive, OmniglotNotFound, UnsafeArchive, ensure_archives
from .omniglot_images import OmniglotImages, decode_png, load_images

SPLITS = ("train", "validation", "test")
PAPER_TRAIN_CHARACTERS = 1200
# The original code shuffled the character folders after random.seed(1); we shuffle the
# sorted list the same way (its folder order came from os.listdir, which varies).
SPLIT_SEED = 1
ROTATIONS = (0, 90, 180, 270)
LAKE_RUNS = 20  # all_runs.zip: 20 runs of a 20-way 1-shot task, 20 test items each
LAKE_WAYS = 20


def split_characters(omniglot: OmniglotImages, split: str = "paper", *, validation_characters: int = 100,
                     seed: int = SPLIT_SEED) -> dict[str, list[int]]:
    """Which characters (indices into ``omniglot``) are in the train, validation and test splits.

    Args:
        omniglot: the characters (``load_images()``: 964 background, then 659 evaluation).
        split: ``"paper"`` (seeded 1200 / 423) or ``"lake"`` (background / evaluation).
        validation_characters: held out of the training characters for validation.
        seed: the shuffle's seed; the same seed always gives the same split.

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``, sorted, disjoint.

    Example:
        >>> parts = split_characters(load_images())
        >>> [len(parts[s]) for s in SPLITS]
        [1100, 100, 423]
    """
    if split == "paper":
        if len(omniglot) <= PAPER_TRAIN_CHARACTERS:
            raise ValueError(f"the paper split takes {PAPER_TRAIN_CHARACTERS} training characters, but "
                             f"only {len(omniglot)} were loaded: load both images_background and "
                             "images_evaluation, or use split='lake'")
        order = list(range(len(omniglot)))
        random.Random(seed).shuffle(order)
        training, test = order[:PAPER_TRAIN_CHARACTERS], order[PAPER_TRAIN_CHARACTERS:]
    elif split == "lake":
        training = [i for i, a in enumerate(omniglot.archives) if a.startswith("images_background")]
        test = [i for i, a in enumerate(omniglot.archives) if a == "images_evaluation"]
        if not training or not test:
            raise ValueError("the lake split needs characters from images_background* and "
                             "images_evaluation: load both archives")
        random.Random(seed).shuffle(training)
    else:
        raise ValueError(f"split must be 'paper' or 'lake', got {split!r}")
    if not 0 <= validation_characters < len(training):
        raise ValueError(f"validation_characters must be in [0, {len(training)}) for the {split} split, "
                         f"got {validation_characters}")
    cut = len(training) - validation_characters
    return {"train": sorted(training[:cut]), "validation": sorted(training[cut:]), "test": sorted(test)}


def with_rotations(images: Tensor) -> Tensor:
    """Each class rotated by 0, 90, 180 and 270 degrees, as four classes.

    Args:
        images: [num_classes, num_drawings, S, S].

    Returns:
        [4 * num_classes, num_drawings, S, S]; class ``4 * c + r`` is class ``c`` rotated
        counter-clockwise by ``90 * r`` degrees.

    Example:
        >>> with_rotations(torch.zeros(10, 20, 28, 28, dtype=torch.uint8)).shape
        torch.Size([40, 20, 28, 28])
    """
    rotated = torch.stack([images.rot90(r, dims=(-2, -1)) for r in range(len(ROTATIONS))], dim=1)
    return rotated.flatten(0, 1)


def _to_x(images: Tensor) -> Tensor:
    """uint8 [..., S, S] -> float32 [..., 1, S, S]: one grey channel, strokes 1.0."""
    return images.unsqueeze(-3).float()


class OmniglotTasks:
    """A split's N-way K-shot classification tasks, drawn on the split's device.

    The split's images stay on ``device`` as uint8 (about 70 MB for the paper's training
    classes with rotations); ``sample`` draws class and drawing indices with the CPU
    generator and gathers the images on the device, so no image crosses from the CPU.

    Attributes:
        images: uint8 [num_classes, 20, S, S], strokes 1, on ``device``.
        names: [num_classes] ``"Alphabet/characterNN"`` (with ``" rot90"`` etc. for rotations).
        n_way, k_shot, k_query: the default task shape.
    """

    def __init__(self, images: Tensor, *, n_way: int = 5, k_shot: int = 1, k_query: int = 15,
                 names: Sequence[str] | None = None, device: torch.device | str | None = "cpu") -> None:
        """Tasks over ``images`` uint8 [num_classes, 20, S, S] (see ``from_config`` for a split)."""
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 [num_classes, drawings, S, S], got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.images = images.to(resolve_device(device)).contiguous()
        self.names = tuple(names) if names is not None else tuple(str(i) for i in range(len(images)))
        if len(self.names) != len(images):
            raise ValueError(f"{len(self.names)} names for {len(images)} classes")
        self.n_way, self.k_shot, self.k_query = n_way, k_shot, k_query
        self._check(n_way, k_shot, k_query)

    @classmethod
    def from_config(cls, cfg: OmniglotConfig, split_name: str, root: str | os.PathLike | None = None, *,
                    device: torch.device | str | None = None, omniglot: OmniglotImages | None = None,
                    cache_dir: str | os.PathLike | None = None, download: bool | None = None,
                    base_url: str | None = None, progress: bool = True) -> OmniglotTasks:
        """The tasks of one split of ``cfg.split``, shaped by ``cfg``.

        Training tasks take ``cfg.k_query`` query images per class; validation and test
        tasks take ``cfg.eval_k_query`` (15, as most reimplementations).

        Args:
            cfg: ``n_way``, ``k_shot``, ``k_query``, ``eval_k_query``, ``split``,
                ``rotations``, ``validation_characters``, ``image_size``.
            split_name: ``"train"``, ``"validation"`` or ``"test"``.
            root: the data folder (``--data``); default ``$MAMLCOURSE_DATA``, else the
                default download folder.
            device: where the images live and tasks are built (default: CUDA if available).
            omniglot: already loaded images, to build several splits from one load.
            cache_dir, download, base_url, progress: passed to ``load_images``.

        Example:
            >>> test = OmniglotTasks.from_config(omniglot_preset("paper-20w1s"), "test")
            >>> len(test.names), test.sample(16, seeded_generator(0)).x_query.shape
            (1692, torch.Size([16, 300, 1, 28, 28]))
        """
        if split_name not in SPLITS:
            raise ValueError(f"split_name must be one of {SPLITS}, got {split_name!r}")
        if split_name == "validation" and cfg.validation_characters == 0:
            raise ValueError("validation_characters is 0, so there is no validation split: "
                             "set it (default 100) or use 'train' / 'test'")
        if omniglot is None:
            omniglot = load_images(root, image_size=cfg.image_size, cache_dir=cache_dir, download=download,
                                   base_url=base_url, progress=progress)
        elif omniglot.image_size != cfg.image_size:
            raise ValueError(f"the loaded images are {omniglot.image_size}px but cfg.image_size is "
                             f"{cfg.image_size}: load them with load_images(image_size={cfg.image_size})")
        chosen = split_characters(omniglot, cfg.split,
                                  validation_characters=cfg.validation_characters)[split_name]
        images, names = omniglot.images[chosen], [omniglot.names[i] for i in chosen]
        if cfg.rotations:
            images = with_rotations(images)
            names = [f"{n} rot{r}" if r else n for n in names for r in ROTATIONS]
        k_query = cfg.k_query if split_name == "train" else cfg.eval_k_query
        return cls(images, n_way=cfg.n_way, k_shot=cfg.k_shot, k_query=k_query, names=names,
                   device=resolve_device(device))

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def num_classes(self) -> int:
        return self.images.shape[0]

    def _check(self, n_way: int, k_shot: int, k_query: int) -> None:
        for name, value in (("n_way", n_way), ("k_shot", k_shot), ("k_query", k_query)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if n_way > self.num_classes:
            raise ValueError(f"n_way = {n_way} exceeds the {self.num_classes} classes available in this "
                             "split: choose a smaller n_way")
        drawings = self.images.shape[1]
        if k_shot + k_query > drawings:
            raise ValueError(f"k_shot + k_query = {k_shot + k_query} exceeds the {drawings} drawings per "
                             "Omniglot character: lower k_shot or k_query")

    def sample_indices(self, num_tasks: int, generator: torch.Generator, *, n_way: int | None = None,
                       k_shot: int | None = None, k_query: int | None = None) -> tuple[Tensor, Tensor]:
        """Which classes and drawings make up ``num_tasks`` tasks (CPU tensors).

        Returns:
            classes: int64 [num_tasks, n_way], distinct within a task, in label order
                (task t's label j is class ``classes[t, j]``: a random assignment).
            drawings: int64 [num_tasks, n_way, k_shot + k_query], distinct within a class;
                the first ``k_shot`` are the support images, the rest the query images.

        Example:
            >>> classes, drawings = tasks.sample_indices(2, seeded_generator(0))
            >>> tasks.names[classes[0, 0]]       # the character behind label 0 of task 0
        """
        n_way = self.n_way if n_way is None else n_way
        k_shot = self.k_shot if k_shot is None else k_shot
        k_query = self.k_query if k_query is None else k_query
        self._check(n_way, k_shot, k_query)
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
        # The top n_way of uniform scores: a uniformly random ordered subset (random labels).
        scores = torch.rand(num_tasks, self.num_classes, generator=generator)
        classes = scores.topk(n_way, dim=1).indices
        scores = torch.rand(num_tasks, n_way, self.images.shape[1], generator=generator)
        drawings = scores.topk(k_shot + k_query, dim=2).indices
        return classes, drawings

    def sample(self, num_tasks: int, generator: torch.Generator, *, n_way: int | None = None,
               k_shot: int | None = None, k_query: int | None = None) -> TaskBatch:
        """``num_tasks`` fresh N-way K-shot tasks, built on ``self.device``.

        Args:
            num_tasks: tasks in the batch.
            generator: a CPU ``torch.Generator``; the same state gives the same tasks.
            n_way, k_shot, k_query: override the default task shape.

        Returns:
            TaskBatch with x_support float32 [num_tasks, n_way * k_shot, 1, S, S],
            y_support int64 [num_tasks, n_way * k_shot], x_query float32
            [num_tasks, n_way * k_query, 1, S, S], y_query int64 [num_tasks, n_way * k_query].
            Examples are grouped by label (0, 0, ..., 1, 1, ...); strokes are 1.0.

        Raises:
            ValueError: n_way above the classes available, k_shot + k_query above 20.

        Example:
            >>> batch = tasks.sample(32, seeded_generator(0), k_query=15)
            >>> batch.x_query.shape
            torch.Size([32, 75, 1, 28, 28])
        """
        n_way = self.n_way if n_way is None else n_way
        k_shot = self.k_shot if k_shot is None else k_shot
        k_query = self.k_query if k_query is None else k_query
        classes, drawings = self.sample_indices(num_tasks, generator, n_way=n_way, k_shot=k_shot,
                                                k_query=k_query)
        # Row of each image in images.flatten(0, 1): class * 20 + drawing.
        rows = (classes.unsqueeze(-1) * self.images.shape[1] + drawings).to(self.device)
        flat = self.images.flatten(0, 1)
        x_support = _to_x(flat[rows[..., :k_shot].flatten(1)])
        x_query = _to_x(flat[rows[..., k_shot:].flatten(1)])
        labels = torch.arange(n_way, device=self.device)
        y_support = labels.repeat_interleave(k_shot).expand(num_tasks, -1).contiguous()
        y_query = labels.repeat_interleave(k_query).expand(num_tasks, -1).contiguous()
        return TaskBatch(x_support, y_support, x_query, y_query)


def lake_runs(root: str | os.PathLike | None = None, *, image_size: int = 28,
              device: torch.device | str | None = "cpu", download: bool | None = None,
              base_url: str | None = None) -> list[Task]:
    """Lake et al.'s 20 official 20-way 1-shot runs (``all_runs.zip``), as 20 tasks.

    Each run's support set is its 20 training images ``class01..class20`` with labels
    0..19 in that order; its query set is the 20 test items ``item01..item20`` with their
    correct labels from ``class_labels.txt``. Images are processed exactly like the cache
    (``decode_png``: 28 x 28 nearest-neighbour, strokes 1).

    Args:
        root: the data folder (see ``download.resolve_root``).
        image_size: side of the images.
        device: where the tasks' tensors go.
        download, base_url: see ``download.ensure_archives``.

    Returns:
        20 Tasks, each x_support and x_query float32 [20, 1, S, S], y_support and
        y_query int64 [20].

    Example:
        >>> runs = lake_runs()
        >>> len(runs), runs[0].x_support.shape, runs[0].y_support[:3]
        (20, torch.Size([20, 1, 28, 28]), tensor([0, 1, 2]))
    """
    path = ensure_archives(["all_runs"], root, download=download, base_url=base_url,
                           progress=False)["all_runs"].path
    tasks = []
    with zipfile.ZipFile(path) as archive:
        for run in range(1, LAKE_RUNS + 1):
            prefix = f"run{run:02d}"

            def image(member: str) -> Tensor:
                return torch.from_numpy(decode_png(archive.read(member), image_size))

            classes = [f"{prefix}/training/class{c:02d}.png" for c in range(1, LAKE_WAYS + 1)]
            support = torch.stack([image(member) for member in classes])
            answers = {}
            for line in archive.read(f"{prefix}/class_labels.txt").decode().split("\n"):
                if line.strip():
                    item, label = line.split()
                    answers[item] = int(label.removesuffix(".png").rsplit("class", 1)[1]) - 1
            items = [f"{prefix}/test/item{i:02d}.png" for i in range(1, LAKE_WAYS + 1)]
            if sorted(answers) != items or sorted(answers.values()) != list(range(LAKE_WAYS)):
                raise CorruptArchive(f"{path}: {prefix}/class_labels.txt does not give one class per "
                                     "test item; download all_runs.zip again")
            query = torch.stack([image(item) for item in items])
            y_query = torch.tensor([answers[item] for item in items])
            task = Task(_to_x(support), torch.arange(LAKE_WAYS), _to_x(query), y_query)
            tasks.append(task.to(resolve_device(device)))
    return tasks


__all__ = [
    "SPLITS", "SPLIT_SEED", "ROTATIONS", "LAKE_RUNS", "LAKE_WAYS", "split_characters", "with_rotations",
    "OmniglotTasks", "lake_runs", "load_images", "OmniglotImages", "decode_png", "OmniglotNotFound",
    "CorruptArchive", "UnsafeArchive",
]
