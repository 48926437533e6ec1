//! Classifier-free guidance (Ho & Salimans 2022) as a wrapper around the bare denoiser.
//!
//! Convention (see `ember_config`): `eps = eps_uncond + s * (eps_cond - eps_uncond)`, so `s = 1`
//! is the plain conditional model and `s = 0` the unconditional one. With a negative class the
//! negative branch takes the unconditional branch's place (the reference article's negative
//! prompting): `eps = eps_neg + s * (eps_cond - eps_neg)`.

use burn::prelude::*;
use ember_model::{UNet, labels_tensor};

/// Anything that predicts the noise of a batch at one timestep; what samplers call.
pub trait EpsModel {
    /// # Shapes
    /// - x: `[batch, ch, h, w]` -> `[batch, ch, h, w]`
    fn eps(&self, x: Tensor<4>, timestep: usize) -> Tensor<4>;
}

/// Combines conditional and unconditional predictions with scale `s`; the one place the
/// guidance formula is written.
pub fn guide(eps_cond: Tensor<4>, eps_uncond: Tensor<4>, scale: f64) -> Tensor<4> {
    eps_uncond.clone() + (eps_cond - eps_uncond).mul_scalar(scale)
}

/// The guided denoiser for fixed per-row class labels.
pub struct ClassifierFreeGuidance<'a> {
    model: &'a UNet,
    /// `[batch]` requested classes.
    labels: Tensor<1, Int>,
    /// `[batch]` labels of the other branch: the null class, or the negative class.
    uncond_labels: Tensor<1, Int>,
    scale: f64,
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
        }
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
        guide(eps_cond, eps_uncond, self.scale)
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
}
