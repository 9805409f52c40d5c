#!/usr/bin/env python3
"""Prepare, once, what a GPU window carries: Omniglot's zips, the wheels the GPU image lacks, learn2learn's MAML.

    bash tools/gpu/prepare.sh                        # data from $MAMLCOURSE_DATA, else ../shared/data/omniglot
    bash tools/gpu/prepare.sh /path/to/omniglot      # data from there
    bash tools/gpu/prepare.sh --python-version 3.11  # wheels for an emulated image, into .whl-311

Run on a machine where pip reaches a package index; the GPU machine reaches none. It makes, in the
repository root (``.gpu/`` and ``.whl/`` are ignored by git):

- ``.gpu/data/``: ``images_background.zip``, ``images_evaluation.zip`` and ``all_runs.zip``, copied
  (the device tool carries no links) and checked against the course's checksums
  (``mamlcourse.data.download.verify_archive``).
- ``.whl/``: Python 3.12 x86-64 wheels of what ``tools/gpu/check.py`` and the speed comparison need
  and the GPU image lacks: the notebook execution stack (nbformat, nbconvert, nbclient, ipykernel,
  jupyter_client, jupyter_core, ipywidgets, and nbval, which the repository's pytest options name),
  the peers higher and torchopt with optree and graphviz, and every dependency of those that the
  image does not hold (``IMAGE_PACKAGES``). pip resolves the dependencies for the GPU's platform;
  the image's packages are then dropped by name, and every requirement of what is left is checked
  to be met by a carried wheel or named in the image's list. One version of each.
- ``.gpu/l2l/``: learn2learn 0.2.0's three pure-Python MAML modules from its sdist (checked by
  SHA-256), with empty ``__init__.py`` files and a ``dist-info`` so that ``importlib.metadata``
  reports its version (``benchmarks/meta_step.py`` lists a peer without one as not installed).

Then, in the window: ``run(command="bash tools/gpu/window.sh", carry=[".gpu", ".whl"])``. Safe to
run again: the data and learn2learn are kept when they check out, the wheels are rebuilt into a
temporary folder and replace ``.whl`` whole. Exits 1 with the problem and its fix on failure.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

from queue_bundle import sha256  # the queue's file checksum (this script's folder is on sys.path)

try:
    from packaging.markers import InvalidMarker
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:  # pip carries its own copy
    from pip._vendor.packaging.markers import InvalidMarker
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DATA_ZIPS = ("images_background", "images_evaluation", "all_runs")
CARRY_LIMIT = 64 * 2**20  # the device tool's limit on the working tree plus what `carry` names

# The Python packages of the GPU machine's image ('cuda'), copied from the device tool's
# /work/.library/device/KINDS.md, section "Python packages already there", as read on a
# machine running that image on 2026-11-17 (copied here on 2026-12-03). Its Python is 3.12.3.
IMAGE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils
execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py
hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax
jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib
mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax
opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip
pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())

# What is carried, at the versions the course's suite runs with (/work/main/.venv, 2026-12-03;
# requirements.txt asks for ipywidgets>=8.1 and nbval>=0.11). Their dependencies are resolved by pip.
WITH_DEPENDENCIES = (
    "nbformat==5.11.1", "nbconvert==7.17.2", "nbclient==0.11.0", "ipykernel==7.4.0",
    "jupyter_client==8.10.0", "jupyter_core==5.9.1", "ipywidgets==8.1.9", "nbval==0.11.0",
    "optree==0.20.0", "graphviz==0.21",
)
# The peers, without their dependencies: both ask for torch, which the image has and which must
# never be carried (pip would fetch a CUDA build of several GB). torchopt's others are above.
WITHOUT_DEPENDENCIES = ("higher==0.2.1", "torchopt==0.7.3")
# pip's flags for the GPU machine's platform (the device tool's README): x86-64 manylinux, CPython.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")

L2L_VERSION = "0.2.0"
L2L_MODULES = {  # learn2learn 0.2.0's sdist: path -> SHA-256
    "learn2learn/utils/__init__.py": "5afbbc5679c1e63a6132266c9e5ab66231990e8d1b197cf9efd39b08d4814b3d",
    "learn2learn/algorithms/maml.py": "d26ee2afb3e7cdefd84147d5fa7bb114267325d23890e6f102181db0a911824f",
    "learn2learn/algorithms/base_learner.py": "fe4ab15e6c990045934ff24ffbdfb131757d188e10498c1feef70b4f0a928738",
}
L2L_EMPTY = ("learn2learn/__init__.py", "learn2learn/algorithms/__init__.py")


class PrepareError(RuntimeError):
    """A step could not be done; the message names the problem and the fix."""


def normalize(name: str) -> str:
    """A distribution's name as PEP 503 compares names: ``Jupyter_Core`` -> ``jupyter-core``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name_version(filename: str) -> tuple[str, str]:
    """(normalized name, version) from a wheel's file name, ``name-version(-build)?-py-abi-plat.whl``."""
    parts = Path(filename).name[:-len(".whl")].split("-")
    if not filename.endswith(".whl") or len(parts) < 5:
        raise PrepareError(f"{filename} is not a wheel's file name (name-version-python-abi-platform.whl)")
    return normalize(parts[0]), parts[1]


