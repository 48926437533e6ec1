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

mod ddim;
mod dpm_solver;
mod karras;

pub use ddim::{Ddim, Ddpm};
pub use dpm_solver::DpmSolverPp2m;
pub use karras::{Euler, Heun};

use crate::denoiser::Denoiser;
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

/// The denoiser's clean image at `x`, clipped to the data range [-1, 1].
fn clipped(denoiser: &dyn Denoiser, x: Tensor<4>, t: usize) -> Tensor<4> {
    denoiser.denoise(x, t).clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests;
