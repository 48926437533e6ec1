//! Guidance as wrappers around the bare denoiser: every wrapper is an [`EpsModel`] holding the
//! denoiser it wraps, so samplers never know which guidance they run with, and wrappers stack.
//!
//! - [`ClassifierFreeGuidance`] (Ho & Salimans 2022), convention (see `ember_config`):
//!   `eps = eps_uncond + s * (eps_cond - eps_uncond)`, so `s = 1` is the plain conditional model
//!   and `s = 0` the unconditional one. With a negative class the negative branch takes the
//!   unconditional branch's place (the reference article's negative prompting). Optional CFG
//!   rescale (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
//!   section 3.4) with `phi`.
//! - [`GuidanceInterval`] (Kynkaanniemi et al. 2024, "Applying Guidance in a Limited Interval
//!   Improves Sample and Distribution Quality"): the guided denoiser inside a noise-level range,
//!   a plain conditional one (one forward at batch B) outside it.
//! - [`DynamicThreshold`] (Saharia et al. 2022, Imagen, section 2.3): clips each predicted clean
//!   image at a percentile of its absolute values and rescales it into [-1, 1].
//!
//! - [`ClassifierGuidance`] (Dhariwal & Nichol 2021, Algorithm 2; the reference article's
//!   baseline): `eps - s sqrt(1 - abar) grad_x log p(y | x_t)` with the gradient of a
//!   noise-aware classifier ([`NoisyClassifier`], e.g. `ember classifier train --noisy`).
//! - [`Inpaint`]: keeps the pixels of a source image outside a mask.
//!
//! - [`OutputToEps`]: turns a velocity or clean-image network's (guided) output into noise.
//!   CFG combines outputs in the network's own parameterisation; as the conversion is affine in
//!   the output for a given `x` and timestep, this equals guiding the implied noise, and CFG
//!   rescale acts on the network's output, as Lin et al. apply it to v-prediction.
//!
//! [`with_guidance`] stacks the guidance wrappers as a config asks.

use burn::prelude::*;
use ember_config::SampleConfig;
use ember_model::{NoiseSchedule, UNet, labels_tensor};

/// Anything that predicts the noise of a batch at one timestep; what samplers call.
pub trait EpsModel {
    /// # Shapes
    /// - x: `[batch, ch, h, w]` -> `[batch, ch, h, w]`
    fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4>;

    /// The predicted clean image (not clipped). The default derives it from [`Self::eps`],
    /// which needs `abar_t > 0`; wrappers that know it directly (a v or x0 network, and the
    /// wrappers above one) answer at `abar_t = 0` too, the first step of a zero-terminal-SNR
    /// schedule.
    ///
    /// # Shapes
    /// - x: `[batch, ch, h, w]` -> `[batch, ch, h, w]`
    fn x0(&self, x: Tensor<4>, timestep: usize, schedule: &NoiseSchedule) -> Tensor<4> {
        let ab = schedule.alpha_bar(Some(timestep));
        let eps = self.eps(x.clone(), timestep);
        (x - eps.mul_scalar((1.0 - ab).sqrt())).div_scalar(ab.sqrt())
    }
}

/// The noise implied by a clean-image prediction: `(x - sqrt(abar) x0) / sqrt(1 - abar)`.
pub fn eps_from_x0(x: Tensor<4>, x0: Tensor<4>, abar: f64) -> Tensor<4> {
    (x - x0.mul_scalar(abar.sqrt())).div_scalar((1.0 - abar).sqrt())
}

/// Combines conditional and unconditional predictions with scale `s`; the one place the
/// guidance formula is written.
pub fn guide(eps_cond: Tensor<4>, eps_uncond: Tensor<4>, scale: f64) -> Tensor<4> {
    eps_uncond.clone() + (eps_cond - eps_uncond).mul_scalar(scale)
}

/// CFG rescale: the guided prediction scaled per sample to the conditional prediction's
/// standard deviation, mixed with the plain guided prediction by `phi` (0 = plain CFG).
pub fn rescale(guided: Tensor<4>, eps_cond: Tensor<4>, phi: f64) -> Tensor<4> {
    if phi == 0.0 {
        return guided;
    }
    let [b, c, h, w] = guided.dims();
    let std = |t: Tensor<4>| t.reshape([b, c * h * w]).var(1).sqrt(); // [b, 1]
    let ratio = std(eps_cond)
        .div(std(guided.clone()).add_scalar(1e-12))
        .reshape([b, 1, 1, 1]);
    let rescaled = guided.clone() * ratio;
    rescaled.mul_scalar(phi) + guided.mul_scalar(1.0 - phi)
}

