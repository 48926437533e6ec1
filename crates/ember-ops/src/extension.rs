//! The kernels as a Burn backend extension: forward ops for the Flex backend, and the same ops
//! on `Autodiff<Flex>` with backward passes that call the fused gradient kernels.
//!
//! Only the Flex backend is listed: the public functions in `lib.rs` call these ops only on
//! Flex devices and use Burn's stock ops everywhere else (CUDA included).

use crate::kernels::{attention, conv, norm, silu};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Shape, TensorData};

#[backend_extension(Flex, Autodiff)]
pub trait EmberOps: Backend {
    /// Convolution with bias, groups 1, dilation 1, the same stride and padding on both axes.
    fn ember_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self>;

    /// Affine GroupNorm over `[batch, channels, ...]`, followed by SiLU when `silu`.
    fn ember_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        epsilon: f64,
        silu: bool,
    ) -> FloatTensor<Self>;

    /// `x * sigmoid(x)`.
    fn ember_silu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Multi-head self-attention over the pixels: `[B, 3C, H, W]` (the qkv projection) ->
    /// `[B, C, H, W]`.
    fn ember_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self>;
}

/// The tensor's values as a contiguous f32 slice owner.
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("ember-ops kernels take f32 tensors (lib.rs falls back to Burn's ops otherwise)")
}

fn tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// A backward pass's view of an input its op checkpointed, contiguous.
fn retrieve(checkpointer: &mut Checkpointer, id: NodeId) -> FlexTensor {
    contiguous(checkpointer.retrieve_node_output::<FlexTensor>(id))
}

/// Registers `values` (of `shape`) as the gradient of `parent`, when that input tracks one.
fn register(grads: &mut Gradients, parent: Option<NodeId>, values: Vec<f32>, shape: Shape) {
    if let Some(id) = parent {
        grads.register::<Flex>(id, tensor(values, shape));
    }
}

fn conv_shape(
    x: &FlexTensor,
    weight: &FlexTensor,
    stride: usize,
    padding: usize,
) -> conv::ConvShape {
    let [batch, c_in, h, w] = x.shape().dims();
    let [c_out, c_in_w, kh, kw] = weight.shape().dims();
    assert_eq!(
        c_in, c_in_w,
        "conv2d: input has {c_in} channels, weight expects {c_in_w}"
    );
    conv::ConvShape {
        batch,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride,
        padding,
    }
}

fn attention_shape(qkv: &FlexTensor, heads: usize) -> attention::AttentionShape {
    let [batch, channels3, h, w] = qkv.shape().dims();
    attention::AttentionShape {
        batch,
        channels: channels3 / 3,
        pixels: h * w,
        heads,
    }
}

fn norm_shape(x: &FlexTensor, groups: usize) -> norm::NormShape {
    let shape = x.shape();
    let (batch, channels) = (shape[0], shape[1]);
    norm::NormShape {
        batch,
        channels,
        spatial: shape.num_elements() / (batch * channels),
        groups,
    }
}

impl EmberOps for Flex {
    fn ember_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        stride: usize,
        padding: usize,
    ) -> FlexTensor {
        let (x, weight, bias) = (contiguous(x), contiguous(weight), contiguous(bias));
        let s = conv_shape(&x, &weight, stride, padding);
        let y = conv::forward(&s, values(&x), values(&weight), values(&bias));
        tensor(y, Shape::new([s.batch, s.c_out, s.h_out(), s.w_out()]))
    }

    fn ember_group_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        groups: usize,
        epsilon: f64,
        silu: bool,
    ) -> FlexTensor {
        let (x, gamma, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
        let y = norm::forward(
            values(&x),
            values(&gamma),
            values(&beta),
            norm_shape(&x, groups),
            epsilon,
            silu,
        );
        tensor(y, x.shape())
    }

    fn ember_silu(x: FlexTensor) -> FlexTensor {
        let x = contiguous(x);
        tensor(silu::forward(values(&x)), x.shape())
    }

    fn ember_attention(qkv: FlexTensor, heads: usize) -> FlexTensor {
        let qkv = contiguous(qkv);
        let [batch, channels3, h, w] = qkv.shape().dims();
        let out = attention::forward(&attention_shape(&qkv, heads), values(&qkv));
        tensor(out, Shape::new([batch, channels3 / 3, h, w]))
    }
}

