//! Sampling from a UNet with the one settings type, `ember_config::SampleConfig`: the path
//! `ember sample`, `ember eval` and the training grids share.

use crate::guidance::{Guidance, Inpaint, with_guidance};
use crate::noise::{NoiseSource, SeededNoise};
use crate::samplers::sampler;
use crate::timesteps::{strength_tail, timesteps};
use burn::prelude::*;
use burn::tensor::ops::PadMode;
use ember_io::GridImage;
use ember_model::{NoiseSchedule, UNet};

/// img2img / inpainting / outpainting: the image to start from, noised to the first timestep
/// that runs. Its size is the size sampled.
#[derive(Debug, Clone)]
pub struct InitImage {
    /// `[1, ch, h, w]` in [-1, 1]
    pub image: Tensor<4>,
    /// `[1, 1, h, w]`: 1 = regenerate, 0 = keep the image's pixel. `None`: regenerate everything.
    pub mask: Option<Tensor<4>>,
    /// The fraction of the steps that run, in (0, 1]: higher strays further from the image.
    pub strength: f64,
}

impl InitImage {
    /// Outpainting (the reference article's section 6): `image` in the middle of a canvas
    /// `margins = [left, top, right, bottom]` pixels larger, whose border is generated around
    /// the image's pixels, which are kept exactly (inpainting with the border as the mask).
    /// The border starts mid-grey (0), which only matters at `strength < 1`. The network is
    /// convolutional, so it samples the larger canvas as it samples its training size; the
    /// caller checks the canvas suits the network (divisible by `2^(levels - 1)`).
    ///
    /// # Shapes
    /// - image: `[1, ch, h, w]` -> a canvas `[1, ch, top + h + bottom, left + w + right]`
    pub fn outpaint(image: Tensor<4>, margins: [usize; 4], strength: f64) -> Self {
        let [left, top, right, bottom] = margins;
        let [_, _, h, w] = image.dims();
        let padding = [(top, bottom), (left, right)];
        let keep = Tensor::<4>::zeros([1, 1, h, w], &image.device());
        Self {
            mask: Some(keep.pad(padding, PadMode::Constant(1.0))),
            image: image.pad(padding, PadMode::Constant(0.0)),
            strength,
        }
    }
}

/// A grid to sample: one row per class, `guidance.settings.per_class` columns.
#[derive(Clone)]
pub struct SampleRequest<'a> {
    pub classes: Vec<usize>,
    pub guidance: Guidance<'a>,
    pub init: Option<&'a InitImage>,
}

/// Samples one image per `(class, index)`: image `index` of `class` starts from (and steps
/// with) noise that depends only on `(settings.seed, class, index)`, so it is the same image
/// whichever batch it is sampled in.
///
/// # Shapes
/// - output: `[images.len(), channels, size, size]`, in [-1, 1]
pub fn sample_images(
    model: &UNet,
    schedule: &NoiseSchedule,
    images: &[(usize, usize)],
    guidance: Guidance,
    init: Option<&InitImage>,
    image_shape: [usize; 3],
    device: &Device,
) -> Tensor<4> {
    let s = guidance.settings;
    let labels: Vec<usize> = images.iter().map(|&(class, _)| class).collect();
    let [c, h, w] = image_shape;
    let n = images.len();
    let mut noise = SeededNoise::for_images(s.seed, images);
    let x_t = noise.normal([n, c, h, w], device);
    let sampler = sampler(s.sampler, s.eta);
    let all = timesteps(schedule, s.steps, s.spacing);
    let Some(init) = init else {
        return with_guidance(model, schedule, &labels, guidance, &all, device, |d| {
            sampler.sample(d, x_t, &all, &mut noise)
        });
    };
    // img2img: the init image noised to the first timestep that runs.
    let ts = strength_tail(&all, init.strength);
    let ab = schedule.alpha_bar(Some(ts[0]));
    let source = init.image.clone().to_device(device).repeat_dim(0, n);
    let x_start = source.clone().mul_scalar(ab.sqrt()) + x_t.mul_scalar((1.0 - ab).sqrt());
    with_guidance(
        model,
        schedule,
        &labels,
        guidance,
        &ts,
        device,
        |d| match &init.mask {
            Some(mask) => {
                let regenerate = mask.clone().to_device(device).repeat_dim(0, n);
                let keep = regenerate.neg().add_scalar(1.0);
                let inpaint = Inpaint::new(d, source, keep);
                sampler.sample(&inpaint, x_start, &ts, &mut noise)
            }
            None => sampler.sample(d, x_start, &ts, &mut noise),
        },
    )
}

/// The request's grid: one row per class, `per_class` columns (images `0..per_class` of each
/// class, as `ember eval` numbers them).
pub fn sample_grid(
    model: &UNet,
    schedule: &NoiseSchedule,
    request: &SampleRequest,
    image_shape: [usize; 3],
    device: &Device,
) -> GridImage {
    let per_class = request.guidance.settings.per_class;
    let images: Vec<(usize, usize)> = request
        .classes
        .iter()
        .flat_map(|&c| (0..per_class).map(move |j| (c, j)))
        .collect();
    let batch = sample_images(
        model,
        schedule,
        &images,
        request.guidance,
        request.init,
        image_shape,
        device,
    );
    crate::grid::make_grid(batch, request.classes.len(), per_class)
}
