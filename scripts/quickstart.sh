#!/usr/bin/env bash
# From a fresh clone to a guided MNIST sample grid: fetch MNIST and build (scripts/setup.sh),
# train configs/mnist.toml into runs/mnist/ (which ends with a guided grid of the EMA weights),
# and sample the same noise without guidance for comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

scripts/setup.sh
ember="${CARGO_TARGET_DIR:-target}/release/ember"

train_start=$(date +%s)
"$ember" train configs/mnist.toml --run-dir runs/mnist --overwrite
guided=$(ls runs/mnist/samples/*.png | tail -n 1)
cp "$guided" runs/mnist/grid.png
"$ember" sample --run runs/mnist --guidance 1 --out runs/mnist/grid_unguided.png

end=$(date +%s)
echo
echo "quickstart: $((end - start)) s in all, $((end - train_start)) s training and sampling"
echo "guided grid (scale 3, one row per digit 0-9): runs/mnist/grid.png"
echo "same noise without guidance (scale 1):         runs/mnist/grid_unguided.png"
