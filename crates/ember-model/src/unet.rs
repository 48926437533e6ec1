//! A class-conditional UNet in the style of DDPM (Ho et al. 2020, appendix B) with the class
//! embedding of classifier-free guidance (Ho & Salimans 2022): `num_classes + 1` rows, the last
//! one being the learnable null class that stands for "no label".

use crate::init::{conv3x3, seeded_init};
use burn::module::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, GroupNorm, GroupNormConfig, Linear,
    LinearConfig, PaddingConfig2d,
};
use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use ember_config::ModelConfig;
use ember_ops::{attention, conv2d, group_norm, group_norm_silu, silu};

/// Builds a [`UNet`]; one-to-one with the validated `[model]` table of a config.
#[derive(Debug, Clone)]
pub struct UNetConfig {
    pub num_classes: usize,
    pub image_channels: usize,
    pub base_channels: usize,
    pub channel_mults: Vec<usize>,
    pub blocks_per_level: usize,
    pub attention_levels: Vec<usize>,
    pub attention_heads: usize,
    pub norm_groups: usize,
    pub dropout: f64,
    pub scale_shift_norm: bool,
}

impl From<&ModelConfig> for UNetConfig {
    fn from(m: &ModelConfig) -> Self {
        Self {
            num_classes: m.num_classes,
            image_channels: m.image_channels,
            base_channels: m.base_channels,
            channel_mults: m.channel_mults.clone(),
            blocks_per_level: m.blocks_per_level,
            attention_levels: m.attention_levels.clone(),
            attention_heads: m.attention_heads,
            norm_groups: m.norm_groups,
            dropout: m.dropout,
            scale_shift_norm: m.scale_shift_norm,
        }
    }
}

fn conv1x1(c_in: usize, c_out: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [1, 1]).init(device)
}

/// Output layers start at zero so every residual block begins as the identity and the network
/// begins by predicting zero noise, as in DDPM's reference implementation.
fn zero_conv3x3(c_in: usize, c_out: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_initializer(Initializer::Zeros)
        .init(device)
}

impl UNetConfig {
    /// Width of the time + class embedding.
    pub fn embed_dim(&self) -> usize {
        4 * self.base_channels
    }

    /// Builds the network with weights drawn reproducibly from `seed` (see [`seeded_init`]).
    pub fn init(&self, device: &Device, seed: u64) -> UNet {
        seeded_init(device, seed, || self.build(device))
    }

    /// The network with lazily initialised parameters.
    fn build(&self, device: &Device) -> UNet {
        let emb = self.embed_dim();
        let ch = |level: usize| self.base_channels * self.channel_mults[level];
        let res = |c_in, c_out| ResBlockConfig {
            c_in,
            c_out,
            embed_dim: emb,
            groups: self.norm_groups,
            dropout: self.dropout,
            scale_shift: self.scale_shift_norm,
        };
        let stage = |level: usize, c_in: usize, c_out: usize| Stage {
            res: res(c_in, c_out).init(device),
            attn: self
                .attention_levels
                .contains(&level)
                .then(|| SelfAttention::new(c_out, self.attention_heads, self.norm_groups, device)),
        };
        let levels = self.channel_mults.len();

        // Down path; `skips` records the channels of every activation pushed for the up path.
        let mut skips = vec![self.base_channels];
        let mut c = self.base_channels;
        let mut down = Vec::with_capacity(levels);
        for level in 0..levels {
            let mut stages = Vec::new();
            for _ in 0..self.blocks_per_level {
                stages.push(stage(level, c, ch(level)));
                c = ch(level);
                skips.push(c);
            }
            let downsample = (level + 1 < levels).then(|| {
                skips.push(c);
                Conv2dConfig::new([c, c], [3, 3])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device)
            });
            down.push(DownLevel { stages, downsample });
        }

        // The middle attends whenever any level does (DDPM attends at the bottleneck).
        let mid = MidBlock {
            res1: res(c, c).init(device),
            attn: (!self.attention_levels.is_empty())
                .then(|| SelfAttention::new(c, self.attention_heads, self.norm_groups, device)),
            res2: res(c, c).init(device),
        };

        // Up path: one more block per level than on the way down, each eating one skip.
        let mut up = Vec::with_capacity(levels);
        for level in (0..levels).rev() {
            let mut stages = Vec::new();
            for _ in 0..=self.blocks_per_level {
                let skip = skips.pop().expect("one skip per up block");
                stages.push(stage(level, c + skip, ch(level)));
                c = ch(level);
            }
            let upsample = (level > 0).then(|| conv3x3(c, c, device));
            up.push(UpLevel { stages, upsample });
        }
        debug_assert!(skips.is_empty());