/// The guided denoiser for fixed per-row class labels. It combines the network's outputs, which
/// are noise only for noise-prediction models: [`with_guidance`] wraps it in [`OutputToEps`].
pub struct ClassifierFreeGuidance<'a> {
    model: &'a UNet,
    /// `[batch]` requested classes.
    labels: Tensor<1, Int>,
    /// `[batch]` labels of the other branch: the null class, or the negative class.
    uncond_labels: Tensor<1, Int>,
    scale: f64,
    /// CFG rescale phi.
    rescale: f64,
}

impl<'a> ClassifierFreeGuidance<'a> {
    /// `negative_class`, if given, replaces the null class in the unconditional branch.
    pub fn new(
        model: &'a UNet,
        labels: &[usize],
        scale: f64,
        negative_class: Option<usize>,
        device: &Device,
    ) -> Self {
        let uncond = negative_class.unwrap_or(model.null_class());
        Self {
            model,
            labels: labels_tensor(labels, device),
            uncond_labels: labels_tensor(&vec![uncond; labels.len()], device),
            scale,
            rescale: 0.0,
        }
    }

    /// With CFG rescale `phi` (0 = plain CFG).
    pub fn with_rescale(mut self, phi: f64) -> Self {
        self.rescale = phi;
        self
    }
}

fn timesteps_tensor(timestep: usize, batch: usize, device: &Device) -> Tensor<1> {
    Tensor::<1>::ones([batch], device).mul_scalar(timestep as f64)
}

impl EpsModel for ClassifierFreeGuidance<'_> {
    fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let device = x.device();
        let [batch, _, _, _] = x.dims();
        // "No guidance" and "unconditional" are one plain forward: exactly the bare model.
        if self.scale == 1.0 {
            let t = timesteps_tensor(timestep, batch, &device);
            return self.model.forward(x, t, self.labels.clone());
        }
        if self.scale == 0.0 {
            let t = timesteps_tensor(timestep, batch, &device);
            return self.model.forward(x, t, self.uncond_labels.clone());
        }
        // One batched forward over [x; x] with [labels; uncond].
        let t = timesteps_tensor(timestep, 2 * batch, &device);
        let x2 = Tensor::cat(vec![x.clone(), x], 0); // [2 batch, ch, h, w]
        let y2 = Tensor::cat(vec![self.labels.clone(), self.uncond_labels.clone()], 0);
        let eps = self.model.forward(x2, t, y2);
        let eps_cond = eps.clone().narrow(0, 0, batch);
        let eps_uncond = eps.narrow(0, batch, batch);
        let guided = guide(eps_cond.clone(), eps_uncond, self.scale);
        rescale(guided, eps_cond, self.rescale)
    }
}

/// `guided` while the noise level `sigma = sqrt((1 - abar) / abar)` of the timestep lies in
/// `[low, high]`, `plain` (the conditional model, one forward at batch B) elsewhere.
pub struct GuidanceInterval<'a> {
    guided: &'a dyn EpsModel,
    plain: &'a dyn EpsModel,
    schedule: &'a NoiseSchedule,
    low: f64,
    high: f64,
}

impl<'a> GuidanceInterval<'a> {
    pub fn new(
        guided: &'a dyn EpsModel,
        plain: &'a dyn EpsModel,
        schedule: &'a NoiseSchedule,
        [low, high]: [f64; 2],
    ) -> Self {
        Self {
            guided,
            plain,
            schedule,
            low,
            high,
        }
    }

    /// Whether timestep `t` is guided.
    pub fn contains(&self, t: usize) -> bool {
        let sigma = crate::samplers::sigma(self.schedule, Some(t));
        self.low <= sigma && sigma <= self.high
    }
}

impl GuidanceInterval<'_> {
    fn branch(&self, timestep: usize) -> &dyn EpsModel {
        if self.contains(timestep) {
            self.guided
        } else {
            self.plain
        }
    }
}

