//! DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
//! Diffusion Probabilistic Models", Algorithm 2): a multistep solver of the data-prediction ODE
//! in `lambda = -log sigma`, second order from the second step on, first order for the first
//! step and for the last step to sigma = 0. With CFG++ see the module docs of `samplers/`.

use super::karras::{ode_start, shifted};
use super::{Sampler, clipped};
use crate::denoiser::Denoiser;
use crate::noise::NoiseSource;
use burn::prelude::*;

#[derive(Debug, Clone, Copy)]
pub struct DpmSolverPp2m;

impl Sampler for DpmSolverPp2m {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor<4>,
        timesteps: &[usize],
        _noise: &mut dyn NoiseSource,
    ) -> Tensor<4> {
        let schedule = denoiser.schedule();
        let (mut z, ts) = ode_start(denoiser, x, timesteps);
        // (previous x0 prediction, previous step size in lambda)
        let mut previous: Option<(Tensor<4>, f64)> = None;
        for (i, &t) in ts.iter().enumerate() {
            let next = ts.get(i + 1).copied();
            let (s, s_next) = (schedule.sigma(Some(t)), schedule.sigma(next));
            let x = z.clone().mul_scalar(schedule.alpha_bar(Some(t)).sqrt());
            let p = clipped(denoiser, x, t);
            if next.is_none() {
                z = p.x0; // the exact first-order step to sigma = 0
                break;
            }
            // the solver runs along the re-noising prediction (the clean image itself, but for
            // CFG++), and lands shifted by the offset of the clean image from it
            let x0 = p.renoise_x0();
            let h = s.ln() - s_next.ln(); // lambda_next - lambda
            let d = match &previous {
                Some((x0_prev, h_prev)) => {
                    let r = h_prev / h;
                    x0.clone().mul_scalar(1.0 + 1.0 / (2.0 * r))
                        - x0_prev.clone().mul_scalar(1.0 / (2.0 * r))
                }
                None => x0.clone(),
            };
            // z_next = (sigma_next / sigma) z - (exp(-h) - 1) D
            z = shifted(
                z.mul_scalar(s_next / s) - d.mul_scalar((-h).exp_m1()),
                p.offset(),
            );
            previous = Some((x0, h));
        }
        z
    }
}
