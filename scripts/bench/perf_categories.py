#!/usr/bin/env python3
"""Splits a `perf` profile of `train_bench train` by kind of work and by model operation.

  B=$CARGO_TARGET_DIR/release/examples/train_bench
  RAYON_NUM_THREADS=2 perf record -m 16384 -e cpu-clock/period=3333333/ \\
      -e sched:sched_switch -e sched:sched_wakeup --call-graph dwarf,12288 -o perf.data -- \\
      $B train --config RESOLVED.toml --batch 128 --warmup 1 --repeats 2
  perf script -i perf.data -F tid,time,period,event,trace,ip,sym,symoff > perf.txt
  python3 scripts/bench/perf_categories.py perf.txt

(RESOLVED.toml: `$B resolve --config configs/mnist.toml --out RESOLVED.toml`. A plain
`perf record -F 299 --call-graph dwarf` profile works too; then only the CPU views are printed.)

Views:
1. CPU time by kernel: the leaf function of every cpu-clock sample of every thread, grouped
   (gemm micro-kernels, conv packing, copies, exp, other element-wise, page faults, ...).
2. Wall clock by operation (needs the sched events). burn-flex runs its parallel loops on
   rayon's pool while the calling (main) thread sleeps in a latch, so at every moment the main
   thread is either running serial work on one core (cpu-clock samples, classified by their
   stack) or asleep waiting for the workers (from its `sched_switch` out, whose stack names the
   operation, to the `sched_wakeup` a worker sends it). Together they cover the run's wall time.
3. CPU time by operation on the main thread only (what runs serially).

Operations are recognised from Ember's and Burn's function names: phase (forward, backward =
burn-autodiff's backward steps, AdamW, EMA, clip) and layer (conv forward, conv weight /
input / bias gradient, GroupNorm, SiLU, attention, ...). In the backward pass the layer is only
known for ops with their own backward kernels (conv, sigmoid, matmul, softmax); GroupNorm's
backward is made of generic element-wise and reduction steps and lands in "other".
"""

import collections
import re
import sys

HEAD = re.compile(r"^(\d+)\s+([\d.]+):\s+(?:(\d+)\s+)?(\S+):(?:\s+(.*))?$")
FRAME = re.compile(r"^\s*([0-9a-f]+)\s+(.*?)(?:\+0x([0-9a-f]+))?\s*$")


def parse(path):
    """-> [dict(tid, time, period, event, trace, frames=[symbol, ...] leaf first)]"""
    events = []
    with open(path) as f:
        text = f.read()
    for block in text.split("\n\n"):
        lines = [l for l in block.split("\n") if l.strip()]
        if not lines:
            continue
        m = HEAD.match(lines[0])
        if not m:
            continue
        tid, when, period, event, trace = m.groups()
        frames = []
        for fl in lines[1:]:
            fm = FRAME.match(fl)
            if fm:
                frames.append(fm.group(2))
        events.append({"tid": tid, "time": float(when), "period": int(period or 1),
                       "event": event, "trace": trace or "", "frames": frames})
    events.sort(key=lambda e: e["time"])
    return events


def classify(frames):
    s = " | ".join(frames)
    if "burn_optim" in s:
        return "AdamW step"
    if "ember_train::ema" in s:
        return "EMA update"
    if "clip_global_norm" in s:
        return "grad-norm clip"
    if "AutodiffServer" in s or ("::backward" in s and "UNet::forward" not in s):
        if "conv2d_weight_backward" in s:
            return "backward: conv weight grad"
        if "conv2d_x_backward" in s:
            return "backward: conv input grad"
        if "conv2d_bias_backward" in s:
            return "backward: conv bias grad"
        if "sigmoid" in s:
            return "backward: SiLU (sigmoid part)"
        if "softmax" in s or "matmul" in s:
            return "backward: attention (matmul, softmax)"
        if "Gradients::register" in s:
            return "backward: gradient accumulation (adds)"
        if "::cat::" in s or "slice" in s:
            return "backward: concat / slice"
        return "backward: other element-wise + reductions (GroupNorm, SiLU mul, bias, MSE)"
    if "UNet::forward" in s:
        if "GroupNorm::forward" in s:
            return "forward: GroupNorm"
        if "sigmoid" in s or "silu" in s:
            return "forward: SiLU"
        if "Conv2d::forward" in s or "conv2d" in s:
            return "forward: conv"
        if "SelfAttention::forward" in s:
            return "forward: attention (matmul, softmax, reshapes)"
        if "::cat" in s:
            return "forward: skip concat"
        if "interpolate" in s:
            return "forward: upsample"
        return "forward: other element-wise"
    if "epsilon_mse" in s or "train_step" in s:
        return "loss, host RNG, batch"
    return "other (start-up, init)"