impl EpsModel for GuidanceInterval<'_> {
    fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        self.branch(timestep).eps(x, timestep)
    }

    fn x0(&self, x: Tensor<4>, timestep: usize, schedule: &NoiseSchedule) -> Tensor<4> {
        self.branch(timestep).x0(x, timestep, schedule)
    }
}

/// Imagen's dynamic thresholding of the predicted clean image `x0 = (x - sqrt(1 - abar) eps) /
/// sqrt(abar)`: per sample, `s` = the `percentile` of `|x0|` (at least 1); `x0` is clipped to
/// `[-s, s]` and divided by `s`; the noise is re-derived from it.
pub struct DynamicThreshold<'a> {
    inner: &'a dyn EpsModel,
    schedule: &'a NoiseSchedule,
    percentile: f64,
}

impl<'a> DynamicThreshold<'a> {
    pub fn new(inner: &'a dyn EpsModel, schedule: &'a NoiseSchedule, percentile: f64) -> Self {
        Self {
            inner,
            schedule,
            percentile,
        }
    }
}

impl EpsModel for DynamicThreshold<'_> {
    fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let x0 = self.x0(x.clone(), timestep, self.schedule);
        eps_from_x0(x, x0, self.schedule.alpha_bar(Some(timestep)))
    }

    fn x0(&self, x: Tensor<4>, timestep: usize, schedule: &NoiseSchedule) -> Tensor<4> {
        let device = x.device();
        let [b, c, h, w] = x.dims();
        let x0 = self.inner.x0(x, timestep, schedule);
        let values = x0.into_data().try_into_vec::<f32>().expect("f32 tensor");
        let n = c * h * w;
        let mut out = Vec::with_capacity(values.len());
        for row in values.chunks_exact(n) {
            let mut abs: Vec<f32> = row.iter().map(|v| v.abs()).collect();
            abs.sort_by(f32::total_cmp);
            let rank = ((n - 1) as f64 * self.percentile).round() as usize;
            let s = abs[rank].max(1.0);
            out.extend(row.iter().map(|v| v.clamp(-s, s) / s));
        }
        Tensor::<4>::from_data(TensorData::new(out, [b, c, h, w]), &device)
    }
}

/// Inpainting (the reference article's section 6) as a denoiser wrapper: where `keep` is 1 the
/// predicted clean image is replaced by `source`, and the noise is re-derived from that, so
/// every sampler carries the kept pixels to the source while the rest is generated around
/// them. Samplers end on the predicted clean image, so the kept pixels end equal to the source.
pub struct Inpaint<'a> {
    inner: &'a dyn EpsModel,
    schedule: &'a NoiseSchedule,
    /// `[batch, ch, h, w]` in [-1, 1]
    source: Tensor<4>,
    /// `[batch, 1, h, w]`: 1 = keep the source pixel, 0 = generate
    keep: Tensor<4>,
}

impl<'a> Inpaint<'a> {
    pub fn new(
        inner: &'a dyn EpsModel,
        schedule: &'a NoiseSchedule,
        source: Tensor<4>,
        keep: Tensor<4>,
    ) -> Self {
        Self {
            inner,
            schedule,
            source,
            keep,
        }
    }
}

impl EpsModel for Inpaint<'_> {
    fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let x0 = self.x0(x.clone(), timestep, self.schedule);
        eps_from_x0(x, x0, self.schedule.alpha_bar(Some(timestep)))
    }

    fn x0(&self, x: Tensor<4>, timestep: usize, schedule: &NoiseSchedule) -> Tensor<4> {
        let x0 = self.inner.x0(x, timestep, schedule);
        let [_, c, _, _] = x0.dims();
        let keep = self.keep.clone().repeat_dim(1, c);
        self.source.clone() * keep.clone() + x0 * keep.neg().add_scalar(1.0)
    }
}

/// The noise implied by the wrapped denoiser's output under the schedule's prediction type (a
/// no-op for noise prediction).
pub struct OutputToEps<'a> {
    inner: &'a dyn EpsModel,
    schedule: &'a NoiseSchedule,
}

impl<'a> OutputToEps<'a> {
    pub fn new(inner: &'a dyn EpsModel, schedule: &'a NoiseSchedule) -> Self {
        Self { inner, schedule }
    }
}

