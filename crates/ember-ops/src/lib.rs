//! Fused CPU operations for Ember's UNet: convolution, GroupNorm (+ SiLU), SiLU and multi-head
//! self-attention, each with a hand-written backward pass, running on the Flex backend through Burn's backend-extension
//! API (`extension.rs`) and falling back to Burn's stock ops on every other backend.
//!
//! Files: `kernels/conv.rs` (convolution as im2col products), `kernels/winograd.rs` (3x3
//! convolutions by Winograd F(2x2, 3x3) where its tiles fit: 14x14, 28x28), `kernels/shape.rs`
//! (their shared geometry), `kernels/norm.rs`, `kernels/silu.rs`, `kernels/attention.rs`,
//! `kernels/gemm.rs` (the matrix products), `kernels/simd.rs` (vectorised maths, AVX2 dispatch).
//!
//! The functions take Burn's own modules (`Conv2d`, `GroupNorm`), so parameters, checkpoints
//! and initialisation are unchanged; only the arithmetic is replaced. Why each kernel exists,
//! and what it measured, is in `scripts/bench/NOTES.md`.
//!
//! `EMBER_STOCK_OPS=1` turns the fused path off (Burn's ops everywhere), for A/B measurements.

mod extension;
pub mod kernels;

pub use extension::EmberOps;

use burn::backend::{Dispatch, DispatchDevice};
use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::DType;
use std::sync::OnceLock;

/// Whether the fused kernels are on (unless `EMBER_STOCK_OPS` is set to something other than
/// `0`), read once.
pub fn fused_ops_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("EMBER_STOCK_OPS").map_or(true, |v| v == "0"))
}

/// True for f32 tensors on the Flex backend, with or without autodiff.
fn runs_fused<const D: usize>(x: &Tensor<D>) -> bool {
    if !fused_ops_enabled() || x.dtype() != DType::F32 {
        return false;
    }
    match x.device().as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(&**inner, DispatchDevice::Flex(_)),
        // Unreachable in CPU-only builds, where Flex and Autodiff are the only devices.
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// The symmetric padding of a convolution, if it has one.
fn symmetric_padding(padding: &PaddingConfig2d) -> Option<usize> {
    match *padding {
        PaddingConfig2d::Valid => Some(0),
        PaddingConfig2d::Explicit(top, left, bottom, right)
            if top == left && left == bottom && bottom == right =>
        {
            Some(top)
        }
        _ => None,
    }
}

/// `conv.forward(x)`, on the fused kernel when the layer is a plain one (bias, groups 1,
/// dilation 1, equal strides and symmetric padding).
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let plain = conv.groups == 1 && conv.dilation == [1, 1] && conv.stride[0] == conv.stride[1];
    match (&conv.bias, symmetric_padding(&conv.padding)) {
        (Some(bias), Some(padding)) if plain && runs_fused(&x) => {
            Tensor::from_dispatch(<Dispatch as EmberOps>::ember_conv2d(
                x.into_dispatch(),
                conv.weight.val().into_dispatch(),
                bias.val().into_dispatch(),
                conv.stride[0],
                padding,
            ))
        }
        _ => conv.forward(x),
    }
}

/// The layer's gamma and beta when the fused GroupNorm can take the layer and `x`.
fn fusable_norm<'a, const D: usize>(
    norm: &'a GroupNorm,
    x: &Tensor<D>,
) -> Option<(&'a Param<Tensor<1>>, &'a Param<Tensor<1>>)> {
    let channels = x.dims()[1];
    let layer_fits =
        norm.affine && channels == norm.num_channels && channels.is_multiple_of(norm.num_groups);
    match (&norm.gamma, &norm.beta) {
        (Some(gamma), Some(beta)) if layer_fits && runs_fused(x) => Some((gamma, beta)),
        _ => None,
    }
}

fn fused_group_norm<const D: usize>(
    norm: &GroupNorm,
    x: Tensor<D>,
    (gamma, beta): (&Param<Tensor<1>>, &Param<Tensor<1>>),
    silu: bool,
) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as EmberOps>::ember_group_norm(
        x.into_dispatch(),
        gamma.val().into_dispatch(),
        beta.val().into_dispatch(),
        norm.num_groups,
        norm.epsilon,
        silu,
    ))
}

/// `norm.forward(x)`.
pub fn group_norm<const D: usize>(norm: &GroupNorm, x: Tensor<D>) -> Tensor<D> {
    match fusable_norm(norm, &x) {
        Some(params) => fused_group_norm(norm, x, params, false),
        None => norm.forward(x),
    }
}

/// `silu(norm.forward(x))` in one pass.
pub fn group_norm_silu<const D: usize>(norm: &GroupNorm, x: Tensor<D>) -> Tensor<D> {
    match fusable_norm(norm, &x) {
        Some(params) => fused_group_norm(norm, x, params, true),
        None => burn::tensor::activation::silu(norm.forward(x)),
    }
}

/// `x * sigmoid(x)`.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if runs_fused(&x) {
        Tensor::from_dispatch(<Dispatch as EmberOps>::ember_silu(x.into_dispatch()))
    } else {
        burn::tensor::activation::silu(x)
    }
}

/// Multi-head self-attention over the pixels of a feature map, from the output of its qkv
/// projection: `[B, 3C, H, W]`, read as `[B, 3, heads, C / heads, H W]`, to `[B, C, H, W]`
/// (each head's `softmax(Q^T K / sqrt(d)) V`, heads concatenated along the channels).
pub fn attention(qkv: Tensor<4>, heads: usize) -> Tensor<4> {
    if runs_fused(&qkv) {
        Tensor::from_dispatch(<Dispatch as EmberOps>::ember_attention(
            qkv.into_dispatch(),
            heads,
        ))
    } else {
        attention_reference(qkv, heads)
    }
}

/// [`attention`] from Burn's stock ops.
pub fn attention_reference(qkv: Tensor<4>, heads: usize) -> Tensor<4> {
    let [b, c3, h, w] = qkv.dims();
    let (c, n) = (c3 / 3, h * w);
    let d = c / heads;
    let qkv = qkv.reshape([b, 3, heads, d, n]);
    let part = |i: usize| qkv.clone().narrow(1, i, 1).reshape([b, heads, d, n]);
    let q = part(0).swap_dims(2, 3); // [b, heads, n, d]
    let k = part(1); // [b, heads, d, n]
    let v = part(2).swap_dims(2, 3); // [b, heads, n, d]
    let scores = q.matmul(k).mul_scalar(1.0 / (d as f64).sqrt()); // [b, heads, n, n]
    let out = burn::tensor::activation::softmax(scores, 3).matmul(v); // [b, heads, n, d]
    out.swap_dims(2, 3).reshape([b, c, h, w])
}

#[cfg(test)]
mod tests;
