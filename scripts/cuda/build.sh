#!/usr/bin/env bash
# Offline CUDA build of the `ember` binary: `--features cuda` without downloading LLVM.
#
# cubecl-cuda 0.11 (under burn-cuda 0.22.1) always depends on cubecl-llvm, whose build script
# downloads a prebuilt LLVM from the internet. This script builds without it:
#   * cubecl-llvm is replaced, for this build only, by the stand-in crate in
#     scripts/cuda/cubecl-llvm-offline (a `[patch.crates-io]` passed with `--config`, so the
#     checked-in manifests and a normal online build are untouched);
#   * the `ember-train/cuda-cpp` feature switches on cubecl's `cuda-cpp`, so CUDA kernels are
#     transpiled to CUDA C++ and compiled at run time by NVRTC instead of going through LLVM;
#   * CUDARC_CUDA_VERSION pins the CUDA API version cudarc is built for (no toolkit is needed
#     at build time: cudarc loads the driver and NVRTC libraries when the program runs).
#
# Only crates.io has to be reachable (or everything already in ~/.cargo/registry; pass
# --offline then). Extra arguments go to `cargo build`, e.g. `-j 2` or `--offline`.
#
# Usage: scripts/cuda/build.sh [cargo build args...]
#   CUDARC_CUDA_VERSION  CUDA version of the machine that will run it (default 13000 = 13.0)
#   CARGO_TARGET_DIR     build directory (default: target)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"

stand_in="$repo_root/scripts/cuda/cubecl-llvm-offline"
[[ -f "$stand_in/Cargo.toml" ]] || { echo "error: missing $stand_in" >&2; exit 1; }
if ! grep -q '^cuda-cpp *=' crates/ember-train/Cargo.toml; then
    cat >&2 <<'EOF'
error: crates/ember-train/Cargo.toml has no `cuda-cpp` feature. It needs:
  [features]
  cuda-cpp = ["cuda", "dep:cubecl", "cubecl/cuda-cpp"]
  [dependencies]
  cubecl = { version = "0.11.3", default-features = false, optional = true }
EOF
    exit 1
fi

export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$repo_root/$target_dir" ;; esac

# The patch makes Cargo resolve cubecl-llvm from a path and drop its LLVM dependencies, and it
# writes that into Cargo.lock. Keep the checked-in lock file as it was: restore it on exit.
lock_backup="$(mktemp)"
cp Cargo.lock "$lock_backup"
trap 'cp "$lock_backup" Cargo.lock; rm -f "$lock_backup"' EXIT

echo "building ember (CUDA, NVRTC C++ kernels, CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION) in $target_dir"
start=$SECONDS
cargo build --release -p ember \
    --features cuda,ember-train/cuda-cpp \
    --config "patch.crates-io.cubecl-llvm.path=\"$stand_in\"" \
    --target-dir "$target_dir" \
    "$@"

bin="$target_dir/release/ember"
echo "built in $((SECONDS - start)) s: $bin"
echo "run it on a machine with an NVIDIA driver and CUDA $CUDARC_CUDA_VERSION's NVRTC (libnvrtc), e.g."
echo "  $bin train configs/smoke.toml --device cuda"
