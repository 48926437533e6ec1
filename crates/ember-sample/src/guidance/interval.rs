//! Guidance in a limited interval (Kynkaanniemi et al. 2024, "Applying Guidance in a Limited
//! Interval Improves Sample and Distribution Quality in Diffusion Models"): the guided denoiser
//! while the noise level lies in `[low, high]`, a plain conditional one (one forward at batch B)
//! elsewhere.

use crate::denoiser::{Denoised, Denoiser};
use burn::prelude::*;
use ember_model::NoiseSchedule;

/// `guided` while `sigma = sqrt((1 - abar) / abar)` of the timestep lies in `[low, high]`,
/// `plain` elsewhere.
pub struct GuidanceInterval<'a> {
    guided: &'a dyn Denoiser,
    plain: &'a dyn Denoiser,
    low: f64,
    high: f64,
}

impl<'a> GuidanceInterval<'a> {
    pub fn new(guided: &'a dyn Denoiser, plain: &'a dyn Denoiser, [low, high]: [f64; 2]) -> Self {
        Self {
            guided,
            plain,
            low,
            high,
        }
    }

    /// Whether timestep `t` is guided.
    pub fn contains(&self, t: usize) -> bool {
        let sigma = self.guided.schedule().sigma(Some(t));
        self.low <= sigma && sigma <= self.high
    }

    fn branch(&self, timestep: usize) -> &dyn Denoiser {
        if self.contains(timestep) {
            self.guided
        } else {
            self.plain
        }
    }
}

impl Denoiser for GuidanceInterval<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.guided.schedule()
    }

    fn denoise(&self, x: Tensor<4>, timestep: usize) -> Denoised {
        self.branch(timestep).denoise(x, timestep)
    }

    fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        self.branch(timestep).eps(x, timestep)
    }
}
