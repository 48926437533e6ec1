//! Adaptive projected guidance (Sadat, Hilliges & Weber 2024, "Eliminating Oversaturation
//! and Artifacts of High Guidance Scales in Diffusion Models", arXiv 2410.02416, Algorithm 1),
//! on the denoised predictions as in the paper:
//!
//! ```text
//! diff     = D_c - D_u
//! avg      = diff + beta avg_prev                      momentum (beta = 0: avg = diff)
//! avg      = avg min(1, r / ||avg||)                   norm cap (r = 0: no cap)
//! par      = (<avg, D_c> / ||D_c||^2) D_c,  orth = avg - par
//! update   = orth + eta par
//! D        = D_c + (s - 1) update
//! ```
//!
//! Norms and inner products are per sample. The parallel part mostly raises saturation, the
//! orthogonal part improves the image, so eta < 1 (the paper recommends 0) allows high scales.
//!
//! Ember computes the last line as `guide(D_c, D_u, s) + (s - 1) (update - diff)`, which is the
//! same number (`D_c + (s - 1) update = D_u + s diff + (s - 1)(update - diff)`) and makes APG
//! with eta = 1, no momentum and no cap *exactly* CFG on the clean images: there
//! `update = diff - 0 par` is `diff` to the bit and the correction is exactly zero.
//!
//! **Momentum state.** The running average lives for one sampling run (one wrapper) and
//! advances once per timestep: a second call at the same timestep (Heun evaluates the end of a
//! step, then starts the next step there) replaces that timestep's term instead of adding
//! another. Timesteps without guidance (scale 1 under a schedule, outside a guidance interval)
//! do not enter the average.

use super::branches::Branches;
use super::cfg::guide;
use super::schedule::ScaleSchedule;
use crate::denoiser::{Denoised, Denoiser};
use burn::prelude::*;
use ember_model::NoiseSchedule;
use std::cell::RefCell;

/// APG's parameters (the `apg_*` keys of `[sample]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApgParams {
    /// Weight of the parallel part, in [0, 1].
    pub eta: f64,
    /// Momentum beta in (-1, 1); 0 = off.
    pub momentum: f64,
    /// Norm cap r of the update per sample; 0 = off.
    pub norm_threshold: f64,
}

/// The running average of the guidance update across the timesteps of one run.
struct Momentum {
    timestep: usize,
    /// The average before this timestep's term.
    before: Option<Tensor<4>>,
    average: Tensor<4>,
}

pub struct AdaptiveProjectedGuidance<'a> {
    branches: Box<dyn Branches + 'a>,
    scale: ScaleSchedule,
    params: ApgParams,
    momentum: RefCell<Option<Momentum>>,
}

impl<'a> AdaptiveProjectedGuidance<'a> {
    pub fn new(
        branches: impl Branches + 'a,
        scale: impl Into<ScaleSchedule>,
        params: ApgParams,
    ) -> Self {
        Self {
            branches: Box::new(branches),
            scale: scale.into(),
            params,
            momentum: RefCell::new(None),
        }
    }

    /// `diff + beta * avg_prev`, advancing the running average to `timestep`.
    fn averaged(&self, diff: Tensor<4>, timestep: usize) -> Tensor<4> {
        let beta = self.params.momentum;
        if beta == 0.0 {
            return diff;
        }
        let mut state = self.momentum.borrow_mut();
        let before = match state.take() {
            Some(m) if m.timestep == timestep => m.before,
            Some(m) => Some(m.average),
            None => None,
        };
        let average = match &before {
            Some(prev) => diff + prev.clone().mul_scalar(beta),
            None => diff,
        };
        *state = Some(Momentum {
            timestep,
            before,
            average: average.clone(),
        });
        average
    }

    /// The projected update of Algorithm 1 from `diff = D_c - D_u`.
    ///
    /// # Shapes
    /// - diff, cond: `[batch, ch, h, w]` -> `[batch, ch, h, w]`
    fn update(&self, diff: Tensor<4>, cond: Tensor<4>, timestep: usize) -> Tensor<4> {
        let ApgParams {
            eta,
            norm_threshold,
            ..
        } = self.params;
        let mut avg = self.averaged(diff, timestep);
        if norm_threshold > 0.0 {
            let norm = per_sample_dot(avg.clone(), avg.clone()).sqrt(); // [b, 1, 1, 1]
            let factor = norm.recip().mul_scalar(norm_threshold).clamp_max(1.0);
            avg = avg * factor;
        }
        let along = per_sample_dot(avg.clone(), cond.clone())
            .div(per_sample_dot(cond.clone(), cond.clone()).add_scalar(1e-12)); // [b, 1, 1, 1]
        let parallel = cond * along;
        avg - parallel.mul_scalar(1.0 - eta)
    }
}

/// `<a, b>` per sample.
///
/// # Shapes
/// - a, b: `[batch, ch, h, w]` -> `[batch, 1, 1, 1]`
fn per_sample_dot(a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = a.dims();
    (a * b)
        .reshape([n, c * h * w])
        .sum_dim(1)
        .reshape([n, 1, 1, 1])
}

impl Denoiser for AdaptiveProjectedGuidance<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.branches.schedule()
    }

    fn denoise(&self, x: Tensor<4>, timestep: usize) -> Denoised {
        let scale = self.scale.at(timestep, self.schedule());
        if scale == 1.0 {
            let cond = self.branches.cond(x.clone(), timestep);
            return self.schedule().output_to_x0(cond, x, timestep).into();
        }
        let (cond, uncond) = self.branches.both_x0(x, timestep);
        let diff = cond.clone() - uncond.clone();
        let update = self.update(diff.clone(), cond.clone(), timestep);
        (guide(cond, uncond, scale) + (update - diff).mul_scalar(scale - 1.0)).into()
    }
}
