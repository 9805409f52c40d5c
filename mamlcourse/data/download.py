"""Omniglot's archives: where they live, how they are checked, and how they are fetched.

The data root is, in this order: the ``root`` argument (``--data`` on the command line),
else ``$MAMLCOURSE_DATA``, else a default folder (``$XDG_CACHE_HOME/mamlcourse/omniglot``,
``~/.cache/mamlcourse/omniglot`` without it). Only the default folder is downloaded into
unless asked (``download=True``): a mistyped ``--data`` should not fill a new folder.

Every archive is checked by its checksum before a byte of it is used. Both the official
files of ``brendenlake/omniglot`` and the course's rebuilt copies of the two large zips are
accepted (``ARCHIVES`` lists both). A download goes to a temporary
name in the target folder and is moved into place only once its checksum is right, so a
truncated transfer or an HTML error page never ends up under the zip's name.

Example:
    >>> archives = ensure_archives(["images_background", "images_evaluation"])
    >>> archives["images_background"].path.name
    'images_background.zip'
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

DEFAULT_BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
DATA_ENV = "MAMLCOURSE_DATA"
CACHE_ENV = "MAMLCOURSE_CACHE"
URL_ENV = "MAMLCOURSE_OMNIGLOT_URL"
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Checksum:
    """One accepted copy of an archive: its MD5, its SHA-256 when known, and its size."""

    md5: str
    size: int
    sha256: str | None = None


# name -> accepted copies. "official": the files of brendenlake/omniglot, folder python/
# (only their MD5 is published); "rebuilt": the course's deterministic zips of the same PNGs.
ARCHIVES: dict[str, tuple[Checksum, ...]] = {
    "images_background": (
        Checksum("68d2efa1b9178cc56df9314c21c6e718", 9_464_212),
        Checksum("cf8cff36dcb82434eeaa7d762b0e3c08", 8_588_032,
                 "512b4a2b61ff1c7d09db743d05d12aedc2a5f38192fa40d63fd91f0fc1504c88"),
    ),
    "images_evaluation": (
        Checksum("6b91aef0f799c5bb55b94e3f2daec811", 6_462_886),
        Checksum("77f3256ef5a46dd8a2d38d9e7973c9ae", 5_863_926,
                 "98893e98e6c7ac15783039de81205741dffe6bb4ac1e1f0c5568f6889e7e523c"),
    ),
    "images_background_small1": (
        Checksum("e704a628b5459e08445c13499850abc4", 1_319_022,
                 "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"),
    ),
    "images_background_small2": (
        Checksum("b75a71a51d3b13f821f212756fe481fd", 1_580_917,
                 "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"),
    ),
    "all_runs": (
        Checksum("e8996daecdf12afeeb4a53a179f06b19", 352_787,
                 "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325"),
    ),
}


@dataclass(frozen=True)
class Archive:
    """A verified archive: its name (without ``.zip``), path and MD5 (which copy it is)."""

    name: str
    path: Path
    md5: str


class OmniglotNotFound(FileNotFoundError):
    """An Omniglot archive is missing and could not be downloaded."""


class CorruptArchive(ValueError):
    """A file under an archive's name is not a known copy of that archive."""


class UnsafeArchive(ValueError):
    """An archive member's path would leave the folder it belongs in (``..``, absolute)."""


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mamlcourse"


def default_data_dir() -> Path:
    """The folder the archives are downloaded into when no root is given."""
    return _user_cache() / "omniglot"


def default_cache_dir() -> Path:
    """Where decoded caches go: ``$MAMLCOURSE_CACHE``, else ``~/.cache/mamlcourse``."""
    return Path(os.environ[CACHE_ENV]) if os.environ.get(CACHE_ENV) else _user_cache()


