#!/usr/bin/env python3
"""Writes an IDX dataset (MNIST, Fashion-MNIST) as an image folder of PNG files, one sub-folder
per class: the input of `data.format = "image-folder"` for trying that reader and measuring it.

    python3 scripts/bench/make_image_folder.py datasets/mnist /tmp/mnist-folder --per-class 300

Python standard library only (zlib for the PNG encoding).
"""
import argparse
import gzip
import os
import struct
import zlib


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\x00\x00\x08":
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    ndims = data[3]
    dims = struct.unpack(">" + "I" * ndims, data[4 : 4 + 4 * ndims])
    return dims, data[4 + 4 * ndims :]


def find(root, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(root, candidate)
        if os.path.isfile(path):
            return path
    raise SystemExit(f"{root}: missing {name} (or {name}.gz)")


def png_grey(width, height, pixels):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + pixels[y * width : (y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("idx_root")
    parser.add_argument("out")
    parser.add_argument("--per-class", type=int, default=300)
    args = parser.parse_args()
    (count, height, width), images = read_idx(find(args.idx_root, "train-images-idx3-ubyte"))
    (_,), labels = read_idx(find(args.idx_root, "train-labels-idx1-ubyte"))
    written = {}
    for i in range(count):
        label = labels[i]
        if written.get(label, 0) >= args.per_class:
            continue
        folder = os.path.join(args.out, f"class-{label}")
        os.makedirs(folder, exist_ok=True)
        pixels = images[i * height * width : (i + 1) * height * width]
        with open(os.path.join(folder, f"{i:05}.png"), "wb") as f:
            f.write(png_grey(width, height, pixels))
        written[label] = written.get(label, 0) + 1
    print(f"wrote {sum(written.values())} PNG files in {len(written)} class folders under {args.out}")


if __name__ == "__main__":
    main()
