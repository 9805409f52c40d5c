"""Omniglot's PNGs decoded once into a compact cache of 28 x 28 binary images, strokes = 1.

The PNGs are read straight from the verified zips (nothing is extracted) and resized the
way the original MAML code did (see ``decode_png``). The result, uint8
[num_characters, 20, 28, 28], is cached as a single file in the cache folder
(``$MAMLCOURSE_CACHE``, else ``~/.cache/mamlcourse``), never in the data folder, which may
be read-only. The file records its format version, the MD5 of the zips it was made from,
and a SHA-256 of its own contents: a cache from another version, other zips, or a damaged
file is rebuilt. It is written to a temporary file and renamed, so a failure never leaves
half a cache.

Example:
    >>> omniglot = load_images()     # decodes the PNGs the first time; later calls read the cache
    >>> omniglot.images.shape, omniglot.images.dtype
    (torch.Size([1623, 20, 28, 28]), torch.uint8)
    >>> omniglot.names[0]
    'Alphabet_of_the_Magi/character01'
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from .download import CACHE_ENV, Archive, CorruptArchive, default_cache_dir, ensure_archives, safe_member_path

OMNIGLOT_ARCHIVES = ("images_background", "images_evaluation")
DRAWINGS_PER_CHARACTER = 20
CACHE_FORMAT_VERSION = 1
_MAGIC = b"MAMLOMNI"
_HEADER = struct.Struct("<8sI")  # magic, length of the JSON header that follows


def decode_png(data: bytes, image_size: int = 28) -> np.ndarray:
    """One Omniglot PNG as an ``image_size`` x ``image_size`` uint8 array, strokes 1, paper 0.

    Faithful to the original MAML code, which resized the 105 x 105 PNGs with
    ``Image.open(png).resize((28, 28), resample=Image.LANCZOS)``. The PNGs are 1-bit
    (Pillow mode ``"1"``), and for mode ``"1"`` Pillow silently replaces any filter by
    NEAREST, so what the paper trained on was a nearest-neighbour, still binary, 28 x 28
    image. We ask for NEAREST explicitly (the same pixels; a test checks it against the
    original call) and invert, as the original data pipeline did (``1.0 - image``).

    Args:
        data: the PNG file's bytes.
        image_size: side of the square output.

    Returns:
        uint8 [image_size, image_size] with 1 where the pen was.

    Example:
        >>> decode_png(zipfile.ZipFile("all_runs.zip").read("run01/test/item01.png")).shape
        (28, 28)
    """
    with Image.open(io.BytesIO(data)) as image:
        if image.mode != "1":
            image = image.convert("1")  # the official PNGs are mode "1" already
        small = image.resize((image_size, image_size), resample=Image.Resampling.NEAREST)
        return (~np.asarray(small, dtype=bool)).astype(np.uint8)


@dataclass(frozen=True)
class OmniglotImages:
    """Every drawing of a set of Omniglot characters.

    Attributes:
        images: uint8 [num_characters, 20, image_size, image_size], strokes 1; drawing d
            of character c is ``images[c, d]`` (drawers 01..20 in order).
        alphabets: [num_characters] each character's alphabet (``"Latin"``).
        characters: [num_characters] each character's folder (``"character03"``).
        archives: [num_characters] the archive each came from (``"images_background"``).
    """

    images: Tensor
    alphabets: tuple[str, ...]
    characters: tuple[str, ...]
    archives: tuple[str, ...]

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def names(self) -> tuple[str, ...]:
        """``"Alphabet/characterNN"`` for every character."""
        return tuple(f"{a}/{c}" for a, c in zip(self.alphabets, self.characters))

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]


def read_archive(path: str | os.PathLike, *, image_size: int = 28, progress: bool = False
                 ) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Decode every character of one ``images_*.zip`` without extracting it.

    Members are read as ``<top>/<Alphabet>/<characterNN>/<IIII_DD>.png`` with ``<top>`` the
    zip's own name; other members (folder entries, macOS ``__MACOSX`` files) are skipped.
    Every name is checked first: one that would leave the archive's folder is refused.

    Args:
        path: the zip (already verified by its checksum).
        image_size: side of the decoded images.
        progress: show a tqdm progress bar.

    Returns:
        ``[(alphabet, character), ...]`` sorted, and uint8 [num_characters, 20, S, S].

    Raises:
        UnsafeArchive: a member's path is absolute or contains ``..``.
        CorruptArchive: a character without exactly 20 drawings, or no characters at all.
    """
    path = Path(path)
    top = path.name.removesuffix(".zip")
    with zipfile.ZipFile(path) as archive:
        drawings: dict[tuple[str, str], list[str]] = {}
        for member in archive.namelist():
            parts = safe_member_path(member).parts
            if len(parts) == 4 and parts[0] == top and parts[3].endswith(".png") \
                    and not parts[3].startswith("._"):
                drawings.setdefault((parts[1], parts[2]), []).append(member)
        if not drawings:
            raise CorruptArchive(f"{path} holds no {top}/<Alphabet>/<character>/*.png images")
        keys = sorted(drawings)
        out = np.empty((len(keys), DRAWINGS_PER_CHARACTER, image_size, image_size), dtype=np.uint8)
        with tqdm(total=len(keys) * DRAWINGS_PER_CHARACTER, desc=f"decoding {path.name}",
                  unit="img", disable=not progress, leave=False) as bar:
            for c, key in enumerate(keys):
                members = sorted(drawings[key])
                if len(members) != DRAWINGS_PER_CHARACTER:
                    raise CorruptArchive(f"{path}: {'/'.join(key)} has {len(members)} drawings, "
                                         f"not {DRAWINGS_PER_CHARACTER}; download the archive again")
                for d, member in enumerate(members):
                    out[c, d] = decode_png(archive.read(member), image_size)
                bar.update(len(members))
    return keys, out


