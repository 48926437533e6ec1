//! The geometry of a convolution, shared by the im2col (`conv.rs`) and Winograd (`winograd.rs`)
//! kernels.

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvShape {
    pub fn h_out(&self) -> usize {
        (self.h + 2 * self.padding - self.kh) / self.stride + 1
    }

    pub fn w_out(&self) -> usize {
        (self.w + 2 * self.padding - self.kw) / self.stride + 1
    }

    /// Rows of the im2col matrix (inner dimension of the products).
    pub(crate) fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// Output pixels per channel.
    pub(crate) fn l(&self) -> usize {
        self.h_out() * self.w_out()
    }

    pub(crate) fn image_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    /// Stride 1 and an output of the input's size (e.g. 3x3 with padding 1).
    pub(crate) fn same_size(&self) -> bool {
        self.stride == 1 && self.h_out() == self.h && self.w_out() == self.w
    }

    /// Images per matrix product, `G`: enough that the product's pixel dimension `G L` is a
    /// multiple of 8 (gemm then reads the column-major patch matrix in place instead of packing
    /// it) and at least 256 (the weights are packed once per 256 pixels or more, and the weight
    /// gradient's inner dimension is that long). It depends on the shape only, never on the
    /// thread count, and neither do the results.
    pub fn images_per_product(&self) -> usize {
        group_size(self.l())
    }

    pub(crate) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// The range of output columns `ow` whose input column `ow * stride + kj - padding` lies
    /// inside the image, for any stride.
    pub(crate) fn strided_columns(&self, kj: usize) -> std::ops::Range<usize> {
        // ow * stride + kj >= padding  and  ow * stride + kj < w + padding.
        let lo = self
            .padding
            .saturating_sub(kj)
            .div_ceil(self.stride)
            .min(self.w_out());
        let hi = (self.w + self.padding)
            .saturating_sub(kj)
            .div_ceil(self.stride)
            .min(self.w_out());
        lo..hi.max(lo)
    }
}

/// Images per product for images of `columns` matrix columns each (see
/// [`ConvShape::images_per_product`]).
pub(crate) fn group_size(columns: usize) -> usize {
    let columns = columns.max(1);
    let mut g = 8 / gcd(columns, 8);
    while g * columns < 256 {
        g *= 2;
    }
    g
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
