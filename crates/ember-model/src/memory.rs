//! What a model needs in memory, estimated from its config before anything is allocated, so a
//! config that cannot fit is refused with numbers instead of aborting mid-allocation.
//!
//! The estimate walks the same levels as [`crate::UNetConfig`]'s builder and counts the float
//! activations each block keeps for its backward pass (a residual block about `2 c_in + 5 c_out`
//! values per pixel, attention `5 c` per pixel plus its `heads x pixels^2` scores and softmax).
//! Calibrated on burn-flex + ember-ops (peak RSS of `train_bench train`, batch 128, 28x28:
//! widths 16, 24, 32 and 32 with two blocks per level measured 280, 419, 559 and 797 MiB; the
//! estimate gives 323, 445, 572 and 819 MiB: within 15 %, and above the measurement, so a
//! refusal errs on the safe side).

use ember_config::ModelConfig;

/// Fraction of the counted activations that are alive at the peak of a training step.
const TRAINING_ACTIVATION_SHARE: f64 = 0.6;
/// The process before any tensor: code, Burn's and rayon's start-up, the dataset's bookkeeping.
const BASE_BYTES: f64 = 64.0 * 1024.0 * 1024.0;

/// Float values one image keeps alive through a forward pass of the model, by the accounting
/// above, and the largest single block's share (what a forward-only pass holds at once).
fn activation_values(m: &ModelConfig) -> (f64, f64) {
    let ch = |level: usize| (m.base_channels * m.channel_mults[level]) as f64;
    let heads = m.attention_heads as f64;
    let res = |c_in: f64, c_out: f64, px: f64| (2.0 * c_in + 5.0 * c_out) * px;
    let attn = |c: f64, px: f64| 5.0 * c * px + 2.0 * heads * px * px;
    let (mut total, mut largest) = (0.0f64, 0.0f64);
    let mut add = |v: f64| {
        total += v;
        largest = largest.max(v);
    };
    let mut side = m.image_size as f64;
    let mut c = m.base_channels as f64;
    let mut skips = vec![c];
    add((m.image_channels as f64 + c) * side * side);
    let levels = m.channel_mults.len();
    for level in 0..levels {
        for _ in 0..m.blocks_per_level {
            add(res(c, ch(level), side * side));
            c = ch(level);
            skips.push(c);
            if m.attention_levels.contains(&level) {
                add(attn(c, side * side));
            }
        }
        if level + 1 < levels {
            skips.push(c);
            side /= 2.0;
            add(c * side * side);
        }
    }
    add(2.0 * res(c, c, side * side));
    if !m.attention_levels.is_empty() {
        add(attn(c, side * side));
    }
    for level in (0..levels).rev() {
        for _ in 0..=m.blocks_per_level {
            let skip = skips.pop().unwrap_or(0.0);
            add((c + skip) * side * side + res(c + skip, ch(level), side * side));
            c = ch(level);
            if m.attention_levels.contains(&level) {
                add(attn(c, side * side));
            }
        }
        if level > 0 {
            side *= 2.0;
            add(2.0 * c * side * side);
        }
    }
    add((3.0 * c + m.image_channels as f64) * side * side);
    (total, largest)
}

/// Parameters of the model (exact for the layers that dominate: convolutions, norms, linear
/// layers; within a fraction of a percent overall).
pub fn parameter_count(m: &ModelConfig) -> f64 {
    let emb = 4.0 * m.base_channels as f64;
    // The embedding projection gives a bias, or a scale and a shift, per channel.
    let emb_outputs = if m.scale_shift_norm { 2.0 } else { 1.0 };
    let conv3 = |ci: f64, co: f64| 9.0 * ci * co + co;
    let res = |ci: f64, co: f64| {
        2.0 * ci
            + conv3(ci, co)
            + emb_outputs * (emb * co + co)
            + 2.0 * co
            + conv3(co, co)
            + if ci == co { 0.0 } else { ci * co + co }
    };
    let attn = |c: f64| 2.0 * c + 3.0 * c * c + 3.0 * c + c * c + c;
    let ch = |level: usize| (m.base_channels * m.channel_mults[level]) as f64;
    let mut p = m.base_channels as f64 * emb + emb + emb * emb + emb;
    p += (m.num_classes as f64 + 1.0) * emb;
    let mut c = m.base_channels as f64;
    p += conv3(m.image_channels as f64, c);
    let mut skips = vec![c];
    let levels = m.channel_mults.len();
    for level in 0..levels {
        for _ in 0..m.blocks_per_level {
            p += res(c, ch(level));
            c = ch(level);
            skips.push(c);
            if m.attention_levels.contains(&level) {
                p += attn(c);
            }
        }
        if level + 1 < levels {
            skips.push(c);
            p += conv3(c, c);
        }
    }
    p += 2.0 * res(c, c);
    if !m.attention_levels.is_empty() {
        p += attn(c);
    }
    for level in (0..levels).rev() {
        for _ in 0..=m.blocks_per_level {
            let skip = skips.pop().unwrap_or(0.0);
            p += res(c + skip, ch(level));
            c = ch(level);
            if m.attention_levels.contains(&level) {
                p += attn(c);
            }
        }
        if level > 0 {
            p += conv3(c, c);
        }
    }
    p + 2.0 * c + conv3(c, m.image_channels as f64)
}

