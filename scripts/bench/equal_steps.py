#!/usr/bin/env python3
"""Ember and its PyTorch twin trained for the same number of steps, one pair per seed, and
both scored by the same judge (`ember eval --checkpoints STEP --compare`).

The equal-minutes curve (README, "Quality models") mixes two effects: the step rate and what
each step learns. This separates the second: for each seed, `ember train` runs the config
until its checkpoint at --step is complete (then it is stopped, so the learning-rate schedule
still spans train.steps), the twin (`torch_twin.py train-curve --stop-step`) trains the same
resolved config with the same seed to the same step, and `ember eval` samples Ember's
checkpoint and scores both sample sets with the dataset's domain classifier.

    python3 scripts/bench/equal_steps.py --config configs/mnist-quality.toml --step 400 \\
        --seeds 1,2 --guidance 1 --samples-per-class 100 --out runs/equal-steps

Needs: target/release/ember, the domain classifier (`ember classifier train --config C`),
.venv-fid (scripts/fid/setup_reference_venv.sh) for the twin. The two sides run one after the
other (2 threads each); nothing here is timed. Seeds whose folders exist are reused: a rerun
skips what is finished. Prints one line per source and seed, then the mean per source.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMBER = os.path.join(ROOT, "target", "release", "ember")
TWIN = os.path.join(ROOT, "scripts", "bench", "torch_twin.py")


def with_seed(config_text: str, seed: int) -> str:
    """The config with its top-level `seed` set (replaced, or added before the first table)."""
    line = f"seed = {seed}\n"
    head, sep, rest = config_text.partition("\n[")
    if re.search(r"(?m)^seed\s*=", head):
        head = re.sub(r"(?m)^seed\s*=.*$", line.rstrip("\n"), head)
        return head + sep + rest
    return line + config_text


def train_ember_until(config: str, run_dir: str, step: int, log_path: str) -> None:
    """Runs `ember train` until checkpoints/latest names the checkpoint of `step`, then stops it."""
    latest = os.path.join(run_dir, "checkpoints", "latest")

    def reached() -> bool:
        # `latest` names the newest complete checkpoint, step-NNNNNNNN (fixed width).
        if not os.path.exists(latest):
            return False
        with open(latest) as f:
            return f.read().strip() >= f"step-{step:08d}"

    if reached():
        return
    with open(log_path, "w") as log:
        proc = subprocess.Popen([EMBER, "train", config, "--run-dir", run_dir],
                                stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if reached():
                proc.send_signal(signal.SIGTERM)
                proc.wait()
                return
            time.sleep(1.0)
    sys.exit(f"error: ember train stopped before step {step} (exit {proc.returncode}); see {log_path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--step", type=int, required=True, help="a multiple of the config's checkpoint_every")
    p.add_argument("--seeds", default="1,2", help="comma-separated training seeds")
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--samples-per-class", type=int, default=100)
    p.add_argument("--data", help="the IDX training split (default: datasets/<data.dataset>)")
    p.add_argument("--out", default="runs/equal-steps")
    p.add_argument("--python", default=os.path.join(ROOT, ".venv-fid", "bin", "python"))
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds or args.step <= 0 or args.samples_per_class <= 0:
        sys.exit("error: need at least one seed, --step > 0 and --samples-per-class > 0")
    with open(args.config) as f:
        text = f.read()
    rows = []
    for seed in seeds:
        folder = os.path.join(args.out, f"seed-{seed}")
        os.makedirs(folder, exist_ok=True)
        config = os.path.join(folder, "config.toml")
        with open(config, "w") as f:
            f.write(with_seed(text, seed))
        run_dir = os.path.join(folder, "ember")
        train_ember_until(config, run_dir, args.step, os.path.join(folder, "ember-train.log"))
        twin_dir = os.path.join(folder, "twin")
        data = args.data or os.path.join(ROOT, "datasets", dataset_of(text))
        if not os.path.exists(os.path.join(twin_dir, "kept.pt")):
            # The run's config.toml is the resolved config, every default written out.
            run([args.python, TWIN, "train-curve", "--config", os.path.join(run_dir, "config.toml"),
                 "--data", data, "--out", twin_dir, "--stop-step", str(args.step),
                 "--every", "1e9",  # keep only the last step's weights
                 "--samples-per-class", str(args.samples_per_class),
                 "--guidance", str(args.guidance), "--threads", "2"],
                os.path.join(folder, "twin.log"))
        run([EMBER, "eval", "--run", run_dir, "--checkpoints", str(args.step),
             "--guidance", str(args.guidance), "--samples-per-class", str(args.samples_per_class),
             "--compare", twin_dir], os.path.join(folder, "eval.log"))
        rows += [(seed, r) for r in read_curve(run_dir)]
    report(rows)


def dataset_of(config_text: str) -> str:
    m = re.search(r'(?m)^dataset\s*=\s*"([^"]+)"', config_text)
    if not m:
        sys.exit("error: the config names no data.dataset; pass --data")
    return m.group(1)


def run(cmd: list[str], log_path: str) -> None:
    with open(log_path, "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"error: {' '.join(cmd[:3])} ... exited {code}; see {log_path}")


def read_curve(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "curve", "curve.csv")
    if not os.path.exists(path):
        sys.exit(f"error: {path} is missing after ember eval")
    with open(path) as f:
        return list(csv.DictReader(f))


def report(rows) -> None:
    keys = ["accuracy", "fd", "precision", "recall"]
    by_source: dict[str, list[dict]] = {}
    for seed, r in rows:
        values = " ".join(f"{k} {float(r[k]):.4f}" for k in keys if r.get(k))
        print(f"seed {seed} {r['source']:>8} step {r['step']:>5}: {values}")
        by_source.setdefault(r["source"], []).append(r)
    for source, rs in by_source.items():
        means = " ".join(f"{k} {sum(float(r[k]) for r in rs) / len(rs):.4f}" for k in keys if rs[0].get(k))
        print(f"mean of {len(rs)} {source:>8}: {means}")


if __name__ == "__main__":
    main()
