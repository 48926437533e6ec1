//! The samplers, one file per family, all behind one signature ([`Sampler::sample`]): a
//! denoiser (bare or wrapped in guidance), the starting `x` at the first timestep, the
//! timesteps to visit (noisiest first, worked out by the caller: see [`crate::timesteps`]), and
//! a noise source. All finish at the clean image.
//!
//! - `ddim.rs`: DDIM (Song et al. 2021) with `eta`, and DDPM (Ho et al. 2020), its `eta = 1`.
//! - `karras.rs`: Euler and Heun steps of the probability-flow ODE (Karras et al. 2022).
//! - `dpm_solver.rs`: DPM-Solver++(2M) (Lu et al. 2022).
//!
//! The ODE samplers work in the variance-exploding view of the same process:
//! `z = x / sqrt(abar) = x0 + sigma * eps`, where the denoiser's `x0` (clipped to the data range
//! [-1, 1], as DDIM does) is `D(z, sigma)`. They visit the schedule's discrete noise levels, so
//! the model is only ever asked about timesteps it was trained on.
//!
//! # CFG++: re-noising with another prediction
//! A denoiser may return, besides the clean image `g` a step moves to, a re-noising prediction
//! `r` ([`Denoised::renoise`]: CFG++'s unconditional clean image) whose noise the step keeps.
//! In the ODE view, with `eps_r = (z - r) / sigma`, every sampler takes its ordinary step
//! along `r` (its slopes and its multistep history are `r`'s) and lands shifted by the offset
//! `g - r`. The first-order step is exactly CFG++ (Chung et al. 2024): DDIM's
//! `x_prev = sqrt(abar_prev) g + sqrt(1 - abar_prev - s^2) eps_r + s noise`, Euler's
//! `z_next = g + sigma_next eps_r` (ComfyUI's `euler_cfg_pp`). Heun averages the two Euler
//! increments it computes, offsets included: `z_next = z + (sigma_next - sigma) (eps_r + eps_r')
//! / 2 + (o + o') / 2`, its predictor being the CFG++ Euler step. DPM-Solver++(2M) extrapolates
//! along `r`'s history, `z_next = (sigma_next / sigma) z - expm1(-h) (r + (r - r_prev) / 2k) +
//! (g - r)`, where ComfyUI's `dpmpp_2m_cfg_pp` takes the difference `g - r_prev` instead (so its
//! second-order term carries part of the offset again). Without `renoise` every sampler runs
//! its ordinary arithmetic, unchanged; with `r = g` the offsets are exact zeros and each step
//! equals the ordinary one bit for bit.

mod ddim;
mod dpm_solver;
mod karras;

pub use ddim::{Ddim, Ddpm};
pub use dpm_solver::DpmSolverPp2m;
pub use karras::{Euler, Heun};

use crate::denoiser::{Denoised, Denoiser};
use crate::noise::NoiseSource;
use burn::prelude::*;
use ember_config::SamplerKind;

/// One sampling algorithm.
pub trait Sampler {
    /// Runs from `x` (noise, or a noised image for img2img) at `timesteps[0]` down to a clean
    /// sample in [-1, 1], calling `denoiser` at each timestep of `timesteps` (descending).
    ///
    /// # Shapes
    /// - x: `[batch, ch, h, w]` -> `[batch, ch, h, w]`
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor<4>,
        timesteps: &[usize],
        noise: &mut dyn NoiseSource,
    ) -> Tensor<4>;
}

/// The sampler a config names; `eta` is DDIM's (the others have none).
pub fn sampler(kind: SamplerKind, eta: f64) -> Box<dyn Sampler> {
    match kind {
        SamplerKind::Ddim => Box::new(Ddim { eta }),
        SamplerKind::Ddpm => Box::new(Ddpm),
        SamplerKind::DpmppTwoM => Box::new(DpmSolverPp2m),
        SamplerKind::Euler => Box::new(Euler),
        SamplerKind::Heun => Box::new(Heun),
    }
}

/// The denoiser's prediction at `x`, clipped to the data range [-1, 1] (the clean image and
/// the re-noising prediction alike).
fn clipped(denoiser: &dyn Denoiser, x: Tensor<4>, t: usize) -> Denoised {
    denoiser.denoise(x, t).map(|p| p.clamp(-1.0, 1.0))
}

#[cfg(test)]
mod tests;
