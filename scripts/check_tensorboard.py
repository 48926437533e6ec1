#!/usr/bin/env python3
"""Reads a run's TensorBoard event files with TensorBoard's own EventAccumulator and checks
them against the run's metrics.csv, sample grids and config: the proof that TensorBoard reads
what Ember writes.

usage: .venv/bin/python scripts/check_tensorboard.py RUN_DIR
Prints what it checked; exits 1 with the first mismatch.
"""
import csv
import math
import struct
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
    IMAGES,
    SCALARS,
    TENSORS,
)

SCALAR_TAGS = {
    "train/loss": "loss",
    "train/loss_smoothed": "smoothed_loss",
    "train/learning_rate": "learning_rate",
    "train/grad_norm": "grad_norm",
    "train/images_per_second": "images_per_second",
}


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def png_size(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        fail("image is not a PNG")
    return struct.unpack(">II", data[16:24])


def main(run):
    run = Path(run)
    acc = EventAccumulator(str(run), size_guidance={SCALARS: 0, IMAGES: 0, TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()

    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        fail("metrics.csv has no rows")
    for tag, column in SCALAR_TAGS.items():
        if tag not in tags["scalars"]:
            fail(f"scalar tag {tag} missing; have {tags['scalars']}")
        events = acc.Scalars(tag)
        expected = [(int(r["step"]), float(r[column])) for r in rows if math.isfinite(float(r[column]))]
        got = [(e.step, e.value) for e in events]
        if [s for s, _ in got] != [s for s, _ in expected]:
            fail(f"{tag}: steps {[s for s, _ in got]}, metrics.csv has {[s for s, _ in expected]}")
        for (step, value), (_, want) in zip(got, expected):
            # Event files store float32.
            if abs(value - want) > 1e-6 * max(1.0, abs(want)):
                fail(f"{tag} at step {step}: {value}, metrics.csv has {want}")
        print(f"ok  {tag}: {len(got)} steps {got[0][0]}..{got[-1][0]}, values match metrics.csv")

    grids = sorted((run / "samples").glob("step-*_scale-*.png"))
    image_tags = tags["images"]
    if not grids:
        fail("no sample grids in samples/")
    for grid in grids:
        step = int(grid.name.split("_")[0].removeprefix("step-"))
        scale = grid.name.split("_")[1].removeprefix("scale-")
        tag = f"samples/scale-{scale}"
        if tag not in image_tags:
            fail(f"image tag {tag} missing; have {image_tags}")
        events = [e for e in acc.Images(tag) if e.step == step]
        if len(events) != 1:
            fail(f"{tag}: expected one image at step {step}, found {len(events)}")
        event = events[0]
        want = png_size(grid.read_bytes())
        got = png_size(event.encoded_image_string)
        if got != want or (event.width, event.height) != want:
            fail(f"{tag} step {step}: PNG {got}, header {(event.width, event.height)}, file {grid.name} is {want}")
        print(f"ok  {tag} step {step}: decodes to {got[0]}x{got[1]}, same size as {grid.name}")

    if "config" not in tags["tensors"]:
        fail(f"text tag 'config' missing; have {tags['tensors']}")
    text = acc.Tensors("config")[0].tensor_proto.string_val[0].decode()
    seed_line = next(l for l in (run / "config.toml").read_text().splitlines() if l.startswith("seed"))
    if seed_line not in text:
        fail(f"config text does not contain {seed_line!r}")
    print(f"ok  config text ({len(text)} characters) holds the resolved config")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
