#!/usr/bin/env bash
# The test suite: unit tests of every crate and the end-to-end CLI tests in tests/.
# Release mode, because Burn built without optimisation trains ~70x slower. Needs no dataset:
# the tests generate their fixtures. One test reads event files back with TensorBoard, from the
# .venv that the set-up installs (installed here too if it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/setup-python.sh
cargo test --release --workspace --locked "$@"