/// Estimated peak bytes of one training step at `batch` images: weights, gradients, AdamW's two
/// moments and the EMA copy, plus the activations kept for the backward pass.
pub fn training_bytes(m: &ModelConfig, batch: usize) -> f64 {
    let (per_image, _) = activation_values(m);
    BASE_BYTES
        + 4.0 * 6.0 * parameter_count(m)
        + 4.0 * TRAINING_ACTIVATION_SHARE * per_image * batch as f64
}

/// Estimated peak bytes of sampling `rows` images in one batch (a guided step runs `2 x rows`
/// through the network): weights plus, at a time, the skips and the largest block's tensors.
pub fn sampling_bytes(m: &ModelConfig, rows: usize) -> f64 {
    let (per_image, largest) = activation_values(m);
    // The skips of the down path stay alive until the up path eats them: about a third of
    // the activations, plus the block being computed.
    let live = per_image / 3.0 + 2.0 * largest;
    BASE_BYTES + 4.0 * 2.0 * parameter_count(m) + 4.0 * live * 2.0 * rows as f64
}

/// `1.5 GiB`, `312 MiB`: a byte count for messages.
pub fn human_bytes(bytes: f64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    if bytes >= 1024.0 * GIB {
        format!("{:.0} TiB", bytes / (1024.0 * GIB))
    } else if bytes >= GIB {
        format!("{:.1} GiB", bytes / GIB)
    } else {
        format!("{:.0} MiB", bytes / (1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(width: usize, blocks: usize) -> ModelConfig {
        ModelConfig {
            base_channels: width,
            blocks_per_level: blocks,
            ..ModelConfig::default()
        }
    }

    #[test]
    fn parameter_count_matches_the_built_network() {
        use burn::module::Module;
        for (width, blocks, scale_shift_norm) in [(16, 1, false), (8, 2, false), (16, 1, true)] {
            let m = ModelConfig {
                scale_shift_norm,
                ..model(width, blocks)
            };
            let built = crate::UNetConfig::from(&m)
                .init(&burn::prelude::Device::flex(), 0)
                .num_params() as f64;
            let estimate = parameter_count(&m);
            assert!(
                (estimate - built).abs() / built < 0.01,
                "width {width}: estimated {estimate}, built {built}"
            );
        }
    }

    #[test]
    fn training_estimate_tracks_the_measured_peaks() {
        const MIB: f64 = 1024.0 * 1024.0;
        // Peak RSS of `train_bench train --batch 128` (MNIST model shapes), in MiB.
        for (width, blocks, measured) in [
            (16, 1, 280.0),
            (24, 1, 419.0),
            (32, 1, 559.0),
            (32, 2, 797.0),
        ] {
            let estimate = training_bytes(&model(width, blocks), 128) / MIB;
            assert!(
                (0.95..1.2).contains(&(estimate / measured)),
                "width {width} x {blocks}: estimated {estimate:.0} MiB, measured {measured} MiB"
            );
        }
    }

    #[test]
    fn estimates_grow_with_the_work() {
        let m = model(16, 1);
        assert!(training_bytes(&m, 256) > training_bytes(&m, 128));
        assert!(sampling_bytes(&m, 1000) > sampling_bytes(&m, 10));
        let huge = ModelConfig {
            image_size: 1024,
            base_channels: 256,
            ..ModelConfig::default()
        };
        assert!(
            training_bytes(&huge, 64) > 1e12,
            "{}",
            training_bytes(&huge, 64)
        );
    }
}
