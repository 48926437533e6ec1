//! Guidance schedules: the scale as a function of the timestep, as MAR's linear CFG (Li et al.
//! 2024, "Autoregressive Image Generation without Vector Quantization") raises it
//! from 1 to `s` over the generation, and as Wang et al. 2024 ("Analysis of Classifier-Free
//! Guidance Weight Schedulers") compare linear and cosine shapes.
//!
//! The schedule is a function of the timestep's position `p = 1 - t / (T - 1)` among the T
//! training timesteps (0 at the noisiest, 1 at the cleanest), not of the step counter, so a
//! denoiser needs no state to know it and every sampler, spacing and img2img strength sees the
//! same scale at the same noise level:
//!
//! ```text
//! w(t) = 1 + (s - 1) f(p)      constant: w = s;  linear-up: f = p;
//!                              linear-down: f = 1 - p;  cosine: f = (1 - cos(pi p)) / 2
//! ```
//!
//! `w = 1` is no guidance in Ember's convention (for CFG++ it moves lambda between 1 and `s`).

use ember_config::GuidanceSchedule;
use ember_model::NoiseSchedule;

/// A guidance scale `s` under a schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleSchedule {
    pub scale: f64,
    pub schedule: GuidanceSchedule,
}

impl ScaleSchedule {
    pub fn new(scale: f64, schedule: GuidanceSchedule) -> Self {
        Self { scale, schedule }
    }

    /// The scale at training timestep `t` of `noise` (exactly `s` for a constant schedule).
    pub fn at(&self, t: usize, noise: &NoiseSchedule) -> f64 {
        let s = self.scale;
        let p = 1.0 - t as f64 / (noise.len() - 1) as f64;
        let f = match self.schedule {
            GuidanceSchedule::Constant => return s,
            GuidanceSchedule::LinearUp => p,
            GuidanceSchedule::LinearDown => 1.0 - p,
            GuidanceSchedule::Cosine => (1.0 - (std::f64::consts::PI * p).cos()) / 2.0,
        };
        1.0 + (s - 1.0) * f
    }
}

impl From<f64> for ScaleSchedule {
    /// A constant scale.
    fn from(scale: f64) -> Self {
        Self::new(scale, GuidanceSchedule::Constant)
    }
}
