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
}
