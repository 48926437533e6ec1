//! Dynamic thresholding (Saharia et al. 2022, Imagen, section 2.3) of the predicted clean image.

use crate::denoiser::{Denoised, Denoiser};
use burn::prelude::*;
use ember_model::NoiseSchedule;

/// Per sample, `s` = the `percentile` of `|x0|` (at least 1); `x0` is clipped to `[-s, s]` and
/// divided by `s`.
pub struct DynamicThreshold<'a> {
    inner: &'a dyn Denoiser,
    percentile: f64,
}

impl<'a> DynamicThreshold<'a> {
    pub fn new(inner: &'a dyn Denoiser, percentile: f64) -> Self {
        Self { inner, percentile }
    }
}

impl Denoiser for DynamicThreshold<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.inner.schedule()
    }

    /// Thresholds the clean image, and CFG++'s re-noising prediction the same way (it stands
    /// where the clean image stands in a plain step).
    fn denoise(&self, x: Tensor<4>, timestep: usize) -> Denoised {
        self.inner
            .denoise(x, timestep)
            .map(|x0| threshold(x0, self.percentile))
    }
}

/// Per sample, `x0` clipped to `[-s, s]` and divided by `s`, `s` the `percentile` of `|x0|`
/// (at least 1).
fn threshold(x0: Tensor<4>, percentile: f64) -> Tensor<4> {
    let device = x0.device();
    let [b, c, h, w] = x0.dims();
    let values = x0.into_data().try_into_vec::<f32>().expect("f32 tensor");
    let n = c * h * w;
    let mut out = Vec::with_capacity(values.len());
    for row in values.chunks_exact(n) {
        let mut abs: Vec<f32> = row.iter().map(|v| v.abs()).collect();
        abs.sort_by(f32::total_cmp);
        let rank = ((n - 1) as f64 * percentile).round() as usize;
        let s = abs[rank].max(1.0);
        out.extend(row.iter().map(|v| v.clamp(-s, s) / s));
    }
    Tensor::<4>::from_data(TensorData::new(out, [b, c, h, w]), &device)
}
