"""tools/gpu/prepare.py's logic without the network, check.py's $PYTHONPATH, window.sh's fail-fast."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools" / "gpu"))
import check  # noqa: E402
import prepare  # noqa: E402


def test_wheels_the_image_has_are_dropped_by_their_normalized_name():
    carried, dropped = prepare.select_wheels([
        "nbformat-5.11.1-py3-none-any.whl",
        "Jinja2-3.1.4-py3-none-any.whl",
        "typing_extensions-4.16.0-py3-none-any.whl",
        "torch-2.11.0-cp312-cp312-manylinux_2_28_x86_64.whl",
        "pyzmq-27.3.0-cp312-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl",
    ])
    pyzmq = "pyzmq-27.3.0-cp312-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl"
    assert carried == {"nbformat": ("5.11.1", "nbformat-5.11.1-py3-none-any.whl"), "pyzmq": ("27.3.0", pyzmq)}
    assert sorted(dropped) == ["jinja2", "torch", "typing-extensions"]


def test_two_versions_of_one_wheel_are_refused():
    with pytest.raises(prepare.PrepareError, match="two versions of traitlets"):
        prepare.select_wheels(["traitlets-5.16.1-py3-none-any.whl", "traitlets-5.14.0-py3-none-any.whl"])
    with pytest.raises(prepare.PrepareError, match="not a wheel"):
        prepare.wheel_name_version("learn2learn-0.2.0.tar.gz")


def test_what_is_carried_on_purpose_is_not_in_the_image_list():
    # A name in both would be dropped after download and silently never carried.
    wanted = [line.split("==")[0] for line in prepare.WITH_DEPENDENCIES + prepare.WITHOUT_DEPENDENCIES]
    assert {"ipykernel", "nbconvert", "nbval", "optree", "higher", "torchopt"} <= set(wanted)
    assert [w for w in wanted if prepare.normalize(w) in prepare.IMAGE_PACKAGES] == []
    assert {"torch", "numpy", "pytest", "jinja2"} <= prepare.IMAGE_PACKAGES


def test_unmet_requirements_are_named_and_markers_extras_and_the_image_are_honoured():
    carried = {
        "nbconvert": ("7.17.2", ["mistune<4,>=2.0.3", "jinja2>=3.0", "traitlets>=5.1",
                                 "pytest; extra == 'test'",
                                 "importlib-metadata>=3.6; python_version < '3.10'"]),
        "traitlets": ("5.16.1", []),
        "ipython": ("9.18.1", ["traitlets>=6", "exceptiongroup; python_version < '3.11'"]),
    }
    assert prepare.unmet_requirements(carried, "3.12") == [
        "ipython 9.18.1 needs traitlets>=6: 5.16.1 is carried",
        "nbconvert 7.17.2 needs mistune<4,>=2.0.3: not carried and not in the image"]
    # exceptiongroup is wanted on Python 3.10 only
    assert ('ipython 9.18.1 needs exceptiongroup; python_version < "3.11": not carried and not in the image'
            in prepare.unmet_requirements(carried, "3.10"))


def test_wheel_requirements_reads_the_wheels_metadata(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("demo-1.0.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: optree>=0.4.1\n"
                   "Requires-Dist: torch>=1.13\n\nlong description\n")
    assert prepare.wheel_requirements(wheel) == ["optree>=0.4.1", "torch>=1.13"]


def test_missing_zips_are_named_with_the_fix(tmp_path):
    (tmp_path / "all_runs.zip").write_bytes(b"PK")
    with pytest.raises(prepare.PrepareError) as err:
        prepare.check_data_source(tmp_path)
    message = str(err.value)
    assert message.startswith(f"images_background.zip, images_evaluation.zip not found in {tmp_path}")
    assert "bash tools/gpu/prepare.sh /path/to/omniglot" in message and "$MAMLCOURSE_DATA" in message


def test_a_damaged_zip_is_refused_with_the_courses_own_check(tmp_path, monkeypatch):
    for name in prepare.DATA_ZIPS:
        (tmp_path / f"{name}.zip").write_bytes(b"<html>not found</html>")
    monkeypatch.setattr(prepare, "ROOT", tmp_path / "repo")  # prepare_data writes under ROOT/.gpu
    sys.path.insert(0, str(REPO))
    with pytest.raises(prepare.PrepareError, match="HTML page"):
        prepare.prepare_data(tmp_path, tmp_path / "repo" / ".gpu" / "data")


def test_the_data_is_copied_not_linked_and_a_second_run_keeps_it(tmp_path, monkeypatch):
    omniglot = Path(os.environ.get("MAMLCOURSE_DATA", ""))
    if not all((omniglot / f"{n}.zip").is_file() for n in prepare.DATA_ZIPS):
        pytest.skip("needs Omniglot's three zips in $MAMLCOURSE_DATA")
    monkeypatch.setattr(prepare, "ROOT", tmp_path)
    dest = tmp_path / ".gpu" / "data"
    first = prepare.prepare_data(omniglot, dest)
    assert [line.split(" ")[1] for line in first] == ["copied"] * 3
    copies = [dest / f"{n}.zip" for n in prepare.DATA_ZIPS]
    assert all(c.is_file() and not c.is_symlink() for c in copies)
    assert os.access(dest / "all_runs.zip", os.W_OK)  # a read-only source gives a writable copy
    second = prepare.prepare_data(omniglot, dest)
    assert [line.split(" ")[1] for line in second] == ["kept"] * 3


def test_check_keeps_the_existing_python_path_after_the_repository():
    root = str(check.ROOT)
    assert check.python_path(None) == root
    assert check.python_path("/tmp/site:/x/.gpu/l2l") == os.pathsep.join([root, "/tmp/site", "/x/.gpu/l2l"])
    assert check.python_path(f"{root}::/tmp/site") == os.pathsep.join([root, "/tmp/site"])


def test_check_gives_its_child_processes_the_carried_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/tmp/site")
    runner = check.Check("cpu", tmp_path, tmp_path, budget=60)
    assert runner.env["PYTHONPATH"].split(os.pathsep) == [str(check.ROOT), "/tmp/site"]


def test_window_stops_before_installing_anything_when_the_data_is_missing(tmp_path):
    (tmp_path / "tools" / "gpu").mkdir(parents=True)
    (tmp_path / "tools" / "gpu" / "window.sh").write_text((REPO / "tools" / "gpu" / "window.sh").read_text())
    (tmp_path / ".gpu" / "data").mkdir(parents=True)
    (tmp_path / ".gpu" / "data" / "all_runs.zip").write_bytes(b"PK")
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "x-1.0-py3-none-any.whl").write_bytes(b"not a wheel: pip would fail on it")
    result = subprocess.run(["bash", "tools/gpu/window.sh"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "OUT": str(tmp_path / "out")}, timeout=60)
    assert result.returncode == 2
    assert "lacks images_background.zip images_evaluation.zip" in result.stderr
    assert "bash tools/gpu/prepare.sh" in result.stderr
    assert result.stdout == "" and not (tmp_path / "out").exists()


def test_what_the_carried_wheels_ask_of_the_image_is_written_down():
    carried = {"torchopt": ("0.7.3", ["torch>=1.13", "optree>=0.4.1", "numpy", "pytest; extra == 'test'"]),
               "optree": ("0.20.0", ["typing-extensions>=4.10.0",
                                     "typing-extensions>=4.12.0; python_version >= '3.13'"]),
               "nbconvert": ("7.17.2", ["Jinja2>=3.0"])}
    assert prepare.image_requirements(carried, "3.12") == {
        "jinja2": ">=3.0", "numpy": "", "torch": ">=1.13", "typing-extensions": ">=4.10.0"}
    assert prepare.image_requirements(carried, "3.13")["typing-extensions"] == ">=4.10.0,>=4.12.0"


def test_check_starts_from_empty_run_folders(tmp_path):
    # A finished run left in work/ would be resumed, not trained, and the kill -9 part would pass vacuously.
    stale = tmp_path / "work" / "killed"
    stale.mkdir(parents=True)
    (stale / "checkpoint.pt").write_bytes(b"from an earlier check")
    assert check.main(["--device", "cpu", "--parts", "unit", "--log", str(tmp_path), "--budget", "0"]) == 1
    assert (tmp_path / "work").is_dir() and not stale.exists()
