"""Omniglot: counts, the faithful resize, splits, rotations, episodes, Lake's runs, the cache.

The real archives are found as the course finds them (tests/conftest.py: $MAMLCOURSE_DATA, else
the default folder, downloaded into when missing). Without them these tests skip saying how to
un-skip, unless MAMLCOURSE_REQUIRE_DATA=1 (CI), where they fail. The full
cache is built once per session into a temporary folder, never the user's cache.
"""

from __future__ import annotations

import dataclasses
import io
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import omniglot_root
from mamlcourse.config import omniglot_preset
from mamlcourse.data import omniglot_images
from mamlcourse.data.download import UnsafeArchive, safe_member_path
from mamlcourse.data.omniglot import (
    SPLITS,
    CorruptArchive,
    OmniglotTasks,
    decode_png,
    lake_runs,
    load_images,
    split_characters,
    with_rotations,
)
from mamlcourse.tasks import seeded_generator

ARCHIVES = ("images_background", "images_evaluation", "images_background_small1", "all_runs")


def data_root() -> Path:
    """The folder holding the real archives this file reads."""
    return omniglot_root(ARCHIVES)


@pytest.fixture(scope="session")
def root() -> Path:
    return data_root()


@pytest.fixture(scope="session")
def cache_dir(root, tmp_path_factory) -> Path:
    """A cache folder holding the full cache, built once for the session."""
    folder = tmp_path_factory.mktemp("omniglot-cache")
    load_images(root, cache_dir=folder, progress=False)
    return folder


@pytest.fixture(scope="session")
def omniglot(root, cache_dir):
    return load_images(root, cache_dir=cache_dir, progress=False)


@pytest.fixture(scope="session")
def train_tasks(omniglot):
    return OmniglotTasks.from_config(omniglot_preset("paper-5w1s"), "train", omniglot=omniglot, device="cpu")


def test_counts_964_background_and_659_evaluation_characters(omniglot):
    assert omniglot.images.shape == (1623, 20, 28, 28) and omniglot.images.dtype == torch.uint8
    assert omniglot.archives.count("images_background") == 964
    assert omniglot.archives.count("images_evaluation") == 659
    assert len(set(omniglot.alphabets)) == 50 and len(set(omniglot.names)) == 1623
    assert omniglot.images.min() == 0 and omniglot.images.max() == 1
    ink = omniglot.images.sum(dtype=torch.int64).item() / omniglot.images.numel()
    assert 0.03 < ink < 0.2, f"strokes must be 1 on a 0 background, got a mean of {ink:.3f}"


