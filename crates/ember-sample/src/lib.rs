//! Ember's sampling crate. Dependencies run one way, down this list:
//!
//! - `denoiser.rs`: [`Denoiser`], what every sampler calls: the predicted clean image.
//! - `noise.rs`: [`NoiseSource`] and [`SeededNoise`], the one seeded source (per image, so an
//!   image sees the same noise in `ember sample`, `ember eval` and the training grids).
//! - `timesteps.rs`: the timestep spacings and img2img's strength.
//! - `samplers/`: DDIM and DDPM, Euler and Heun, DPM-Solver++(2M), one file per family, all
//!   behind [`samplers::Sampler`]'s one signature; the caller passes the timesteps.
//! - `guidance/`: the guidance wrappers (CFG with negative class and rescale, guidance
//!   interval, classifier guidance, dynamic thresholding, inpainting) and [`with_guidance`],
//!   which stacks them as the settings ask.
//! - `request.rs`: sampling images or a grid from a UNet with the settings of a config
//!   (`[sample]`, with any flags applied): [`sample_images`], [`sample_grid`], img2img.
//! - `grid.rs`: a batch of images laid out as a grid, one row per class.

pub mod denoiser;
pub mod grid;
pub mod guidance;
pub mod noise;
mod request;
pub mod samplers;
pub mod timesteps;

pub use denoiser::Denoiser;
pub use guidance::{Guidance, NoisyClassifier, with_guidance};
pub use noise::{NoiseSource, SeededNoise};
pub use request::{InitImage, SampleRequest, sample_grid, sample_images};

#[cfg(test)]
pub(crate) mod testing;