def select_wheels(filenames: list[str], image: frozenset[str] = IMAGE_PACKAGES) -> tuple[dict, dict]:
    """Split downloaded wheels into those to carry and those the image has.

    Args:
        filenames: wheel file names.
        image: normalized names of the image's packages.

    Returns:
        ``(carried, dropped)``: each maps a normalized name to ``(version, filename)``.

    Raises:
        PrepareError: two versions of one distribution (pip refuses to install both).
    """
    carried: dict[str, tuple[str, str]] = {}
    dropped: dict[str, tuple[str, str]] = {}
    image = frozenset(normalize(n) for n in image)
    for filename in sorted(filenames):
        name, version = wheel_name_version(filename)
        into = dropped if name in image else carried
        if name in into and into[name][0] != version:
            raise PrepareError(f"two versions of {name}: {into[name][1]} and {Path(filename).name}; "
                               "keep one (pin it in WITH_DEPENDENCIES)")
        into[name] = (version, Path(filename).name)
    return carried, dropped


def target_environment(python_version: str) -> dict[str, str]:
    """The marker environment (PEP 508) of CPython ``python_version`` on x86-64 Linux."""
    return {"python_version": python_version, "python_full_version": f"{python_version}.0",
            "implementation_name": "cpython", "implementation_version": f"{python_version}.0",
            "platform_python_implementation": "CPython", "platform_system": "Linux",
            "sys_platform": "linux", "platform_machine": "x86_64", "os_name": "posix",
            "platform_release": "", "platform_version": "", "extra": ""}


