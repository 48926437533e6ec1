//! Ember's sampling crate. Dependencies run one way, down this list:
//!
//! - `denoiser.rs`: [`Denoiser`], what every sampler calls, and [`Denoised`], what it returns:
//!   the predicted clean image and, for CFG++, the prediction whose noise the step keeps.
//! - `noise.rs`: [`NoiseSource`] and [`SeededNoise`], the one seeded source (per image, so an
//!   image sees the same noise in `ember sample`, `ember eval` and the training grids).
//! - `timesteps.rs`: the timestep spacings and img2img's strength.
//! - `samplers/`: DDIM and DDPM, Euler and Heun, DPM-Solver++(2M), one file per family, all
//!   behind [`samplers::Sampler`]'s one signature; the caller passes the timesteps. Each takes
//!   CFG++'s re-noising prediction in its own consistent form (documented in `samplers/`).
//! - `guidance/`: the guidance methods (CFG with negative class and rescale, APG, CFG++,
//!   CFG-Zero*, autoguidance, one file each, over the two [`guidance::Branches`] they combine),
//!   guidance schedules, and the wrappers that stack on any of them (guidance interval,
//!   classifier guidance, dynamic thresholding, inpainting and outpainting); [`with_guidance`]
//!   stacks them as the settings ask.
//! - `request.rs`: sampling images or a grid from a UNet with the settings of a config
//!   (`[sample]`, with any flags applied): [`sample_images`], [`sample_grid`], img2img,
//!   inpainting and outpainting ([`InitImage`]).
//! - `grid.rs`: a batch of images laid out as a grid, one row per class.

pub mod denoiser;
pub mod grid;
pub mod guidance;
pub mod noise;
mod request;
pub mod samplers;
pub mod timesteps;

pub use denoiser::{Denoised, Denoiser};
pub use guidance::{Guidance, NoisyClassifier, with_guidance};
pub use noise::{NoiseSource, SeededNoise};
pub use request::{InitImage, SampleRequest, sample_grid, sample_images};

#[cfg(test)]
pub(crate) mod testing;