def kernel_of(sym):
    if sym.startswith("gemm") or "gemm_common" in sym or "::gemm_basic" in sym:
        return "gemm micro-kernels"
    if "expf" in sym or "exp_" in sym:
        return "exp (sigmoid, softmax)"
    if "conv_transpose" in sym:
        return "conv input-grad col2im / packing (conv_transpose)"
    if "burn_flex::ops::conv" in sym:
        return "conv im2col / packing"
    if "copy_2d_tiled" in sym or "memmove" in sym or "memcpy" in sym or "contiguous" in sym:
        return "copies / layout changes"
    if "memset" in sym or "filled" in sym or "FlexTensor::empty" in sym:
        return "zero-fill"
    if "reduce" in sym:
        return "reductions"
    if any(k in sym for k in ("unary_op", "binary_op", "scalar_op", "zip", "macerator",
                              "simd::portable")):
        return "element-wise"
    if "malloc" in sym or "free" in sym or ("alloc" in sym and "burn" not in sym):
        return "allocator"
    if re.match(r"^[a-z_0-9.]+$", sym) or "page" in sym or "_raw_spin" in sym \
            or sym.startswith("__") or "[unknown]" in sym:
        return "kernel (page faults, zeroing pages, scheduling)"
    if "call_mut" in sym or "closure" in sym:
        return "inlined closures (loop bodies: packing, element-wise)"
    return "other"


def show(title, counter, total, unit=""):
    print(title)
    for k, v in counter.most_common():
        print(f"  {100 * v / total:5.1f}%  {k}")
    print()


def main():
    events = parse(sys.argv[1])
    samples = [e for e in events if e["event"].startswith(("cpu-clock", "cycles", "task-clock"))]
    tids = collections.Counter(e["tid"] for e in samples)
    main_tid = min(tids, key=int)
    total = sum(e["period"] for e in samples)
    print(f"{len(samples)} CPU samples; per thread {dict(tids)}; main thread {main_tid}\n")

    kernels = collections.Counter()
    for e in samples:
        if e["frames"]:
            kernels[kernel_of(e["frames"][0])] += e["period"]
    show("1. CPU time by kernel (leaf function, all threads):", kernels, total)

    switches = [e for e in events if e["event"] == "sched:sched_switch"
                and f"prev_pid={main_tid} " in e["trace"]]
    if switches:
        wall = collections.Counter()
        kind = collections.Counter()
        serial_by_op = collections.Counter()
        main_events = [e for e in events if e["tid"] == main_tid]
        wakeups = [e["time"] for e in events if e["event"] == "sched:sched_wakeup"
                   and re.search(rf"\bpid={main_tid}\b", e["trace"])]
        wi = 0
        for i, e in enumerate(main_events):
            if e["event"].startswith("cpu-clock"):
                secs = e["period"] / 1e9
                wall[classify(e["frames"])] += secs
                serial_by_op[classify(e["frames"])] += secs
                kind["serial (main thread on one core)"] += secs
            elif e["event"] == "sched:sched_switch" and "prev_state=S" in e["trace"]:
                while wi < len(wakeups) and wakeups[wi] <= e["time"]:
                    wi += 1
                # Asleep until a worker wakes it, and at the latest until its next event.
                nxt = main_events[i + 1]["time"] if i + 1 < len(main_events) else e["time"]
                if wi < len(wakeups):
                    secs = min(wakeups[wi], nxt) - e["time"]
                    wall[classify(e["frames"])] += secs
                    kind["parallel (main asleep, rayon workers run)"] += secs
        span = main_events[-1]["time"] - main_events[0]["time"]
        covered = sum(wall.values())
        print(f"2. Wall clock by operation ({span:.2f} s of main-thread timeline, "
              f"{100 * covered / span:.0f}% accounted for):")
        for k, v in kind.most_common():
            print(f"  {100 * v / span:5.1f}%  {k}")
        print()
        print("   by operation (total = serial on one core + parallel on the pool):")
        for k, v in wall.most_common():
            ser = serial_by_op[k]
            print(f"  {100 * v / span:5.1f}% = {100 * ser / span:4.1f}% + "
                  f"{100 * (v - ser) / span:4.1f}%  {k}")
        print()

    ops = collections.Counter()
    for e in samples:
        if e["tid"] == main_tid:
            ops[classify(e["frames"])] += e["period"]
    show("3. Serial CPU time by operation (main thread's samples):", ops,
         sum(ops.values()))


if __name__ == "__main__":
    main()
