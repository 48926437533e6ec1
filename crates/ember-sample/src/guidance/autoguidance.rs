//! Autoguidance (Karras et al. 2024, "Guiding a Diffusion Model with a Bad Version of
//! Itself", eq. 1 with a weak model in place of the unconditional one):
//!
//! ```text
//! D(x; sigma, c) = D_weak(x; sigma, c) + w (D_good(x; sigma, c) - D_weak(x; sigma, c))
//! ```
//!
//! Both models are conditional on the row's class; the weak one is a degraded version of the
//! good one (an earlier checkpoint of the same run, or a smaller model trained the same way),
//! so their difference points away from the weak model's errors rather than towards the class.
//! The formula is CFG's, in Ember's convention (`w = 1`: the good model alone), so autoguidance
//! is [`ClassifierFreeGuidance`](super::ClassifierFreeGuidance) over [`ModelBranches`],
//! including its schedule, interval and rescale. The two networks have different weights, so
//! each runs once per step over the whole batch (one forward when the weak model is the good
//! one); at `w = 1`, and outside a guidance interval, only the good model runs.

use super::branches::{Branches, timesteps_tensor};
use burn::prelude::*;
use ember_model::{NoiseSchedule, UNet, labels_tensor};

/// A good and a weak network, both conditional on the rows' classes.
pub struct ModelBranches<'a> {
    good: &'a UNet,
    weak: &'a UNet,
    schedule: &'a NoiseSchedule,
    /// `[batch]` requested classes.
    labels: Tensor<1, Int>,
}

impl<'a> ModelBranches<'a> {
    /// Both models must take the same classes, image shape and diffusion schedule (the
    /// command line checks the weak model's config before loading it).
    pub fn new(
        good: &'a UNet,
        weak: &'a UNet,
        schedule: &'a NoiseSchedule,
        labels: &[usize],
        device: &Device,
    ) -> Self {
        Self {
            good,
            weak,
            schedule,
            labels: labels_tensor(labels, device),
        }
    }

    fn forward(&self, model: &UNet, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let t = timesteps_tensor(timestep, x.dims()[0], &x.device());
        model.forward(x, t, self.labels.clone())
    }
}

impl Branches for ModelBranches<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.schedule
    }

    fn cond(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        self.forward(self.good, x, timestep)
    }

    fn uncond(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        self.forward(self.weak, x, timestep)
    }

    fn both(&self, x: Tensor<4>, timestep: usize) -> (Tensor<4>, Tensor<4>) {
        if std::ptr::eq(self.good, self.weak) {
            let out = self.forward(self.good, x, timestep);
            return (out.clone(), out);
        }
        (
            self.forward(self.good, x.clone(), timestep),
            self.forward(self.weak, x, timestep),
        )
    }
}
