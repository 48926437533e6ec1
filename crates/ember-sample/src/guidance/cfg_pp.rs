//! CFG++ (Chung, Kim, Park, Nam & Ye 2024, "CFG++: Manifold-constrained Classifier Free
//! Guidance for Diffusion Models", arXiv 2406.08070): the clean image of CFG at a scale lambda
//! in [0, 1], which interpolates between the unconditional and the conditional estimate instead
//! of extrapolating past the conditional one, and a step that re-noises it with the
//! *unconditional* noise. For DDIM (their Algorithm with CFG++):
//!
//! ```text
//! x0_l   = x0_u + lambda (x0_c - x0_u)
//! x_prev = sqrt(abar_prev) x0_l + sqrt(1 - abar_prev) eps_u
//! ```
//!
//! where plain CFG would re-noise with `eps_l`. The guided clean image is CFG's (the network
//! outputs combined, then converted); the unconditional clean image goes along as
//! [`Denoised::renoise`], and each sampler steps with its noise (see `samplers/` for the
//! form each sampler takes). lambda = 0 is the unconditional sampler exactly; lambda = 1 the
//! conditional clean image re-noised unconditionally (not the conditional sampler). CFG++
//! applies its guidance once per step, whatever the step size, so its effect grows with the
//! number of steps.

use super::branches::Branches;
use super::cfg::guide;
use super::schedule::ScaleSchedule;
use crate::denoiser::{Denoised, Denoiser};
use burn::prelude::*;
use ember_model::NoiseSchedule;

pub struct CfgPlusPlus<'a> {
    branches: Box<dyn Branches + 'a>,
    /// lambda, in [0, 1] (under a schedule, between 1 and lambda).
    lambda: ScaleSchedule,
}

impl<'a> CfgPlusPlus<'a> {
    pub fn new(branches: impl Branches + 'a, lambda: impl Into<ScaleSchedule>) -> Self {
        Self {
            branches: Box::new(branches),
            lambda: lambda.into(),
        }
    }
}

impl Denoiser for CfgPlusPlus<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.branches.schedule()
    }

    fn denoise(&self, x: Tensor<4>, timestep: usize) -> Denoised {
        let s = self.schedule();
        let lambda = self.lambda.at(timestep, s);
        // lambda = 0 needs the unconditional branch alone.
        if lambda == 0.0 {
            let uncond = self.branches.uncond(x.clone(), timestep);
            let x0 = s.output_to_x0(uncond, x, timestep);
            return Denoised {
                x0: x0.clone(),
                renoise: Some(x0),
            };
        }
        let (cond, uncond) = self.branches.both(x.clone(), timestep);
        let guided = guide(cond, uncond.clone(), lambda);
        Denoised {
            x0: s.output_to_x0(guided, x.clone(), timestep),
            renoise: Some(s.output_to_x0(uncond, x, timestep)),
        }
    }
}
