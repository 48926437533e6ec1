//! The wrappers against the formulas they implement, on a small perturbed UNet and on the
//! exact mixture denoiser.

use super::branches::timesteps_tensor;
use super::*;
use crate::denoiser::Denoised;
use crate::noise::{NoiseSource, SeededNoise};
use crate::samplers::sampler;
use crate::testing::{Shrink, schedule, values};
use crate::timesteps::{strength_tail, timesteps};
use ember_config::{SamplerKind, TimestepSpacing};
use ember_model::{UNetConfig, labels_tensor};

pub(super) fn model(device: &Device) -> UNet {
    model_seeded(device, 0)
}

/// The small test UNet from initialisation seed `seed`, perturbed.
pub(super) fn model_seeded(device: &Device, seed: u64) -> UNet {
    let model = UNetConfig {
        num_classes: 3,
        image_channels: 1,
        base_channels: 8,
        channel_mults: vec![1, 2],
        blocks_per_level: 1,
        attention_levels: vec![],
        attention_heads: 1,
        norm_groups: 4,
        dropout: 0.0,
        scale_shift_norm: false,
    }
    .init(device, seed);
    // Zero-initialised output layers would make every prediction 0; perturb them.
    ember_model::init::perturb_params(model, 0, 0.1)
}

pub(super) fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar()
}

pub(super) fn inputs(device: &Device) -> (Tensor<4>, Vec<usize>) {
    (
        ember_model::init::seeded_normals([2, 1, 8, 8], 9, device),
        vec![0, 2],
    )
}

#[test]
fn scale_one_is_the_conditional_model_and_zero_the_unconditional() {
    let device = Device::flex();
    let (m, s) = (model(&device), schedule());
    let (x, labels) = inputs(&device);
    let t = timesteps_tensor(500, 2, &device);
    let cond = m.forward(x.clone(), t.clone(), labels_tensor(&labels, &device));
    let uncond = m.forward(x.clone(), t, labels_tensor(&[3, 3], &device));
    assert!(
        max_abs_diff(cond.clone(), uncond.clone()) > 1e-4,
        "classes must matter"
    );
    let cfg = |scale| ClassifierFreeGuidance::new(&m, &s, &labels, scale, None, &device);
    assert_eq!(
        max_abs_diff(cfg(1.0).output(x.clone(), 500), cond.clone()),
        0.0
    );
    assert_eq!(
        max_abs_diff(cfg(0.0).output(x.clone(), 500), uncond.clone()),
        0.0
    );
    // For a noise-prediction network the denoiser's noise is the network's output, exactly.
    assert_eq!(
        max_abs_diff(cfg(1.0).eps(x.clone(), 500), cond.clone()),
        0.0
    );
    // The batched path gives the same combination as two separate forwards.
    let expected = guide(cond, uncond, 2.5);
    assert!(max_abs_diff(cfg(2.5).output(x, 500), expected) < 1e-4);
}

#[test]
fn the_formula_at_scale_one_and_zero_gives_each_branch() {
    let device = Device::flex();
    let m = model(&device);
    let (x, labels) = inputs(&device);
    let t = timesteps_tensor(10, 2, &device);
    let cond = m.forward(x.clone(), t.clone(), labels_tensor(&labels, &device));
    let uncond = m.forward(x, t, labels_tensor(&[3, 3], &device));
    assert!(max_abs_diff(guide(cond.clone(), uncond.clone(), 1.0), cond) < 1e-6);
    assert!(
        max_abs_diff(
            guide(uncond.clone().mul_scalar(7.0), uncond.clone(), 0.0),
            uncond
        ) < 1e-6
    );
}

#[test]
fn negative_class_replaces_the_null_branch() {
    let device = Device::flex();
    let (m, s) = (model(&device), schedule());
    let (x, labels) = inputs(&device);
    let t = timesteps_tensor(200, 2, &device);
    let cond = m.forward(x.clone(), t.clone(), labels_tensor(&labels, &device));
    let neg = m.forward(x.clone(), t, labels_tensor(&[1, 1], &device));
    let g = ClassifierFreeGuidance::new(&m, &s, &labels, 3.0, Some(1), &device).output(x, 200);
    assert!(max_abs_diff(g, guide(cond, neg, 3.0)) < 1e-4);
}

