//! The interface every sampler calls: a denoiser, named for what it returns.

use burn::prelude::*;
use ember_model::NoiseSchedule;

/// Predicts the clean image of a noisy batch at one training timestep: k-diffusion's
/// `D(x; sigma)`, Karras et al. 2022's denoiser. The bare network (through classifier-free
/// guidance, whatever it was trained to predict) and every guidance wrapper are denoisers, so
/// samplers never know which guidance they run with, and wrappers stack.
pub trait Denoiser {
    /// The schedule whose timesteps the denoiser takes; it owns `sigma(t)` and the
    /// conversions between noise, velocity and clean image.
    fn schedule(&self) -> &NoiseSchedule;

    /// The predicted clean image `x0` (not clipped). It must hold at `abar = 0` too, the first
    /// timestep of a zero-terminal-SNR schedule, where it cannot be derived from noise.
    ///
    /// # Shapes
    /// - x: `[batch, ch, h, w]` -> `[batch, ch, h, w]`
    fn denoise(&self, x: Tensor<4>, timestep: usize) -> Tensor<4>;

    /// The noise the prediction implies, `(x - sqrt(abar) x0) / sqrt(1 - abar)`.
    fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let x0 = self.denoise(x.clone(), timestep);
        self.schedule().eps_from_x0(x, x0, timestep)
    }
}
