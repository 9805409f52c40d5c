"""Fetching Omniglot for real, from a local HTTP server: good files kept, bad ones refused.

A server on 127.0.0.1 serves copies of the real small archives, a truncated copy and an
HTML error page saved under a zip's name. Nothing here reaches the internet.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from conftest import omniglot_root, serve_directory
from mamlcourse.data.download import (
    CorruptArchive,
    OmniglotNotFound,
    default_data_dir,
    download_archive,
    ensure_archives,
    resolve_root,
    verify_archive,
)
from mamlcourse.data.omniglot import lake_runs, load_images

SERVED = ("all_runs", "images_background_small1")


def data_root() -> Path:
    """The folder holding the real archives this file reads."""
    return omniglot_root(SERVED)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Base URLs of a local server: good/, truncated/ and html/ each hold the archives' names."""
    root = data_root()
    served = tmp_path_factory.mktemp("served")
    for folder in ("good", "truncated", "html"):
        (served / folder).mkdir()
    for name in SERVED:
        data = (root / f"{name}.zip").read_bytes()
        (served / "good" / f"{name}.zip").write_bytes(data)
        (served / "truncated" / f"{name}.zip").write_bytes(data[: len(data) // 3])
        (served / "html" / f"{name}.zip").write_text(
            "<!DOCTYPE html><html><head><title>Error 503</title></head>"
            "<body>Service unavailable, please retry later.</body></html>")
    with serve_directory(served) as url:
        yield url.rstrip("/")  # the tests append "/good/...", as before


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Requests to 127.0.0.1 go straight to the local server, whatever proxy the machine sets."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_a_good_download_is_verified_and_moved_into_place(server, tmp_path):
    path = download_archive("all_runs", tmp_path / "data", base_url=f"{server}/good/", progress=True)
    assert path == tmp_path / "data" / "all_runs.zip"
    assert verify_archive(path, "all_runs") == "e8996daecdf12afeeb4a53a179f06b19"
    assert os.listdir(tmp_path / "data") == ["all_runs.zip"], "the temporary file must be gone"


@pytest.mark.parametrize("folder, says", [("truncated", "truncated download"),
                                          ("html", "HTML page")])
def test_a_bad_download_is_refused_and_leaves_nothing(server, tmp_path, folder, says):
    data = tmp_path / "data"
    with pytest.raises(CorruptArchive, match=says) as err:
        download_archive("all_runs", data, base_url=f"{server}/{folder}")
    assert "Delete it and download it again" in str(err.value)
    assert list(data.iterdir()) == [], "a refused download must leave no file behind"


def test_a_server_error_or_no_server_raises_not_found_and_leaves_nothing(server, tmp_path):
    data = tmp_path / "data"
    with pytest.raises(OmniglotNotFound, match="404") as err:
        download_archive("all_runs", data, base_url=f"{server}/missing/")
    assert isinstance(err.value, FileNotFoundError) and "MAMLCOURSE_DATA" in str(err.value)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(OmniglotNotFound, match="failed"):
        download_archive("all_runs", data, base_url=f"http://127.0.0.1:{closed}/")
    assert list(data.iterdir()) == []


def test_the_default_folder_is_downloaded_into_from_the_env_url(server, tmp_path, monkeypatch):
    monkeypatch.delenv("MAMLCOURSE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MAMLCOURSE_OMNIGLOT_URL", f"{server}/good")
    assert resolve_root() == (tmp_path / "xdg" / "mamlcourse" / "omniglot", True)
    runs = lake_runs()
    assert len(runs) == 20 and runs[0].x_support.shape == (20, 1, 28, 28)
    assert os.listdir(default_data_dir()) == ["all_runs.zip"]
    small = load_images(archives=["images_background_small1"], cache_dir=tmp_path / "cache", progress=False)
    assert small.images.shape == (136, 20, 28, 28)
    assert sorted(os.listdir(default_data_dir())) == ["all_runs.zip", "images_background_small1.zip"]


def test_a_given_folder_is_not_downloaded_into_unless_asked(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMLCOURSE_OMNIGLOT_URL", f"{server}/good")
    for how in ("argument", "environment"):
        folder = tmp_path / how
        folder.mkdir()
        if how == "environment":
            monkeypatch.setenv("MAMLCOURSE_DATA", str(folder))
        with pytest.raises(OmniglotNotFound) as err:
            ensure_archives(["images_background", "images_evaluation"], folder if how == "argument" else None)
        message = str(err.value)
        assert "images_background.zip, images_evaluation.zip not found" in message and str(folder) in message
        for way in ("root=", "--data", "$MAMLCOURSE_DATA", str(default_data_dir()), "download=True"):
            assert way in message, f"the message should mention {way}"
        assert list(folder.iterdir()) == []
    archives = ensure_archives(["all_runs"], tmp_path / "argument", download=True, base_url=f"{server}/good")
    assert archives["all_runs"].md5 == "e8996daecdf12afeeb4a53a179f06b19"


def test_a_corrupt_local_file_is_refused_before_use(tmp_path):
    root = data_root()
    data = tmp_path / "data"
    data.mkdir()
    (data / "images_background_small1.zip").write_text("<html><body>404: Not Found</body></html>")
    with pytest.raises(CorruptArchive, match="HTML page"):
        load_images(data, archives=["images_background_small1"], cache_dir=tmp_path / "cache")
    shutil.copyfile(root / "all_runs.zip", data / "all_runs.zip")
    with open(data / "all_runs.zip", "r+b") as f:  # one flipped byte in the middle
        f.seek(100_000)
        byte = f.read(1)
        f.seek(100_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CorruptArchive, match="matches no known copy"):
        lake_runs(data)
    assert not (tmp_path / "cache").exists(), "nothing may be cached from a refused archive"
