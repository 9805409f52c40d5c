#!/usr/bin/env bash
# The GPU window's Python side, rehearsed on a CPU: an environment that holds only packages of the
# GPU image (no Jupyter), the carried wheels installed as window.sh installs them, then check.py.
#
#   bash tools/gpu/prepare.sh --python-version 3.11    # .whl-311: the same wheels for Python 3.11
#   bash tools/gpu/emulate_image.sh without            # check.py's parts without the wheels (must fail)
#   bash tools/gpu/emulate_image.sh with               # the same with them (must pass), and the peers
#   bash tools/gpu/emulate_image.sh queue              # gpu_queue.py next on its tiny queue (probe, chunk, export)
#   bash tools/gpu/emulate_image.sh wheels312          # .whl itself on Python 3.12 (no torch there):
#                                                      # installed as window.sh does, a notebook executed
#   EMUL_IMAGE=1 bash tools/gpu/emulate_image.sh with  # the image's own Python 3.12 and torch 2.11.0
#                                                      # (PyPI's CUDA build, run on the CPU) with .whl
#
# The image's Python is 3.12; here torch's CPU wheel is on disk for 3.11, hence .whl-311 (the
# same distributions and versions, built for 3.11; torchopt's pure wheel from .whl is used, as
# on the GPU). The environment ($EMUL_VENV, default /tmp/mamlcourse-emul) gets torch 2.13.0 and
# the image's packages the course and the carried wheels need (.whl-311/image-provided.txt), and
# is checked to hold nothing outside the image's list. Logs go to $EMUL_LOG (default
# /tmp/mamlcourse-emul-log/{without,with}-{quick,lessons}). OMP_NUM_THREADS=1 unless set.
#
# EMUL_IMAGE=1 rehearses the image's versions instead: Python 3.12 ($PYTHON312, default
# python3.12) and torch 2.11.0, the image's (the device tool's KINDS.md), taken from PyPI (a CUDA
# build of several GB that runs on the CPU; it needs the network), with .whl itself, the wheels
# that travel. Its environment and logs get the suffix -image.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE="${1:?say without or with}"
VENV="${EMUL_VENV:-/tmp/mamlcourse-emul}"
SITE="${EMUL_SITE:-/tmp/mamlcourse-emul-site}"
LOG="${EMUL_LOG:-/tmp/mamlcourse-emul-log}"
WHEELS=.whl-311 PYTHON_CMD=python3.11 TORCH=torch==2.13.0
if [ "${EMUL_IMAGE:-0}" = 1 ]; then
  WHEELS=.whl PYTHON_CMD="${PYTHON312:-python3.12}" TORCH=torch==2.11.0
  VENV="$VENV-image" SITE="$SITE-image" LOG="$LOG-image"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" PYTHONUNBUFFERED=1 MAMLCOURSE_MODE=quick
[ -f "$WHEELS/image-provided.txt" ] || { echo "no $WHEELS: run bash tools/gpu/prepare.sh$([ "$WHEELS" = .whl ] || echo " --python-version 3.11")" >&2; exit 1; }
[ -f .gpu/data/all_runs.zip ] || { echo "no .gpu/data: run bash tools/gpu/prepare.sh" >&2; exit 1; }

