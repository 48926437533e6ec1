//! Global-norm gradient clipping, as torch's `clip_grad_norm_` (Burn's own clipping is per
//! parameter tensor).

use burn::module::{ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use ember_model::UNet;

/// Scales all gradients by `max_norm / norm` when their joint L2 norm exceeds `max_norm`
/// (`max_norm = 0` disables clipping). Returns the gradients and the norm before clipping.
pub fn clip_global_norm(
    model: &UNet,
    grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, f64) {
    let mut visitor = Norm {
        grads,
        ids: Vec::new(),
        sum_squares: None,
    };
    model.visit(&mut visitor);
    let Norm {
        mut grads,
        ids,
        sum_squares,
    } = visitor;
    let norm = sum_squares
        .map_or(0.0, |s| s.into_scalar::<f32>() as f64)
        .sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        let mut scaler = Scale {
            grads: &mut grads,
            ids: &ids,
            scale,
        };
        model.visit(&mut scaler);
    }
    (grads, norm)
}

struct Norm {
    grads: GradientsParams,
    ids: Vec<ParamId>,
    sum_squares: Option<Tensor<1>>,
}

impl ModuleVisitor for Norm {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.square().sum(); // [1]
            self.sum_squares = Some(match self.sum_squares.take() {
                Some(acc) => acc + s,
                None => s,
            });
            self.ids.push(param.id);
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    ids: &'a [ParamId],
    scale: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.ids.contains(&param.id)
            && let Some(g) = self.grads.remove::<D>(param.id)
        {
            self.grads.register(param.id, g.mul_scalar(self.scale));
        }
    }
}
