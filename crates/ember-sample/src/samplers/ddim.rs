//! DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12), with `eta`
//! interpolating between deterministic DDIM (0) and DDPM-like ancestral steps (1), and DDPM
//! (Ho et al. 2020, Algorithm 2) as the `eta = 1` case.

use super::{Sampler, clipped};
use crate::denoiser::Denoiser;
use crate::noise::NoiseSource;
use burn::prelude::*;

/// DDIM with stochasticity `eta` in [0, 1]. With a re-noising prediction (CFG++) the
/// direction term and the noise are the re-noising prediction's (Chung et al. 2024).
#[derive(Debug, Clone, Copy)]
pub struct Ddim {
    pub eta: f64,
}

impl Sampler for Ddim {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor<4>,
        timesteps: &[usize],
        noise: &mut dyn NoiseSource,
    ) -> Tensor<4> {
        let schedule = denoiser.schedule();
        let device = x.device();
        let shape = x.dims();
        let mut x = x;
        for (i, &t) in timesteps.iter().enumerate() {
            let prev = timesteps.get(i + 1).copied();
            let ab_t = schedule.alpha_bar(Some(t));
            let ab_prev = schedule.alpha_bar(prev);

            // 1. the clean image, clipped to the data range, and the noise re-derived from it
            //    (CFG++: from the re-noising prediction) so the two stay consistent
            let d = clipped(denoiser, x.clone(), t);
            let eps = schedule.eps_from_x0(x, d.renoise_x0(), t);
            let x0 = d.x0;

            // 2. step to the previous timestep (eq. 12), adding sigma-scaled noise when eta > 0
            let sigma = self.eta * ((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)).sqrt();
            let dir = (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
            x = x0.mul_scalar(ab_prev.sqrt()) + eps.mul_scalar(dir);
            if sigma > 0.0 {
                x = x + noise.normal(shape, &device).mul_scalar(sigma);
            }
        }
        x
    }
}

/// DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) on a strided subset of timesteps:
/// each step draws `x_prev` from the posterior `q(x_prev | x_t, x0)` with the predicted `x0`.
/// That posterior is exactly DDIM's step with `eta = 1` (Song et al. 2021, eq. 16).
#[derive(Debug, Clone, Copy)]
pub struct Ddpm;

impl Sampler for Ddpm {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor<4>,
        timesteps: &[usize],
        noise: &mut dyn NoiseSource,
    ) -> Tensor<4> {
        Ddim { eta: 1.0 }.sample(denoiser, x, timesteps, noise)
    }
}
