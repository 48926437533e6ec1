#!/usr/bin/env python3
"""Ember against its PyTorch twin on the CPU: training and guided-sampling throughput, peak RSS.

Builds the `train_bench` example (release), checks that the twin computes what Ember computes
(`train_bench check` + `torch_twin.py check`), then runs each figure once per implementation
per round, every measurement in its own process so that its peak RSS is its own, alternating
which implementation goes first. Prints a Markdown table.

  python3 scripts/bench/bench.py                 # batch 128, the defaults below
  python3 scripts/bench/bench.py --quick         # a smoke run of a minute or two
  TORCH_PYTHON=/path/to/python python3 scripts/bench/bench.py --batch 64 --sample-steps 10

Only the standard library is needed here; the twin runs under $TORCH_PYTHON (default
.venv-fid/bin/python, see scripts/bench/README.md). Both sides use the same number of threads
(--threads, default: every core): RAYON_NUM_THREADS for Ember's burn-flex, torch.set_num_threads
for the twin.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TWIN = os.path.join(ROOT, "scripts", "bench", "torch_twin.py")


def run(cmd, env=None, label=""):
    """Runs `cmd` as a child process; returns (its last JSON line, its own peak RSS in MiB)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    proc.stdout.close()
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the maximum over all).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stdout.write(out)
        sys.exit(f"error: {label or cmd[0]} failed with exit code {proc.returncode}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        sys.stdout.write(out)
        sys.exit(f"error: {label or cmd[0]} printed no JSON result")
    return json.loads(lines[-1]), usage.ru_maxrss / 1024.0  # ru_maxrss is in KiB on Linux


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_load():
    """The 1-minute load average and the CPU pressure (PSI some avg10), to spot a busy machine."""
    load = os.getloadavg()[0]
    try:
        with open("/proc/pressure/cpu") as f:
            some = f.readline().split()
        psi = float(some[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        psi = float("nan")
    return {"loadavg1": round(load, 2), "cpu_psi_avg10": psi}


def cpu_stall_total():
    """PSI's cumulative CPU stall time (some, microseconds), or None where PSI is missing."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().split("total=")[1])
    except (OSError, IndexError, ValueError):
        return None


def cpu_busy(seconds=2.0):
    """Share of all cores that were busy (not idle / iowait) over `seconds`, from /proc/stat."""
    def snapshot():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    try:
        total0, idle0 = snapshot()
        time.sleep(seconds)
        total1, idle1 = snapshot()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 100.0 * (1 - (idle1 - idle0) / max(total1 - total0, 1))


def wait_for_quiet(limit_s, busy_max):
    """Waits (up to limit_s) until the machine is idle (other jobs below busy_max % of the
    cores); returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if cpu_busy() <= busy_max:
            break
        time.sleep(3)
    return time.monotonic() - start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="configs/mnist.toml")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--train-warmup", type=int, default=2)
    p.add_argument("--train-repeats", type=int, default=10, help="timed optimiser steps")
    p.add_argument("--sample-warmup", type=int, default=2, help="untimed guided DDIM steps")
    p.add_argument("--sample-repeats", type=int, default=1, help="timed DDIM runs")
    p.add_argument("--sample-steps", type=int, default=50,
                   help="DDIM steps per timed run (the figure is always quoted at 50 steps)")
    p.add_argument("--rounds", type=int, default=2,
                   help="measurements per implementation and figure (order alternates)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 warm-up and 3 timed training steps, one 5-step DDIM run")
    p.add_argument("--quiet-wait", type=float, default=300,
                   help="before each measurement, wait up to this many seconds until the cores "
                        "are idle (below --quiet-busy %% busy); 0 disables")
    p.add_argument("--quiet-busy", type=float, default=15.0)
    p.add_argument("--max-stall", type=float, default=35.0,
                   help="measure again when some task waited for a CPU more than this share "
                        "of the measurement's time (another job on the machine)")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--no-check", action="store_true", help="skip the twin fidelity check")
    p.add_argument("--only", choices=["train", "sample"], help="measure one figure only")
    p.add_argument("--json", help="also write every raw result to this file")
    args = p.parse_args()
    if args.quick:
        args.train_warmup, args.train_repeats = 1, 3
        args.sample_warmup, args.sample_repeats, args.sample_steps = 1, 1, 5

    python = os.environ.get("TORCH_PYTHON", os.path.join(ROOT, ".venv-fid", "bin", "python"))
    if not os.path.exists(python):
        sys.exit(f"error: no Python with torch at {python}: set TORCH_PYTHON "
                 "(see scripts/bench/README.md)")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "release", "examples", "train_bench")
    if not args.skip_build:
        print("building the train_bench example (release)...", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "-p", "ember-train", "--example",
                        "train_bench"], cwd=ROOT, check=True)
    if not os.path.exists(binary):
        sys.exit(f"error: {binary} is missing (build it, or set CARGO_TARGET_DIR)")

    tmp = tempfile.mkdtemp(prefix="ember-bench-")
    resolved = os.path.join(tmp, "config.toml")
    subprocess.run([binary, "resolve", "--config", args.config, "--out", resolved],
                   cwd=ROOT, check=True)
    ember_env = {"RAYON_NUM_THREADS": str(args.threads)}
    torch_env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    raw = {"checks": {}, "results": []}

    # Parameter counts and each side's baseline memory (start-up + the network, no work).
    params, ember_base = run([binary, "params", "--config", resolved], ember_env, "ember params")
    ember_params = params["params"]
    twin_params, torch_base = run([python, TWIN, "params", "--config", resolved,
                                   "--expect-params", str(ember_params)], torch_env,
                                  "torch_twin params")
    print(f"parameters: Ember {ember_params}, twin {twin_params['params']}; baseline RSS "
          f"Ember {ember_base:.0f} MiB, PyTorch {torch_base:.0f} MiB", file=sys.stderr)
    raw["checks"]["params"] = {"ember": ember_params, "torch": twin_params["params"],
                               "baseline_rss_mib": {"ember": ember_base, "torch": torch_base}}
    if not args.no_check:
        check_dir = os.path.join(tmp, "check")
        run([binary, "check", "--config", resolved, "--batch", "8", "--out", check_dir],
            ember_env, "train_bench check")
        check, _ = run([python, TWIN, "check", "--config", resolved, "--dir", check_dir,
                        "--threads", str(args.threads)], torch_env, "torch_twin check")
        raw["checks"]["fidelity"] = check
        print("twin check: " + ", ".join(
            f"{k} {v:.2e}" for k, v in check.items() if k.endswith("err") or "diff" in k),
            file=sys.stderr)

    figures = []
    if args.only in (None, "train"):
        figures.append(("train", ["--warmup", str(args.train_warmup), "--repeats",
                                  str(args.train_repeats)]))
    if args.only in (None, "sample"):
        figures.append(("sample", ["--warmup", str(args.sample_warmup), "--repeats",
                                   str(args.sample_repeats), "--steps", str(args.sample_steps)]))
    common = ["--config", resolved, "--batch", str(args.batch)]
    results = {}
    slot = 0
    for mode, extra in figures:
        for _ in range(args.rounds):
            order = ["ember", "torch"] if slot % 2 == 0 else ["torch", "ember"]
            slot += 1
            for impl in order:
                if impl == "ember":
                    cmd, env = [binary, mode, *common, *extra], ember_env
                else:
                    cmd = [python, TWIN, mode, *common, *extra, "--threads", str(args.threads),
                           "--expect-params", str(ember_params)]
                    env = torch_env
                for attempt in range(args.retries + 1):
                    waited = (wait_for_quiet(args.quiet_wait, args.quiet_busy)
                              if args.quiet_wait else 0)
                    print(f"{mode}: {impl} ..." + (f" (waited {waited:.0f} s for a quiet CPU)"
                                                   if waited >= 1 else ""),
                          file=sys.stderr, flush=True)
                    load_before, stall0, t0 = cpu_load(), cpu_stall_total(), time.monotonic()
                    result, rss = run(cmd, env, f"{impl} {mode}")
                    result["load_before"], result["load_after"] = load_before, cpu_load()
                    stall1, t1 = cpu_stall_total(), time.monotonic()
                    # Share of the measurement's wall time during which some runnable task
                    # waited for a CPU. Ember itself causes ~15 % with 2 threads (its main
                    # thread and both rayon workers runnable at once); far more means another
                    # job shared the machine, and the measurement is taken again.
                    result["cpu_stall_pct"] = (
                        round(100 * (stall1 - stall0) / 1e6 / (t1 - t0), 1)
                        if stall0 is not None else float("nan"))
                    result["peak_rss_mib_wait4"] = round(rss, 1)
                    print(f"  {result['images_per_second']:.1f} images/s, "
                          f"{1e3 * result['median_step_seconds']:.1f} ms/step, {rss:.0f} MiB, "
                          f"CPU stall {result['cpu_stall_pct']}% of the time", file=sys.stderr)
                    if not result["cpu_stall_pct"] > args.max_stall:
                        break
                    if attempt < args.retries:
                        print("  busy machine: measuring again", file=sys.stderr)
                        result["discarded"] = True
                        raw["results"].append(result)
                raw["results"].append(result)
                results.setdefault((mode, impl), []).append(result)

    def agg(mode, impl, key):
        return median([r[key] for r in results[(mode, impl)]])

    def rss(mode, impl):
        return max(r["peak_rss_mib_wait4"] for r in results[(mode, impl)])

    date = datetime.date.today().isoformat()
    max_stall = max(r["cpu_stall_pct"] for r in raw["results"] if not r.get("discarded"))
    torch_version = next((r.get("torch") for r in raw["results"] if "torch" in r), "?")
    lines = [
        f"{date}, {cpu_name()}, {args.threads} threads each (Ember: burn-flex via rayon; "
        f"PyTorch {torch_version}), batch {args.batch}, {ember_params} parameters, "
        f"config {args.config}. Baseline RSS (start-up + network, no work): Ember "
        f"{ember_base:.0f} MiB, PyTorch {torch_base:.0f} MiB. Median over {args.rounds} "
        f"round(s) per implementation, order alternating. Worst CPU stall during a "
        f"measurement (PSI: share of wall time some task waited for a CPU; ~0 = machine to "
        f"ourselves; Ember's own three threads on two cores cause ~15%): {max_stall:.0f}%.",
        "",
        "| figure | Ember | PyTorch | Ember / PyTorch | peak RSS Ember | peak RSS PyTorch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, _ in figures:
        if mode == "train":
            what = (f"training, images/s ({args.train_warmup} warm-up + "
                    f"{args.train_repeats} timed steps, median)")
            step = "training, ms/step"
        else:
            what = (f"guided DDIM sampling, images/s at 50 steps (median of "
                    f"{args.sample_repeats}x{args.sample_steps} steps)")
            step = f"guided DDIM, ms/step (one forward at batch {2 * args.batch})"
        e, t = agg(mode, "ember", "images_per_second"), agg(mode, "torch", "images_per_second")
        fmt = (lambda v: f"{v:.2f}") if min(e, t) < 10 else (lambda v: f"{v:.1f}")
        lines.append(f"| {what} | {fmt(e)} | {fmt(t)} | {e / t:.2f} | "
                     f"{rss(mode, 'ember'):.0f} MiB | {rss(mode, 'torch'):.0f} MiB |")
        e = 1e3 * agg(mode, "ember", "median_step_seconds")
        t = 1e3 * agg(mode, "torch", "median_step_seconds")
        lines.append(f"| {step} | {e:.0f} | {t:.0f} | {e / t:.2f} | | |")
    lines += ["", "Both ratios are Ember / PyTorch: below 1 in the images/s rows and above 1 in the "
              "ms/step rows mean Ember is slower. Peak RSS is the measuring process's own "
              "(os.wait4), start-up included."]
    table = "\n".join(lines)
    print(table)
    if args.json:
        raw["table"] = table
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
