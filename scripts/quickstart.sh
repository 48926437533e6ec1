#!/usr/bin/env bash
# From a fresh clone to a guided MNIST sample grid: fetch MNIST and build (scripts/setup.sh),
# train configs/mnist.toml into runs/mnist/ (which ends with grids of the EMA weights at scales
# 1 and 3 from the same noise), and copy the final grids to the top of the run directory.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

scripts/setup.sh
ember="${CARGO_TARGET_DIR:-target}/release/ember"

train_start=$(date +%s)
"$ember" train configs/mnist.toml --run-dir runs/mnist --overwrite
# The step is zero-padded, so the last name in order is the final step.
cp "$(ls runs/mnist/samples/*_scale-3_*.png | tail -n 1)" runs/mnist/grid.png
cp "$(ls runs/mnist/samples/*_scale-1_*.png | tail -n 1)" runs/mnist/grid_unguided.png

end=$(date +%s)
echo
echo "quickstart: $((end - start)) s in all, $((end - train_start)) s training and sampling"
echo "guided grid (scale 3, one row per digit 0-9): runs/mnist/grid.png"
echo "same noise without guidance (scale 1):         runs/mnist/grid_unguided.png"
echo "loss curve: runs/mnist/loss.png; live view: .venv/bin/tensorboard --logdir runs"
