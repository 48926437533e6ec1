//! CFG-Zero* (Fan, Zheng, Yeh & Liu 2025, "CFG-Zero*: Improved Classifier-Free Guidance for
//! Flow Matching Models", arXiv 2503.18886): CFG on flow velocities with the unconditional
//! velocity first scaled by its optimal projection onto the conditional one, per sample,
//!
//! ```text
//! s*  = <v_c, v_u> / ||v_u||^2
//! v   = s* v_u + w (v_c - s* v_u)
//! ```
//!
//! plus *zero-init*: the velocity of the first K steps is zero.
//!
//! **Which velocity.** The paper's models predict the rectified-flow velocity
//! `v = eps - x0` of `x_rf = (1 - t) x0 + t eps`. Ember's networks predict noise, velocity
//! (Salimans & Ho's, a different one) or clean image, so each branch's output is turned into
//! its clean image and noise first and `s*` is computed on `v = eps - x0`: the same guidance
//! whatever the network predicts, and the paper's own for a flow-matching model. (diffusers'
//! `CFGZeroStarGuidance` applies the formula to the raw network output instead.) The guided
//! velocity goes back to a clean image at `x` by
//! `x0 = (x - sqrt(1 - abar) v) / (sqrt(abar) + sqrt(1 - abar))`.
//!
//! **What zero-init zeroes.** The rectified-flow velocity, for every objective: the prediction
//! becomes `x0 = eps = x / (sqrt(abar) + sqrt(1 - abar))`, the clean image whose step leaves the
//! rectified-flow state `x / (sqrt(abar) + sqrt(1 - abar))` where it is, as a zero velocity
//! does in the paper's ODE. For an epsilon network this is *not* a zero noise prediction (that
//! would be `x0 = x / sqrt(abar)`), nor for an x0 network a zero image. [`ZeroInit`] applies it
//! at the K noisiest timesteps of the run, whatever guides the others.

use super::branches::Branches;
use super::cfg::guide;
use super::schedule::ScaleSchedule;
use crate::denoiser::{Denoised, Denoiser};
use burn::prelude::*;
use ember_model::NoiseSchedule;

pub struct CfgZeroStar<'a> {
    branches: Box<dyn Branches + 'a>,
    scale: ScaleSchedule,
}

impl<'a> CfgZeroStar<'a> {
    pub fn new(branches: impl Branches + 'a, scale: impl Into<ScaleSchedule>) -> Self {
        Self {
            branches: Box::new(branches),
            scale: scale.into(),
        }
    }
}

/// `sqrt(abar)` and `sqrt(1 - abar)` of timestep `t`.
fn coefficients(s: &NoiseSchedule, t: usize) -> (f64, f64) {
    let ab = s.alpha_bar(Some(t));
    (ab.sqrt(), (1.0 - ab).sqrt())
}

/// The rectified-flow velocity `eps - x0` of a network output at `x`.
fn velocity(s: &NoiseSchedule, output: Tensor<4>, x: Tensor<4>, t: usize) -> Tensor<4> {
    s.output_to_eps(output.clone(), x.clone(), t) - s.output_to_x0(output, x, t)
}

/// The clean image of a rectified-flow velocity at `x`.
fn x0_of_velocity(s: &NoiseSchedule, v: Tensor<4>, x: Tensor<4>, t: usize) -> Tensor<4> {
    let (signal, noise) = coefficients(s, t);
    (x - v.mul_scalar(noise)).div_scalar(signal + noise)
}

impl Denoiser for CfgZeroStar<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.branches.schedule()
    }

    fn denoise(&self, x: Tensor<4>, timestep: usize) -> Denoised {
        let s = self.schedule();
        let w = self.scale.at(timestep, s);
        if w == 1.0 {
            let cond = self.branches.cond(x.clone(), timestep);
            return s.output_to_x0(cond, x, timestep).into();
        }
        let (cond, uncond) = self.branches.both(x.clone(), timestep);
        let v_c = velocity(s, cond, x.clone(), timestep);
        let v_u = velocity(s, uncond, x.clone(), timestep);
        let [n, c, h, wd] = v_u.dims();
        let flat = |t: Tensor<4>| t.reshape([n, c * h * wd]);
        let dot = (flat(v_c.clone()) * flat(v_u.clone())).sum_dim(1); // [n, 1]
        let norm2 = (flat(v_u.clone()) * flat(v_u.clone())).sum_dim(1);
        let s_star = dot.div(norm2.add_scalar(1e-8)).reshape([n, 1, 1, 1]);
        let v = guide(v_c, v_u * s_star, w);
        x0_of_velocity(s, v, x, timestep).into()
    }
}

/// CFG-Zero*'s zero-init: at the K noisiest timesteps of a run, a zero rectified-flow
/// velocity (see the module docs); elsewhere the inner denoiser.
pub struct ZeroInit<'a> {
    inner: &'a dyn Denoiser,
    /// Timesteps at or above this one are zeroed (`None`: none).
    from: Option<usize>,
}

impl<'a> ZeroInit<'a> {
    /// Zeroes the first `steps` of `timesteps` (the run's, noisiest first), but never the last
    /// one (an img2img run or Karras spacing may visit fewer timesteps than `sample.steps`).
    pub fn new(inner: &'a dyn Denoiser, timesteps: &[usize], steps: usize) -> Self {
        let k = steps.min(timesteps.len().saturating_sub(1));
        let from = k.checked_sub(1).map(|i| timesteps[i]);
        Self { inner, from }
    }
}

impl Denoiser for ZeroInit<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.inner.schedule()
    }

    fn denoise(&self, x: Tensor<4>, timestep: usize) -> Denoised {
        match self.from {
            Some(from) if timestep >= from => {
                let (signal, noise) = coefficients(self.schedule(), timestep);
                x.div_scalar(signal + noise).into()
            }
            _ => self.inner.denoise(x, timestep),
        }
    }
}
