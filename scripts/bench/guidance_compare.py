#!/usr/bin/env python3
"""Classifier guidance against classifier-free guidance on one trained run, at matched settings
(the same model, sampler, steps, seeds and number of samples), as the reference article's
comparison table: class accuracy and Frechet distance (scored by the clean domain classifier),
sampling speed and peak memory.

    python3 scripts/bench/guidance_compare.py runs/mnist --samples-per-class 20 --steps 25

Needs the run, its data's clean classifier (`ember classifier train --config CFG`) and its
noise-aware classifier (`ember classifier train --config CFG --noisy`). Each setting runs
`ember eval` in its own process (so peak memory is per setting) into RUN/guidance-compare/.
Standard library only.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

# (label, CFG scale, classifier-guidance scale or None)
SETTINGS = [
    ("unconditional", 0.0, None),
    ("conditional (no guidance)", 1.0, None),
    ("CFG", 3.0, None),
    ("CFG", 5.0, None),
    ("classifier guidance, unconditional model", 0.0, 1.0),
    ("classifier guidance, unconditional model", 0.0, 3.0),
    ("classifier guidance, unconditional model", 0.0, 10.0),
    ("classifier guidance, conditional model", 1.0, 3.0),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--samples-per-class", type=int, default=20)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--ember", default=None, help="the ember binary [default: target/release/ember]")
    args = parser.parse_args()
    ember = args.ember or os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "ember")
    base = os.path.join(args.run, "guidance-compare")
    rows = []
    for label, cfg_scale, cg_scale in SETTINGS:
        name = f"cfg-{cfg_scale:g}" + ("" if cg_scale is None else f"_cg-{cg_scale:g}")
        out = os.path.join(base, name)
        # A fresh eval: an earlier one of the same settings would be reused, not timed.
        shutil.rmtree(out, ignore_errors=True)
        # Peak memory of the child alone: ru_maxrss of RUSAGE_CHILDREN is the largest child so
        # far, so each setting runs in a fresh child of a fresh Python process.
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, ember, args.run, out, f"{cfg_scale}",
             "" if cg_scale is None else f"{cg_scale}", str(args.samples_per_class), str(args.steps)],
            capture_output=True, text=True)
        if probe.returncode != 0:
            sys.exit(f"setting {name} failed:\n{probe.stdout}{probe.stderr}")
        peak_mib = float(probe.stdout.strip().splitlines()[-1])
        with open(os.path.join(out, "eval.json")) as f:
            result = json.load(f)
        row = result["rows"][0]
        rows.append((label, cfg_scale, cg_scale, row, peak_mib))
        print(f"done {name}: accuracy {row['accuracy']:.3f}, FD {row['fd']:.1f}", file=sys.stderr)
    ref = result["reference"]
    print(f"\n{args.run}: {args.samples_per_class} samples per class, {args.steps} DDIM steps, "
          f"the same seeds; scored by the clean classifier (real data: accuracy {ref['accuracy']:.3f}, "
          f"FD floor {ref['fd']:.1f})\n")
    print("| method | CFG scale | classifier scale | accuracy | FD | samples/s | peak RSS (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, cfg_scale, cg_scale, row, peak in rows:
        rate = row["samples"] / row["seconds"]
        cg = "-" if cg_scale is None else f"{cg_scale:g}"
        print(f"| {label} | {cfg_scale:g} | {cg} | {row['accuracy']:.3f} | {row['fd']:.1f} | "
              f"{rate:.2f} | {peak:.0f} |")


# Runs one `ember eval` and prints its peak RSS in MiB (the only child of this process).
PROBE = r"""
import resource, subprocess, sys
ember, run, out, cfg, cg, n, steps = sys.argv[1:8]
cmd = [ember, "eval", "--run", run, "--guidance", cfg, "--samples-per-class", n,
       "--steps", steps, "--out", out]
if cg:
    cmd += ["--classifier-guidance", cg]
proc = subprocess.run(cmd, capture_output=True, text=True)
if proc.returncode != 0:
    sys.exit(proc.stdout + proc.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""

if __name__ == "__main__":
    main()
