#!/usr/bin/env python3
"""A/B of Ember changes: runs `train_bench` for each variant, alternating, and prints the median
step time of each variant and figure.

A variant is `NAME=BINARY` or `NAME=BINARY:ENV=VALUE,...`, e.g. two copies of the binary built
before and after a change, or one binary with `EMBER_STOCK_OPS=1` (Burn's stock ops) and
without. Alternating the variants spreads the shared machine's drift over all of them.

    python3 scripts/bench/ab.py --config /tmp/mnist.toml --rounds 3 \
        stock=target/release/examples/train_bench:EMBER_STOCK_OPS=1 \
        fused=target/release/examples/train_bench

The config must be a resolved one (`train_bench resolve --config configs/mnist.toml --out F`).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def parse_variant(text):
    name, _, rest = text.partition("=")
    binary, _, env_text = rest.partition(":")
    env = dict(item.split("=", 1) for item in env_text.split(",") if item)
    return name, binary, env


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="NAME=BINARY[:ENV=VALUE,...]")
    parser.add_argument("--config", required=True)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-repeats", type=int, default=3)
    parser.add_argument("--sample-steps", type=int, default=6)
    parser.add_argument("--only", choices=["train", "sample"])
    args = parser.parse_args()

    variants = [parse_variant(v) for v in args.variants]
    modes = [m for m in ("train", "sample") if args.only in (None, m)]
    steps = {(name, mode): [] for name, _, _ in variants for mode in modes}
    rss = {}
    for round_index in range(args.rounds):
        order = variants if round_index % 2 == 0 else list(reversed(variants))
        for mode in modes:
            for name, binary, extra in order:
                command = [binary, mode, "--config", args.config, "--batch", str(args.batch), "--warmup", "1"]
                if mode == "train":
                    command += ["--repeats", str(args.train_repeats)]
                else:
                    command += ["--repeats", "1", "--steps", str(args.sample_steps)]
                env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), **extra)
                out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                steps[(name, mode)] += result["step_seconds"]
                rss[(name, mode)] = result["peak_rss_mib"]
                print(f"round {round_index + 1} {mode:6} {name:12} median {result['median_step_seconds']:.3f} s/step", file=sys.stderr)

    print(f"| variant | figure | median s/step | steps timed | peak RSS MiB |")
    print(f"|---|---|---:|---:|---:|")
    for mode in modes:
        for name, _, _ in variants:
            values = steps[(name, mode)]
            print(f"| {name} | {mode} | {statistics.median(values):.3f} | {len(values)} | {rss[(name, mode)]:.0f} |")


if __name__ == "__main__":
    main()
