//! Training objectives. One function per formulation, same signature.

use burn::prelude::*;

/// Epsilon-prediction loss (Ho et al. 2020, eq. 14, "L_simple"): mean squared error between the
/// predicted and the true noise, averaged over every element.
///
/// # Shapes
/// - predicted, noise: `[batch, ch, h, w]`; output: `[1]`
pub fn epsilon_mse(predicted: Tensor<4>, noise: Tensor<4>) -> Tensor<1> {
    (predicted - noise).square().mean()
}

/// The diffusion loss against any target ([`crate::NoiseSchedule::target`]): the per-sample
/// mean squared error, averaged over the batch with `weights` (one per sample) when given.
///
/// # Shapes
/// - predicted, target: `[batch, ch, h, w]`; output: `[1]`
pub fn weighted_mse(predicted: Tensor<4>, target: Tensor<4>, weights: Option<&[f32]>) -> Tensor<1> {
    let Some(weights) = weights else {
        return (predicted - target).square().mean();
    };
    let [b, c, h, w] = predicted.dims();
    let per_sample = (predicted - target)
        .square()
        .reshape([b, c * h * w])
        .mean_dim(1); // [b, 1]
    let weights =
        Tensor::<1>::from_data(TensorData::new(weights.to_vec(), [b]), &per_sample.device())
            .reshape([b, 1]);
    (per_sample * weights).mean()
}

/// Min-SNR-gamma weights (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
/// Strategy"): `min(SNR, gamma) / SNR` for noise prediction, `min(SNR, gamma) / (SNR + 1)` for
/// velocity and `min(SNR, gamma)` for clean-image prediction, which all equal the paper's
/// weighting of the x0 error.
pub fn min_snr_weights(
    schedule: &crate::NoiseSchedule,
    timesteps: &[usize],
    gamma: f64,
) -> Vec<f32> {
    use ember_config::Prediction;
    timesteps
        .iter()
        .map(|&t| {
            let snr = schedule.snr(t);
            let clipped = snr.min(gamma);
            (match schedule.prediction() {
                Prediction::Epsilon => clipped / snr,
                Prediction::V => clipped / (snr + 1.0),
                Prediction::X0 => clipped,
            }) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mse_of_known_difference() {
        let device = Device::flex();
        let a = Tensor::<4>::ones([1, 1, 2, 2], &device);
        let b = Tensor::<4>::zeros([1, 1, 2, 2], &device).add_scalar(3.0);
        let loss: f32 = epsilon_mse(a, b).into_scalar();
        assert_eq!(loss, 4.0);
    }

    #[test]
    fn weights_scale_each_samples_error() {
        let device = Device::flex();
        let p = Tensor::<4>::zeros([2, 1, 1, 2], &device);
        let t = Tensor::<4>::from_floats([[[[1.0, 1.0]]], [[[2.0, 2.0]]]], &device);
        let plain: f32 = weighted_mse(p.clone(), t.clone(), None).into_scalar();
        assert_eq!(plain, 2.5); // (1 + 4) / 2
        let weighted: f32 = weighted_mse(p, t, Some(&[1.0, 0.5])).into_scalar();
        assert_eq!(weighted, 1.5); // (1 * 1 + 0.5 * 4) / 2
    }

    #[test]
    fn min_snr_weights_clip_low_noise_steps_only() {
        use ember_config::{DiffusionConfig, Prediction};
        let eps = crate::NoiseSchedule::new(&DiffusionConfig::default());
        let w = min_snr_weights(&eps, &[0, 999], 5.0);
        // t = 0 has SNR ~ 1e4 > 5: weight 5 / SNR; t = 999 has SNR < 5: weight 1.
        assert!(
            (w[0] as f64 - 5.0 / eps.snr(0)).abs() < 1e-6 && w[1] == 1.0,
            "{w:?}"
        );
        let v = crate::NoiseSchedule::new(&DiffusionConfig {
            prediction: Prediction::V,
            ..DiffusionConfig::default()
        });
        let w = min_snr_weights(&v, &[999], 5.0);
        assert!((w[0] as f64 - v.snr(999) / (v.snr(999) + 1.0)).abs() < 1e-6);
    }
}
