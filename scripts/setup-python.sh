#!/usr/bin/env bash
# The Python environment Ember's tools and tests use: .venv/ with TensorBoard, pinned in
# scripts/requirements.txt (PyPI only). Safe to rerun; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
.venv/bin/python -c "import tensorboard; print('Python env ready: .venv (tensorboard', tensorboard.__version__ + ')')"
