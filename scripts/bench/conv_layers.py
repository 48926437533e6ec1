#!/usr/bin/env python3
"""The convolution layers of a config's UNet (from the PyTorch twin), as the layer list that
`conv_bench` times, and optionally PyTorch's own time for each.

    .venv-fid/bin/python scripts/bench/conv_layers.py --config RESOLVED.toml > layers.txt
    RAYON_NUM_THREADS=2 target/release/examples/conv_bench 9 layers.txt     # Ember, per layer
    .venv-fid/bin/python scripts/bench/conv_layers.py --config RESOLVED.toml --time --threads 2

Each line is `c_in c_out k stride padding h w count` (`count`: how many layers of that shape
one forward runs). With `--time` a table follows on stderr: PyTorch's forward and backward
(input + weight + bias gradients) milliseconds per layer at `--batch`, median of `--repeats`,
and the total weighted by count, comparable with conv_bench's total. Single layers on this
shared VM swing by 10 % or more between runs: compare totals, or run both sides twice.
"""
import argparse
import collections
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_twin  # noqa: E402


def layer_shapes(cfg: dict, batch: int) -> collections.Counter:
    """(c_in, c_out, k, stride, padding, h, w) -> count, from one forward of the twin."""
    model = torch_twin.UNet(cfg["model"])
    shapes = collections.Counter()

    def record(module, inputs, _output):
        x = inputs[0]
        shapes[(module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
                module.padding[0], x.shape[2], x.shape[3])] += 1

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(record)
    x0, labels = torch_twin.fixed_batch(cfg, batch)
    with torch.no_grad():
        model(x0, torch.zeros(batch), labels)
    return shapes


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times = sorted(times[1:])
    return times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a resolved config (train_bench resolve)")
    parser.add_argument("--batch", type=int, help="default: the config's train.batch_size")
    parser.add_argument("--time", action="store_true", help="also time each layer in PyTorch")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cfg = torch_twin.load_config(args.config)
    batch = args.batch or cfg["train"]["batch_size"]
    torch.manual_seed(0)
    shapes = layer_shapes(cfg, batch)
    for shape, count in sorted(shapes.items()):
        print(*shape, count)
    if not args.time:
        return
    torch.set_num_threads(args.threads)
    total_forward = total_backward = 0.0
    print("| layer | count | forward ms | backward ms |", file=sys.stderr)
    print("|---|---:|---:|---:|", file=sys.stderr)
    for (c_in, c_out, k, stride, padding, h, w), count in sorted(shapes.items()):
        conv = torch.nn.Conv2d(c_in, c_out, k, stride, padding)
        x = torch.randn(batch, c_in, h, w, requires_grad=True)
        dy = torch.randn_like(conv(x))
        forward = median_seconds(lambda: conv(x), args.repeats)
        both = median_seconds(
            lambda: torch.autograd.grad(conv(x), [x, conv.weight, conv.bias], dy), args.repeats)
        backward = max(both - forward, 0.0)
        total_forward += forward * count
        total_backward += backward * count
        print(f"| {k}x{k} {c_in}->{c_out} /{stride} @{h} | {count} | {forward * 1e3:.2f} | "
              f"{backward * 1e3:.2f} |", file=sys.stderr)
    print(f"total (weighted by count): forward {total_forward * 1e3:.1f} ms, backward "
          f"{total_backward * 1e3:.1f} ms", file=sys.stderr)


if __name__ == "__main__":
    main()
