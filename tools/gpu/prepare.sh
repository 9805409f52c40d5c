#!/usr/bin/env bash
# Prepare, once, what a GPU window carries (.gpu/data, .gpu/l2l, .whl): see tools/gpu/prepare.py.
#
#   bash tools/gpu/prepare.sh [OMNIGLOT_DIR] [--python-version 3.12]
#
# Runs with the course's Python ($PYTHON, else .venv/bin/python, else python3): it checks the
# zips with the course's own checksums. pip must reach a package index here.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" tools/gpu/prepare.py "$@"
