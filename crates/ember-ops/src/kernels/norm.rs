//! GroupNorm with an optional SiLU after it, fused: one task per (image, group), statistics and
//! normalisation in two passes over the group's values, the backward pass in two more.
//!
//! Burn builds GroupNorm from about ten generic tensor ops (reshape, mean, sub, square, mean,
//! add, sqrt, div, mul, add) and SiLU from two more, each a full pass over the activation on
//! one core; in the UNet every GroupNorm but the attention's is followed by SiLU.

use super::simd::{self, LANES, multiversion, sigmoid};
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

multiversion! {
    /// Per-channel-row partial sums of one group, `[sum x, sum (x - center)^2]` each.
    fn row_sums(x: &[f32], center: f32, out: &mut [f32; 2]) {
        *out = [simd::sum(x), simd::sum_squared_deviation(x, center)];
    }
}

/// Mean and 1/sqrt(var + eps) of one group's values (biased variance, as Burn and PyTorch),
/// two-pass, with per-row partial sums combined in f64 so large groups keep their precision.
fn statistics(x: &[f32], rows: usize, eps: f64) -> (f32, f32) {
    let n = x.len() as f64;
    let row = x.len() / rows;
    let mut sums = [0.0f32; 2];
    let mut total = 0f64;
    for r in x.chunks_exact(row) {
        row_sums(r, 0.0, &mut sums);
        total += sums[0] as f64;
    }
    let mean = (total / n) as f32;
    let mut squares = 0f64;
    for r in x.chunks_exact(row) {
        row_sums(r, mean, &mut sums);
        squares += sums[1] as f64;
    }
    (mean, (1.0 / (squares / n + eps).sqrt()) as f32)
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
    let mut y = super::zeros(x.len());
    y.par_chunks_mut(len)
        .zip(x.par_chunks(len))
        .enumerate()
        .for_each(|(i, (y, x))| {
            let g = i % shape.groups;
            let (mean, rstd) = statistics(x, per_group, eps);
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
        let grad = |x: f32, dy: f32| {
            let xhat = (x - mean) * rstd;
            let dz = if silu {
                let z = xhat * gamma + beta;
                let s = sigmoid(z);
                dy * s * (1.0 + z * (1.0 - s))
            } else {
                dy
            };
            (xhat, dz)
        };
        let (mut acc_gamma, mut acc_beta) = ([0.0f32; LANES], [0.0f32; LANES]);
        let whole = x.len() / LANES * LANES;
        for ((dxhat, x), dy) in dxhat[..whole]
            .chunks_exact_mut(LANES)
            .zip(x[..whole].chunks_exact(LANES))
            .zip(dy[..whole].chunks_exact(LANES))
        {
            for i in 0..LANES {
                let (xhat, dz) = grad(x[i], dy[i]);
                acc_gamma[i] += dz * xhat;
                acc_beta[i] += dz;
                dxhat[i] = dz * gamma;
            }
        }
        let (mut dgamma, mut dbeta) = (acc_gamma.iter().sum::<f32>(), acc_beta.iter().sum::<f32>());
        for ((dxhat, &x), &dy) in dxhat[whole..].iter_mut().zip(&x[whole..]).zip(&dy[whole..]) {
            let (xhat, dz) = grad(x, dy);
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
    let mut dx = super::zeros(x.len());
    // Per (image, group): that group's channels' (dgamma, dbeta), summed below in a fixed order
    // so the result does not depend on the thread count or timing.
    let partial: Vec<Vec<[f32; 2]>> = dx
        .par_chunks_mut(len)
        .zip(x.par_chunks(len).zip(dy.par_chunks(len)))
        .enumerate()
        .map(|(i, (dx, (x, dy)))| {
            let g = i % shape.groups;
            let (mean, rstd) = statistics(x, per_group, eps);
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
