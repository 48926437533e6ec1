//! The CPU kernels on plain f32 slices (contiguous, NCHW), independent of Burn.

pub mod attention;
pub mod conv;
pub(crate) mod gemm;
pub mod norm;
pub mod silu;
pub(crate) mod simd;
