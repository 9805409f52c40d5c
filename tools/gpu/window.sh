#!/usr/bin/env bash
# One GPU window, one command: the queue's `next` with the data (and peers) carried along.
#
#   device tool: run(command="bash tools/gpu/window.sh", carry=[".gpu", ".whl"], timeout_s=600)
#
# Runs from the repository root of the copy the device tool makes. Reads the Omniglot zips
# from .gpu/data; installs any wheels in .whl (the speed comparison's peers) into /tmp/site;
# puts .gpu/l2l (learn2learn's pure-Python MAML modules) on the path when present. Every
# file the window changes comes back under $OUT; `gpu_queue.py bring-back` copies it in here.
# BUDGET (seconds, default 540) is what `next` may take, inside the tool's 600 s limit.
set -u
cd "$(dirname "$0")/../.."
# Fail fast, before anything is installed: every second of the window counts.
missing=""
for zip in images_background images_evaluation all_runs; do
  [ -f ".gpu/data/$zip.zip" ] || missing="$missing $zip.zip"
done
if [ -n "$missing" ]; then
  echo "window.sh: .gpu/data lacks$missing. Run 'bash tools/gpu/prepare.sh' in the checkout the device" \
    "tool sends, then call again with carry=[\".gpu\", \".whl\"]." >&2
  exit 2
fi
if ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "window.sh: no wheels in .whl: check.py's lessons and unit tests and the speed peers will fail" \
    "(bash tools/gpu/prepare.sh makes them; carry .whl)" >&2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export MAMLCOURSE_CACHE="${MAMLCOURSE_CACHE:-/tmp/mamlcourse-cache}"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ -d .gpu/l2l ]; then export PYTHONPATH="$PYTHONPATH:$PWD/.gpu/l2l"; fi
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv,noheader 2>/dev/null || true
exec python3 tools/gpu/gpu_queue.py next --data .gpu/data --out "${OUT:?OUT must name the folder that comes back}" \
  --budget "${BUDGET:-540}" "$@"
