"""What a GPU window sends back, and the step that puts it into the working tree.

The device tool copies back only what a command writes under ``$OUT``: at most 8 files,
16 MiB each, 64 MiB together, no more than two folders down (``$OUT/a/b/file``), each name
made of letters, digits, ``.``, ``_`` and ``-``. ``export`` writes the files a window changed
under ``$OUT`` in the repository's layout when they fit those limits, and packs them into
tar files (each under 16 MiB, still in the repository's layout inside) when they do not.
Either way it writes ``$OUT/queue-manifest.json`` last: every file's repository path and
SHA-256, and the SHA-256 the file had in the tree the window started from.

``bring_back`` reads that manifest from the folder where the tool put the files, checks
every file (present, checksum right) and that the working tree has not changed those files
since the window started, and only then copies them all in: all or nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
MAX_TOTAL_BYTES = 64 * 2**20
MAX_FOLDERS = 2  # $OUT/a/b/file comes back, $OUT/a/b/c/file does not
BUNDLE_BYTES = 15 * 2**20  # a tar's payload, leaving room for its headers
MANIFEST = "queue-manifest.json"
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class BringBackError(ValueError):
    """The files that came back cannot be copied into the working tree as they are."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot(root: Path, paths: list[str]) -> dict[str, str | None]:
    """SHA-256 of each repository path as it is now (None: absent), to detect later edits."""
    return {p: sha256(root / p) if (root / p).is_file() else None for p in paths}


def fits_layout(root: Path, paths: list[str]) -> bool:
    """Whether ``paths`` (plus the manifest) come back through $OUT as plain files."""
    if len(paths) + 1 > MAX_FILES:
        return False
    total = 0
    for p in paths:
        parts = PurePosixPath(p).parts
        size = (root / p).stat().st_size
        total += size
        if len(parts) - 1 > MAX_FOLDERS or not all(_NAME.match(x) for x in parts) or size > MAX_FILE_BYTES:
            return False
    return total <= MAX_TOTAL_BYTES


def _bins(root: Path, paths: list[str]) -> list[list[str]]:
    """Files grouped into tar payloads of at most ``BUNDLE_BYTES`` each (largest first)."""
    bins: list[tuple[int, list[str]]] = []
    for p in sorted(paths, key=lambda q: -(root / q).stat().st_size):
        size = (root / p).stat().st_size
        if size > BUNDLE_BYTES:
            raise BringBackError(f"{p} is {size / 2**20:.1f} MiB: larger than the {BUNDLE_BYTES // 2**20} MiB "
                                 "the device tool brings back in one file")
        for i, (used, names) in enumerate(bins):
            if used + size <= BUNDLE_BYTES:
                bins[i] = (used + size, names + [p])
                break
        else:
            bins.append((size, [p]))
    if len(bins) + 1 > MAX_FILES or sum(u for u, _ in bins) > MAX_TOTAL_BYTES - 2**20:
        raise BringBackError(f"{len(paths)} files of {sum(u for u, _ in bins) / 2**20:.1f} MiB do not fit "
                             f"in the {MAX_FILES} files / {MAX_TOTAL_BYTES // 2**20} MiB that come back: "
                             "run fewer jobs at once (--concurrency)")
    return [names for _, names in bins]


def export(root: Path, paths: list[str], out: Path, base: dict[str, str | None]) -> dict:
    """Put ``paths`` (relative to ``root``) under ``out`` for the trip back; returns the manifest.

    Only files that changed since ``base`` (a ``snapshot`` of the tree the window started
    from; paths missing from it count as changed) are sent.

    Called again in the same window (after each job), it replaces what it wrote before.
    ``base`` maps paths to their SHA-256 when the window started (see ``snapshot``).
    """
    out.mkdir(parents=True, exist_ok=True)
    old = out / MANIFEST
    if old.is_file():  # the previous export of this window: remove it first, manifest first
        previous = json.loads(old.read_text())
        old.unlink()
        for name in previous.get("bundles", []) + (list(previous["files"]) if previous["layout"] == "files" else []):
            (out / name).unlink(missing_ok=True)
            for folder in (out / name).parents:  # no empty folders left behind
                if folder == out or any(folder.iterdir()):
                    break
                folder.rmdir()
    files = {}
    for p in sorted({str(PurePosixPath(p)) for p in paths if (root / p).is_file()}):
        digest = sha256(root / p)
        if p not in base or base[p] != digest:  # unchanged files stay behind: fewer to send
            files[p] = {"sha256": digest, "bytes": (root / p).stat().st_size, "base_sha256": base.get(p)}
    paths = list(files)
    manifest: dict = {"files": files, "bundles": [], "layout": "files"}
    if fits_layout(root, paths):
        for p in paths:
            (out / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / p, out / p)
    else:
        manifest["layout"] = "tar"
        for i, names in enumerate(_bins(root, paths), start=1):
            name = f"queue-bundle-{i}.tar"
            with tarfile.open(out / name, "w") as tar:
                for p in names:
                    tar.add(root / p, arcname=p)
            manifest["bundles"].append(name)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest


def bring_back(src: Path, root: Path, *, force: bool = False, dry_run: bool = False) -> list[str]:
    """Copy a window's files from ``src`` (the tool's files_at folder) into the tree at ``root``.

    Raises:
        BringBackError: no manifest, a file missing or damaged, or a file changed here since
            the window started (``force`` overwrites those).
    """
    manifest_path = src / MANIFEST
    if not manifest_path.is_file():
        raise BringBackError(f"no {MANIFEST} in {src}: point at the folder the device tool put the files in "
                             "(its files_at), from a run of `gpu_queue.py next --out $OUT`")
    manifest = json.loads(manifest_path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        for name in manifest["bundles"]:
            if not (src / name).is_file():
                raise BringBackError(f"{name} did not come back (see files_left_out in the tool's reply); "
                                     "run `next` again: the checkpoints on the device were lost with it")
            with tarfile.open(src / name) as tar:
                for member in tar.getmembers():
                    target = PurePosixPath(member.name)
                    if target.is_absolute() or ".." in target.parts or not member.isfile():
                        raise BringBackError(f"{name} holds an unexpected entry {member.name!r}")
                    if member.name not in manifest["files"]:
                        raise BringBackError(f"{name} holds {member.name}, which the manifest does not list")
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 and 3.12
                    tar.extractall(staged, filter="data")
                else:
                    tar.extractall(staged)
        origin = staged if manifest["layout"] == "tar" else src
        problems = []
        for p, entry in manifest["files"].items():
            got = origin / p
            if not got.is_file():
                problems.append(f"{p}: did not come back")
            elif sha256(got) != entry["sha256"]:
                problems.append(f"{p}: checksum differs from the manifest (damaged on the way)")
            here = root / p
            current = sha256(here) if here.is_file() else None
            if current != entry["base_sha256"] and current != entry["sha256"] and not force:
                problems.append(f"{p}: changed in this working tree since the window started "
                                "(commit or move it, or pass --force to overwrite)")
        if problems:
            raise BringBackError("nothing copied:\n  " + "\n  ".join(problems))
        if not dry_run:
            for p in manifest["files"]:
                (root / p).parent.mkdir(parents=True, exist_ok=True)
                tmp_copy = (root / p).with_name((root / p).name + ".bring-back.tmp")
                shutil.copyfile(origin / p, tmp_copy)
                os.replace(tmp_copy, root / p)
    return sorted(manifest["files"])