impl<C: CheckpointStrategy> EmberOps for Autodiff<Flex, C> {
    fn ember_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Conv;

        impl Backward<Flex, 3> for Conv {
            type State = (NodeId, NodeId, usize, usize);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_weight, node_bias] =
                    ops.parents.map(|parent| parent.map(|node| node.id));
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (x_state, weight_state, stride, padding) = ops.state;
                let x = retrieve(checkpointer, x_state);
                let weight = retrieve(checkpointer, weight_state);
                let s = conv_shape(&x, &weight, stride, padding);
                let (dx, dw, db) = conv::backward(
                    &s,
                    values(&x),
                    values(&weight),
                    values(&grad),
                    node_x.is_some(),
                );
                register(grads, node_x, dx, x.shape());
                register(grads, node_weight, dw, weight.shape());
                register(grads, node_bias, db, Shape::new([s.c_out]));
            }
        }

        let nodes = [x.node(), weight.node(), bias.node()];
        let forward = |x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>| {
            let (x, weight, bias) = (
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            );
            Flex::ember_conv2d(x, weight, bias, stride, padding)
        };
        match Conv.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&weight),
                    stride,
                    padding,
                );
                prep.finish(state, forward(x, weight, bias))
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x, weight, bias)),
        }
    }

    fn ember_group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        epsilon: f64,
        silu: bool,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct GroupNorm;

        impl Backward<Flex, 3> for GroupNorm {
            type State = (NodeId, NodeId, NodeId, usize, f64, bool);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_gamma, node_beta] =
                    ops.parents.map(|parent| parent.map(|node| node.id));
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (x_state, gamma_state, beta_state, groups, epsilon, silu) = ops.state;
                let x = retrieve(checkpointer, x_state);
                let gamma = retrieve(checkpointer, gamma_state);
                let beta = retrieve(checkpointer, beta_state);
                let (dx, dgamma, dbeta) = norm::backward(
                    values(&x),
                    values(&gamma),
                    values(&beta),
                    values(&grad),
                    norm_shape(&x, groups),
                    epsilon,
                    silu,
                );
                register(grads, node_x, dx, x.shape());
                register(grads, node_gamma, dgamma, gamma.shape());
                register(grads, node_beta, dbeta, beta.shape());
            }
        }

        let nodes = [x.node(), gamma.node(), beta.node()];
        let forward = |x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>| {
            let (x, gamma, beta) = (
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
            );
            Flex::ember_group_norm(x, gamma, beta, groups, epsilon, silu)
        };
        match GroupNorm.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let (x_id, gamma_id) = (prep.checkpoint(&x), prep.checkpoint(&gamma));
                let state = (
                    x_id,
                    gamma_id,
                    prep.checkpoint(&beta),
                    groups,
                    epsilon,
                    silu,
                );
                prep.finish(state, forward(x, gamma, beta))
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x, gamma, beta)),
        }
    }

    fn ember_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Silu;

        impl Backward<Flex, 1> for Silu {
            type State = NodeId;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x] = ops.parents.map(|parent| parent.map(|node| node.id));
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let x = retrieve(checkpointer, ops.state);
                if node_x.is_some() {
                    let dx = silu::backward(values(&x), values(&grad));
                    register(grads, node_x, dx, x.shape());
                }
            }
        }

        match Silu.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&x);
                prep.finish(state, Flex::ember_silu(x.into_primitive()))
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::ember_silu(x.into_primitive())),
        }
    }

    fn ember_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Attention;

        impl Backward<Flex, 1> for Attention {
            type State = (NodeId, usize);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_qkv] = ops.parents.map(|parent| parent.map(|node| node.id));
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (qkv_state, heads) = ops.state;
                let qkv = retrieve(checkpointer, qkv_state);
                if node_qkv.is_some() {
                    let shape = attention_shape(&qkv, heads);
                    let d_qkv = attention::backward(&shape, values(&qkv), values(&grad));
                    register(grads, node_qkv, d_qkv, qkv.shape());
                }
            }
        }

        match Attention
            .prepare::<C>([qkv.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&qkv), heads);
                prep.finish(state, Flex::ember_attention(qkv.into_primitive(), heads))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::ember_attention(qkv.into_primitive(), heads))
            }
        }
    }
}
