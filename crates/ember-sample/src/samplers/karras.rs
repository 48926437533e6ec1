//! Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models"),
//! Algorithm 1 without stochastic churn: Euler or Heun steps of the probability-flow ODE
//! `dz/dsigma = (z - D(z, sigma)) / sigma` in `z = x / sqrt(abar)`.

use super::{Sampler, clipped};
use crate::denoiser::Denoiser;
use crate::noise::NoiseSource;
use burn::prelude::*;

/// First-order Euler steps.
#[derive(Debug, Clone, Copy)]
pub struct Euler;

/// Heun's second-order method: an Euler step, then the average of the slopes at both ends;
/// Euler for the last step to sigma = 0. With CFG++ see the module docs of `samplers/`.
#[derive(Debug, Clone, Copy)]
pub struct Heun;

impl Sampler for Euler {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor<4>,
        timesteps: &[usize],
        _noise: &mut dyn NoiseSource,
    ) -> Tensor<4> {
        ode_solve(denoiser, x, timesteps, false)
    }
}

impl Sampler for Heun {
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x: Tensor<4>,
        timesteps: &[usize],
        _noise: &mut dyn NoiseSource,
    ) -> Tensor<4> {
        ode_solve(denoiser, x, timesteps, true)
    }
}

fn ode_solve(
    denoiser: &dyn Denoiser,
    x: Tensor<4>,
    timesteps: &[usize],
    second_order: bool,
) -> Tensor<4> {
    let schedule = denoiser.schedule();
    let (mut z, ts) = ode_start(denoiser, x, timesteps);
    for (i, &t) in ts.iter().enumerate() {
        let next = ts.get(i + 1).copied();
        let (s, s_next) = (schedule.sigma(Some(t)), schedule.sigma(next));
        let x = z.clone().mul_scalar(schedule.alpha_bar(Some(t)).sqrt());
        // the slope along the re-noising prediction (the clean image's own, but for CFG++),
        // and the offset CFG++ adds to the step
        let p = clipped(denoiser, x, t);
        let d = (z.clone() - p.renoise_x0()).div_scalar(s);
        let offset = p.offset();
        let z_euler = shifted(z.clone() + d.clone().mul_scalar(s_next - s), offset.clone());
        z = match next {
            Some(tn) if second_order => {
                let x_euler = z_euler.clone().mul_scalar(schedule.alpha_bar(next).sqrt());
                let p_next = clipped(denoiser, x_euler, tn);
                let d_next = (z_euler - p_next.renoise_x0()).div_scalar(s_next);
                let z_heun = z + (d + d_next).mul_scalar((s_next - s) / 2.0);
                // the trapezoid of the two increments: their offsets averaged too
                match (offset, p_next.offset()) {
                    (None, None) => z_heun,
                    (Some(o), None) | (None, Some(o)) => z_heun + o.div_scalar(2.0),
                    (Some(o), Some(o_next)) => z_heun + (o + o_next).div_scalar(2.0),
                }
            }
            _ => z_euler,
        };
    }
    z // sigma = 0: z is the clean image
}

/// `z` moved by a CFG++ offset, if there is one.
pub(super) fn shifted(z: Tensor<4>, offset: Option<Tensor<4>>) -> Tensor<4> {
    match offset {
        Some(o) => z + o,
        None => z,
    }
}

/// Where the ODE samplers start in `z = x / sqrt(abar)`, and the timesteps left. A first
/// timestep of zero terminal SNR (`abar = 0`, sigma infinite) is stepped exactly: in the limit
/// sigma -> infinity an Euler / DPM-Solver step lands on `x0 + sigma_next * eps`, with `eps = x`.
pub(super) fn ode_start(
    denoiser: &dyn Denoiser,
    x: Tensor<4>,
    timesteps: &[usize],
) -> (Tensor<4>, Vec<usize>) {
    let schedule = denoiser.schedule();
    let ab = schedule.alpha_bar(Some(timesteps[0]));
    if ab > 0.0 {
        return (x.div_scalar(ab.sqrt()), timesteps.to_vec());
    }
    // Every prediction implies the noise `x` here, so a re-noising prediction changes nothing.
    let x0 = clipped(denoiser, x.clone(), timesteps[0]).x0;
    match timesteps.get(1) {
        Some(&next) => (
            x0 + x.mul_scalar(schedule.sigma(Some(next))),
            timesteps[1..].to_vec(),
        ),
        None => (x0, Vec::new()),
    }
}
