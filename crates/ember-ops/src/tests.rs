//! The fused ops against Burn's stock ops on the same Flex device: outputs, and every gradient
//! through `Autodiff<Flex>` for a random linear functional of the output.

use super::*;
use burn::module::Param;
use burn::nn::GroupNormConfig;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::TensorData;

/// Seeded values in [-2, 2).
fn values(len: usize, seed: u32) -> Vec<f32> {
    crate::kernels::test_values(len, seed)
        .into_iter()
        .map(|v| 2.0 * v)
        .collect()
}

fn tensor<const D: usize>(shape: [usize; D], seed: u32, device: &Device) -> Tensor<D> {
    let len = shape.iter().product();
    Tensor::from_data(TensorData::new(values(len, seed), shape), device)
}

fn max_difference<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let max: f32 = (a - b).abs().max().into_scalar();
    max
}

fn max_abs<const D: usize>(a: Tensor<D>) -> f32 {
    let max: f32 = a.abs().max().into_scalar();
    max
}

/// Relative to the larger magnitude, so the tolerance suits both small and large gradients.
fn assert_close<const D: usize>(what: &str, fused: Tensor<D>, stock: Tensor<D>, tolerance: f32) {
    let scale = max_abs(stock.clone()).max(1e-3);
    let diff = max_difference(fused, stock);
    assert!(
        diff <= tolerance * scale,
        "{what}: max difference {diff} (scale {scale})"
    );
}

/// A convolution's output and the gradients of `<r, conv(x)>` (fixed random `r`) wrt x, weight
/// and bias, fused against stock.
fn conv_case(kernel: usize, stride: usize, padding: usize) {
    let device = Device::flex().autodiff();
    let mut conv = Conv2dConfig::new([6, 8], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .init(&device);
    conv.weight = Param::from_tensor(tensor([8, 6, kernel, kernel], 1, &device).mul_scalar(0.3));
    conv.bias = Some(Param::from_tensor(tensor([8], 2, &device)));
    let x = tensor([5, 6, 9, 7], 3, &device).require_grad();
    assert!(
        runs_fused(&x) || !fused_ops_enabled(),
        "autodiff over Flex takes the fused path"
    );
    let fused = conv2d(&conv, x.clone());
    let stock = conv.forward(x.clone());
    let what = format!("conv {kernel}x{kernel} stride {stride} padding {padding}");
    assert_eq!(fused.dims(), stock.dims(), "{what}");
    let r = tensor(stock.dims(), 4, &device);
    assert_close(
        &format!("{what} output"),
        fused.clone(),
        stock.clone(),
        1e-5,
    );
    let g_fused = (fused * r.clone()).sum().backward();
    let g_stock = (stock * r).sum().backward();
    let bias = conv.bias.as_ref().unwrap().val();
    assert_same_grad(&format!("{what} dx"), &x, &g_fused, &g_stock);
    assert_same_grad(
        &format!("{what} dweight"),
        &conv.weight.val(),
        &g_fused,
        &g_stock,
    );
    assert_same_grad(&format!("{what} dbias"), &bias, &g_fused, &g_stock);
}

fn assert_same_grad<const D: usize>(
    what: &str,
    param: &Tensor<D>,
    fused: &burn::tensor::Gradients,
    stock: &burn::tensor::Gradients,
) {
    assert_close(
        what,
        param.grad(fused).unwrap(),
        param.grad(stock).unwrap(),
        1e-5,
    );
}

#[test]
fn conv2d_matches_burn_forward_and_backward() {
    conv_case(3, 1, 1);
    conv_case(3, 2, 1);
    conv_case(1, 1, 0);
    conv_case(3, 1, 0);
}

fn norm_case(silu: bool) {
    let device = Device::flex().autodiff();
    let mut norm = GroupNormConfig::new(4, 12).init(&device);
    norm.gamma = Some(Param::from_tensor(tensor([12], 5, &device)));
    norm.beta = Some(Param::from_tensor(tensor([12], 6, &device)));
    // Values with a large common offset: the statistics must not lose the small spread.
    let x = tensor([3, 12, 5, 6], 7, &device)
        .add_scalar(100.0)
        .require_grad();
    let (fused, stock) = if silu {
        (
            group_norm_silu(&norm, x.clone()),
            burn::tensor::activation::silu(norm.forward(x.clone())),
        )
    } else {
        (group_norm(&norm, x.clone()), norm.forward(x.clone()))
    };
    let what = format!("group norm (silu {silu})");
    assert_close(
        &format!("{what} output"),
        fused.clone(),
        stock.clone(),
        1e-4,
    );
    let r = tensor(stock.dims(), 8, &device);
    let g_fused = (fused * r.clone()).sum().backward();
    let g_stock = (stock * r).sum().backward();
    assert_close(
        &format!("{what} dx"),
        x.grad(&g_fused).unwrap(),
        x.grad(&g_stock).unwrap(),
        1e-3,
    );
    for (name, p) in [("gamma", &norm.gamma), ("beta", &norm.beta)] {
        let p = p.as_ref().unwrap().val();
        assert_close(
            &format!("{what} d{name}"),
            p.grad(&g_fused).unwrap(),
            p.grad(&g_stock).unwrap(),
            1e-4,
        );
    }
}

#[test]
fn group_norm_matches_burn_forward_and_backward() {
    norm_case(false);
    norm_case(true);
}

#[test]
fn silu_matches_burn_forward_and_backward() {
    let device = Device::flex().autodiff();
    let x = tensor([4, 300], 9, &device).mul_scalar(5.0).require_grad();
    let fused = silu(x.clone());
    let stock = burn::tensor::activation::silu(x.clone());
    assert_close("silu output", fused.clone(), stock.clone(), 1e-6);
    let r = tensor([4, 300], 10, &device);
    let g_fused = (fused * r.clone()).sum().backward();
    let g_stock = (stock * r).sum().backward();
    assert_close(
        "silu dx",
        x.grad(&g_fused).unwrap(),
        x.grad(&g_stock).unwrap(),
        1e-6,
    );
}

#[test]
fn inference_tensors_take_the_fused_path_too() {
    let device = Device::flex();
    let x = tensor([2, 3, 5, 5], 11, &device);
    assert!(runs_fused(&x) || !fused_ops_enabled());
    let conv = Conv2dConfig::new([3, 4], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&device);
    assert_close(
        "conv without autodiff",
        conv2d(&conv, x.clone()),
        conv.forward(x),
        1e-5,
    );
}

#[test]
fn attention_matches_burn_forward_and_backward() {
    let device = Device::flex().autodiff();
    // 12 channels in 3 heads of 4, over a 5x6 map (30 pixels: not a multiple of 8).
    let qkv = tensor([3, 36, 5, 6], 12, &device).require_grad();
    assert!(runs_fused(&qkv) || !fused_ops_enabled());
    let fused = attention(qkv.clone(), 3);
    let stock = attention_reference(qkv.clone(), 3);
    assert_eq!(fused.dims(), [3, 12, 5, 6]);
    assert_close("attention output", fused.clone(), stock.clone(), 1e-5);
    let r = tensor([3, 12, 5, 6], 13, &device);
    let g_fused = (fused * r.clone()).sum().backward();
    let g_stock = (stock * r).sum().backward();
    assert_close(
        "attention dqkv",
        qkv.grad(&g_fused).unwrap(),
        qkv.grad(&g_stock).unwrap(),
        1e-4,
    );
}
