//! Classifier-free guidance (Ho & Salimans 2022) with negative prompting and CFG rescale.
//!
//! Convention (see `ember_config`): `out = out_uncond + s * (out_cond - out_uncond)`, so
//! `s = 1` is the plain conditional model and `s = 0` the unconditional one. The two branches
//! are one batched forward. The outputs are combined in the network's own parameterisation
//! (noise, velocity or clean image) and only then turned into the clean image: the conversion
//! is affine in the output for a given `x` and timestep, so this equals guiding the implied
//! noise, while CFG rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample
//! Steps are Flawed", section 3.4) acts on the network's output, as Lin et al. apply it to
//! v-prediction. With a negative class, that class's prediction takes the unconditional
//! branch's place (the reference article's negative prompting).
//!
//! The same wrapper over other [`Branches`] is autoguidance (`autoguidance.rs`): the formula is
//! CFG's with a weak model in the unconditional branch.

use super::branches::{Branches, ClassBranches};
use super::schedule::ScaleSchedule;
use crate::denoiser::{Denoised, Denoiser};
use burn::prelude::*;
use ember_model::{NoiseSchedule, UNet};

/// Combines conditional and unconditional predictions with scale `s`; the one place the
/// guidance formula is written.
pub fn guide(cond: Tensor<4>, uncond: Tensor<4>, scale: f64) -> Tensor<4> {
    uncond.clone() + (cond - uncond).mul_scalar(scale)
}

/// CFG rescale: the guided prediction scaled per sample to the conditional prediction's
/// standard deviation, mixed with the plain guided prediction by `phi` (0 = plain CFG).
pub fn rescale(guided: Tensor<4>, cond: Tensor<4>, phi: f64) -> Tensor<4> {
    if phi == 0.0 {
        return guided;
    }
    let [b, c, h, w] = guided.dims();
    let std = |t: Tensor<4>| t.reshape([b, c * h * w]).var(1).sqrt(); // [b, 1]
    let ratio = std(cond)
        .div(std(guided.clone()).add_scalar(1e-12))
        .reshape([b, 1, 1, 1]);
    let rescaled = guided.clone() * ratio;
    rescaled.mul_scalar(phi) + guided.mul_scalar(1.0 - phi)
}

/// The network, guided, for fixed per-row class labels: the denoiser every sampling path
/// starts from (at scale 1 it is the bare conditional network).
pub struct ClassifierFreeGuidance<'a> {
    branches: Box<dyn Branches + 'a>,
    scale: ScaleSchedule,
    /// CFG rescale phi.
    rescale: f64,
}

impl<'a> ClassifierFreeGuidance<'a> {
    /// CFG of `model` for rows of class `labels`; `negative_class`, if given, replaces the null
    /// class in the unconditional branch.
    pub fn new(
        model: &'a UNet,
        schedule: &'a NoiseSchedule,
        labels: &[usize],
        scale: f64,
        negative_class: Option<usize>,
        device: &Device,
    ) -> Self {
        let branches = ClassBranches::new(model, schedule, labels, negative_class, device);
        Self::over(branches, scale)
    }

    /// CFG's formula over any two branches (autoguidance: a good and a weak model).
    pub fn over(branches: impl Branches + 'a, scale: impl Into<ScaleSchedule>) -> Self {
        Self {
            branches: Box::new(branches),
            scale: scale.into(),
            rescale: 0.0,
        }
    }

    /// With CFG rescale `phi` (0 = plain CFG).
    pub fn with_rescale(mut self, phi: f64) -> Self {
        self.rescale = phi;
        self
    }

    /// The guided network output (noise, velocity or clean image, as the network was trained).
    ///
    /// # Shapes
    /// - x: `[batch, ch, h, w]` -> `[batch, ch, h, w]`
    pub fn output(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let scale = self.scale.at(timestep, self.branches.schedule());
        // "No guidance" and "unconditional" are one plain forward: exactly the bare model.
        if scale == 1.0 {
            return self.branches.cond(x, timestep);
        }
        if scale == 0.0 {
            return self.branches.uncond(x, timestep);
        }
        let (cond, uncond) = self.branches.both(x, timestep);
        rescale(guide(cond.clone(), uncond, scale), cond, self.rescale)
    }
}

impl Denoiser for ClassifierFreeGuidance<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.branches.schedule()
    }

    fn denoise(&self, x: Tensor<4>, timestep: usize) -> Denoised {
        let output = self.output(x.clone(), timestep);
        self.schedule().output_to_x0(output, x, timestep).into()
    }

    /// For a noise-prediction network the output is the noise itself: returned as is, so the
    /// bare model at scale 1 gives exactly its own prediction.
    fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let output = self.output(x.clone(), timestep);
        self.schedule().output_to_eps(output, x, timestep)
    }
}
