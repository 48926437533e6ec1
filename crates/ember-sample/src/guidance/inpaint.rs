//! Inpainting and outpainting (the reference article's section 6) as a denoiser wrapper:
//! outpainting is inpainting on a larger canvas whose border is the region to generate (see
//! `request.rs`, [`crate::InitImage::outpaint`]).

use crate::denoiser::{Denoised, Denoiser};
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

    /// The kept pixels are known exactly, so both the clean image and a CFG++ re-noising
    /// prediction take the source there: a kept pixel steps as in an unguided run.
    fn denoise(&self, x: Tensor<4>, timestep: usize) -> Denoised {
        let d = self.inner.denoise(x, timestep);
        let [_, c, _, _] = d.x0.dims();
        let keep = self.keep.clone().repeat_dim(1, c);
        let free = keep.clone().neg().add_scalar(1.0);
        d.map(|p| self.source.clone() * keep.clone() + p * free.clone())
    }
}
