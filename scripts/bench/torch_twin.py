#!/usr/bin/env python3
"""A plain-PyTorch twin of Ember's class-conditional UNet, training step and guided DDIM sampler.

It mirrors crates/ember-model/src/unet.rs layer by layer (same module names, so Ember's weight
files load into it), the epsilon-MSE training step of crates/ember-train/src/lib.rs
(Trainer::train_step: label dropout, uniform timesteps, forward noising, global-norm clip,
AdamW, EMA) and the DDIM + classifier-free-guidance loop of crates/ember-sample/src/ddim.rs and
guidance.rs, so that its timings are comparable with Ember's `train_bench` example.

Modes (the same as the Rust example; one JSON line on stdout at the end):
  train-curve --config RESOLVED.toml --data DIR --out DIR --minutes M [--every M]
              [--samples-per-class N] [--guidance S] [--threads N]
          trains for M minutes on an IDX training split and exports samples of its EMA weights
          every few minutes, for `ember eval --checkpoints all --compare DIR`
  train   --config RESOLVED.toml [--batch N] [--warmup N] [--repeats N] [--threads N]
  sample  --config RESOLVED.toml [--batch N] [--warmup N] [--repeats N] [--steps N] [--threads N]
  check   --config RESOLVED.toml --dir DIR   (DIR written by `train_bench check`)
  params  --config RESOLVED.toml             (the parameter count only)

`--sdpa` routes attention through F.scaled_dot_product_attention instead of the explicit
softmax(QK^T / sqrt(d)) V that Ember computes (off by default, so both sides do the same maths).

RESOLVED.toml is a config with every default filled in, written by
`train_bench resolve --config configs/mnist.toml --out RESOLVED.toml`; scripts/bench/bench.py
does this itself. `--expect-params N` makes the run fail unless the twin has exactly N
parameters (bench.py passes Ember's count).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REFERENCE_SAMPLING_STEPS = 50


# --------------------------------------------------------------------------------------------
# The network (crates/ember-model/src/unet.rs)


def conv3x3(c_in: int, c_out: int, zero: bool = False) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1)
    if zero:
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    return conv


def conv1x1(c_in: int, c_out: int, zero: bool = False) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 1)
    if zero:
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    return conv


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of float timesteps `[batch]` -> `[batch, dim]`, cos half then sin half."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10_000.0) * torch.arange(half, dtype=torch.float64) / half
    ).to(torch.float32)
    args = t[:, None] * freqs[None, :]
    return torch.cat([args.cos(), args.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, twice, with a skip; the embedding enters between the two as a
    per-channel bias, or (`scale_shift`) as a scale and shift of the second GroupNorm's output."""

    def __init__(self, c_in: int, c_out: int, embed_dim: int, groups: int, dropout: float,
                 scale_shift: bool = False):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(groups, c_in, eps=1e-5)
        self.conv1 = conv3x3(c_in, c_out)
        self.emb_proj = nn.Linear(embed_dim, c_out * (2 if scale_shift else 1))
        self.norm2 = nn.GroupNorm(groups, c_out, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(c_out, c_out, zero=True)
        self.skip = conv1x1(c_in, c_out) if c_in != c_out else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb_proj(F.silu(emb))[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = F.silu(self.norm2(h) * (1 + scale) + shift)
        else:
            h = F.silu(self.norm2(h + e))
        h = self.conv2(self.dropout(h))
        skip = self.skip(x) if self.skip is not None else x
        return skip + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels, residual; explicit softmax(QK^T/sqrt(d))V."""

    def __init__(self, channels: int, heads: int, groups: int, sdpa: bool = False):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-5)
        self.qkv = conv1x1(channels, 3 * channels)
        self.proj = conv1x1(channels, channels, zero=True)
        self.heads = heads
        self.sdpa = sdpa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads, n = self.heads, h * w
        d = c // heads
        qkv = self.qkv(self.norm(x)).reshape(b, 3, heads, d, n)
        q = qkv[:, 0].transpose(2, 3)  # [b, heads, n, d]
        k = qkv[:, 1]  # [b, heads, d, n]
        v = qkv[:, 2].transpose(2, 3)  # [b, heads, n, d]
        if self.sdpa:
            out = F.scaled_dot_product_attention(q, k.transpose(2, 3), v)
        else:
            scores = (q @ k) * (1.0 / math.sqrt(d))
            out = torch.softmax(scores, dim=3) @ v
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj(out)


class Stage(nn.Module):
    def __init__(self, res: ResBlock, attn: SelfAttention | None):
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x, emb):
        h = self.res(x, emb)
        return self.attn(h) if self.attn is not None else h


class DownLevel(nn.Module):
    def __init__(self, stages, downsample):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.downsample = downsample


class UpLevel(nn.Module):
    def __init__(self, stages, upsample):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.upsample = upsample


class MidBlock(nn.Module):
    def __init__(self, res1, attn, res2):
        super().__init__()
        self.res1 = res1
        self.attn = attn
        self.res2 = res2


class UNet(nn.Module):
    """eps_theta(x_t, t, y); `num_classes + 1` class rows, the last being the null class."""

    def __init__(self, m: dict, sdpa: bool = False):
        super().__init__()
        base = m["base_channels"]
        mults = list(m["channel_mults"])
        groups = m["norm_groups"]
        heads = m["attention_heads"]
        attn_levels = set(m["attention_levels"])
        blocks = m["blocks_per_level"]
        emb = 4 * base
        self.num_classes = m["num_classes"]
        self.base_channels = base

        def ch(level):
            return base * mults[level]

        def res(c_in, c_out):
            # Configs resolved before `scale_shift_norm` existed use the bias.
            scale_shift = m.get("scale_shift_norm", False)
            return ResBlock(c_in, c_out, emb, groups, m["dropout"], scale_shift)

        def stage(level, c_in, c_out):
            attn = SelfAttention(c_out, heads, groups, sdpa) if level in attn_levels else None
            return Stage(res(c_in, c_out), attn)

        levels = len(mults)
        skips = [base]
        c = base
        down = []
        for level in range(levels):
            stages = []
            for _ in range(blocks):
                stages.append(stage(level, c, ch(level)))
                c = ch(level)
                skips.append(c)
            downsample = None
            if level + 1 < levels:
                skips.append(c)
                downsample = nn.Conv2d(c, c, 3, stride=2, padding=1)
            down.append(DownLevel(stages, downsample))

        mid_attn = SelfAttention(c, heads, groups, sdpa) if attn_levels else None
        mid = MidBlock(res(c, c), mid_attn, res(c, c))

        up = []
        for level in reversed(range(levels)):
            stages = []
            for _ in range(blocks + 1):
                skip = skips.pop()
                stages.append(stage(level, c + skip, ch(level)))
                c = ch(level)
            upsample = conv3x3(c, c) if level > 0 else None
            up.append(UpLevel(stages, upsample))
        assert not skips

        # Registration order follows unet.rs (it only matters for printing).
        self.time_mlp1 = nn.Linear(base, emb)
        self.time_mlp2 = nn.Linear(emb, emb)
        self.class_embedding = nn.Embedding(self.num_classes + 1, emb)  # N(0, 1), as Burn
        self.conv_in = conv3x3(m["image_channels"], base)
        self.down = nn.ModuleList(down)
        self.mid = mid
        self.up = nn.ModuleList(up)
        self.norm_out = nn.GroupNorm(groups, c, eps=1e-5)
        self.conv_out = conv3x3(c, m["image_channels"], zero=True)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        t_emb = timestep_embedding(t, self.base_channels)
        t_emb = self.time_mlp2(F.silu(self.time_mlp1(t_emb)))
        emb = t_emb + self.class_embedding(labels)

        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for stage in level.stages:
                h = stage(h, emb)
                skips.append(h)
            if level.downsample is not None:
                h = level.downsample(h)
                skips.append(h)

        h = self.mid.res1(h, emb)
        if self.mid.attn is not None:
            h = self.mid.attn(h)
        h = self.mid.res2(h, emb)

        for level in self.up:
            for stage in level.stages:
                h = stage(torch.cat([h, skips.pop()], dim=1), emb)
            if level.upsample is not None:
                h = level.upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))

        return self.conv_out(F.silu(self.norm_out(h)))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Schedule, training step, sampler


class Schedule:
    """Betas and cumulative alphas in float64, the prediction type and the conversions
    (crates/ember-model/src/schedule.rs)."""

    def __init__(self, d: dict):
        t = d["timesteps"]
        if d["beta_schedule"] == "linear":
            betas = [
                d["beta_start"] + (d["beta_end"] - d["beta_start"]) * i / (t - 1) for i in range(t)
            ]
        else:  # cosine, s = 0.008, clipped at 0.999
            f = lambda i: math.cos((i / t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
            betas = [min(1 - f(i + 1) / f(i), 0.999) for i in range(t)]
        acc, ab = 1.0, []
        for b in betas:
            acc *= 1.0 - b
            ab.append(acc)
        if d.get("zero_terminal_snr", False):
            # Lin et al. 2023, Algorithm 1: sqrt(abar) shifted and scaled so its first value is
            # kept and its last becomes 0.
            sq = [math.sqrt(a) for a in ab]
            first, last = sq[0], sq[-1]
            ab = [((v - last) * first / (first - last)) ** 2 for v in sq]
        self.prediction = d.get("prediction", "epsilon")
        self.alphas_cumprod = ab
        ab64 = torch.tensor(ab, dtype=torch.float64)
        self.signal = ab64.sqrt().to(torch.float32)
        self.sigma = (1.0 - ab64).sqrt().to(torch.float32)
        # abar decreases; searchsorted wants increasing values: timesteps_at_sigma searches -abar.
        self._neg_ab = -ab64

    def __len__(self):
        return len(self.alphas_cumprod)

    def alpha_bar(self, t):
        return 1.0 if t is None else self.alphas_cumprod[t]

    def timesteps_at_sigma(self, sigma):
        """The first timestep whose sigma is at least each of `sigma` (NoiseSchedule::timestep_at_sigma)."""
        t = torch.searchsorted(self._neg_ab, -1.0 / (1.0 + sigma * sigma), right=False)
        return t.clamp(max=len(self) - 1)

    def add_noise(self, x0, noise, timesteps):
        s = self.signal[timesteps].view(-1, 1, 1, 1)
        g = self.sigma[timesteps].view(-1, 1, 1, 1)
        return x0 * s + noise * g

    def target(self, x0, noise, timesteps):
        """What the network is trained to predict: the noise, v, or x0."""
        if self.prediction == "epsilon":
            return noise
        if self.prediction == "x0":
            return x0
        s = self.signal[timesteps].view(-1, 1, 1, 1)
        g = self.sigma[timesteps].view(-1, 1, 1, 1)
        return noise * s - x0 * g

    def snr(self, t):
        ab = self.alphas_cumprod[t]
        return ab / (1.0 - ab)

    def min_snr_weights(self, timesteps, gamma):
        """Min-SNR-gamma weights per sample (crates/ember-model/src/loss.rs)."""
        out = []
        for t in timesteps.tolist():
            snr = self.snr(t)
            clipped = min(snr, gamma)
            # Only the objective's own weight: epsilon's divides by an SNR that is 0 at the
            # last step of a zero-terminal-SNR schedule (used with v only).
            if self.prediction == "epsilon":
                out.append(clipped / snr)
            elif self.prediction == "v":
                out.append(clipped / (snr + 1.0))
            else:
                out.append(clipped)
        return torch.tensor(out, dtype=torch.float32)

    def output_to_x0(self, out, x, t):
        """The clean image a network output implies at x, timestep t."""
        ab = self.alphas_cumprod[t]
        if self.prediction == "x0":
            return out
        if self.prediction == "v":
            return x * math.sqrt(ab) - out * math.sqrt(1.0 - ab)
        return (x - out * math.sqrt(1.0 - ab)) / math.sqrt(ab)

    def sigma_of(self, t):
        """sqrt((1 - abar) / abar); 0 for the clean image (t None)."""
        ab = self.alpha_bar(t)
        return math.inf if ab == 0.0 else math.sqrt((1.0 - ab) / ab)


class Trainer:
    """Model, EMA, AdamW and the step counter, as crates/ember-train/src/lib.rs."""

    def __init__(self, cfg: dict, model: UNet):
        self.cfg = cfg
        self.train_cfg = cfg["train"]
        self.model = model
        self.ema = copy.deepcopy(model).requires_grad_(False)
        self.schedule = Schedule(cfg["diffusion"])
        self.params = list(model.parameters())
        self.ema_params = list(self.ema.parameters())
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=self.train_cfg["learning_rate"],
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=self.train_cfg["weight_decay"],
        )
        self.step = 0

    def learning_rate(self, step: int) -> float:
        t = self.train_cfg
        if step < t["warmup_steps"]:
            return t["learning_rate"] * (step + 1) / t["warmup_steps"]
        if t.get("lr_schedule", "constant") == "cosine":
            span = max(t["steps"] - t["warmup_steps"], 1)
            progress = min((step - t["warmup_steps"]) / span, 1.0)
            final = t.get("final_learning_rate", 0.0)
            return final + (t["learning_rate"] - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return t["learning_rate"]

    def draw_inputs(self, labels: torch.Tensor, shape):
        """Label dropout, timesteps (as `timestep_sampling` says) and Gaussian noise for one step."""
        drop = torch.rand(labels.shape[0]) < self.train_cfg["p_uncond"]
        labels = torch.where(drop, torch.full_like(labels, self.model.null_class), labels)
        if self.train_cfg.get("timestep_sampling", "uniform") == "logit-normal":
            timesteps = self.schedule.timesteps_at_sigma(
                torch.exp(
                    self.train_cfg["logit_mean"]
                    + self.train_cfg["logit_std"] * torch.randn(labels.shape[0], dtype=torch.float64)
                )
            )
        else:
            timesteps = torch.randint(0, len(self.schedule), (labels.shape[0],))
        noise = torch.randn(shape)
        return labels, timesteps, noise

    def train_step(self, x0, noise, timesteps, labels):
        """Forward, epsilon MSE, backward, global-norm clip, AdamW, EMA; -> (loss, grad_norm)."""
        x_t = self.schedule.add_noise(x0, noise, timesteps)
        predicted = self.model(x_t, timesteps.to(torch.float32), labels)
        target = self.schedule.target(x0, noise, timesteps)
        gamma = self.train_cfg.get("min_snr_gamma", 0.0)
        if gamma > 0:
            per_sample = (predicted - target).square().flatten(1).mean(1)
            loss = (per_sample * self.schedule.min_snr_weights(timesteps, gamma)).mean()
        else:
            loss = (predicted - target).square().mean()
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            self.step += 1
            return loss_value, float("nan")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.train_cfg["grad_clip_norm"]
        if max_norm > 0:
            # Scales by max_norm / (norm + 1e-6) when norm > max_norm, as Ember's clip.
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        else:
            grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in self.params]))
        lr = self.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.step += 1
        decay = min(self.train_cfg["ema_decay"], (1.0 + self.step) / (10.0 + self.step))
        with torch.no_grad():
            torch._foreach_mul_(self.ema_params, decay)
            torch._foreach_add_(self.ema_params, self.params, alpha=1.0 - decay)
        return loss_value, grad_norm


def ddim_timesteps(train_steps: int, steps: int, spacing: str = "trailing"):
    """The visited timesteps, as crates/ember-sample/src/samplers.rs `timesteps`."""
    steps = min(max(steps, 1), train_steps)
    if spacing == "trailing":
        return [-(-(train_steps * (steps - i)) // steps) - 1 for i in range(steps)]
    if spacing == "leading":
        return [i * (train_steps // steps) for i in reversed(range(steps))]
    if spacing == "linspace":
        ts = []
        for i in range(steps):
            f = 1.0 if steps == 1 else 1.0 - i / (steps - 1)
            t = int(math.floor(f * (train_steps - 1) + 0.5))  # Rust's round: half away from 0
            if not ts or ts[-1] != t:
                ts.append(t)
        return ts
    sys.exit(f"error: the twin does not implement sample.spacing = {spacing!r}")


@torch.inference_mode()
def guided_eps(model, x, t, labels, null_labels, scale):
    b = x.shape[0]
    if scale == 1.0:
        return model(x, torch.full((b,), float(t)), labels)
    if scale == 0.0:
        return model(x, torch.full((b,), float(t)), null_labels)
    eps = model(
        torch.cat([x, x], 0), torch.full((2 * b,), float(t)), torch.cat([labels, null_labels], 0)
    )
    cond, uncond = eps[:b], eps[b:]
    return uncond + (cond - uncond) * scale


@torch.inference_mode()
def ddim(model, schedule, x, labels, scale, steps, eta, marks=None, generator=None,
         spacing="trailing"):
    """DDIM with plain classifier-free guidance (crates/ember-sample/src/ddim.rs)."""
    null_labels = torch.full_like(labels, model.null_class)
    ts = visited_timesteps(schedule, steps, spacing)
    for i, t in enumerate(ts):
        if marks is not None:
            marks.append(time.perf_counter())
        prev = ts[i + 1] if i + 1 < len(ts) else None
        ab_t, ab_prev = schedule.alpha_bar(t), schedule.alpha_bar(prev)
        out = guided_eps(model, x, t, labels, null_labels, scale)
        x0 = schedule.output_to_x0(out, x, t).clamp(-1.0, 1.0)
        eps = (x - x0 * math.sqrt(ab_t)) / math.sqrt(1.0 - ab_t)
        sigma = eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev))
        direction = math.sqrt(max(1.0 - ab_prev - sigma * sigma, 0.0))
        x = x0 * math.sqrt(ab_prev) + eps * direction
        if sigma > 0:
            x = x + torch.randn(x.shape, generator=generator) * sigma
    if marks is not None:
        marks.append(time.perf_counter())
    return x


def karras_timesteps(schedule, steps: int):
    """Karras et al. 2022's noise levels (rho 7) snapped to training timesteps, as
    crates/ember-sample/src/timesteps.rs `karras`."""
    t_max, rho = len(schedule), 7.0
    top = max(t for t in range(t_max) if math.isfinite(schedule.sigma_of(t)))
    lo, hi = schedule.sigma_of(0), schedule.sigma_of(top)
    log_sigmas = [math.log(schedule.sigma_of(t)) for t in range(t_max)]
    ts = []
    for i in range(steps):
        f = 0.0 if steps == 1 else i / (steps - 1)
        target = math.log((hi ** (1 / rho) + f * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho)
        best = min(range(t_max), key=lambda t: abs(log_sigmas[t] - target))
        if not ts or ts[-1] != best:
            ts.append(best)
    return ts


def visited_timesteps(schedule, steps: int, spacing: str):
    """The timesteps a sampler visits for `sample.spacing`, as crates/ember-sample/src/
    timesteps.rs `timesteps`: Karras noise levels, or the DDIM spacings."""
    if spacing == "karras":
        return karras_timesteps(schedule, steps)
    return ddim_timesteps(len(schedule), steps, spacing)


@torch.inference_mode()
def dpmpp_2m(model, schedule, x, labels, scale, ts):
    """DPM-Solver++(2M) with classifier-free guidance, as crates/ember-sample/src/samplers/
    dpm_solver.rs (and karras.rs `ode_start` for a first step at zero terminal SNR)."""
    null_labels = torch.full_like(labels, model.null_class)

    def denoise(x, t):
        out = guided_eps(model, x, t, labels, null_labels, scale)
        return schedule.output_to_x0(out, x, t).clamp(-1.0, 1.0)

    ab0 = schedule.alpha_bar(ts[0])
    if ab0 > 0:
        z, rest = x / math.sqrt(ab0), list(ts)
    else:
        x0 = denoise(x, ts[0])
        if len(ts) == 1:
            return x0
        z, rest = x0 + x * schedule.sigma_of(ts[1]), list(ts[1:])
    previous = None
    for i, t in enumerate(rest):
        nxt = rest[i + 1] if i + 1 < len(rest) else None
        s, s_next = schedule.sigma_of(t), schedule.sigma_of(nxt)
        x0 = denoise(z * math.sqrt(schedule.alpha_bar(t)), t)
        if nxt is None:
            return x0
        h = math.log(s) - math.log(s_next)
        if previous is None:
            d = x0
        else:
            x0_prev, h_prev = previous
            r = h_prev / h
            d = x0 * (1.0 + 1.0 / (2.0 * r)) - x0_prev * (1.0 / (2.0 * r))
        z = z * (s_next / s) - d * math.expm1(-h)
        previous = (x0, h)
    return z


# --------------------------------------------------------------------------------------------
# Helpers


def load_config(path: str) -> dict:
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    need = {
        "model": ["num_classes", "image_channels", "image_size", "base_channels", "channel_mults",
                  "blocks_per_level", "attention_levels", "attention_heads", "norm_groups",
                  "dropout"],
        "diffusion": ["timesteps", "beta_schedule", "beta_start", "beta_end"],
        "train": ["batch_size", "learning_rate", "warmup_steps", "weight_decay",
                  "grad_clip_norm", "ema_decay", "p_uncond"],
        "sample": ["guidance_scale", "eta"],
    }
    missing = [f"{s}.{k}" for s, keys in need.items() for k in keys if k not in cfg.get(s, {})]
    if missing:
        sys.exit(
            f"error: {path} lacks {', '.join(missing)}: pass a resolved config, written by "
            "`cargo run --release -p ember-train --example train_bench -- resolve "
            "--config CONFIG --out RESOLVED.toml`"
        )
    return cfg


def peak_rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def fixed_batch(cfg, b):
    m = cfg["model"]
    c, s = m["image_channels"], m["image_size"]
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand((b, c, s, s), generator=g) * 2 - 1
    labels = torch.arange(b) % m["num_classes"]
    return x0, labels


def check_params(model, expect):
    n = parameter_count(model)
    if expect is not None and n != expect:
        sys.exit(f"error: the twin has {n} parameters, Ember {expect}: the networks differ")
    return n


def emit(record):
    record["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print(json.dumps(record, separators=(",", ":")))


# --------------------------------------------------------------------------------------------
# Modes


def mode_train(cfg, args):
    b = cfg["train"]["batch_size"]
    torch.manual_seed(cfg.get("seed", 42))
    trainer = Trainer(cfg, UNet(cfg["model"], sdpa=args.sdpa))
    params = check_params(trainer.model, args.expect_params)
    trainer.model.train()
    x0, labels = fixed_batch(cfg, b)
    losses, times = [], []
    for i in range(args.warmup + args.repeats):
        start = time.perf_counter()
        y, t, noise = trainer.draw_inputs(labels, x0.shape)
        loss, _ = trainer.train_step(x0, noise, t, y)
        elapsed = time.perf_counter() - start
        losses.append(loss)
        if i >= args.warmup:
            times.append(elapsed)
    m = median(times)
    emit({
        "impl": "torch", "mode": "train", "batch": b, "threads": torch.get_num_threads(),
        "params": params, "torch": torch.__version__, "mkldnn": torch.backends.mkldnn.is_available(),
        "warmup": args.warmup,
        "repeats": args.repeats, "median_step_seconds": round(m, 6),
        "images_per_second": round(b / m, 3), "step_seconds": [round(x, 6) for x in times],
        "losses": [round(x, 6) for x in losses],
    })


def mode_sample(cfg, args):
    b = args.batch or cfg["train"]["batch_size"]
    m = cfg["model"]
    c, s = m["image_channels"], m["image_size"]
    torch.manual_seed(cfg.get("seed", 42))
    model = UNet(m, sdpa=args.sdpa).eval().requires_grad_(False)
    params = check_params(model, args.expect_params)
    schedule = Schedule(cfg["diffusion"])
    labels = torch.arange(b) % m["num_classes"]
    scale, eta = cfg["sample"]["guidance_scale"], cfg["sample"]["eta"]
    spacing = cfg["sample"].get("spacing", "trailing")
    if args.warmup > 0:
        ddim(model, schedule, torch.randn(b, c, s, s), labels, scale, args.warmup, eta,
             spacing=spacing)
    run_seconds, step_seconds = [], []
    for _ in range(args.repeats):
        marks = []
        ddim(model, schedule, torch.randn(b, c, s, s), labels, scale, args.steps, eta, marks,
             spacing=spacing)
        steps = [marks[i + 1] - marks[i] for i in range(len(marks) - 1)]
        run_seconds.append(sum(steps))
        step_seconds.extend(steps)
    med = median(step_seconds)
    emit({
        "impl": "torch", "mode": "sample", "batch": b, "threads": torch.get_num_threads(),
        "params": params, "torch": torch.__version__, "guidance_scale": scale, "eta": eta,
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
        "median_step_seconds": round(med, 6), "reference_steps": REFERENCE_SAMPLING_STEPS,
        "images_per_second": round(b / (REFERENCE_SAMPLING_STEPS * med), 3),
        "measured_images_per_second": round(b / median(run_seconds), 3),
        "run_seconds": [round(x, 6) for x in run_seconds],
        "step_seconds": [round(x, 6) for x in step_seconds],
    })


def read_idx(path: str) -> np.ndarray:
    """An IDX file (raw or gzipped) as a numpy array."""
    import gzip
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def train_for_minutes(cfg, args):
    """Trains on the IDX training split for --minutes of training time (or train.steps, or
    until --stop-step), keeping the EMA weights every --every minutes and at the last step;
    -> [(minutes, step, ema state)]."""
    m, t_cfg = cfg["model"], cfg["train"]
    images = torch.from_numpy(read_idx(os.path.join(args.data, "train-images-idx3-ubyte")).copy())
    labels = torch.from_numpy(read_idx(os.path.join(args.data, "train-labels-idx1-ubyte")).copy())
    images = images.to(torch.float32).div(127.5).sub(1.0).unsqueeze(1)  # [n, 1, 28, 28]
    labels = labels.to(torch.long)
    torch.manual_seed(cfg.get("seed", 42))
    model = UNet(m)
    b, n = t_cfg["batch_size"], images.shape[0]
    given = None
    if args.inputs:
        # Ember's own initial weights and random inputs (train_bench inputs).
        model.load_state_dict(to_twin(model, read_safetensors(os.path.join(args.inputs, "init.safetensors"))))
        given = EmberInputs(args.inputs, n, b)
    trainer = Trainer(cfg, model)
    trainer.model.train()
    generator = torch.Generator().manual_seed(cfg.get("seed", 42))
    # No --minutes (a --stop-step run): no time budget.
    budget = math.inf if args.minutes is None else args.minutes * 60.0
    every = args.every * 60.0
    trained, next_keep, kept = 0.0, every, []
    epoch = 0
    while True:
        order = given.order(epoch) if given else torch.randperm(n, generator=generator)
        epoch += 1
        for start in range(0, n, b):
            began = time.perf_counter()
            idx = order[start:start + b]
            if given:
                y, t, noise = given.step(trainer.step, labels[idx], images[idx].shape,
                                         trainer.model.null_class)
            else:
                y, t, noise = trainer.draw_inputs(labels[idx], images[idx].shape)
            loss, _ = trainer.train_step(images[idx], noise, t, y)
            trained += time.perf_counter() - began
            if trainer.step % 100 == 0:
                print(f"step {trainer.step} loss {loss:.4f} {trained / 60:.1f} min", flush=True)
            finished = (trainer.step >= t_cfg["steps"] or trained >= budget
                        or (args.stop_step is not None and trainer.step >= args.stop_step))
            if trained >= next_keep or finished:
                kept.append((trained / 60.0, trainer.step,
                             copy.deepcopy(trainer.ema.state_dict())))
                next_keep += every
            if finished:
                print(f"trained {trainer.step} steps in {trained / 60:.1f} min", flush=True)
                return kept


class EmberInputs:
    """The random inputs Ember drew for a run's first steps (`train_bench inputs --out DIR`)."""

    def __init__(self, folder: str, n: int, b: int):
        with open(os.path.join(folder, "inputs.json")) as f:
            meta = json.load(f)
        if meta["dataset_len"] != n or meta["batch"] != b:
            sys.exit(f"error: {folder} was written for {meta['dataset_len']} images in batches of "
                     f"{meta['batch']}, not {n} / {b}")
        self.steps, self.n, self.image_len = meta["steps"], n, meta["image_len"]
        read = lambda name, dtype: np.fromfile(os.path.join(folder, name), dtype=dtype)
        self.orders = read("order.u32", "<u4").astype(np.int64)
        self.null, self.times = read("null.u8", "u1"), read("timesteps.u32", "<u4")
        self.noise = np.memmap(os.path.join(folder, "noise.f32"), dtype="<f4", mode="r")
        self.row = 0  # rows of the steps taken so far

    def order(self, epoch: int) -> torch.Tensor:
        if (epoch + 1) * self.n > len(self.orders):
            sys.exit(f"error: the inputs hold {len(self.orders) // self.n} epochs' orders")
        return torch.from_numpy(self.orders[epoch * self.n:(epoch + 1) * self.n])

    def step(self, step: int, labels: torch.Tensor, shape, null_class: int):
        if step >= self.steps:
            sys.exit(f"error: the inputs hold {self.steps} steps; pass --stop-step {self.steps}")
        rows, r = labels.shape[0], self.row
        self.row += rows
        drop = torch.from_numpy(self.null[r:r + rows].astype(bool))
        labels = torch.where(drop, torch.full_like(labels, null_class), labels)
        t = torch.from_numpy(self.times[r:r + rows].astype(np.int64))
        noise = torch.from_numpy(np.array(self.noise[r * self.image_len:(r + rows) * self.image_len]))
        return labels, t, noise.reshape(shape)


def config_sampler(s_cfg):
    """The config's `[sample]` sampler as `f(model, schedule, x, labels, scale, generator)`.
    DDPM is DDIM with eta = 1, its step noise drawn from `generator`."""
    sampler, spacing = s_cfg.get("sampler", "ddim"), s_cfg.get("spacing", "trailing")
    steps = s_cfg["steps"]
    if sampler == "dpmpp-2m":
        return lambda model, schedule, x, ys, scale, gen: dpmpp_2m(
            model, schedule, x, ys, scale, visited_timesteps(schedule, steps, spacing))
    if sampler in ("ddim", "ddpm"):
        eta = 1.0 if sampler == "ddpm" else s_cfg.get("eta", 0.0)
        return lambda model, schedule, x, ys, scale, gen: ddim(
            model, schedule, x, ys, scale, steps, eta, generator=gen, spacing=spacing)
    sys.exit(f"error: the twin does not implement sample.sampler = {sampler!r}")


def mode_train_curve(cfg, args):
    """Trains (train_for_minutes), then samples --samples-per-class images per class from each
    kept EMA, with the config's sampler settings at --guidance, into
    OUT/minutes-<M>/<class>/<j>.png for `ember eval --checkpoints all --compare OUT`.
    --sample-only samples the weights an earlier run kept (OUT/kept.pt); with --ember-weights
    FILE (`ember export`) it samples those instead, so that one model's samples from both
    samplers can be compared."""
    from PIL import Image

    if not (args.data and args.out and (args.minutes or args.stop_step or args.sample_only)):
        sys.exit("error: train-curve needs --data, --out and --minutes or --stop-step")
    m = cfg["model"]
    sample = config_sampler(cfg["sample"])  # before training: an unknown sampler fails now
    os.makedirs(args.out, exist_ok=True)
    kept_path = os.path.join(args.out, "kept.pt")
    if args.sample_only and args.ember_weights:
        state = to_twin(UNet(m), read_safetensors(args.ember_weights))
        kept = [(0.0, None, state)]
    elif args.sample_only:
        kept = torch.load(kept_path)
    else:
        kept = train_for_minutes(cfg, args)
        # The kept weights survive a failure of the sampling below.
        torch.save(kept, kept_path)
    schedule = Schedule(cfg["diffusion"])
    model = UNet(m).eval().requires_grad_(False)
    c, size = m["image_channels"], m["image_size"]
    for minutes, step, state in kept:
        model.load_state_dict(state)
        folder = os.path.join(args.out, f"minutes-{minutes:.2f}")
        gen = torch.Generator().manual_seed(args.sample_seed)
        jobs = [(k, j) for k in range(m["num_classes"]) for j in range(args.samples_per_class)]
        for first in range(0, len(jobs), 250):
            chunk = jobs[first:first + 250]
            ys = torch.tensor([k for k, _ in chunk])
            x = torch.randn((len(chunk), c, size, size), generator=gen)
            out = sample(model, schedule, x, ys, args.guidance, gen)
            pixels = ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
            for (k, j), img in zip(chunk, pixels):
                path = os.path.join(folder, f"{k:03d}", f"{j:04d}.png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Image.fromarray(img[0] if c == 1 else img.transpose(1, 2, 0)).save(path)
        print(f"{folder}: step {step}, {len(jobs)} samples", flush=True)
    emit({"impl": "torch", "mode": "train-curve", "steps": kept[-1][1],
          "minutes": round(kept[-1][0], 3), "kept": [round(k[0], 3) for k in kept],
          "threads": torch.get_num_threads()})


def read_safetensors(path: str) -> dict:
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        start, end = info["data_offsets"]
        out[name] = torch.from_numpy(
            np.frombuffer(data[start:end], dtype="<f4").copy().reshape(info["shape"])
        )
    return out


def torch_name(model: nn.Module, burn_name: str):
    """Ember's parameter name -> (the twin's name, whether the tensor is transposed)."""
    prefix, _, leaf = burn_name.rpartition(".")
    leaf = {"gamma": "weight", "beta": "bias"}.get(leaf, leaf)
    module = model.get_submodule(prefix)
    # Burn's Linear stores its weight as [in, out]; torch's as [out, in].
    return f"{prefix}.{leaf}", isinstance(module, nn.Linear) and leaf == "weight"


def to_twin(model: nn.Module, tensors: dict, prefix: str = "") -> dict:
    """Ember tensors named `prefix + parameter` -> the twin's state dict."""
    state = {}
    for name, value in tensors.items():
        if not name.startswith(prefix):
            continue
        tname, transpose = torch_name(model, name[len(prefix):])
        state[tname] = value.t().contiguous() if transpose else value
    return state


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def mode_check(cfg, args):
    """Loads Ember's perturbed weights and compares forward, gradients, one step, a DDIM run."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    ember_w = read_safetensors(os.path.join(args.dir, "weights.safetensors"))
    ref = read_safetensors(os.path.join(args.dir, "check.safetensors"))
    model = UNet(cfg["model"])
    twin_state = model.state_dict()
    state = to_twin(model, ember_w)
    report, failures = {}, []

    # Structure: the same parameters with the same shapes, one to one.
    missing = sorted(set(twin_state) - set(state))
    extra = sorted(set(state) - set(twin_state))
    shapes = [k for k in state if k in twin_state and state[k].shape != twin_state[k].shape]
    ember_params = sum(v.numel() for v in ember_w.values())
    report["params"] = {"ember": ember_params, "torch": parameter_count(model),
                        "tensors": len(ember_w)}
    if missing or extra or shapes or ember_params != parameter_count(model):
        sys.exit(f"error: structure differs: missing {missing} extra {extra} shapes {shapes}")
    model.load_state_dict(state)

    def expect(name, value, limit):
        report[name] = value
        if not value <= limit:
            failures.append(f"{name} = {value:.3g} > {limit:.1g}")

    # Forward pass and loss gradients at fixed inputs.
    x_t, t, labels, noise = ref["x_t"], ref["t"], ref["labels"].long(), ref["noise"]
    pred = model(x_t, t, labels)
    expect("forward_rel_err", rel_err(pred.detach(), ref["eps"]), 1e-4)
    loss = (pred - noise).square().mean()
    expect("loss_rel_err", abs(loss.item() - ref["loss"].item()) / ref["loss"].item(), 1e-5)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    worst = max(
        (rel_err(grads[k], v), k) for k, v in to_twin(model, ref, "grad.").items()
        if v.norm() > 0
    )
    expect("grad_worst_rel_err", worst[0], 1e-3)
    report["grad_worst_param"] = worst[1]

    # One Trainer step from the same weights with Ember's step-0 inputs.
    model2 = UNet(cfg["model"])
    model2.load_state_dict(state)
    trainer = Trainer(cfg, model2)
    lr = trainer.learning_rate(0)
    expect("lr_rel_err", abs(lr - ref["step.lr"].item()) / lr, 1e-6)
    loss, grad_norm = trainer.train_step(
        ref["step.x0"], ref["step.noise"], ref["step.t"].long(), ref["step.labels"].long()
    )
    expect("step_loss_rel_err", abs(loss - ref["step.loss"].item()) / loss, 1e-5)
    expect("step_grad_norm_rel_err",
           abs(grad_norm - ref["step.grad_norm"].item()) / grad_norm, 1e-4)
    report["step_grad_norm"] = grad_norm
    after_model = to_twin(model2, ref, "after.model.")
    after_ema = to_twin(model2, ref, "after.ema.")
    params_now = dict(model2.named_parameters())
    ema_now = dict(trainer.ema.named_parameters())
    # AdamW's first step moves every weight by about lr * sign(grad): measure in units of lr.
    moved = torch.cat([(params_now[k].detach() - v).abs().flatten() for k, v in after_model.items()])
    # Where a gradient is ~0 its sign (and so the step) can differ between the two float orders
    # of summation; such elements must be rare, and no element may move by more than +-lr apart.
    expect("step_weights_frac_diff_over_1pct_lr", float((moved > 0.01 * lr).float().mean()), 1e-3)
    expect("step_weights_max_diff_in_lr", float(moved.max()) / lr, 2.01)
    # One step moves the EMA by (1 - decay) * ~lr, which for a decay near 1 and a warm-up learning
    # rate is below float32's resolution of the weight itself, so two ulps of each EMA value are
    # rounding's allowance: an element counts when its difference exceeds them by 1 % of lr.
    eps = torch.finfo(torch.float32).eps
    ema_beyond_rounding = torch.cat([
        ((ema_now[k] - v).abs() - 2 * eps * v.abs()).flatten() for k, v in after_ema.items()
    ])
    expect("step_ema_frac_diff_over_2ulp_plus_1pct_lr",
           float((ema_beyond_rounding > 0.01 * lr).float().mean()), 1e-3)

    # A short guided DDIM run.
    steps = int(ref["sample.steps"].item())
    out = ddim(model.eval(), Schedule(cfg["diffusion"]), ref["sample.x_start"],
               ref["sample.labels"].long(), cfg["sample"]["guidance_scale"], steps,
               cfg["sample"]["eta"], spacing=cfg["sample"].get("spacing", "trailing"))
    expect("ddim_rel_err", rel_err(out, ref["sample.out"]), 1e-4)
    # The same start and timesteps through DPM-Solver++(2M), the quality configs' sampler.
    schedule = Schedule(cfg["diffusion"])
    ts = visited_timesteps(schedule, steps, cfg["sample"].get("spacing", "trailing"))
    out = dpmpp_2m(model.eval(), schedule, ref["sample.x_start"], ref["sample.labels"].long(),
                   cfg["sample"]["guidance_scale"], ts)
    expect("dpmpp_2m_rel_err", rel_err(out, ref["sample.dpm_out"]), 1e-4)

    report["ok"] = not failures
    report["failures"] = failures
    print(json.dumps({"impl": "torch", "mode": "check", **report}, separators=(",", ":")))
    if failures:
        sys.exit("error: the twin does not match Ember: " + "; ".join(failures))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("mode", choices=["train", "sample", "check", "params", "train-curve"])
    p.add_argument("--config", required=True, help="resolved config (train_bench resolve)")
    p.add_argument("--batch", type=int)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=REFERENCE_SAMPLING_STEPS)
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--expect-params", type=int, help="fail unless the twin has this many")
    p.add_argument("--dir", help="check: the folder `train_bench check` wrote")
    p.add_argument("--data", help="train-curve: folder of the IDX training split")
    p.add_argument("--out", help="train-curve: where the sample folders go")
    p.add_argument("--minutes", type=float, help="train-curve: minutes of training")
    p.add_argument("--stop-step", type=int,
                   help="train-curve: stop after this step (the learning-rate schedule still "
                        "spans train.steps, as when Ember's run is stopped at a checkpoint)")
    p.add_argument("--every", type=float, default=5.0, help="train-curve: keep weights every M minutes")
    p.add_argument("--samples-per-class", type=int, default=100, help="train-curve: samples per class")
    p.add_argument("--guidance", type=float, default=1.0, help="train-curve: guidance scale of the samples")
    p.add_argument("--sample-seed", type=int, default=0, help="train-curve: seed of the sample noise")
    p.add_argument("--sample-only", action="store_true",
                   help="train-curve: sample the weights OUT/kept.pt holds, without training")
    p.add_argument("--inputs",
                   help="train-curve: train from Ember's initial weights and random inputs "
                        "(the folder `train_bench inputs` wrote) instead of the twin's own")
    p.add_argument("--ember-weights",
                   help="train-curve --sample-only: sample this `ember export` file instead")
    p.add_argument("--sdpa", action="store_true",
                   help="attention through F.scaled_dot_product_attention (not Ember's maths)")
    args = p.parse_args()
    args.repeats = max(args.repeats, 1)
    args.steps = max(args.steps, 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    if args.batch:
        cfg["train"]["batch_size"] = args.batch
    if cfg["model"]["dropout"] > 0 and args.mode == "check":
        sys.exit("error: check needs model.dropout = 0 (dropout masks cannot match)")
    if args.mode == "train":
        mode_train(cfg, args)
    elif args.mode == "sample":
        mode_sample(cfg, args)
    elif args.mode == "check":
        if not args.dir:
            sys.exit("error: check needs --dir")
        mode_check(cfg, args)
    elif args.mode == "train-curve":
        mode_train_curve(cfg, args)
    else:
        model = UNet(cfg["model"])
        print(json.dumps({"impl": "torch", "mode": "params", "params": check_params(model, args.expect_params)}))


if __name__ == "__main__":
    main()