def wheel_requirements(path: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's METADATA."""
    with zipfile.ZipFile(path) as wheel:
        metadata = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
        if len(metadata) != 1:
            raise PrepareError(f"{path.name} has no single */METADATA: a damaged wheel? Run again")
        text = wheel.read(metadata[0]).decode("utf-8")
    return Parser().parsestr(text).get_all("Requires-Dist") or []


def active_requirements(lines: list[str], python_version: str) -> list[Requirement]:
    """The requirements among ``Requires-Dist`` lines that apply on the target (no extras)."""
    env = target_environment(python_version)
    active = []
    for line in lines:
        req = Requirement(line)
        try:
            if req.marker is None or req.marker.evaluate(env):
                active.append(req)
        except InvalidMarker as err:
            raise PrepareError(f"cannot read the requirement {line!r} ({err})") from err
    return active


def unmet_requirements(carried: dict[str, tuple[str, list[str]]], python_version: str,
                       image: frozenset[str] = IMAGE_PACKAGES) -> list[str]:
    """Requirements of the carried wheels that neither a carried wheel nor the image meets.

    Args:
        carried: normalized name -> (version, its Requires-Dist lines).
        python_version: the target's Python, for markers such as ``python_version < "3.12"``.
        image: normalized names of the image's packages (their versions are not known here).

    Returns:
        One line per unmet requirement, ``"nbconvert 7.17.2 needs mistune<4,>=2.0.3: not carried"``;
        empty when the carried set is complete.
    """
    image = frozenset(normalize(n) for n in image)
    problems = []
    for name, (version, lines) in sorted(carried.items()):
        for req in active_requirements(lines, python_version):
            needed = normalize(req.name)
            if needed in carried:
                have = carried[needed][0]
                if req.specifier and not req.specifier.contains(Version(have), prereleases=True):
                    problems.append(f"{name} {version} needs {req.name}{req.specifier}: {have} is carried")
            elif needed not in image:
                problems.append(f"{name} {version} needs {req}: not carried and not in the image")
    return problems


def image_requirements(carried: dict[str, tuple[str, list[str]]], python_version: str,
                       image: frozenset[str] = IMAGE_PACKAGES) -> dict[str, str]:
    """What the carried wheels ask of the image's packages: normalized name -> joined specifiers.

    The image's versions are not known here, so these are written down (``image-provided.txt``)
    for whoever meets an import error on the GPU, and installed as such on an emulated image.
    """
    image = frozenset(normalize(n) for n in image)
    asked: dict[str, set[str]] = {}
    for _, lines in carried.values():
        for req in active_requirements(lines, python_version):
            if normalize(req.name) in image and normalize(req.name) not in carried:
                asked.setdefault(normalize(req.name), set()).update(str(s) for s in req.specifier)
    return {name: ",".join(sorted(specs)) for name, specs in sorted(asked.items())}


# ---------------------------------------------------------------------------------------------
# The three steps.

def data_source(argument: str | None) -> Path:
    """The folder to copy the zips from: the argument, else $MAMLCOURSE_DATA, else ../shared/data/omniglot."""
    if argument:
        return Path(argument).expanduser()
    if os.environ.get("MAMLCOURSE_DATA"):
        return Path(os.environ["MAMLCOURSE_DATA"]).expanduser()
    return ROOT.parent / "shared" / "data" / "omniglot"


def check_data_source(source: Path) -> list[Path]:
    """The three zips in ``source``, or a PrepareError naming the missing ones and the fix."""
    paths = [source / f"{name}.zip" for name in DATA_ZIPS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise PrepareError(
            f"{', '.join(missing)} not found in {source}. Pass the folder that holds Omniglot's "
            f"{', '.join(n + '.zip' for n in DATA_ZIPS)} (bash tools/gpu/prepare.sh /path/to/omniglot) or set "
            "$MAMLCOURSE_DATA. Without them, `python -m mamlcourse train omniglot` (or lesson 3) downloads "
            "them into the course's default folder, ~/.cache/mamlcourse/omniglot")
    return paths


def verify_zip(path: Path, name: str) -> str:
    """The course's own check of an Omniglot archive (size and checksum); returns its MD5."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        from mamlcourse.data.download import CorruptArchive, verify_archive
    except ImportError as err:
        raise PrepareError(f"cannot import the course to check {path.name} ({err}): run with the course's "
                           "Python, PYTHON=.venv/bin/python bash tools/gpu/prepare.sh") from err
    try:
        return verify_archive(path, name)
    except CorruptArchive as err:
        raise PrepareError(str(err)) from err


def checks_out(path: Path, name: str) -> str | None:
    """``verify_zip``'s MD5, or None for a damaged copy (to be replaced)."""
    try:
        return verify_zip(path, name)
    except PrepareError:
        return None


def prepare_data(source: Path, dest: Path) -> list[str]:
    """Copy the three zips into ``dest`` (kept when equal), each checked. Returns what was done."""
    done = []
    dest.mkdir(parents=True, exist_ok=True)
    for path, name in zip(check_data_source(source), DATA_ZIPS):
        md5 = verify_zip(path, name)
        target = dest / path.name
        if target.is_file() and not target.is_symlink() and checks_out(target, name) == md5:
            done.append(f"{target.relative_to(ROOT)} kept (equal to {path})")
            continue
        tmp = target.with_suffix(".zip.part")
        shutil.copyfile(path, tmp)  # contents only: a read-only source gives a writable copy
        if target.is_symlink() or target.is_dir():
            raise PrepareError(f"{target} is a link or a folder: the device tool carries no links; remove it")
        os.replace(tmp, target)
        verify_zip(target, name)
        done.append(f"{target.relative_to(ROOT)} copied from {path}")
    return done


def pip(*args: str) -> None:
    """Run pip; on failure raise with the end of its output."""
    command = [sys.executable, "-m", "pip", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise PrepareError(f"pip failed (exit {result.returncode}): {' '.join(command[3:])}\n{tail}\n"
                           "pip must reach a package index here (the GPU machine reaches none)")


def platform_flags(python_version: str) -> list[str]:
    flags = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for platform in PLATFORMS:
        flags += ["--platform", platform]
    return flags


def prepare_wheels(dest: Path, python_version: str) -> list[str]:
    """Download, select and check the wheels, then replace ``dest`` with them. Returns the report lines."""
    with tempfile.TemporaryDirectory(prefix="gpu-wheels-") as tmp:
        got = Path(tmp) / "got"
        flags = platform_flags(python_version)
        pip("download", "-q", "--progress-bar", "off", *flags, "-d", str(got), *WITH_DEPENDENCIES)
        pip("download", "-q", "--progress-bar", "off", "--no-deps", *flags, "-d", str(got), *WITHOUT_DEPENDENCIES)
        others = [p.name for p in got.iterdir() if p.suffix != ".whl"]
        if others:
            raise PrepareError(f"pip saved files that are not wheels: {others}")
        carried, dropped = select_wheels([p.name for p in got.iterdir()])
        requirements = {name: (version, wheel_requirements(got / filename))
                        for name, (version, filename) in carried.items()}
        unmet = unmet_requirements(requirements, python_version)
        if unmet:
            raise PrepareError("the carried wheels are incomplete:\n  " + "\n  ".join(unmet)
                               + "\nadd the missing distributions to WITH_DEPENDENCIES in tools/gpu/prepare.py")
        staged = Path(tmp) / "wheels"
        staged.mkdir()
        for _, filename in carried.values():
            shutil.move(got / filename, staged / filename)
        asked = image_requirements(requirements, python_version)
        (staged / "image-provided.txt").write_text(
            "# Downloaded by pip as dependencies and not carried: the GPU image has them\n"
            "# (IMAGE_PACKAGES in tools/gpu/prepare.py), with what the carried wheels ask of their\n"
            "# versions. An emulated image installs these (pip install -r).\n"
            + "".join(f"{name}{asked.get(name, '')}\n" for name in sorted(set(dropped) | set(asked))))
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(staged), dest)
    lines = [f"{dest.relative_to(ROOT)}: {len(carried)} wheels for CPython {python_version} x86-64, "
             f"{folder_size(dest) / 2**20:.1f} MiB"]
    lines += [f"  {filename}" for _, filename in sorted(carried.values(), key=lambda v: v[1].lower())]
    lines.append(f"  not carried (the image has them): {', '.join(sorted(dropped)) or 'none'}")
    return lines


def prepare_learn2learn(dest: Path) -> list[str]:
    """learn2learn's MAML modules into ``dest`` (kept when their SHA-256 match). Returns what was done."""
    if all((dest / rel).is_file() and sha256(dest / rel) == sha for rel, sha in L2L_MODULES.items()) \
            and all((dest / rel).is_file() for rel in L2L_EMPTY) \
            and (dest / f"learn2learn-{L2L_VERSION}.dist-info" / "METADATA").is_file():
        return [f"{dest.relative_to(ROOT)}: learn2learn {L2L_VERSION}'s MAML modules kept (SHA-256 match)"]
    with tempfile.TemporaryDirectory(prefix="gpu-l2l-") as tmp:
        # --no-binary for learn2learn alone: its build dependencies may come as wheels (seconds,
        # where --no-binary :all: compiles them for minutes).
        pip("download", "-q", "--progress-bar", "off", "--no-deps", "--no-binary", "learn2learn", "-d", tmp,
            f"learn2learn=={L2L_VERSION}")
        sdist = Path(tmp) / f"learn2learn-{L2L_VERSION}.tar.gz"
        if not sdist.is_file():
            raise PrepareError(f"pip saved no {sdist.name} (found {os.listdir(tmp)})")
        staged = Path(tmp) / "l2l"
        prefix = f"learn2learn-{L2L_VERSION}/"
        with tarfile.open(sdist) as archive:
            for rel, sha in L2L_MODULES.items():
                data = archive.extractfile(prefix + rel).read()
                if hashlib.sha256(data).hexdigest() != sha:
                    raise PrepareError(f"{rel} in {sdist.name} is not the file this script was written for "
                                       f"(SHA-256 {hashlib.sha256(data).hexdigest()}, expected {sha})")
                (staged / rel).parent.mkdir(parents=True, exist_ok=True)
                (staged / rel).write_bytes(data)
            license_text = archive.extractfile(prefix + "LICENSE").read()
        for rel in L2L_EMPTY:
            (staged / rel).write_text("")
        info = staged / f"learn2learn-{L2L_VERSION}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: learn2learn\nVersion: {L2L_VERSION}\n"
            "Summary: learn2learn's MAML modules only (utils, algorithms.maml, algorithms.base_learner), "
            "from its sdist, for benchmarks/meta_step.py\nLicense: MIT\n")
        (staged / "LICENSE").write_bytes(license_text)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), dest)
    return [f"{dest.relative_to(ROOT)}: learn2learn {L2L_VERSION}'s MAML modules from its sdist "
            f"({', '.join(L2L_MODULES)}), SHA-256 checked"]


