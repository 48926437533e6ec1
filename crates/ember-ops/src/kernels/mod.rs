//! The CPU kernels on plain f32 slices (contiguous, NCHW), independent of Burn.

pub mod conv;
pub mod norm;
pub mod silu;
pub(crate) mod simd;