impl EpsModel for OutputToEps<'_> {
    fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let output = self.inner.eps(x.clone(), timestep);
        self.schedule.output_to_eps(output, x, timestep)
    }

    fn x0(&self, x: Tensor<4>, timestep: usize, _: &NoiseSchedule) -> Tensor<4> {
        let output = self.inner.eps(x.clone(), timestep);
        self.schedule.output_to_x0(output, x, timestep)
    }
}

/// A classifier of noisy images: the gradient of its log-probability of each row's class.
pub trait NoisyClassifier {
    /// `grad_x log p(labels[i] | x_i, t)` per row.
    ///
    /// # Shapes
    /// - x: `[batch, ch, h, w]` -> `[batch, ch, h, w]`
    fn grad_log_prob(&self, x: Tensor<4>, timestep: usize, labels: &[usize]) -> Tensor<4>;
}

/// Classifier guidance: shifts the predicted noise along the classifier's gradient,
/// `eps - scale * sqrt(1 - abar) * grad_x log p(y | x_t)`, i.e. samples
/// `p(x) p(y | x)^scale` when `inner` is the unconditional model.
pub struct ClassifierGuidance<'a> {
    inner: &'a dyn EpsModel,
    classifier: &'a dyn NoisyClassifier,
    schedule: &'a NoiseSchedule,
    labels: Vec<usize>,
    scale: f64,
}

impl<'a> ClassifierGuidance<'a> {
    pub fn new(
        inner: &'a dyn EpsModel,
        classifier: &'a dyn NoisyClassifier,
        schedule: &'a NoiseSchedule,
        labels: &[usize],
        scale: f64,
    ) -> Self {
        Self {
            inner,
            classifier,
            schedule,
            labels: labels.to_vec(),
            scale,
        }
    }
}

impl EpsModel for ClassifierGuidance<'_> {
    fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4> {
        let ab = self.schedule.alpha_bar(Some(timestep));
        let grad = self
            .classifier
            .grad_log_prob(x.clone(), timestep, &self.labels);
        self.inner.eps(x, timestep) - grad.mul_scalar(self.scale * (1.0 - ab).sqrt())
    }

    /// At `abar = 0` (pure noise) the shift of the clean image, `s (1 - abar) / sqrt(abar)`
    /// times the gradient, is unbounded; there the classifier is not consulted.
    fn x0(&self, x: Tensor<4>, timestep: usize, schedule: &NoiseSchedule) -> Tensor<4> {
        let ab = schedule.alpha_bar(Some(timestep));
        if ab == 0.0 {
            return self.inner.x0(x, timestep, schedule);
        }
        let eps = self.eps(x.clone(), timestep);
        (x - eps.mul_scalar((1.0 - ab).sqrt())).div_scalar(ab.sqrt())
    }
}

/// How to guide: the `[sample]` keys other than the sampler's own.
#[derive(Clone)]
pub struct GuidanceOptions {
    pub scale: f64,
    pub negative_class: Option<usize>,
    /// Noise-level range `[low, high]` where guidance applies; `None`: everywhere.
    pub interval: Option<[f64; 2]>,
    pub rescale: f64,
    /// Dynamic-thresholding percentile; 0 = off.
    pub dynamic_threshold: f64,
    /// Classifier guidance on top of the rest: the classifier and its scale.
    pub classifier: Option<(std::sync::Arc<dyn NoisyClassifier>, f64)>,
}

impl std::fmt::Debug for GuidanceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuidanceOptions")
            .field("scale", &self.scale)
            .field("negative_class", &self.negative_class)
            .field("interval", &self.interval)
            .field("rescale", &self.rescale)
            .field("dynamic_threshold", &self.dynamic_threshold)
            .field("classifier_scale", &self.classifier.as_ref().map(|c| c.1))
            .finish()
    }
}

impl GuidanceOptions {
    pub fn from_config(s: &SampleConfig) -> Self {
        Self {
            scale: s.guidance_scale,
            negative_class: None,
            interval: match s.guidance_interval[..] {
                [low, high] => Some([low, high]),
                _ => None,
            },
            rescale: s.cfg_rescale,
            dynamic_threshold: s.dynamic_threshold,
            classifier: None,
        }
    }

