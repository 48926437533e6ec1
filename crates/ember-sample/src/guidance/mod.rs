//! Guidance as wrappers around the network: every wrapper is a [`Denoiser`] holding the
//! denoiser it wraps, so samplers never know which guidance they run with, and wrappers stack.
//!
//! - `cfg.rs`: [`ClassifierFreeGuidance`] (Ho & Salimans 2022) with negative class and CFG
//!   rescale (Lin et al. 2023), and [`guide`], the one place the formula is written.
//! - `interval.rs`: [`GuidanceInterval`] (Kynkaanniemi et al. 2024).
//! - `threshold.rs`: [`DynamicThreshold`] (Saharia et al. 2022, Imagen).
//! - `classifier.rs`: [`ClassifierGuidance`] (Dhariwal & Nichol 2021) and the
//!   [`NoisyClassifier`] it takes its gradient from.
//! - `inpaint.rs`: [`Inpaint`], which keeps a source image's pixels outside a mask.
//!
//! [`with_guidance`] stacks them as the sampling settings ask.

mod cfg;
mod classifier;
mod inpaint;
mod interval;
mod threshold;

pub use cfg::{ClassifierFreeGuidance, guide, rescale};
pub use classifier::{ClassifierGuidance, NoisyClassifier};
pub use inpaint::Inpaint;
pub use interval::GuidanceInterval;
pub use threshold::DynamicThreshold;

use crate::denoiser::Denoiser;
use burn::prelude::*;
use ember_config::SampleConfig;
use ember_model::{NoiseSchedule, UNet};

/// How to guide one sampling run: the settings (every guidance option), the CFG scale (the
/// settings' own, or a sweep's), and the noise-aware classifier when
/// `settings.classifier_guidance` asks for one.
#[derive(Clone, Copy)]
pub struct Guidance<'a> {
    pub settings: &'a SampleConfig,
    pub scale: f64,
    pub classifier: Option<&'a dyn NoisyClassifier>,
}

impl<'a> Guidance<'a> {
    /// The settings at their own scale.
    pub fn new(settings: &'a SampleConfig, classifier: Option<&'a dyn NoisyClassifier>) -> Self {
        Self {
            settings,
            scale: settings.guidance_scale,
            classifier,
        }
    }

    /// The same options at another CFG scale.
    pub fn at_scale(self, scale: f64) -> Self {
        Self { scale, ..self }
    }
}

/// Stacks the wrappers `guidance` asks for around `model` for rows of class `labels`, and
/// hands the resulting denoiser to `run` (e.g. a sampler): CFG (with its negative class and
/// rescale), inside a guidance interval if any, plus classifier guidance if asked, under
/// dynamic thresholding if on.
///
/// # Panics
/// If `settings.classifier_guidance > 0` without a classifier.
pub fn with_guidance<R>(
    model: &UNet,
    schedule: &NoiseSchedule,
    labels: &[usize],
    guidance: Guidance,
    device: &Device,
    run: impl FnOnce(&dyn Denoiser) -> R,
) -> R {
    let s = guidance.settings;
    let cfg = ClassifierFreeGuidance::new(
        model,
        schedule,
        labels,
        guidance.scale,
        s.negative_class,
        device,
    )
    .with_rescale(s.cfg_rescale);
    let plain = ClassifierFreeGuidance::new(model, schedule, labels, 1.0, None, device);
    let interval;
    let guided: &dyn Denoiser = match s.guidance_interval[..] {
        [low, high] => {
            interval = GuidanceInterval::new(&cfg, &plain, [low, high]);
            &interval
        }
        _ => &cfg,
    };
    let classified;
    let guided: &dyn Denoiser = if s.classifier_guidance > 0.0 {
        let classifier = guidance
            .classifier
            .expect("classifier guidance needs its noise-aware classifier");
        classified = ClassifierGuidance::new(guided, classifier, labels, s.classifier_guidance);
        &classified
    } else {
        guided
    };
    if s.dynamic_threshold > 0.0 {
        run(&DynamicThreshold::new(guided, s.dynamic_threshold))
    } else {
        run(guided)
    }
}

#[cfg(test)]
mod tests;