#[test]
fn rescale_with_phi_zero_is_plain_cfg_and_phi_one_matches_the_conditional_std() {
    let device = Device::flex();
    let (m, s) = (model(&device), schedule());
    let (x, labels) = inputs(&device);
    let cfg = |scale| ClassifierFreeGuidance::new(&m, &s, &labels, scale, None, &device);
    let plain = cfg(4.0);
    let phi0 = cfg(4.0).with_rescale(0.0);
    assert_eq!(
        values(plain.output(x.clone(), 300)),
        values(phi0.output(x.clone(), 300))
    );
    let phi1 = cfg(4.0).with_rescale(1.0);
    let cond = cfg(1.0).output(x.clone(), 300);
    let std = |t: Tensor<4>| {
        let s: Tensor<2> = t.reshape([2, 64]).var(1).sqrt();
        s.into_data().try_into_vec::<f32>().unwrap()
    };
    let (a, b) = (std(phi1.output(x.clone(), 300)), std(cond));
    for (a, b) in a.iter().zip(&b) {
        assert!((a - b).abs() < 1e-4 * b.max(1.0), "{a} vs {b}");
    }
    // ... and phi = 0.5 is the average of the two.
    let half = cfg(4.0).with_rescale(0.5);
    let mid = (plain.output(x.clone(), 300) + phi1.output(x.clone(), 300)).div_scalar(2.0);
    assert!(max_abs_diff(half.output(x, 300), mid) < 1e-5);
}

/// Counts calls, so tests can see which branch a wrapper used.
struct Counting<'a>(&'a dyn Denoiser, std::cell::Cell<usize>);
impl Denoiser for Counting<'_> {
    fn schedule(&self) -> &NoiseSchedule {
        self.0.schedule()
    }
    fn denoise(&self, x: Tensor<4>, t: usize) -> Denoised {
        self.1.set(self.1.get() + 1);
        self.0.denoise(x, t)
    }
}

fn ddim(d: &dyn Denoiser, x: Tensor<4>, steps: usize, seed: u64) -> Vec<f32> {
    let mut noise = SeededNoise::for_rows(seed, x.dims()[0]);
    let ts = timesteps(d.schedule(), steps, TimestepSpacing::Trailing);
    values(sampler(SamplerKind::Ddim, 0.0).sample(d, x, &ts, &mut noise))
}

#[test]
fn an_empty_guidance_interval_is_unguided_sampling() {
    let device = Device::flex();
    let (m, s) = (model(&device), schedule());
    let (x, labels) = inputs(&device);
    let guided = ClassifierFreeGuidance::new(&m, &s, &labels, 5.0, None, &device);
    let plain = ClassifierFreeGuidance::new(&m, &s, &labels, 1.0, None, &device);
    let guided = Counting(&guided, Default::default());
    // sigma is at least 0.01 at t = 0, so [0, 0.001] holds no timestep.
    let interval = GuidanceInterval::new(&guided, &plain, [0.0, 0.001]);
    assert_eq!(ddim(&interval, x.clone(), 6, 3), ddim(&plain, x, 6, 3));
    assert_eq!(
        guided.1.get(),
        0,
        "the guided (2B) denoiser is never called"
    );
}

