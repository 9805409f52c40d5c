#!/usr/bin/env bash
# Install the peer MAML libraries that benchmarks/meta_step.py compares against, into the
# current Python environment, without ever replacing the installed torch.
#
#   bash benchmarks/install_peers.sh              # uses `python` on PATH (activate the venv first)
#   PYTHON=.venv/bin/python bash benchmarks/install_peers.sh
#
# - higher 0.2.1 and torchopt 0.7.3 install from PyPI as they are.
# - learn2learn 0.2.0 (its last release) cannot: its wheel-less sdist ships Cython-generated C
#   files that include `longintrepr.h`, which Python 3.11 moved (learnables/learn2learn#413),
#   and its dependencies pull torchvision, which drags in another torch. So the sdist is
#   downloaded, its three .pyx files are re-cythonized with the installed Cython, and it is
#   installed with --no-deps. Only `learn2learn.algorithms` is used by the benchmark, so
#   torchvision is not needed.
#
# Every pip call runs with a constraint pinning the torch that is installed now, so pip fails
# instead of swapping it; the script checks the version again at the end.
set -euo pipefail

PYTHON="${PYTHON:-python}"
pip() { "$PYTHON" -m pip "$@"; }

TORCH_VERSION="$("$PYTHON" -c 'import torch; print(torch.__version__)')"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "torch==${TORCH_VERSION}" > "$WORK/constraints.txt"
echo "installing peers next to torch ${TORCH_VERSION} ($PYTHON)"

# higher and torchopt: plain installs (they only ask for torch, which is pinned).
pip install -c "$WORK/constraints.txt" "higher==0.2.1" "torchopt==0.7.3"

# learn2learn 0.2.0: rebuilt from its sdist.
pip install -c "$WORK/constraints.txt" "cython>=3" "setuptools>=68" wheel numpy
pip download --no-deps --no-binary :all: --dest "$WORK" "learn2learn==0.2.0"
tar -xzf "$WORK"/learn2learn-0.2.0.tar.gz -C "$WORK"
SRC="$WORK/learn2learn-0.2.0"
for module in meta_dataset task_dataset transforms; do
    "$PYTHON" -m cython -3 "$SRC/learn2learn/data/${module}.pyx" -o "$SRC/learn2learn/data/${module}.c"
done
pip install -c "$WORK/constraints.txt" --no-deps --no-build-isolation "$SRC"

AFTER="$("$PYTHON" -c 'import torch; print(torch.__version__)')"
if [ "$AFTER" != "$TORCH_VERSION" ]; then
    echo "ERROR: torch changed from ${TORCH_VERSION} to ${AFTER}; reinstall it with pip install torch==${TORCH_VERSION}" >&2
    exit 1
fi
"$PYTHON" - <<'PY'
import importlib.metadata as md
for name in ("higher", "torchopt", "learn2learn", "torch"):
    print(f"{name:12s} {md.version(name)}")
PY
