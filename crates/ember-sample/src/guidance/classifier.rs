//! Classifier guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image
//! Synthesis", Algorithm 2; the reference article's baseline): the noise is shifted along the
//! gradient of a noise-aware classifier, `eps - s sqrt(1 - abar) grad_x log p(y | x_t)`, i.e.
//! samples `p(x) p(y | x)^s` when the inner denoiser is the unconditional model.

use crate::denoiser::{Denoised, Denoiser};
use burn::prelude::*;
use ember_model::NoiseSchedule;

/// A classifier of noisy images: the gradient of its log-probability of each row's class.
pub trait NoisyClassifier {
    /// `grad_x log p(labels[i] | x_i, t)` per row.
    ///
    /// # Shapes
    /// - x: `[batch, ch, h, w]` -> `[batch, ch, h, w]`
    fn grad_log_prob(&self, x: Tensor<4>, timestep: usize, labels: &[usize]) -> Tensor<4>;
}

pub struct ClassifierGuidance<'a> {
    inner: &'a dyn Denoiser,
    classifier: &'a dyn NoisyClassifier,
    labels: Vec<usize>,
    scale: f64,
}

impl<'a> ClassifierGuidance<'a> {
    pub fn new(
        inner: &'a dyn Denoiser,
        classifier: &'a dyn NoisyClassifier,
        labels: &[usize],
        scale: f64,
    ) -> Self {
        Self {
            inner,
            classifier,
            labels: labels.to_vec(),
            scale,
        }
    }
}

impl Denoiser for ClassifierGuidance<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.inner.schedule()
    }

    /// The shifted noise's clean image: `x0 + s (1 - abar) / sqrt(abar) grad`. At `abar = 0`
    /// (pure noise) that shift is unbounded; there the classifier is not consulted. A CFG++
    /// re-noising prediction passes unchanged: the classifier moves the clean image the step
    /// aims at, the step keeps the unconditional noise.
    fn denoise(&self, x: Tensor<4>, timestep: usize) -> Denoised {
        let ab = self.schedule().alpha_bar(Some(timestep));
        let d = self.inner.denoise(x.clone(), timestep);
        if ab == 0.0 {
            return d;
        }
        let grad = self.classifier.grad_log_prob(x, timestep, &self.labels);
        Denoised {
            x0: d.x0 + grad.mul_scalar(self.scale * (1.0 - ab) / ab.sqrt()),
            renoise: d.renoise,
        }
    }
}
