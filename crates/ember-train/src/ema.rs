//! Exponential moving average of the weights, applied with a module mapper.

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use ember_model::UNet;
use std::collections::HashMap;

/// The decay used after `step` optimiser steps: the configured decay, lowered early in training
/// (`(1 + step) / (10 + step)`, as in TensorFlow's ExponentialMovingAverage with num_updates)
/// so that the EMA of a short run is not dominated by the random initialisation.
pub fn effective_decay(decay: f64, step: usize) -> f64 {
    decay.min((1.0 + step as f64) / (10.0 + step as f64))
}

/// `ema <- decay * ema + (1 - decay) * model`, parameter by parameter (matched by id).
/// The EMA lives outside autodiff; the model's values are read without their graph.
pub fn update(ema: UNet, model: &UNet, decay: f64) -> UNet {
    let mut collect = Collect::default();
    model.visit(&mut collect);
    ema.map(&mut Blend {
        model: collect.0,
        decay,
    })
}

#[derive(Default)]
struct Collect(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val().without_autodiff();
        let n = value.shape().num_elements();
        self.0.insert(param.id, value.reshape([n]));
    }
}

struct Blend {
    model: HashMap<ParamId, Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let current = self
            .model
            .remove(&param.id)
            .expect("the EMA has the same parameters as the model");
        let decay = self.decay;
        param.map(|ema| {
            let current = current.reshape(ema.shape());
            ema.mul_scalar(decay) + current.mul_scalar(1.0 - decay)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_decay_is_lowered_and_late_decay_is_the_configured_one() {
        assert!((effective_decay(0.999, 0) - 0.1).abs() < 1e-12);
        assert_eq!(effective_decay(0.999, 1_000_000), 0.999);
    }
}