def test_decoding_is_the_original_codes_resize(root, omniglot):
    """Our pixels equal ``Image.open(png).resize((28, 28), LANCZOS)`` of the original code, inverted."""
    for name in ("images_background", "images_evaluation"):
        with zipfile.ZipFile(root / f"{name}.zip") as archive:
            members = sorted(m for m in archive.namelist() if m.endswith(".png"))
            for member in members[:: len(members) // 25]:
                data = archive.read(member)
                with Image.open(io.BytesIO(data)) as image:
                    assert image.mode == "1" and image.size == (105, 105)
                    original = np.asarray(image.resize((28, 28), resample=Image.LANCZOS))
                assert np.array_equal(decode_png(data), 1 - original.astype(np.uint8)), member
                _, alphabet, character, file = member.split("/")
                c = omniglot.names.index(f"{alphabet}/{character}")
                d = int(file.removesuffix(".png").split("_")[1]) - 1
                assert np.array_equal(omniglot.images[c, d].numpy(), decode_png(data)), member


def test_a_second_load_takes_under_two_seconds(root, cache_dir):
    tic = time.perf_counter()
    load_images(root, cache_dir=cache_dir, progress=False)
    assert time.perf_counter() - tic < 2.0


def test_paper_split_1200_then_423_same_seed_same_split(omniglot):
    parts = split_characters(omniglot, "paper")
    assert [len(parts[s]) for s in SPLITS] == [1100, 100, 423]
    assert sorted(sum(parts.values(), [])) == list(range(1623))
    assert parts == split_characters(omniglot, "paper")
    other = split_characters(omniglot, "paper", seed=2)
    assert set(other["test"]) != set(parts["test"])
    # Validation is carved out of the same 1200 training characters, whatever its size.
    whole = split_characters(omniglot, "paper", validation_characters=0)
    assert whole["validation"] == [] and set(whole["train"]) == set(parts["train"] + parts["validation"])
    assert whole["test"] == parts["test"]
    # Drawn irrespective of alphabet: both archives feed both sides.
    test_archives = {omniglot.archives[i] for i in parts["test"]}
    assert test_archives == {"images_background", "images_evaluation"}


def test_lake_split_background_for_training_evaluation_for_testing(omniglot):
    parts = split_characters(omniglot, "lake", validation_characters=50)
    assert [len(parts[s]) for s in SPLITS] == [914, 50, 659]
    assert {omniglot.archives[i] for i in parts["train"] + parts["validation"]} == {"images_background"}
    assert {omniglot.archives[i] for i in parts["test"]} == {"images_evaluation"}


@pytest.mark.parametrize("split", ["paper", "lake"])
def test_rotations_make_four_classes_and_no_character_is_in_two_splits(omniglot, split):
    cfg = dataclasses.replace(omniglot_preset("paper-5w1s"), split=split)
    samplers = {s: OmniglotTasks.from_config(cfg, s, omniglot=omniglot, device="cpu") for s in SPLITS}
    parts = split_characters(omniglot, split)
    characters = {}
    for s, sampler in samplers.items():
        assert sampler.num_classes == 4 * len(parts[s])
        characters[s] = {name.split(" ")[0] for name in sampler.names}
        assert len(characters[s]) == len(parts[s])
    assert not characters["train"] & characters["validation"]
    assert not characters["train"] & characters["test"]
    assert not characters["validation"] & characters["test"]
    test = samplers["test"]
    assert test.names[:4] == tuple(f"{test.names[0]}{r}" for r in ("", " rot90", " rot180", " rot270"))
    for r in range(4):
        assert torch.equal(test.images[r], test.images[0].rot90(r, dims=(-2, -1)))
    plain = OmniglotTasks.from_config(dataclasses.replace(cfg, rotations=False), "test", omniglot=omniglot,
                                      device="cpu")
    assert plain.num_classes == len(parts["test"]) and torch.equal(plain.images, test.images[::4])


def test_with_rotations_orders_classes_by_character_then_angle():
    images = torch.arange(2 * 20 * 3 * 3, dtype=torch.uint8).view(2, 20, 3, 3)
    rotated = with_rotations(images)
    assert rotated.shape == (8, 20, 3, 3)
    assert torch.equal(rotated[5], images[1].rot90(1, dims=(-2, -1)))
    assert torch.equal(rotated[0], images[0]) and torch.equal(rotated[4], images[1])


@pytest.mark.parametrize("preset, num_tasks", [("paper-5w1s", 32), ("paper-20w1s", 16)])
def test_episode_shapes_types_and_labels(omniglot, preset, num_tasks):
    cfg = omniglot_preset(preset)
    sampler = OmniglotTasks.from_config(cfg, "train", omniglot=omniglot, device="cpu")
    batch = sampler.sample(num_tasks, seeded_generator(0), k_query=15)
    n = cfg.n_way
    assert batch.x_support.shape == (num_tasks, n, 1, 28, 28)
    assert batch.x_query.shape == (num_tasks, n * 15, 1, 28, 28)
    assert batch.x_support.dtype == torch.float32 and batch.y_support.dtype == torch.int64
    assert batch.y_query.shape == (num_tasks, n * 15)
    assert torch.equal(batch.y_support, torch.arange(n).expand(num_tasks, -1))
    assert torch.equal(batch.y_query, torch.arange(n).repeat_interleave(15).expand(num_tasks, -1))
    assert set(batch.x_query.unique().tolist()) == {0.0, 1.0}
    # The test split's default is cfg.eval_k_query query images per class.
    test = OmniglotTasks.from_config(cfg, "test", omniglot=omniglot, device="cpu")
    assert test.sample(2, seeded_generator(0)).x_query.shape[1] == n * cfg.eval_k_query


def test_support_and_query_are_disjoint_drawings_of_the_tasks_classes(train_tasks):
    sampler = train_tasks
    k_shot, k_query = 3, 4
    generator = seeded_generator(5)
    state = generator.get_state()
    classes, drawings = sampler.sample_indices(64, generator, k_shot=k_shot, k_query=k_query)
    generator.set_state(state)
    batch = sampler.sample(64, generator, k_shot=k_shot, k_query=k_query)
    assert all(len(set(row.tolist())) == 5 for row in classes)
    assert all(len(set(d.tolist())) == k_shot + k_query for d in drawings.flatten(0, 1))
    for t in (0, 17, 63):
        for label in range(5):
            c = classes[t, label]
            for s in range(k_shot):
                image = batch.x_support[t, label * k_shot + s, 0]
                assert torch.equal(image, sampler.images[c, drawings[t, label, s]].float())
            for q in range(k_query):
                image = batch.x_query[t, label * k_query + q, 0]
                assert torch.equal(image, sampler.images[c, drawings[t, label, k_shot + q]].float())


def test_labels_are_assigned_to_classes_at_random(train_tasks):
    classes, _ = train_tasks.sample_indices(2000, seeded_generator(0))
    ascending = (classes.diff(dim=1) > 0).all(dim=1).float().mean().item()
    assert ascending < 0.05, "labels follow class order: the assignment must be random per task"
    assert len(set(classes[:, 0].tolist())) > 1000


def test_same_seed_same_tasks_other_seed_other_tasks(train_tasks):
    a = train_tasks.sample(8, seeded_generator(1))
    b = train_tasks.sample(8, seeded_generator(1))
    c = train_tasks.sample(8, seeded_generator(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.x_support, c.x_support)


def test_bad_task_shapes_raise_with_the_fix(omniglot, train_tasks):
    with pytest.raises(ValueError, match=r"k_shot \+ k_query = 25 exceeds the 20 drawings per Omniglot"):
        train_tasks.sample(2, seeded_generator(0), k_shot=5, k_query=20)
    with pytest.raises(ValueError, match="n_way = 4401 exceeds the 4400 classes"):
        train_tasks.sample(2, seeded_generator(0), n_way=4401)
    with pytest.raises(ValueError, match="k_shot must be an integer >= 1"):
        train_tasks.sample(2, seeded_generator(0), k_shot=0)
    with pytest.raises(ValueError, match="num_tasks must be an integer >= 1"):
        train_tasks.sample(0, seeded_generator(0))
    cfg = omniglot_preset("paper-5w1s")
    with pytest.raises(ValueError, match="split_name must be one of"):
        OmniglotTasks.from_config(cfg, "val", omniglot=omniglot, device="cpu")
    with pytest.raises(ValueError, match="no validation split"):
        OmniglotTasks.from_config(dataclasses.replace(cfg, validation_characters=0), "validation",
                                  omniglot=omniglot, device="cpu")
    with pytest.raises(ValueError, match="exceeds the 20 drawings"):
        OmniglotTasks.from_config(dataclasses.replace(cfg, k_shot=10, k_query=11), "train",
                                  omniglot=omniglot, device="cpu")
    with pytest.raises(ValueError, match=r"validation_characters must be in \[0, 1200\)"):
        split_characters(omniglot, "paper", validation_characters=1200)
    with pytest.raises(ValueError, match="image_size"):
        OmniglotTasks.from_config(dataclasses.replace(cfg, image_size=32), "train", omniglot=omniglot)


def test_lake_runs_are_twenty_20_way_one_shot_tasks_with_correct_answers(root, omniglot):
    runs = lake_runs(root)
    assert len(runs) == 20
    # Every run image is an evaluation drawing; the answer's support image is the same character.
    characters_of: dict[bytes, set[int]] = {}
    for c in (i for i, a in enumerate(omniglot.archives) if a == "images_evaluation"):
        for d in range(20):
            characters_of.setdefault(omniglot.images[c, d].numpy().tobytes(), set()).add(c)

    def characters(x: torch.Tensor) -> set[int]:
        return characters_of.get(x[0].to(torch.uint8).numpy().tobytes(), set())

    for task in runs:
        assert task.x_support.shape == task.x_query.shape == (20, 1, 28, 28)
        assert task.x_support.dtype == torch.float32 and task.y_query.dtype == torch.int64
        assert torch.equal(task.y_support, torch.arange(20))
        assert sorted(task.y_query.tolist()) == list(range(20))
        for x, label in zip(task.x_query, task.y_query):
            assert characters(x) & characters(task.x_support[label]), "a query's answer is another character"


# ---------------------------------------------------------------------------------------
# The cache: rebuilt when stale, written atomically, never into the data folder.

def _counting_reads(monkeypatch) -> list[str]:
    reads: list[str] = []
    original = omniglot_images.read_archive

    def counting(path, **kwargs):
        reads.append(Path(path).name)
        return original(path, **kwargs)

    monkeypatch.setattr(omniglot_images, "read_archive", counting)
    return reads


def _small(root: Path, cache: Path):
    return load_images(root, archives=["images_background_small1"], cache_dir=cache, progress=False)


def test_stale_or_damaged_cache_is_rebuilt(root, tmp_path, monkeypatch):
    reads = _counting_reads(monkeypatch)
    first = _small(root, tmp_path)
    assert first.images.shape == (136, 20, 28, 28) and reads == ["images_background_small1.zip"]
    [path] = list(tmp_path.iterdir())
    good = path.read_bytes()
    _small(root, tmp_path)
    assert len(reads) == 1, "a valid cache must be used, not rebuilt"
    damaged = {
        "other format version": good.replace(b'"format": 1', b'"format": 0'),
        "other source checksums": good.replace(b"e704a628", b"00000000"),
        "truncated": good[: len(good) // 2],
        "flipped payload bit": good[:-1] + bytes([good[-1] ^ 1]),
        "not a cache": b"hello",
    }
    for why, content in damaged.items():
        assert content != good, why
        path.write_bytes(content)
        again = _small(root, tmp_path)
        assert len(reads) == 2, f"{why}: the cache was not rebuilt"
        assert torch.equal(again.images, first.images) and path.read_bytes() == good, why
        reads.pop()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "temporary files left behind"


def test_a_failed_cache_write_leaves_no_half_file_and_the_data_folder_clean(root, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "images_background_small1.zip").symlink_to(root / "images_background_small1.zip")
    cache = tmp_path / "cache"

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(omniglot_images.os, "replace", fail)
    with pytest.warns(UserWarning, match="MAMLCOURSE_CACHE"):
        images = _small(data, cache)
    assert images.images.shape == (136, 20, 28, 28)
    assert list(cache.iterdir()) == [], "a failed write must leave nothing in the cache folder"
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _small(data, cache)
    assert [p.name for p in data.iterdir()] == ["images_background_small1.zip"]
    assert len(list(cache.iterdir())) == 1


def test_paper_split_needs_both_archives(root, tmp_path):
    small = _small(root, tmp_path)
    with pytest.raises(ValueError, match="only 136 were loaded"):
        split_characters(small, "paper")
    with pytest.raises(ValueError, match="lake split needs"):
        split_characters(small, "lake")


# ---------------------------------------------------------------------------------------
# Archives that are not what they claim.

def _png() -> bytes:
    """A 105 x 105 1-bit PNG like Omniglot's: white paper, one black vertical stroke."""
    image = Image.new("1", (105, 105), 1)
    for y in range(20, 80):
        for x in range(50, 56):
            image.putpixel((x, y), 0)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_decode_png_inverts_and_keeps_the_image_binary():
    small = decode_png(_png())
    assert small.shape == (28, 28) and small.dtype == np.uint8
    assert set(np.unique(small).tolist()) == {0, 1}
    assert small[5:21, 13:15].all() and small[:, :12].sum() == 0, "the stroke must be 1, the paper 0"


@pytest.mark.parametrize("member", ["images_background/../../evil/character01/0001_01.png",
                                    "/images_background/Latin/character01/0001_01.png",
                                    "images_background/Latin/..\\..\\evil.png"])
def test_a_member_that_would_leave_the_folder_is_refused(tmp_path, member):
    path = tmp_path / "images_background.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the odd name; refusing it is the point
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("images_background/Latin/character01/0683_01.png", _png())
            archive.writestr(member, _png())
    with pytest.raises(UnsafeArchive, match="would leave the folder"):
        omniglot_images.read_archive(path)


def test_safe_member_path_accepts_the_official_layout():
    assert safe_member_path("images_evaluation/Angelic/character01/0965_01.png").parts[1] == "Angelic"
    for bad in ("../x.png", "a/../../x.png", "/etc/passwd", "C:/x.png", "a\\..\\x.png"):
        with pytest.raises(UnsafeArchive):
            safe_member_path(bad)


def test_a_character_with_missing_drawings_is_refused(tmp_path):
    path = tmp_path / "images_background.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for d in range(1, 20):
            archive.writestr(f"images_background/Latin/character01/0683_{d:02d}.png", _png())
    with pytest.raises(CorruptArchive, match="has 19 drawings, not 20"):
        omniglot_images.read_archive(path)