    /// Plain classifier-free guidance at `scale`.
    pub fn cfg(scale: f64) -> Self {
        Self {
            scale,
            negative_class: None,
            interval: None,
            rescale: 0.0,
            dynamic_threshold: 0.0,
            classifier: None,
        }
    }
}

/// Stacks the wrappers `options` asks for around `model` for rows of class `labels`, and hands
/// the resulting denoiser to `run` (e.g. a sampler): CFG (with its negative class and rescale),
/// inside a guidance interval if any, plus classifier guidance if asked, under dynamic
/// thresholding if on.
pub fn with_guidance<R>(
    model: &UNet,
    schedule: &NoiseSchedule,
    labels: &[usize],
    options: &GuidanceOptions,
    device: &Device,
    run: impl FnOnce(&dyn EpsModel) -> R,
) -> R {
    let cfg =
        ClassifierFreeGuidance::new(model, labels, options.scale, options.negative_class, device)
            .with_rescale(options.rescale);
    let plain = ClassifierFreeGuidance::new(model, labels, 1.0, None, device);
    let (cfg, plain) = (
        OutputToEps::new(&cfg, schedule),
        OutputToEps::new(&plain, schedule),
    );
    let interval;
    let guided: &dyn EpsModel = match options.interval {
        Some(range) => {
            interval = GuidanceInterval::new(&cfg, &plain, schedule, range);
            &interval
        }
        None => &cfg,
    };
    let classified;
    let guided: &dyn EpsModel = match &options.classifier {
        Some((classifier, scale)) => {
            classified =
                ClassifierGuidance::new(guided, classifier.as_ref(), schedule, labels, *scale);
            &classified
        }
        None => guided,
    };
    if options.dynamic_threshold > 0.0 {
        run(&DynamicThreshold::new(
            guided,
            schedule,
            options.dynamic_threshold,
        ))
    } else {
        run(guided)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_model::UNetConfig;

    fn model(device: &Device) -> UNet {
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
        }
        .init(device, 0);
        // Zero-initialised output layers would make every prediction 0; perturb them.
        perturb(model, device)
    }

    fn perturb(model: UNet, device: &Device) -> UNet {
        struct Perturb<'a>(&'a Device, u64);
        impl burn::module::ModuleMapper for Perturb<'_> {
            fn map_float<const D: usize>(
                &mut self,
                param: burn::module::Param<Tensor<D>>,
            ) -> burn::module::Param<Tensor<D>> {
                self.1 += 1;
                let seed = self.1;
                let device = self.0.clone();
                param.map(|t| {
                    let n = t.shape().num_elements();
                    let noise = ember_model::rng::Rng::new(seed).normals(n);
                    let noise = Tensor::<1>::from_data(TensorData::new(noise, [n]), &device)
                        .reshape(t.shape())
                        .mul_scalar(0.1);
                    t + noise
                })
            }
        }
        model.map(&mut Perturb(device, 0))
    }

    fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    fn inputs(device: &Device) -> (Tensor<4>, Vec<usize>) {
        let x = ember_model::rng::Rng::new(9).normals(2 * 64);
        let x = Tensor::<1>::from_data(TensorData::new(x, [128]), device).reshape([2, 1, 8, 8]);
        (x, vec![0, 2])
    }

    #[test]
    fn scale_one_is_the_conditional_model_and_zero_the_unconditional() {
        let device = Device::flex();
        let m = model(&device);
        let (x, labels) = inputs(&device);
        let t = timesteps_tensor(500, 2, &device);
        let cond = m.forward(x.clone(), t.clone(), labels_tensor(&labels, &device));
        let uncond = m.forward(x.clone(), t, labels_tensor(&[3, 3], &device));
        assert!(
            max_abs_diff(cond.clone(), uncond.clone()) > 1e-4,
            "classes must matter"
        );
        let g1 = ClassifierFreeGuidance::new(&m, &labels, 1.0, None, &device).eps(x.clone(), 500);
        let g0 = ClassifierFreeGuidance::new(&m, &labels, 0.0, None, &device).eps(x.clone(), 500);
        assert_eq!(max_abs_diff(g1, cond.clone()), 0.0);
        assert_eq!(max_abs_diff(g0, uncond.clone()), 0.0);
        // The batched path gives the same combination as two separate forwards.
        let g = ClassifierFreeGuidance::new(&m, &labels, 2.5, None, &device).eps(x, 500);
        let expected = guide(cond, uncond, 2.5);
        assert!(max_abs_diff(g, expected) < 1e-4);
    }

    #[test]
    fn batched_path_at_scale_one_matches_the_conditional_model() {
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
        let m = model(&device);
        let (x, labels) = inputs(&device);
        let t = timesteps_tensor(200, 2, &device);
        let cond = m.forward(x.clone(), t.clone(), labels_tensor(&labels, &device));
        let neg = m.forward(x.clone(), t, labels_tensor(&[1, 1], &device));
        let g = ClassifierFreeGuidance::new(&m, &labels, 3.0, Some(1), &device).eps(x, 200);
        assert!(max_abs_diff(g, guide(cond, neg, 3.0)) < 1e-4);
    }

    fn schedule() -> NoiseSchedule {
        NoiseSchedule::new(&ember_config::DiffusionConfig::default())
    }

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn rescale_with_phi_zero_is_plain_cfg_and_phi_one_matches_the_conditional_std() {
        let device = Device::flex();
        let m = model(&device);
        let (x, labels) = inputs(&device);
        let plain = ClassifierFreeGuidance::new(&m, &labels, 4.0, None, &device);
        let phi0 = ClassifierFreeGuidance::new(&m, &labels, 4.0, None, &device).with_rescale(0.0);
        assert_eq!(
            values(plain.eps(x.clone(), 300)),
            values(phi0.eps(x.clone(), 300))
        );

        let phi1 = ClassifierFreeGuidance::new(&m, &labels, 4.0, None, &device).with_rescale(1.0);
        let cond = ClassifierFreeGuidance::new(&m, &labels, 1.0, None, &device).eps(x.clone(), 300);
        let std = |t: Tensor<4>| {
            let s: Tensor<2> = t.reshape([2, 64]).var(1).sqrt();
            s.into_data().try_into_vec::<f32>().unwrap()
        };
        let (a, b) = (std(phi1.eps(x.clone(), 300)), std(cond));
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-4 * b.max(1.0), "{a} vs {b}");
        }
        // ... and phi = 0.5 is the average of the two.
        let half = ClassifierFreeGuidance::new(&m, &labels, 4.0, None, &device).with_rescale(0.5);
        let mid = (plain.eps(x.clone(), 300) + phi1.eps(x.clone(), 300)).div_scalar(2.0);
        assert!(max_abs_diff(half.eps(x, 300), mid) < 1e-5);
    }

    /// Counts calls, so tests can see which branch a wrapper used.
    struct Counting<'a>(&'a dyn EpsModel, std::cell::Cell<usize>);
    impl EpsModel for Counting<'_> {
        fn eps(&self, x: Tensor<4>, t: usize) -> Tensor<4> {
            self.1.set(self.1.get() + 1);
            self.0.eps(x, t)
        }
    }

    #[test]
    fn an_empty_guidance_interval_is_unguided_sampling() {
        let device = Device::flex();
        let m = model(&device);
        let (x, labels) = inputs(&device);
        let s = schedule();
        let guided = ClassifierFreeGuidance::new(&m, &labels, 5.0, None, &device);
        let plain = ClassifierFreeGuidance::new(&m, &labels, 1.0, None, &device);
        let guided = Counting(&guided, Default::default());
        // sigma is at least 0.01 at t = 0, so [0, 0.001] holds no timestep.
        let interval = GuidanceInterval::new(&guided, &plain, &s, [0.0, 0.001]);
        let run = |d: &dyn EpsModel| {
            let mut noise = crate::SeededNoise::new(3);
            let opts = crate::SamplerOptions::steps(6);
            values(crate::ddim(d, &s, x.clone(), opts, &mut noise))
        };
        assert_eq!(run(&interval), run(&plain));
        assert_eq!(
            guided.1.get(),
            0,
            "the guided (2B) denoiser is never called"
        );
    }

    #[test]
    fn interval_rescale_and_negative_class_compose_without_the_sampler() {
        let device = Device::flex();
        let m = model(&device);
        let (x, labels) = inputs(&device);
        let s = schedule();
        let options = GuidanceOptions {
            scale: 3.0,
            negative_class: Some(1),
            interval: Some([0.5, 5.0]),
            rescale: 0.7,
            dynamic_threshold: 0.0,
            classifier: None,
        };
        let sigma = |t| crate::samplers::sigma(&s, Some(t));
        let (inside, outside) = (400, 900);
        assert!((0.5..=5.0).contains(&sigma(inside)) && sigma(outside) > 5.0);
        let t_of = |t: usize| timesteps_tensor(t, 2, &device);
        let forward =
            |t: usize, ys: &[usize]| m.forward(x.clone(), t_of(t), labels_tensor(ys, &device));
        with_guidance(&m, &s, &labels, &options, &device, |d| {
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
        });
    }

    #[test]
    fn dynamic_thresholding_keeps_predicted_images_in_range() {
        /// Predicts noise that implies a clean image far outside [-1, 1].
        struct Wild;
        impl EpsModel for Wild {
            fn eps(&self, x: Tensor<4>, _: usize) -> Tensor<4> {
                x.mul_scalar(-3.0)
            }
        }
        let device = Device::flex();
        let s = schedule();
        let (x, _) = inputs(&device);
        let t = 500;
        let ab = s.alpha_bar(Some(t));
        let x0 = |eps: Tensor<4>| {
            values((x.clone() - eps.mul_scalar((1.0 - ab).sqrt())).div_scalar(ab.sqrt()))
        };
        let raw = x0(Wild.eps(x.clone(), t));
        assert!(raw.iter().any(|v| v.abs() > 2.0));
        let thresholded = x0(DynamicThreshold::new(&Wild, &s, 0.9).eps(x.clone(), t));
        assert!(thresholded.iter().all(|v| v.abs() <= 1.0 + 1e-4));
        // Per sample, the 90th percentile of |x0| maps to 1: about 10% of values sit at +-1.
        let at_one = thresholded[..64].iter().filter(|v| v.abs() > 0.999).count();
        assert!((5..=9).contains(&at_one), "{at_one}");
        // An in-range prediction is left as it is.
        let tame = DynamicThreshold::new(&Shrunk, &s, 0.9);
        assert!(max_abs_diff(tame.eps(x.clone(), t), Shrunk.eps(x, t)) < 1e-4);

        struct Shrunk;
        impl EpsModel for Shrunk {
            fn eps(&self, x: Tensor<4>, t: usize) -> Tensor<4> {
                // eps that implies x0 = 0.1 x: well inside [-1, 1].
                let ab = schedule().alpha_bar(Some(t));
                (x.clone() - x.mul_scalar(0.1 * ab.sqrt())).div_scalar((1.0 - ab).sqrt())
            }
        }
    }

    #[test]
    fn inpainting_ends_with_the_kept_pixels_of_the_source_for_every_sampler() {
        use ember_config::SamplerKind;
        let device = Device::flex();
        let m = model(&device);
        let s = schedule();
        let (x, labels) = inputs(&device); // [2, 1, 8, 8]
        let source = x.clone().tanh(); // any image in [-1, 1]
        // Keep the left half, regenerate the right half.
        let keep: Vec<f32> = (0..64).map(|i| if i % 8 < 4 { 1.0 } else { 0.0 }).collect();
        let keep =
            Tensor::<4>::from_data(TensorData::new(keep, [1, 1, 8, 8]), &device).repeat_dim(0, 2);
        let cfg = ClassifierFreeGuidance::new(&m, &labels, 3.0, None, &device);
        for kind in SamplerKind::ALL {
            let inpaint = Inpaint::new(&cfg, &s, source.clone(), keep.clone());
            let mut noise = crate::SeededNoise::new(4);
            let options = crate::SamplerOptions {
                strength: 0.7,
                ..crate::SamplerOptions::steps(6)
            };
            let out = crate::samplers::sample(kind, &inpaint, &s, x.clone(), options, &mut noise);
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

    #[test]
    fn strength_runs_the_last_fraction_of_the_steps() {
        let s = schedule();
        let options = |strength| crate::SamplerOptions {
            strength,
            ..crate::SamplerOptions::steps(10)
        };
        let all = crate::samplers::visited_timesteps(&s, options(1.0));
        assert_eq!(all.len(), 10);
        assert_eq!(
            crate::samplers::visited_timesteps(&s, options(0.6)),
            all[4..]
        );
        assert_eq!(
            crate::samplers::visited_timesteps(&s, options(0.01)),
            all[9..]
        );
    }
}
