//! Seeded initialisation of Burn modules, shared by the UNet and the domain classifier.
//!
//! Burn's initialisers draw lazily, at a parameter's first use, from the backend's global RNG.
//! [`seeded_init`] seeds that RNG, builds the module and forces every parameter to initialise at
//! once, all under the process-wide lock of [`with_backend_rng`]: no draw of Ember's ever
//! happens outside it, so modules built at the same time (tests run in threads) cannot
//! interleave their draws, and a module's weights are a function of its seed alone.

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use std::sync::Mutex;

/// Runs `f` with the backend's global RNG seeded to `seed`, holding a process-wide lock so no
/// other thread reseeds or draws from it meanwhile. Burn's initialisers and dropout layers draw
/// from that RNG; this makes their draws a function of `seed` alone.
pub fn with_backend_rng<T>(device: &Device, seed: u64, f: impl FnOnce() -> T) -> T {
    static BACKEND_RNG: Mutex<()> = Mutex::new(());
    let _guard = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    f()
}

/// The module `build` makes, with every parameter drawn from `seed`: `build` runs under
/// [`with_backend_rng`], then every parameter is read once (in the module's field order), which
/// runs its lazy initialiser inside the seeded section.
pub fn seeded_init<M: Module>(device: &Device, seed: u64, build: impl FnOnce() -> M) -> M {
    with_backend_rng(device, seed, || {
        let module = build();
        module.visit(&mut Materialize);
        module
    })
}

/// A 3x3 convolution that keeps the spatial size (padding 1), with Burn's default initialiser.
pub fn conv3x3(c_in: usize, c_out: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// A tensor of `shape` filled, in row-major order, with the standard normals of
/// `Rng::new(seed)`: reproducible test inputs, independent of the backend's RNG.
pub fn seeded_normals<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    let values = crate::rng::Rng::new(seed).normals(n);
    Tensor::<1>::from_data(TensorData::new(values, [n]), device).reshape(shape)
}

/// `module` with seeded normal noise of standard deviation `std` added to every float
/// parameter; the i-th parameter in field order (from 1) draws from `Rng::new(first_seed + i)`.
/// Tests and the twin check use it so that zero-initialised layers (the output convs) take part.
pub fn perturb_params<M: Module>(module: M, first_seed: u64, std: f64) -> M {
    struct Perturb {
        seed: u64,
        std: f64,
    }
    impl ModuleMapper for Perturb {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            self.seed += 1;
            let (seed, std) = (self.seed, self.std);
            param.map(|t| {
                let noise = seeded_normals(t.dims(), seed, &t.device());
                t + noise.mul_scalar(std)
            })
        }
    }
    module.map(&mut Perturb {
        seed: first_seed,
        std,
    })
}

/// Reads every parameter once, which runs its lazy initialiser.
struct Materialize;

impl ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[derive(Module, Debug)]
    struct Tiny {
        conv: Conv2d,
        fc: Linear,
    }

    fn tiny(device: &Device, seed: u64) -> Tiny {
        seeded_init(device, seed, || Tiny {
            conv: conv3x3(1, 2, device),
            fc: LinearConfig::new(4, 3).init(device),
        })
    }

    /// Every parameter of the module, flattened in field order.
    fn weights(m: &Tiny) -> Vec<f32> {
        [
            m.conv.weight.val().flatten::<1>(0, 3),
            m.conv.bias.as_ref().unwrap().val(),
            m.fc.weight.val().flatten::<1>(0, 1),
            m.fc.bias.as_ref().unwrap().val(),
        ]
        .into_iter()
        .flat_map(|t| t.into_data().try_into_vec::<f32>().unwrap())
        .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_weights_and_another_seed_others() {
        let device = Device::flex();
        let a = weights(&tiny(&device, 1));
        assert_eq!(a.len(), 2 * 9 + 2 + 4 * 3 + 3);
        assert_eq!(a, weights(&tiny(&device, 1)));
        assert_ne!(a, weights(&tiny(&device, 2)));
    }

    #[test]
    fn parameters_are_drawn_inside_the_seeded_section() {
        // A draw from the backend RNG between building and first use must not move the weights:
        // they were all drawn before `seeded_init` returned. (The draw takes the lock too, so it
        // cannot disturb a test building a model in another thread.)
        let device = Device::flex();
        let m = tiny(&device, 3);
        with_backend_rng(&device, 12345, || {
            Tensor::<1>::random([64], burn::tensor::Distribution::Default, &device)
        });
        assert_eq!(weights(&m), weights(&tiny(&device, 3)));
    }
}