def resolve_root(root: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """The data root and whether it is the default folder.

    Args:
        root: an explicit folder (``--data``); None falls back to ``$MAMLCOURSE_DATA``,
            then to ``default_data_dir()``.

    Returns:
        (folder, is_default).
    """
    if root is not None:
        return Path(root).expanduser(), False
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser(), False
    return default_data_dir(), True


def archive_url(name: str, base_url: str | None = None) -> str:
    """Where ``name``.zip is fetched: ``base_url``, else ``$MAMLCOURSE_OMNIGLOT_URL``, else GitHub."""
    base = base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL
    return base.rstrip("/") + f"/{name}.zip"


def _accepted(name: str) -> tuple[Checksum, ...]:
    if name not in ARCHIVES:
        raise ValueError(f"unknown Omniglot archive {name!r}: choose one of {sorted(ARCHIVES)}")
    return ARCHIVES[name]


def _hash_file(path: Path) -> tuple[str, str, int]:
    md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
    return md5.hexdigest(), sha256.hexdigest(), size


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith(b"<")  # a zip starts with b"PK\x03\x04"


def verify_archive(path: str | os.PathLike, name: str) -> str:
    """Check that ``path`` is a known copy of archive ``name``; return its MD5.

    Args:
        path: the file to check.
        name: the archive's name without ``.zip``, a key of ``ARCHIVES``.

    Returns:
        The file's MD5 (it identifies the copy, official or rebuilt).

    Raises:
        CorruptArchive: the size or checksum matches no accepted copy (a truncated
            download, an HTML error page saved under the zip's name, another file).

    Example:
        >>> verify_archive(Path(os.environ["MAMLCOURSE_DATA"]) / "all_runs.zip", "all_runs")
        'e8996daecdf12afeeb4a53a179f06b19'
    """
    path = Path(path)
    accepted = _accepted(name)
    md5, sha256, size = _hash_file(path)
    for copy in accepted:
        if md5 == copy.md5 and size == copy.size and copy.sha256 in (None, sha256):
            return md5
    if _looks_like_html(path):
        what = "it is an HTML page (an error or login page saved under the zip's name)"
    elif size < min(c.size for c in accepted):
        what = f"it is {size:,} bytes, shorter than the {min(c.size for c in accepted):,} expected " \
               "(a truncated download?)"
    else:
        what = f"its MD5 {md5} ({size:,} bytes) matches no known copy"
    known = ", ".join(f"{c.md5} ({c.size:,} bytes)" for c in accepted)
    raise CorruptArchive(f"{path} is not a valid {name}.zip: {what}. Accepted MD5s: {known}. "
                         f"Delete it and download it again (see {archive_url(name)}).")


def not_found_message(names: Iterable[str], root: Path, *, reason: str = "") -> str:
    """What to do when archives are missing: where to put them and the three ways to say so."""
    files = ", ".join(f"{n}.zip" for n in names)
    return (f"Omniglot archive(s) {files} not found in {root}{(': ' + reason) if reason else ''}. "
            f"Put the file(s) into {root}, or point to a folder that holds them in one of three ways: "
            f"(1) root=... in Python / --data on the command line; (2) ${DATA_ENV}=/path/to/folder; "
            f"(3) leave both unset to use the default folder {default_data_dir()}, which is "
            f"downloaded into from {DEFAULT_BASE_URL} (override with ${URL_ENV})."
            + ("" if root == default_data_dir() else f" To download into {root} itself, pass download=True."))


def download_archive(name: str, root: str | os.PathLike, *, base_url: str | None = None,
                     progress: bool = True) -> Path:
    """Fetch ``name``.zip into ``root``, verified before it is moved into place.

    The bytes go to a temporary file in ``root`` (same file system, so the final rename is
    atomic); the file replaces ``root/name.zip`` only when its checksum is accepted, and is
    deleted otherwise.

    Args:
        name: a key of ``ARCHIVES``.
        root: the folder to write into (created if needed).
        base_url: where the zips are served (default ``$MAMLCOURSE_OMNIGLOT_URL``, else GitHub).
        progress: show a tqdm progress bar.

    Returns:
        The path of the verified archive, ``root/name.zip``.

    Raises:
        OmniglotNotFound: the server could not be reached or answered with an error.
        CorruptArchive: what arrived is not the archive (nothing is left behind).
    """
    _accepted(name)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    url = archive_url(name, base_url)
    target = root / f"{name}.zip"
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=f".{name}.", suffix=".zip.part")
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out, \
                    urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                size = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=size, unit="B", unit_scale=True, desc=f"{name}.zip",
                          disable=not progress, leave=False) as bar:
                    while chunk := response.read(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except (urllib.error.URLError, OSError) as err:  # unreachable, HTTP error, cut off, disk full
            raise OmniglotNotFound(not_found_message([name], root, reason=f"downloading {url} "
                                                     f"failed ({err})")) from err
        verify_archive(tmp, name)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the data folder may be shared
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target


def ensure_archives(names: Iterable[str], root: str | os.PathLike | None = None, *,
                    download: bool | None = None, base_url: str | None = None,
                    progress: bool = True) -> dict[str, Archive]:
    """Verified paths of the archives ``names``, downloading the missing ones when allowed.

    Args:
        names: archive names without ``.zip`` (keys of ``ARCHIVES``).
        root: the data folder (see ``resolve_root``).
        download: True downloads missing archives into the root, False never downloads,
            None (default) downloads only into the default folder.
        base_url: overrides the download address (tests serve the zips locally).
        progress: show a progress bar while downloading.

    Returns:
        ``{name: Archive(name, path, md5)}`` for every archive, each checked by its checksum.

    Raises:
        OmniglotNotFound: an archive is missing and was not (or could not be) downloaded.
        CorruptArchive: a file under an archive's name is not that archive.
    """
    names = list(names)
    folder, is_default = resolve_root(root)
    download = is_default if download is None else download
    missing = [n for n in names if not (folder / f"{n}.zip").is_file()]
    if missing and not download:
        raise OmniglotNotFound(not_found_message(missing, folder))
    archives = {}
    for name in names:
        path = folder / f"{name}.zip"
        if name in missing:
            try:
                download_archive(name, folder, base_url=base_url, progress=progress)
            except PermissionError as err:
                raise OmniglotNotFound(not_found_message([name], folder, reason=f"cannot write there "
                                                         f"({err})")) from err
        archives[name] = Archive(name, path, verify_archive(path, name))
    return archives


def safe_member_path(member: str) -> PurePosixPath:
    """An archive member's name as a relative path, refused if it could leave its folder.

    Args:
        member: the name stored in the zip (``images_background/Latin/character01/0683_01.png``).

    Returns:
        The name as a ``PurePosixPath`` with no ``..``, no root and no drive.

    Raises:
        UnsafeArchive: an absolute path, a drive letter, a backslash or a ``..`` component.

    Example:
        >>> safe_member_path("images_background/Latin/character01/0683_01.png").parts[1]
        'Latin'
    """
    path = PurePosixPath(member)
    if (member.startswith(("/", "\\")) or "\\" in member or (len(member) > 1 and member[1] == ":")
            or ".." in path.parts):
        raise UnsafeArchive(f"archive member {member!r} would leave the folder it is read into "
                            "(absolute path or '..'): the archive is not a genuine Omniglot file; "
                            "delete it and download it again")
    return path

