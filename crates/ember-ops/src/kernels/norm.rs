//! GroupNorm with an optional SiLU after it, fused: one task per (image, group), statistics and
//! normalisation in two passes over the group's values, the backward pass in two more.
//!
//! Burn builds GroupNorm from about ten generic tensor ops (reshape, mean, sub, square, mean,
//! add, sqrt, div, mul, add) and SiLU from two more, each a full pass over the activation on
//! one core; in the UNet every GroupNorm but the attention's is followed by SiLU.

use super::simd::{multiversion, sigmoid};
use rayon::prelude::*;

/// Shape of a GroupNorm input seen as `[batch, channels, spatial]`.
#[derive(Debug, Clone, Copy)]
pub struct NormShape {
    pub batch: usize,
    pub channels: usize,
    pub spatial: usize,
    pub groups: usize,
}

impl NormShape {
    fn group_len(&self) -> usize {
        self.channels / self.groups * self.spatial
    }
}

/// Mean and 1/sqrt(var + eps) of one group's values (biased variance, as Burn and PyTorch),
/// accumulated in f64 so large groups do not lose precision.
fn statistics(x: &[f32], eps: f64) -> (f32, f32) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| {
            let d = v as f64 - mean;
            d * d
        })
        .sum::<f64>()
        / n;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

multiversion! {
    fn affine_row(x: &[f32], y: &mut [f32], scale: f32, shift: f32, silu: bool) {
        if silu {
            for (y, &x) in y.iter_mut().zip(x) {
                let z = x * scale + shift;
                *y = z * sigmoid(z);
            }
        } else {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x * scale + shift;
            }
        }
    }
}

/// `y = act(gamma_c (x - mean) / sqrt(var + eps) + beta_c)` per group, `act` = SiLU or identity.
pub fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    shape: NormShape,
    eps: f64,
    silu: bool,
) -> Vec<f32> {
    let len = shape.group_len();
    let per_group = shape.channels / shape.groups;
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(len)
        .zip(x.par_chunks(len))
        .enumerate()
        .for_each(|(i, (y, x))| {
            let g = i % shape.groups;
            let (mean, rstd) = statistics(x, eps);
            for c in 0..per_group {
                let ch = g * per_group + c;
                let scale = rstd * gamma[ch];
                let shift = beta[ch] - mean * scale;
                let row = c * shape.spatial..(c + 1) * shape.spatial;
                affine_row(&x[row.clone()], &mut y[row], scale, shift, silu);
            }
        });
    y
}

multiversion! {
    /// For one channel's row: writes `dz * gamma` (the gradient wrt the normalised value) into
    /// `dxhat` and returns (sum dz * xhat, sum dz) for dgamma / dbeta.
    fn backward_row(
        x: &[f32],
        dy: &[f32],
        dxhat: &mut [f32],
        mean: f32,
        rstd: f32,
        gamma: f32,
        beta: f32,
        silu: bool,
        sums: &mut [f32; 2],
    ) {
        let (mut dgamma, mut dbeta) = (0.0f32, 0.0f32);
        for ((dxhat, &x), &dy) in dxhat.iter_mut().zip(x).zip(dy) {
            let xhat = (x - mean) * rstd;
            let dz = if silu {
                let z = xhat * gamma + beta;
                let s = sigmoid(z);
                dy * s * (1.0 + z * (1.0 - s))
            } else {
                dy
            };
            dgamma += dz * xhat;
            dbeta += dz;
            *dxhat = dz * gamma;
        }
        *sums = [dgamma, dbeta];
    }
}

multiversion! {
    /// `dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))`, in place over `dxhat`.
    fn input_grad_row(x: &[f32], d: &mut [f32], mean: f32, rstd: f32, m1: f32, m2: f32) {
        for (d, &x) in d.iter_mut().zip(x) {
            let xhat = (x - mean) * rstd;
            *d = rstd * (*d - m1 - xhat * m2);
        }
    }
}

/// Gradients of [`forward`] wrt x, gamma and beta (statistics recomputed from x).
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    dy: &[f32],
    shape: NormShape,
    eps: f64,
    silu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let len = shape.group_len();
    let per_group = shape.channels / shape.groups;
    let mut dx = vec![0.0; x.len()];
    // Per (image, group): that group's channels' (dgamma, dbeta), summed below in a fixed order
    // so the result does not depend on the thread count or timing.
    let partial: Vec<Vec<[f32; 2]>> = dx
        .par_chunks_mut(len)
        .zip(x.par_chunks(len).zip(dy.par_chunks(len)))
        .enumerate()
        .map(|(i, (dx, (x, dy)))| {
            let g = i % shape.groups;
            let (mean, rstd) = statistics(x, eps);
            let mut sums = vec![[0.0f32; 2]; per_group];
            let (mut sum_d, mut sum_dxhat) = (0f64, 0f64);
            for (c, sums) in sums.iter_mut().enumerate() {
                let ch = g * per_group + c;
                let row = c * shape.spatial..(c + 1) * shape.spatial;
                backward_row(
                    &x[row.clone()],
                    &dy[row.clone()],
                    &mut dx[row],
                    mean,
                    rstd,
                    gamma[ch],
                    beta[ch],
                    silu,
                    sums,
                );
                // sum(dxhat) = gamma sum(dz); sum(dxhat xhat) = gamma sum(dz xhat).
                sum_d += (gamma[ch] * sums[1]) as f64;
                sum_dxhat += (gamma[ch] * sums[0]) as f64;
            }
            let n = len as f64;
            let (m1, m2) = ((sum_d / n) as f32, (sum_dxhat / n) as f32);
            input_grad_row(x, dx, mean, rstd, m1, m2);
            sums
        })
        .collect();
    let mut dgamma = vec![0.0f32; shape.channels];
    let mut dbeta = vec![0.0f32; shape.channels];
    for (i, sums) in partial.iter().enumerate() {
        let g = i % shape.groups;
        for (c, [dg, db]) in sums.iter().enumerate() {
            dgamma[g * per_group + c] += dg;
            dbeta[g * per_group + c] += db;
        }
    }
    (dx, dgamma, dbeta)
}
