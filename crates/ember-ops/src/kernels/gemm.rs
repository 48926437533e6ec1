//! Single-threaded strided matrix products through the `gemm` crate.

/// A row-major (or strided) matrix operand: pointer, row stride, column stride.
#[derive(Clone, Copy)]
pub struct Operand {
    ptr: *const f32,
    row_stride: usize,
    col_stride: usize,
}

impl Operand {
    pub fn rows(data: &[f32], row_len: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            row_stride: row_len,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with rows of `row_len`.
    pub fn transposed(data: &[f32], row_len: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            row_stride: 1,
            col_stride: row_len,
        }
    }
}

/// `dst[m, n] (+)= lhs[m, k] rhs[k, n]`, single-threaded (callers parallelise over images).
/// `dst` is row-major, or column-major (the transpose of a row-major `[n, m]`) when
/// `dst_columns`.
///
/// Orientation matters for speed: gemm skips packing a column-major `lhs` whose `m` is a
/// multiple of 8, so callers put their large operand there (see conv.rs).
///
/// # Safety
/// `lhs` and `rhs` must address `m x k` and `k x n` elements inside live slices.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_columns: bool,
    accumulate: bool,
    lhs: Operand,
    rhs: Operand,
) {
    unsafe { matmul_scaled(m, n, k, dst, dst_columns, accumulate, lhs, rhs, 1.0) }
}

/// [`matmul`] with the product multiplied by `scale`.
///
/// # Safety
/// As [`matmul`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul_scaled(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_columns: bool,
    accumulate: bool,
    lhs: Operand,
    rhs: Operand,
    scale: f32,
) {
    assert!(dst.len() >= m * n);
    let (dst_rs, dst_cs) = if dst_columns { (1, m) } else { (n, 1) };
    // SAFETY: dst holds m x n elements (checked); the caller vouches for lhs and rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.ptr,
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