        UNet {
            time_mlp1: LinearConfig::new(self.base_channels, emb).init(device),
            time_mlp2: LinearConfig::new(emb, emb).init(device),
            class_embedding: EmbeddingConfig::new(self.num_classes + 1, emb).init(device),
            conv_in: conv3x3(self.image_channels, self.base_channels, device),
            down,
            mid,
            up,
            norm_out: GroupNormConfig::new(self.norm_groups, c).init(device),
            conv_out: zero_conv3x3(c, self.image_channels, device),
            num_classes: self.num_classes,
            base_channels: self.base_channels,
        }
    }
}

/// The epsilon-prediction network `eps_theta(x_t, t, y)`.
#[derive(Module, Debug)]
pub struct UNet {
    time_mlp1: Linear,
    time_mlp2: Linear,
    /// `num_classes + 1` rows; row [`UNet::null_class`] is the unconditional embedding.
    class_embedding: Embedding,
    conv_in: Conv2d,
    down: Vec<DownLevel>,
    mid: MidBlock,
    up: Vec<UpLevel>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    num_classes: usize,
    base_channels: usize,
}

impl UNet {
    /// Number of real classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Index of the learnable null-class row: the label that means "unconditional".
    pub fn null_class(&self) -> usize {
        null_class(self.num_classes)
    }

    /// The class-embedding table, `[num_classes + 1, embed_dim]`; its last row is the null class.
    pub fn class_embedding_weights(&self) -> Tensor<2> {
        self.class_embedding.weight.val()
    }

    /// Predicts the noise in `x` at timesteps `t` for class labels `labels` (null class allowed).
    ///
    /// # Shapes
    /// - x: `[batch, channels, h, w]`
    /// - t: `[batch]`, timestep indices as floats
    /// - labels: `[batch]`, in `0..=num_classes`
    /// - output: `[batch, channels, h, w]`
    pub fn forward(&self, x: Tensor<4>, t: Tensor<1>, labels: Tensor<1, Int>) -> Tensor<4> {
        let [batch, _, _, _] = x.dims();

        // 1. time + class embedding
        let t_emb = timestep_embedding(t, self.base_channels); // [batch, base]
        let t_emb = self.time_mlp2.forward(silu(self.time_mlp1.forward(t_emb))); // [batch, emb]
        let y_emb = self.class_embedding.forward(labels.reshape([batch, 1])); // [batch, 1, emb]
        let emb = t_emb + y_emb.reshape([batch as i32, -1]); // [batch, emb]

        // 2. down path, keeping every activation for the skips
        let mut h = conv2d(&self.conv_in, x); // [batch, base, h, w]
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for stage in &level.stages {
                h = stage.forward(h, &emb);
                skips.push(h.clone());
            }
            if let Some(down) = &level.downsample {
                h = conv2d(down, h); // [batch, c, h/2, w/2]
                skips.push(h.clone());
            }
        }

        // 3. middle
        h = self.mid.res1.forward(h, &emb);
        if let Some(attn) = &self.mid.attn {
            h = attn.forward(h);
        }
        h = self.mid.res2.forward(h, &emb);

        // 4. up path, concatenating skips on the channel axis
        for level in &self.up {
            for stage in &level.stages {
                let skip = skips.pop().expect("as many skips as up blocks");
                h = stage.forward(Tensor::cat(vec![h, skip], 1), &emb);
            }
            if let Some(conv) = &level.upsample {
                let up = interpolate(
                    h,
                    InterpolateOptions::new(InterpolateMode::Nearest).with_scale_factor([2.0, 2.0]),
                );
                h = conv2d(conv, up); // [batch, c, 2h, 2w]
            }
        }

        // 5. output
        conv2d(&self.conv_out, group_norm_silu(&self.norm_out, h))
    }
}

/// Class indices (null class included) as the `Int` tensor [`UNet::forward`] takes.
pub fn labels_tensor(labels: &[usize], device: &Device) -> Tensor<1, Int> {
    let data: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    Tensor::from_data(TensorData::new(data, [labels.len()]), device)
}

/// Index of the null-class row for a model with `num_classes` real classes.
pub fn null_class(num_classes: usize) -> usize {
    num_classes
}

/// Transformer-style sinusoidal embedding of (float) timesteps.
///
/// # Shapes
/// - t: `[batch]`; output: `[batch, dim]` (`dim` even: cos half then sin half)
pub fn timestep_embedding(t: Tensor<1>, dim: usize) -> Tensor<2> {
    let device = t.device();
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10_000f64.ln()) * i as f64 / half as f64).exp() as f32)
        .collect();
    let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), &device).reshape([1, half]);
    let [batch] = t.dims();
    let args = t.reshape([batch, 1]) * freqs; // [batch, half]
    Tensor::cat(vec![args.clone().cos(), args.sin()], 1)
}