if [ "$MODE" = wheels312 ]; then
  # The 3.12 wheels that travel, beside the image's packages they need (torch is not on disk for
  # 3.12 here, so the peers are only installed, and the notebook is a plain one).
  V312="${VENV}-312" SITE312="${SITE}-312"
  if [ ! -x "$V312/bin/python" ]; then
    "${PYTHON312:-python3.12}" -m venv "$V312"
    "$V312/bin/python" -m pip install -q -r <(grep -v '^torch' .whl/image-provided.txt) "python-dateutil<3"
    "$V312/bin/python" -m pip uninstall -q -y tzdata 2>/dev/null || true
  fi
  rm -rf "$SITE312"
  "$V312/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE312" .whl/*.whl
  PYTHONPATH="$PWD:$SITE312" "$V312/bin/python" - <<'PY'
import sys, nbformat, zmq, optree, graphviz, nbval
from nbconvert.preprocessors import ExecutePreprocessor
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys, ipywidgets, zmq\nprint(sys.version.split()[0], ipywidgets.__version__, zmq.zmq_version())")])
ExecutePreprocessor(timeout=120, kernel_name="python3").preprocess(nb, {"metadata": {"path": "."}})
print(f"Python {sys.version.split()[0]}: .whl's notebook stack ran a kernel:", nb.cells[0].outputs[0]["text"].strip(),
      f"| optree {optree.__version__}, graphviz {graphviz.__version__}, nbval imported")
PY
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  $PYTHON_CMD -m venv "$VENV"
  # What the course imports, and what the carried wheels need that the image holds.
  "$VENV/bin/python" -m pip install -q "$TORCH" numpy matplotlib pillow tqdm pytest requests pyyaml \
    -r "$WHEELS/image-provided.txt"
  # python-dateutil 3 and 4 need tzdata, which the image's list lacks: the image's is 2.x.
  "$VENV/bin/python" -m pip install -q "python-dateutil<3" && "$VENV/bin/python" -m pip uninstall -q -y tzdata
fi
# Nothing outside the image's list (tools/gpu/prepare.py's IMAGE_PACKAGES) may be in the environment.
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md, sys
sys.path.insert(0, "tools/gpu")
from prepare import IMAGE_PACKAGES, normalize
names = sorted({normalize(d.metadata["Name"]) for d in md.distributions()})
extra = [n for n in names if n not in IMAGE_PACKAGES and n != "mamlcourse"]  # the course: the tree itself
if extra:
    sys.exit(f"the emulated image holds packages the GPU image lacks: {extra}")
print(f"emulated image: {len(names)} distributions, all in the GPU image's list "
      f"(torch {md.version('torch')}, no Jupyter)")
PY

PY="$VENV/bin/python"
export PYTHONPATH="$PWD"
if [ "$MODE" = with ] || [ "$MODE" = queue ]; then
  rm -rf "$SITE"
  wheels=$(ls "$WHEELS"/*.whl | grep -v /torchopt-; ls .whl/torchopt-*-py3-none-any.whl)
  # window.sh's install line, with its target.
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $wheels
  export PYTHONPATH="$PYTHONPATH:$SITE:$PWD/.gpu/l2l"
  "$PY" - <<'PY'
import importlib.metadata as md, sys
import higher, torchopt
sys.path.insert(0, ".")
from benchmarks import meta_step
maml = meta_step._import_learn2learn_maml()
print("peers:", {name: meta_step.peer_version(name) for name in meta_step.PEERS},
      f"higher from {higher.__file__}, torchopt from {torchopt.__file__}, "
      f"learn2learn's {maml.__module__}.{maml.__name__} from {sys.modules[maml.__module__].__file__}")
PY
  if [ "$MODE" = queue ]; then
    # The queue itself, as window.sh runs it, on its tiny CPU queue in a copy of the tree (the device
    # tool's copy): the probe, a training chunk with the probe's settings, a command job, the export.
    copy="$LOG/queue-tree"; rm -rf "$copy" "$LOG/queue-out"; mkdir -p "$copy"
    git ls-files -z | xargs -0 cp --parents -t "$copy"
    cp -r .gpu "$copy/"
    (cd "$copy" && PYTHONPATH="$PWD:$SITE:$PWD/.gpu/l2l" "$PY" tools/gpu/gpu_queue.py --queue tiny next --device cpu \
      --data .gpu/data --out "$LOG/queue-out" --budget 200 --only tiny-probe,tiny-a,tiny-speed)
    grep -q -- "--vectorize" "$copy/trained/tiny-a/train.log" && ls "$LOG/queue-out/queue-manifest.json"
    exit
  fi
elif [ "$MODE" != without ]; then
  echo "mode: without, with or queue, not $MODE" >&2; exit 1
fi
status=0
rm -rf "$LOG/$MODE-quick" "$LOG/$MODE-lessons"
# Without the wheels only the parts that need them (the CLI parts need none).
parts=$([ "$MODE" = with ] && echo unit,cli || echo unit)
"$PY" tools/gpu/check.py --device cpu --quick --parts "$parts" --data .gpu/data --log "$LOG/$MODE-quick" \
  --budget 3000 || status=1
"$PY" tools/gpu/check.py --device cpu --parts lessons --data .gpu/data --log "$LOG/$MODE-lessons" --budget 3000 \
  || status=1
if [ "$MODE" = with ]; then
  # The speed job's first step on the small config: every peer's meta-gradient against ours in float64.
  "$PY" tools/gpu/speed.py --device cpu --configs sine --iterations 5 --out "$LOG/speed.json" || status=1
  "$PY" - "$LOG/speed.json" <<'PY' || status=1
import json, sys
run = json.load(open(sys.argv[1]))["runs"][0]
timed = sorted(run["ms_per_iteration"])
print("speed.py on the emulated image: timed", timed, "| refused", run["refused"], "| not installed",
      run["not_installed"])
sys.exit(0 if {"learn2learn", "higher", "torchopt"} <= set(timed) else 1)
PY
fi
exit $status
