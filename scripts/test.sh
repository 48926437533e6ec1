#!/usr/bin/env bash
# The test suite: unit tests of every crate and the end-to-end CLI tests in tests/.
# Release mode, because Burn built without optimisation trains ~70x slower. Needs no dataset:
# the tests generate their fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --workspace --locked "$@"
