#!/usr/bin/env bash
# From a fresh clone to a guided MNIST sample grid: fetch MNIST and build (scripts/setup.sh),
# train configs/mnist.toml into runs/mnist/, and write a grid with one row per digit.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

scripts/setup.sh
ember="${CARGO_TARGET_DIR:-target}/release/ember"

train_start=$(date +%s)
"$ember" train configs/mnist.toml --run-dir runs/mnist --overwrite
"$ember" sample --run runs/mnist --guidance 3 --out runs/mnist/grid.png

end=$(date +%s)
echo
echo "quickstart: $((end - start)) s in all, $((end - train_start)) s training and sampling"
echo "guided grid (scale 3, one row per digit 0-9): runs/mnist/grid.png"