def folder_size(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def tracked_size() -> int:
    """Bytes of the files git tracks here (what the device tool sends besides `carry`)."""
    result = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        return 0
    return sum((ROOT / f).stat().st_size for f in result.stdout.split("\0") if f and (ROOT / f).is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("data", nargs="?", help="folder holding Omniglot's zips "
                        "(default: $MAMLCOURSE_DATA, else ../shared/data/omniglot beside the repository)")
    parser.add_argument("--python-version", default="3.12",
                        help="the GPU image's Python (default 3.12); another (3.11) builds .whl-311 for an emulation")
    parser.add_argument("--wheels", type=Path,
                        help="wheel folder (default .whl for 3.12, else .whl-XY); replaced whole")
    parser.add_argument("--skip", default="", help="comma-separated steps to skip: data, wheels, l2l")
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    if unknown := skip - {"data", "wheels", "l2l"}:
        parser.error(f"--skip: unknown {sorted(unknown)}; choose from data, wheels, l2l")
    if not re.fullmatch(r"3\.\d+", args.python_version):
        parser.error(f"--python-version {args.python_version!r}: give MAJOR.MINOR, such as 3.12")
    wheels = args.wheels or ROOT / (".whl" if args.python_version == "3.12"
                                    else f".whl-{args.python_version.replace('.', '')}")
    wheels = wheels if wheels.is_absolute() else ROOT / wheels
    gpu = ROOT / ".gpu"
    try:
        if "data" not in skip:
            for line in prepare_data(data_source(args.data), gpu / "data"):
                print(line, flush=True)
        if "l2l" not in skip:
            for line in prepare_learn2learn(gpu / "l2l"):
                print(line, flush=True)
        if "wheels" not in skip:
            for line in prepare_wheels(wheels, args.python_version):
                print(line, flush=True)
    except PrepareError as err:
        print(f"prepare: error: {err}", file=sys.stderr)
        return 1
    gpu_bytes, wheel_bytes = folder_size(gpu), folder_size(wheels)
    carried = gpu_bytes + wheel_bytes
    tree = tracked_size()
    print(f"carried: .gpu {gpu_bytes / 2**20:.1f} MiB + {wheels.name} {wheel_bytes / 2**20:.1f} MiB; "
          f"with the tracked files ({tree / 2**20:.1f} MiB) {(carried + tree) / 2**20:.1f} MiB of the device "
          f"tool's {CARRY_LIMIT // 2**20} MiB")
    if carried + tree > CARRY_LIMIT:
        print(f"prepare: error: over the device tool's {CARRY_LIMIT // 2**20} MiB: remove what .gpu holds "
              "beyond data/ and l2l/", file=sys.stderr)
        return 1
    print('in a GPU window: run(command="bash tools/gpu/window.sh", carry=[".gpu", ".whl"], timeout_s=600)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
