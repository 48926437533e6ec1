//! The two predictions every guidance method combines: the branch guided towards (the
//! conditional model) and the other one (the null or a negative class of the same network, or
//! autoguidance's weak model). Methods ask for both at once, so a source that can run them in
//! one batched forward does.

use burn::prelude::*;
use ember_model::{NoiseSchedule, UNet, labels_tensor};

/// Where a guidance method's two predictions come from, as network outputs (noise, velocity or
/// clean image, as the schedule's `prediction` says).
pub trait Branches {
    /// The schedule the networks were trained with.
    fn schedule(&self) -> &NoiseSchedule;

    /// The branch guided towards alone (the conditional, or good, model): one forward at the
    /// batch size.
    ///
    /// # Shapes
    /// - x: `[batch, ch, h, w]` -> `[batch, ch, h, w]`
    fn cond(&self, x: Tensor<4>, timestep: usize) -> Tensor<4>;

    /// The other branch alone (unconditional, negative class, or weak model).
    fn uncond(&self, x: Tensor<4>, timestep: usize) -> Tensor<4>;

    /// Both, `(cond, uncond)`, batched where they share a network.
    fn both(&self, x: Tensor<4>, timestep: usize) -> (Tensor<4>, Tensor<4>);

    /// [`both`](Self::both) as clean images.
    fn both_x0(&self, x: Tensor<4>, timestep: usize) -> (Tensor<4>, Tensor<4>) {
        let (cond, uncond) = self.both(x.clone(), timestep);
        let s = self.schedule();
        (
            s.output_to_x0(cond, x.clone(), timestep),
            s.output_to_x0(uncond, x, timestep),
        )
    }
}

/// One network under two labellings: the requested classes, and the null class (or a negative
/// class) for the unconditional branch. Both branches are one forward over `[x; x]`.
pub struct ClassBranches<'a> {
    model: &'a UNet,
    schedule: &'a NoiseSchedule,
    /// `[batch]` requested classes.
    labels: Tensor<1, Int>,
    /// `[batch]` labels of the other branch: the null class, or the negative class.
    uncond_labels: Tensor<1, Int>,
}

impl<'a> ClassBranches<'a> {
    /// `negative_class`, if given, replaces the null class in the unconditional branch.
    pub fn new(
        model: &'a UNet,
        schedule: &'a NoiseSchedule,
        labels: &[usize],
        negative_class: Option<usize>,
        device: &Device,
    ) -> Self {
        let uncond = negative_class.unwrap_or(model.null_class());
        Self {
            model,
            schedule,
            labels: labels_tensor(labels, device),
            uncond_labels: labels_tensor(&vec![uncond; labels.len()], device),
        }
    }
}

impl Branches for ClassBranches<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.schedule
    }

    fn cond(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let t = timesteps_tensor(timestep, x.dims()[0], &x.device());
        self.model.forward(x, t, self.labels.clone())
    }

    fn uncond(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let t = timesteps_tensor(timestep, x.dims()[0], &x.device());
        self.model.forward(x, t, self.uncond_labels.clone())
    }

    fn both(&self, x: Tensor<4>, timestep: usize) -> (Tensor<4>, Tensor<4>) {
        let [batch, _, _, _] = x.dims();
        // One batched forward over [x; x] with [labels; uncond].
        let t = timesteps_tensor(timestep, 2 * batch, &x.device());
        let x2 = Tensor::cat(vec![x.clone(), x], 0); // [2 batch, ch, h, w]
        let y2 = Tensor::cat(vec![self.labels.clone(), self.uncond_labels.clone()], 0);
        let out = self.model.forward(x2, t, y2);
        (out.clone().narrow(0, 0, batch), out.narrow(0, batch, batch))
    }
}

/// `[batch]` copies of one timestep, as the network takes them.
pub(crate) fn timesteps_tensor(timestep: usize, batch: usize, device: &Device) -> Tensor<1> {
    Tensor::<1>::ones([batch], device).mul_scalar(timestep as f64)
}
