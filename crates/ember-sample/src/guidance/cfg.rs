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

use crate::denoiser::Denoiser;
use burn::prelude::*;
use ember_model::{NoiseSchedule, UNet, labels_tensor};

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
    model: &'a UNet,
    schedule: &'a NoiseSchedule,
    /// `[batch]` requested classes.
    labels: Tensor<1, Int>,
    /// `[batch]` labels of the other branch: the null class, or the negative class.
    uncond_labels: Tensor<1, Int>,
    scale: f64,
    /// CFG rescale phi.
    rescale: f64,
}

impl<'a> ClassifierFreeGuidance<'a> {
    /// `negative_class`, if given, replaces the null class in the unconditional branch.
    pub fn new(
        model: &'a UNet,
        schedule: &'a NoiseSchedule,
        labels: &[usize],
        scale: f64,
        negative_class: Option<usize>,
        device: &Device,
    ) -> Self {
        let uncond = negative_class.unwrap_or(model.null_class());
        Self {
            model,
            schedule,
            labels: labels_tensor(labels, device),
            uncond_labels: labels_tensor(&vec![uncond; labels.len()], device),
            scale,
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
        let device = x.device();
        let [batch, _, _, _] = x.dims();
        // "No guidance" and "unconditional" are one plain forward: exactly the bare model.
        if self.scale == 1.0 {
            let t = timesteps_tensor(timestep, batch, &device);
            return self.model.forward(x, t, self.labels.clone());
        }
        if self.scale == 0.0 {
            let t = timesteps_tensor(timestep, batch, &device);
            return self.model.forward(x, t, self.uncond_labels.clone());
        }
        // One batched forward over [x; x] with [labels; uncond].
        let t = timesteps_tensor(timestep, 2 * batch, &device);
        let x2 = Tensor::cat(vec![x.clone(), x], 0); // [2 batch, ch, h, w]
        let y2 = Tensor::cat(vec![self.labels.clone(), self.uncond_labels.clone()], 0);
        let out = self.model.forward(x2, t, y2);
        let cond = out.clone().narrow(0, 0, batch);
        let uncond = out.narrow(0, batch, batch);
        rescale(guide(cond.clone(), uncond, self.scale), cond, self.rescale)
    }
}

/// `[batch]` copies of one timestep, as the network takes them.
pub(crate) fn timesteps_tensor(timestep: usize, batch: usize, device: &Device) -> Tensor<1> {
    Tensor::<1>::ones([batch], device).mul_scalar(timestep as f64)
}

impl Denoiser for ClassifierFreeGuidance<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.schedule
    }

    fn denoise(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let output = self.output(x.clone(), timestep);
        self.schedule.output_to_x0(output, x, timestep)
    }

    /// For a noise-prediction network the output is the noise itself: returned as is, so the
    /// bare model at scale 1 gives exactly its own prediction.
    fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let output = self.output(x.clone(), timestep);
        self.schedule.output_to_eps(output, x, timestep)
    }
}