#[derive(Module, Debug)]
struct DownLevel {
    stages: Vec<Stage>,
    downsample: Option<Conv2d>,
}

#[derive(Module, Debug)]
struct UpLevel {
    stages: Vec<Stage>,
    upsample: Option<Conv2d>,
}

#[derive(Module, Debug)]
struct MidBlock {
    res1: ResBlock,
    attn: Option<SelfAttention>,
    res2: ResBlock,
}

/// A residual block, optionally followed by self-attention.
#[derive(Module, Debug)]
struct Stage {
    res: ResBlock,
    attn: Option<SelfAttention>,
}

impl Stage {
    fn forward(&self, x: Tensor<4>, emb: &Tensor<2>) -> Tensor<4> {
        let h = self.res.forward(x, emb);
        match &self.attn {
            Some(attn) => attn.forward(h),
            None => h,
        }
    }
}

struct ResBlockConfig {
    c_in: usize,
    c_out: usize,
    embed_dim: usize,
    groups: usize,
    dropout: f64,
    scale_shift: bool,
}

impl ResBlockConfig {
    fn init(&self, device: &Device) -> ResBlock {
        ResBlock {
            norm1: GroupNormConfig::new(self.groups, self.c_in).init(device),
            conv1: conv3x3(self.c_in, self.c_out, device),
            // A scale and a shift per channel, or a bias.
            emb_proj: LinearConfig::new(
                self.embed_dim,
                self.c_out * (1 + self.scale_shift as usize),
            )
            .init(device),
            norm2: GroupNormConfig::new(self.groups, self.c_out).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            conv2: zero_conv3x3(self.c_out, self.c_out, device),
            skip: (self.c_in != self.c_out).then(|| conv1x1(self.c_in, self.c_out, device)),
            scale_shift: self.scale_shift,
        }
    }
}

/// GroupNorm -> SiLU -> conv, twice, with a skip; the embedding enters between the two as a
/// per-channel bias, or (`scale_shift`) as a scale and shift of the second GroupNorm's output.
#[derive(Module, Debug)]
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    emb_proj: Linear,
    norm2: GroupNorm,
    dropout: Dropout,
    conv2: Conv2d,
    skip: Option<Conv2d>,
    scale_shift: bool,
}

impl ResBlock {
    /// # Shapes
    /// - x: `[batch, c_in, h, w]`, emb: `[batch, embed_dim]` -> `[batch, c_out, h, w]`
    fn forward(&self, x: Tensor<4>, emb: &Tensor<2>) -> Tensor<4> {
        let h = conv2d(&self.conv1, group_norm_silu(&self.norm1, x.clone())); // [batch, c_out, h, w]
        let [batch, c_out, _, _] = h.dims();
        let emb = self.emb_proj.forward(silu(emb.clone())); // [batch, c_out or 2 c_out]
        let h = if self.scale_shift {
            let emb = emb.reshape([batch, 2 * c_out, 1, 1]);
            let scale = emb.clone().slice(s![.., 0..c_out]);
            let shift = emb.slice(s![.., c_out..]);
            silu(group_norm(&self.norm2, h) * (scale + 1.0) + shift)
        } else {
            group_norm_silu(&self.norm2, h + emb.reshape([batch, c_out, 1, 1]))
        };
        let h = conv2d(&self.conv2, self.dropout.forward(h));
        let skip = match &self.skip {
            Some(conv) => conv2d(conv, x),
            None => x,
        };
        skip + h
    }
}

/// Multi-head self-attention over the pixels of a feature map, with a residual connection.
#[derive(Module, Debug)]
struct SelfAttention {
    norm: GroupNorm,
    qkv: Conv2d,
    proj: Conv2d,
    heads: usize,
}

impl SelfAttention {
    fn new(channels: usize, heads: usize, groups: usize, device: &Device) -> Self {
        Self {
            norm: GroupNormConfig::new(groups, channels).init(device),
            qkv: conv1x1(channels, 3 * channels, device),
            proj: Conv2dConfig::new([channels, channels], [1, 1])
                .with_initializer(Initializer::Zeros)
                .init(device),
            heads,
        }
    }

