//! SiLU, `x * sigmoid(x)`, forward and backward in one pass each, in parallel chunks.

use super::simd::{multiversion, sigmoid};
use rayon::prelude::*;

/// Elements per parallel task: big enough to amortise a task, small enough to split a
/// [128, 32, 14, 14] activation over a few threads.
const CHUNK: usize = 1 << 15;

multiversion! {
    fn forward_chunk(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * sigmoid(x);
        }
    }
}

multiversion! {
    fn backward_chunk(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
            let s = sigmoid(x);
            *dx = dy * s * (1.0 + x * (1.0 - s));
        }
    }
}

/// `y = x * sigmoid(x)`.
pub fn forward(x: &[f32]) -> Vec<f32> {
    let mut y = super::zeros(x.len());
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| forward_chunk(x, y));
    y
}

/// `dx = dy * d/dx (x * sigmoid(x)) = dy * s * (1 + x (1 - s))`, `s = sigmoid(x)`.
pub fn backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), dy.len());
    let mut dx = super::zeros(x.len());
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(dx, (x, dy))| backward_chunk(x, dy, dx));
    dx
}