def cache_path(archives: Sequence[str], image_size: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache file of ``archives`` decoded at ``image_size`` (in ``cache_dir`` or the default)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"omniglot-{'+'.join(archives)}-{image_size}px.cache"


def _write_cache(path: Path, header: dict, images: np.ndarray) -> None:
    payload = np.packbits(images).tobytes()  # binary images: 8 pixels a byte
    header = {**header, "shape": list(images.shape), "payload_sha256": hashlib.sha256(payload).hexdigest()}
    meta = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_HEADER.pack(_MAGIC, len(meta)))
            f.write(meta)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _read_cache(path: Path, expected: dict) -> tuple[dict, np.ndarray] | None:
    """The cache's header and images, or None when it is missing, stale or damaged."""
    try:
        data = path.read_bytes()
        magic, length = _HEADER.unpack_from(data)
        header = json.loads(data[_HEADER.size:_HEADER.size + length])
        payload = data[_HEADER.size + length:]
        if magic != _MAGIC or any(header.get(k) != v for k, v in expected.items()):
            return None
        if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
            return None
        shape = tuple(header["shape"])
        images = np.unpackbits(np.frombuffer(payload, dtype=np.uint8), count=int(np.prod(shape)))
        return header, images.reshape(shape)
    except (OSError, ValueError, KeyError, TypeError, struct.error):  # missing, truncated, garbled
        return None


def load_images(root: str | os.PathLike | None = None, *, archives: Sequence[str] = OMNIGLOT_ARCHIVES,
                image_size: int = 28, cache_dir: str | os.PathLike | None = None,
                download: bool | None = None, base_url: str | None = None,
                progress: bool = True) -> OmniglotImages:
    """All characters of ``archives``, from the cache, or decoded and cached on first use.

    Args:
        root: the data folder (``--data``); default ``$MAMLCOURSE_DATA``, else the default
            download folder (see ``download.resolve_root``).
        archives: which ``images_*`` zips, in order (default: background then evaluation,
            1623 characters).
        image_size: side of the decoded images (28, as the paper).
        cache_dir: where the cache lives (default ``$MAMLCOURSE_CACHE``, else ``~/.cache/mamlcourse``).
        download: see ``download.ensure_archives`` (None: only into the default folder).
        base_url: overrides where the zips are downloaded from.
        progress: progress bars while downloading and decoding.

    Returns:
        OmniglotImages with images uint8 [num_characters, 20, image_size, image_size].

    Raises:
        OmniglotNotFound: an archive is missing (the message says where to put it).
        CorruptArchive: an archive fails its checksum.

    Example:
        >>> load_images(archives=["images_background_small1"]).images.shape
        torch.Size([136, 20, 28, 28])
    """
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    verified: dict[str, Archive] = ensure_archives(archives, root, download=download, base_url=base_url,
                                                   progress=progress)
    expected = {"format": CACHE_FORMAT_VERSION, "image_size": image_size,
                "sources": {name: verified[name].md5 for name in archives}}
    path = cache_path(archives, image_size, cache_dir)
    cached = _read_cache(path, expected)
    if cached is None:
        keys, parts, origin = [], [], []
        for name in archives:
            names, images = read_archive(verified[name].path, image_size=image_size, progress=progress)
            keys += names
            parts.append(images)
            origin += [name] * len(names)
        header = {**expected, "alphabets": [a for a, _ in keys], "characters": [c for _, c in keys],
                  "archives": origin}
        images = np.concatenate(parts)
        try:
            _write_cache(path, header, images)
        except OSError as err:
            warnings.warn(f"could not write the Omniglot cache {path} ({err}); the images were decoded "
                          f"but will be decoded again next time. Set ${CACHE_ENV} to a writable folder.",
                          stacklevel=2)
        cached = header, images
    header, images = cached
    return OmniglotImages(torch.from_numpy(np.ascontiguousarray(images)), tuple(header["alphabets"]),
                          tuple(header["characters"]), tuple(header["archives"]))