#[test]
fn interval_rescale_and_negative_class_compose_through_with_guidance() {
    let device = Device::flex();
    let (m, s) = (model(&device), schedule());
    let (x, labels) = inputs(&device);
    let settings = ember_config::SampleConfig {
        guidance_scale: 3.0,
        negative_class: Some(1),
        guidance_interval: vec![0.5, 5.0],
        cfg_rescale: 0.7,
        ..Default::default()
    };
    let (inside, outside) = (400, 900);
    assert!((0.5..=5.0).contains(&s.sigma(Some(inside))) && s.sigma(Some(outside)) > 5.0);
    let t_of = |t: usize| timesteps_tensor(t, 2, &device);
    let forward =
        |t: usize, ys: &[usize]| m.forward(x.clone(), t_of(t), labels_tensor(ys, &device));
    with_guidance(
        &m,
        &s,
        &labels,
        Guidance::new(&settings, None),
        &[],
        &device,
        |d| {
            // Inside: CFG against the negative class, rescaled.
            let cond = forward(inside, &labels);
            let expected = rescale(
                guide(cond.clone(), forward(inside, &[1, 1]), 3.0),
                cond,
                0.7,
            );
            assert!(max_abs_diff(d.eps(x.clone(), inside), expected) < 1e-4);
            // Outside: the conditional model alone.
            assert!(max_abs_diff(d.eps(x.clone(), outside), forward(outside, &labels)) < 1e-5);
        },
    );
}

#[test]
fn dynamic_thresholding_keeps_predicted_images_in_range() {
    /// Predicts a clean image far outside [-1, 1].
    struct Wild(NoiseSchedule);
    impl Denoiser for Wild {
        fn schedule(&self) -> &NoiseSchedule {
            &self.0
        }
        fn denoise(&self, x: Tensor<4>, _: usize) -> Denoised {
            x.mul_scalar(3.0).into()
        }
    }
    let device = Device::flex();
    let (x, _) = inputs(&device);
    let wild = Wild(schedule());
    let raw = values(wild.denoise(x.clone(), 500).x0);
    assert!(raw.iter().any(|v| v.abs() > 2.0));
    let thresholded = values(DynamicThreshold::new(&wild, 0.9).denoise(x.clone(), 500).x0);
    assert!(thresholded.iter().all(|v| v.abs() <= 1.0 + 1e-6));
    // Per sample, the 90th percentile of |x0| maps to 1: about 10% of values sit at +-1.
    let at_one = thresholded[..64].iter().filter(|v| v.abs() > 0.999).count();
    assert!((5..=9).contains(&at_one), "{at_one}");
    // An in-range prediction is left as it is.
    let tame = Shrink(schedule());
    let x_small = x.mul_scalar(0.01);
    let direct = tame.denoise(x_small.clone(), 10).x0;
    assert!(values(direct.clone()).iter().all(|v| v.abs() < 1.0));
    let kept = DynamicThreshold::new(&tame, 0.9).denoise(x_small, 10).x0;
    assert!(max_abs_diff(kept, direct) < 1e-6);
}

#[test]
fn inpainting_ends_with_the_kept_pixels_of_the_source_for_every_sampler() {
    let device = Device::flex();
    let (m, s) = (model(&device), schedule());
    let (x, labels) = inputs(&device); // [2, 1, 8, 8]
    let source = x.clone().tanh(); // any image in [-1, 1]
    // Keep the left half, regenerate the right half.
    let keep: Vec<f32> = (0..64).map(|i| if i % 8 < 4 { 1.0 } else { 0.0 }).collect();
    let keep =
        Tensor::<4>::from_data(TensorData::new(keep, [1, 1, 8, 8]), &device).repeat_dim(0, 2);
    let cfg = ClassifierFreeGuidance::new(&m, &s, &labels, 3.0, None, &device);
    let ts = strength_tail(&timesteps(&s, 6, TimestepSpacing::Trailing), 0.7);
    for kind in SamplerKind::ALL {
        let inpaint = Inpaint::new(&cfg, source.clone(), keep.clone());
        let mut noise = SeededNoise::for_rows(4, 2);
        let start = noise.normal([2, 1, 8, 8], &device);
        let out = sampler(kind, 0.0).sample(&inpaint, start, &ts, &mut noise);
        let kept_err = max_abs_diff(out.clone() * keep.clone(), source.clone() * keep.clone());
        assert!(kept_err < 1e-4, "{kind:?}: kept pixels moved by {kept_err}");
        let free = keep.clone().neg().add_scalar(1.0);
        let changed = max_abs_diff(out * free.clone(), source.clone() * free);
        assert!(
            changed > 1e-2,
            "{kind:?}: the masked half was not regenerated"
        );
    }
}
