//! Inpainting (the reference article's section 6) as a denoiser wrapper.

use crate::denoiser::Denoiser;
use burn::prelude::*;
use ember_model::NoiseSchedule;

/// Where `keep` is 1 the predicted clean image is replaced by `source`, so every sampler
/// carries the kept pixels to the source while the rest is generated around them. Samplers end
/// on the predicted clean image, so the kept pixels end equal to the source.
pub struct Inpaint<'a> {
    inner: &'a dyn Denoiser,
    /// `[batch, ch, h, w]` in [-1, 1]
    source: Tensor<4>,
    /// `[batch, 1, h, w]`: 1 = keep the source pixel, 0 = generate
    keep: Tensor<4>,
}

impl<'a> Inpaint<'a> {
    pub fn new(inner: &'a dyn Denoiser, source: Tensor<4>, keep: Tensor<4>) -> Self {
        Self {
            inner,
            source,
            keep,
        }
    }
}

impl Denoiser for Inpaint<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.inner.schedule()
    }

    fn denoise(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let x0 = self.inner.denoise(x, timestep);
        let [_, c, _, _] = x0.dims();
        let keep = self.keep.clone().repeat_dim(1, c);
        self.source.clone() * keep.clone() + x0 * keep.neg().add_scalar(1.0)
    }
}
