//! The CPU kernels on plain f32 slices (contiguous, NCHW), independent of Burn.

pub mod attention;
pub mod conv;
pub(crate) mod gemm;
pub mod norm;
pub mod shape;
pub mod silu;
pub(crate) mod simd;
pub mod winograd;

use rayon::prelude::*;
use std::cell::RefCell;

/// A zeroed buffer for a kernel's output, zeroed in parallel: `vec![0.0; len]` would zero it
/// on the calling thread while the pool waits (the allocator keeps freed memory, so large
/// buffers are not fresh zero pages but need a real memset).
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    let mut buffer = Vec::with_capacity(len);
    buffer
        .spare_capacity_mut()
        .par_chunks_mut(1 << 16)
        .for_each(|chunk| chunk.fill(std::mem::MaybeUninit::new(0.0)));
    // SAFETY: all `len` elements were initialised just above.
    unsafe { buffer.set_len(len) };
    buffer
}

/// How many scratch buffers a kernel may ask for at once.
const SCRATCH_BUFFERS: usize = 4;

thread_local! {
    /// Per-thread scratch for patch matrices, reused across calls instead of allocating and
    /// zeroing one per task.
    static SCRATCH: RefCell<[Vec<f32>; SCRATCH_BUFFERS]> =
        const { RefCell::new([Vec::new(), Vec::new(), Vec::new(), Vec::new()]) };
}

/// Runs `f` with `N` (at most [`SCRATCH_BUFFERS`]) scratch buffers of the given lengths
/// (contents unspecified: callers overwrite what they read). Must not be nested on one thread.
pub(crate) fn with_scratch<const N: usize, R>(
    lengths: [usize; N],
    f: impl FnOnce([&mut [f32]; N]) -> R,
) -> R {
    const { assert!(N <= SCRATCH_BUFFERS) };
    SCRATCH.with(|cell| {
        let mut buffers = cell.borrow_mut();
        let mut free = buffers.iter_mut();
        let slices = lengths.map(|len| {
            let buffer = free.next().expect("N <= SCRATCH_BUFFERS");
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
            &mut buffer[..len]
        });
        f(slices)
    })
}

/// Seeded values in [-1, 1) (xorshift) for the kernels' tests.
#[cfg(test)]
pub(crate) fn test_values(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}
