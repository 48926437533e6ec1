//! Multi-head self-attention over the pixels of a feature map, straight from the 1x1 `qkv`
//! convolution's output, forward and backward, one task per image.
//!
//! `qkv` is `[B, 3C, N]` (N pixels), read as `[B, 3, heads, d, N]`: per head, `Q`, `K` and `V`
//! are `[d, N]` row-major blocks. The output is `[B, C, N]` with head h's `O^T = V P^T` in
//! channels `h d .. (h + 1) d`, `P = softmax(Q^T K / sqrt(d))` by rows. Burn composes the same
//! from narrow / reshape / swap_dims copies, two batched matmuls and a softmax of five ops,
//! each a pass on one core; here every head's `N x N` scores stay in one small buffer.
//!
//! The backward pass recomputes `P` from `qkv` (N^2 d work, the forward's cost) rather than
//! keeping `B heads N^2` probabilities alive until the backward pass.

use super::gemm::{Operand, matmul, matmul_scaled};
use super::simd::{self, multiversion};
use rayon::prelude::*;

/// Geometry of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub batch: usize,
    pub channels: usize,
    pub pixels: usize,
    pub heads: usize,
}

impl AttentionShape {
    fn head_dim(&self) -> usize {
        self.channels / self.heads
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim() as f32).sqrt()
    }
}

multiversion! {
    /// In place: each row of `scores` (rows of `n`) becomes its softmax.
    fn softmax_rows(scores: &mut [f32], n: usize) {
        for row in scores.chunks_exact_mut(n) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
            for v in row.iter_mut() {
                *v = simd::exp(*v - max);
            }
            let inverse = 1.0 / simd::sum(row);
            for v in row.iter_mut() {
                *v *= inverse;
            }
        }
    }
}

multiversion! {
    /// In place over `dp`: `dS = P * (dP - rowsum(P * dP))`, the softmax backward.
    fn softmax_backward_rows(p: &[f32], dp: &mut [f32], n: usize) {
        for (p, dp) in p.chunks_exact(n).zip(dp.chunks_exact_mut(n)) {
            let mut acc = [0.0f32; simd::LANES];
            let whole = n / simd::LANES * simd::LANES;
            for (p, dp) in p[..whole].chunks_exact(simd::LANES).zip(dp[..whole].chunks_exact(simd::LANES)) {
                for i in 0..simd::LANES {
                    acc[i] += p[i] * dp[i];
                }
            }
            let dot = acc.iter().sum::<f32>()
                + p[whole..].iter().zip(&dp[whole..]).map(|(a, b)| a * b).sum::<f32>();
            for (dp, &p) in dp.iter_mut().zip(p) {
                *dp = p * (*dp - dot);
            }
        }
    }
}

/// The `[d, N]` blocks of head `h` in one image's `[3C, N]` slice: (Q, K, V).
fn head_blocks<'a>(s: &AttentionShape, qkv: &'a [f32], h: usize) -> [&'a [f32]; 3] {
    let block = s.head_dim() * s.pixels;
    let at = |part: usize| {
        let start = (part * s.channels + h * s.head_dim()) * s.pixels;
        &qkv[start..start + block]
    };
    [at(0), at(1), at(2)]
}

/// `P = softmax(Q^T K * scale)` into `p` (`N x N`).
fn probabilities(s: &AttentionShape, q: &[f32], k: &[f32], p: &mut [f32]) {
    let (n, d) = (s.pixels, s.head_dim());
    // SAFETY: q and k are [d, N] blocks, p holds N x N (sized by the callers).
    unsafe {
        matmul_scaled(
            n,
            n,
            d,
            p,
            false,
            false,
            Operand::transposed(q, n),
            Operand::rows(k, n),
            s.scale(),
        );
    }
    softmax_rows(p, n);
}

/// The attention output `[B, C, N]`.
pub fn forward(s: &AttentionShape, qkv: &[f32]) -> Vec<f32> {
    let (n, c, d) = (s.pixels, s.channels, s.head_dim());
    assert_eq!(qkv.len(), s.batch * 3 * c * n);
    assert_eq!(c % s.heads, 0);
    let mut out = super::zeros(s.batch * c * n);
    out.par_chunks_mut(c * n).enumerate().for_each_init(
        || vec![0.0; n * n],
        |p, (b, out_b)| {
            let qkv_b = &qkv[b * 3 * c * n..(b + 1) * 3 * c * n];
            for (h, o) in out_b.chunks_exact_mut(d * n).enumerate() {
                let [q, k, v] = head_blocks(s, qkv_b, h);
                probabilities(s, q, k, p);
                // SAFETY: v is [d, N], p is N x N, o is [d, N].
                unsafe {
                    matmul(
                        d,
                        n,
                        n,
                        o,
                        false,
                        false,
                        Operand::rows(v, n),
                        Operand::transposed(p, n),
                    )
                };
            }
        },
    );
    out
}

/// The gradient wrt `qkv` (`[B, 3C, N]`) of [`forward`], given the output's gradient.
pub fn backward(s: &AttentionShape, qkv: &[f32], d_out: &[f32]) -> Vec<f32> {
    let (n, c, d) = (s.pixels, s.channels, s.head_dim());
    assert_eq!(qkv.len(), s.batch * 3 * c * n);
    assert_eq!(d_out.len(), s.batch * c * n);
    let mut d_qkv = super::zeros(qkv.len());
    d_qkv.par_chunks_mut(3 * c * n).enumerate().for_each_init(
        || (vec![0.0; n * n], vec![0.0; n * n]),
        |(p, dp), (b, d_qkv_b)| {
            let qkv_b = &qkv[b * 3 * c * n..(b + 1) * 3 * c * n];
            for h in 0..s.heads {
                let [q, k, v] = head_blocks(s, qkv_b, h);
                let d_o = &d_out[(b * c + h * d) * n..(b * c + (h + 1) * d) * n];
                probabilities(s, q, k, p);
                let block = |part: usize| (part * c + h * d) * n..(part * c + (h + 1) * d) * n;
                // SAFETY: every operand is a [d, N] block or an N x N buffer, as sized above.
                unsafe {
                    // dV = dO^T P.
                    matmul(
                        d,
                        n,
                        n,
                        &mut d_qkv_b[block(2)],
                        false,
                        false,
                        Operand::rows(d_o, n),
                        Operand::rows(p, n),
                    );
                    // dP = dO V^T, then dS = softmax backward.
                    matmul(
                        n,
                        n,
                        d,
                        dp,
                        false,
                        false,
                        Operand::transposed(d_o, n),
                        Operand::rows(v, n),
                    );
                    softmax_backward_rows(p, dp, n);
                    // dQ = scale K dS^T, dK = scale Q dS.
                    let ds = &*dp;
                    matmul_scaled(
                        d,
                        n,
                        n,
                        &mut d_qkv_b[block(0)],
                        false,
                        false,
                        Operand::rows(k, n),
                        Operand::transposed(ds, n),
                        s.scale(),
                    );
                    matmul_scaled(
                        d,
                        n,
                        n,
                        &mut d_qkv_b[block(1)],
                        false,
                        false,
                        Operand::rows(q, n),
                        Operand::rows(ds, n),
                        s.scale(),
                    );
                }
            }
        },
    );
    d_qkv
}