    /// # Shapes
    /// - x: `[batch, c, h, w]` -> `[batch, c, h, w]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let qkv = conv2d(&self.qkv, group_norm(&self.norm, x.clone())); // [b, 3c, h, w]
        let out = attention(qkv, self.heads); // [b, c, h, w]
        x + conv2d(&self.proj, out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::init::{perturb_params, seeded_normals};

    /// A two-level, 3-class test network of width `base`.
    pub(crate) fn tiny_width(base: usize) -> UNetConfig {
        UNetConfig {
            num_classes: 3,
            image_channels: 1,
            base_channels: base,
            channel_mults: vec![1, 2],
            blocks_per_level: 1,
            attention_levels: vec![1],
            attention_heads: 2,
            norm_groups: 4,
            dropout: 0.0,
            scale_shift_norm: false,
        }
    }

    fn tiny() -> UNetConfig {
        tiny_width(8)
    }

    #[test]
    fn forward_keeps_the_image_shape() {
        let device = Device::flex();
        let model = tiny().init(&device, 0);
        let x = Tensor::<4>::zeros([2, 1, 8, 8], &device);
        let t = Tensor::<1>::from_floats([3.0, 500.0], &device);
        let y = Tensor::<1, Int>::from_ints([0, model.null_class() as i64], &device);
        assert_eq!(model.forward(x, t, y).dims(), [2, 1, 8, 8]);
    }

    #[test]
    fn seeded_init_is_reproducible() {
        let device = Device::flex();
        let weights = |seed| {
            let model = tiny().init(&device, seed);
            model
                .time_mlp1
                .weight
                .val()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        assert_eq!(weights(1), weights(1));
        assert_ne!(weights(1), weights(2));
    }

    #[test]
    fn scale_shift_model_runs_and_its_output_depends_on_the_label() {
        let device = Device::flex();
        let config = UNetConfig {
            scale_shift_norm: true,
            ..tiny()
        };
        let model = perturb_params(config.init(&device, 0), 0, 0.3);
        let x = seeded_normals([1, 1, 8, 8], 7, &device);
        let t = Tensor::<1>::from_floats([300.0], &device);
        let out = |label: i64| {
            let y = Tensor::<1, Int>::from_ints([label], &device);
            model.forward(x.clone(), t.clone(), y)
        };
        let diff: f32 = (out(0) - out(1)).abs().max().into_scalar();
        assert!(diff > 1e-3, "labels 0 and 1 gave outputs {diff} apart");
    }

    #[test]
    fn class_embedding_has_a_null_row() {
        let device = Device::flex();
        let model = tiny().init(&device, 0);
        assert_eq!(model.null_class(), 3);
        assert_eq!(model.class_embedding.weight.val().dims(), [4, 32]);
    }

    #[test]
    fn scale_shift_block_scales_and_shifts_the_second_norm() {
        let device = Device::flex();
        let (c_in, c_out, embed_dim) = (4, 8, 6);
        let config = ResBlockConfig {
            c_in,
            c_out,
            embed_dim,
            groups: 2,
            dropout: 0.0,
            scale_shift: true,
        };
        let block = perturb_params(config.init(&device), 0, 0.3);
        assert_eq!(block.emb_proj.weight.val().dims(), [embed_dim, 2 * c_out]);
        let x = seeded_normals([2, c_in, 5, 5], 7, &device);
        let emb = seeded_normals([2, embed_dim], 8, &device);

        // The same block written with Burn's own layers: the first half of the projection is
        // the scale, the second the shift (the order guided-diffusion and the twin use).
        let silu_ref = |t: Tensor<4>| t.clone() * burn::tensor::activation::sigmoid(t);
        let h = block
            .conv1
            .forward(silu_ref(block.norm1.forward(x.clone())));
        let e = block
            .emb_proj
            .forward(emb.clone() * burn::tensor::activation::sigmoid(emb.clone()));
        let scale = e.clone().slice(s![.., 0..c_out]).reshape([2, c_out, 1, 1]);
        let shift = e.slice(s![.., c_out..]).reshape([2, c_out, 1, 1]);
        let h = silu_ref(block.norm2.forward(h) * (scale + 1.0) + shift);
        let expected = block.skip.as_ref().unwrap().forward(x.clone()) + block.conv2.forward(h);

        let got = block.forward(x, &emb);
        let diff: f32 = (got - expected).abs().max().into_scalar();
        assert!(diff < 1e-4, "max difference {diff}");
    }

    #[test]
    fn timestep_embedding_is_cos_then_sin() {
        let device = Device::flex();
        let e = timestep_embedding(Tensor::from_floats([0.0, 2.0], &device), 4);
        let v = e.into_data().try_into_vec::<f32>().unwrap();
        // t = 0: cos = 1, sin = 0; t = 2, first frequency 1: cos(2), sin(2).
        assert_eq!(&v[..4], &[1.0, 1.0, 0.0, 0.0]);
        assert!((v[4] - 2f32.cos()).abs() < 1e-6 && (v[6] - 2f32.sin()).abs() < 1e-6);
    }
}
