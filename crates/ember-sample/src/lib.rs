//! Ember's sampling crate: guidance as denoiser wrappers (classifier-free guidance, negative
//! class, CFG rescale, guidance interval, dynamic thresholding), the samplers (DDPM, DDIM,
//! DPM-Solver++(2M), Euler, Heun) over a choice of timestep spacings, and PNG sample grids.

pub mod ddim;
pub mod grid;
pub mod guidance;
pub mod samplers;

pub use ddim::{NoiseSource, SamplerOptions, SeededNoise, ddim};
pub use guidance::{
    ClassifierFreeGuidance, EpsModel, GuidanceOptions, NoisyClassifier, guide, with_guidance,
};

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
    /// img2img / inpainting: start from this image instead of pure noise.
    pub init: Option<InitImage>,
}

/// The image img2img starts from (noised to the first step `options.strength` lets run), and
/// optionally the region inpainting regenerates.
#[derive(Debug, Clone)]
pub struct InitImage {
    /// `[1, ch, h, w]` in [-1, 1]
    pub image: Tensor<4>,
    /// `[1, 1, h, w]`: 1 = regenerate, 0 = keep the image's pixel. `None`: regenerate everything.
    pub mask: Option<Tensor<4>>,
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
                strength: 1.0,
            },
            seed: s.seed,
            init: None,
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
    let n = labels.len();
    let x_t = noise.normal([n, c, h, w], device);
    let (kind, options) = (request.sampler, request.options);
    let Some(init) = &request.init else {
        return with_guidance(model, schedule, &labels, &request.guidance, device, |d| {
            samplers::sample(kind, d, schedule, x_t, options, &mut noise)
        });
    };
    // img2img: the init image noised to the first timestep that runs.
    let t0 = samplers::visited_timesteps(schedule, options)[0];
    let ab = schedule.alpha_bar(Some(t0));
    let source = init.image.clone().to_device(device).repeat_dim(0, n);
    let x_start = source.clone().mul_scalar(ab.sqrt()) + x_t.mul_scalar((1.0 - ab).sqrt());
    with_guidance(
        model,
        schedule,
        &labels,
        &request.guidance,
        device,
        |d| match &init.mask {
            Some(mask) => {
                let regenerate = mask.clone().to_device(device).repeat_dim(0, n);
                let keep = regenerate.neg().add_scalar(1.0);
                let inpaint = guidance::Inpaint::new(d, schedule, source, keep);
                samplers::sample(kind, &inpaint, schedule, x_start, options, &mut noise)
            }
            None => samplers::sample(kind, d, schedule, x_start, options, &mut noise),
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
