//! The interface every sampler calls: a denoiser, named for what it returns.

use burn::prelude::*;
use ember_model::NoiseSchedule;

/// What a denoiser predicts at one step: the clean image, and for CFG++ the prediction whose
/// noise the step re-noises with.
///
/// A sampler's step has two parts: the clean image it moves towards, and the noise it keeps
/// (DDIM's direction term, an Euler step's `sigma_next * eps`). Normally both come from `x0`.
/// CFG++ (Chung et al. 2024) takes the clean image from the guided prediction and the noise
/// from the unconditional one; `renoise` is that second prediction, given as a clean image so
/// samplers clip it and derive its noise exactly as they do for `x0`. How each sampler uses it
/// is documented in `samplers/`.
#[derive(Debug, Clone)]
pub struct Denoised {
    /// The predicted clean image (not clipped).
    ///
    /// # Shapes
    /// - `[batch, ch, h, w]`
    pub x0: Tensor<4>,
    /// The clean image whose implied noise `(x - sqrt(abar) r) / sqrt(1 - abar)` the step
    /// re-noises with. `None`: `x0`'s own, the ordinary step.
    pub renoise: Option<Tensor<4>>,
}

impl Denoised {
    /// The same prediction with `f` applied to the clean image and, where there is one, to the
    /// re-noising prediction (clipping, thresholding, pasting kept pixels).
    pub fn map(self, f: impl Fn(Tensor<4>) -> Tensor<4>) -> Self {
        Self {
            x0: f(self.x0),
            renoise: self.renoise.map(f),
        }
    }

    /// The prediction whose noise the step keeps: `renoise`, or `x0` itself.
    pub fn renoise_x0(&self) -> Tensor<4> {
        self.renoise.clone().unwrap_or_else(|| self.x0.clone())
    }

    /// How far the step's clean image lies from the re-noising prediction, `x0 - renoise`
    /// (`None` for an ordinary step: no offset at all).
    pub fn offset(&self) -> Option<Tensor<4>> {
        self.renoise.clone().map(|r| self.x0.clone() - r)
    }
}

impl From<Tensor<4>> for Denoised {
    /// An ordinary prediction: the clean image and its own noise.
    fn from(x0: Tensor<4>) -> Self {
        Self { x0, renoise: None }
    }
}

/// Predicts the clean image of a noisy batch at one training timestep: k-diffusion's
/// `D(x; sigma)`, Karras et al. 2022's denoiser. The bare network (through classifier-free
/// guidance, whatever it was trained to predict) and every guidance wrapper are denoisers, so
/// samplers never know which guidance they run with, and wrappers stack. A wrapper that changes
/// the clean image passes `renoise` on (changing it where it must, as inpainting does).
pub trait Denoiser {
    /// The schedule whose timesteps the denoiser takes; it owns `sigma(t)` and the
    /// conversions between noise, velocity and clean image.
    fn schedule(&self) -> &NoiseSchedule;

    /// The predicted clean image `x0` (not clipped), and the re-noising prediction if the step
    /// should keep another noise than `x0`'s. It must hold at `abar = 0` too, the first
    /// timestep of a zero-terminal-SNR schedule, where `x0` cannot be derived from noise.
    ///
    /// # Shapes
    /// - x: `[batch, ch, h, w]` -> `[batch, ch, h, w]`
    fn denoise(&self, x: Tensor<4>, timestep: usize) -> Denoised;

    /// The noise the clean image implies, `(x - sqrt(abar) x0) / sqrt(1 - abar)`.
    fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let x0 = self.denoise(x.clone(), timestep).x0;
        self.schedule().eps_from_x0(x, x0, timestep)
    }
}
