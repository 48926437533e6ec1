//! Ember's sampling crate: guidance as denoiser wrappers (classifier-free guidance, negative
//! class, CFG rescale, guidance interval, dynamic thresholding), the samplers (DDPM, DDIM,
//! DPM-Solver++(2M), Euler, Heun) over a choice of timestep spacings, and PNG sample grids.

pub mod ddim;
pub mod grid;
pub mod guidance;
pub mod samplers;

pub use ddim::{NoiseSource, SamplerOptions, SeededNoise, ddim};
pub use guidance::{ClassifierFreeGuidance, EpsModel, GuidanceOptions, guide, with_guidance};

use burn::prelude::*;
use ember_config::{ExperimentConfig, SamplerKind};
use ember_model::{NoiseSchedule, UNet};

/// What to sample: which classes (one grid row each), how many per class, and how.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    pub classes: Vec<usize>,
    pub per_class: usize,
    pub guidance: GuidanceOptions,
    pub sampler: SamplerKind,
    pub options: SamplerOptions,
    pub seed: u64,
}

impl SampleRequest {
    /// The `[sample]` settings of a config, for every class.
    pub fn from_config(config: &ExperimentConfig) -> Self {
        let s = &config.sample;
        Self {
            classes: (0..config.model.num_classes).collect(),
            per_class: s.per_class,
            guidance: GuidanceOptions::from_config(s),
            sampler: s.sampler,
            options: SamplerOptions {
                steps: s.steps,
                eta: s.eta,
                spacing: s.spacing,
            },
            seed: s.seed,
        }
    }
}

/// Samples `per_class` images for each requested class, row by row.
///
/// # Shapes
/// - output: `[classes * per_class, channels, size, size]`, in [-1, 1]
pub fn sample_images(
    model: &UNet,
    schedule: &NoiseSchedule,
    request: &SampleRequest,
    image_shape: [usize; 3],
    device: &Device,
) -> Tensor<4> {
    let labels: Vec<usize> = request
        .classes
        .iter()
        .flat_map(|&c| std::iter::repeat_n(c, request.per_class))
        .collect();
    let [c, h, w] = image_shape;
    let mut noise = SeededNoise::new(request.seed);
    let x_t = noise.normal([labels.len(), c, h, w], device);
    with_guidance(
        model,
        schedule,
        &labels,
        &request.guidance,
        device,
        |denoiser| {
            samplers::sample(
                request.sampler,
                denoiser,
                schedule,
                x_t,
                request.options,
                &mut noise,
            )
        },
    )
}

/// [`sample_images`] laid out as a grid: one row per requested class, `per_class` columns.
pub fn sample_grid(
    model: &UNet,
    schedule: &NoiseSchedule,
    request: &SampleRequest,
    image_shape: [usize; 3],
    device: &Device,
) -> grid::GridImage {
    let images = sample_images(model, schedule, request, image_shape, device);
    grid::make_grid(images, request.classes.len(), request.per_class)
}
