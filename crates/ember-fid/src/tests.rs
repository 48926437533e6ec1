//! Fast tests: no converted weights needed (random weights of the right shapes).

use super::*;

fn device() -> Device {
    Device::flex()
}

/// xorshift64*, uniform in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        (bits as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Every tensor of the architecture, He-uniform conv weights and an identity batch norm.
fn random_tensors(seed: u64) -> TensorMap {
    let mut rng = Rng(seed | 1);
    let mut map = TensorMap::new();
    for s in architecture() {
        let [kh, kw] = s.kernel;
        let fan_in = s.c_in * kh * kw;
        let bound = (6.0 / fan_in as f32).sqrt();
        let weight = (0..s.c_out * fan_in).map(|_| bound * rng.next()).collect();
        map.insert(
            format!("{}.weight", s.name),
            (vec![s.c_out, s.c_in, kh, kw], weight),
        );
        map.insert(
            format!("{}.beta", s.name),
            (
                vec![s.c_out],
                (0..s.c_out).map(|_| 0.1 * rng.next()).collect(),
            ),
        );
        map.insert(
            format!("{}.mean", s.name),
            (vec![s.c_out], vec![0.0; s.c_out]),
        );
        map.insert(
            format!("{}.var", s.name),
            (vec![s.c_out], vec![1.0; s.c_out]),
        );
    }
    map
}

fn random_model() -> InceptionFid {
    InceptionFid::from_tensors(random_tensors(7), Path::new("random"), &device()).unwrap()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn image(shape: [usize; 4], seed: u64) -> Tensor<4> {
    let mut rng = Rng(seed);
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.next()).collect();
    Tensor::from_data(TensorData::new(data, shape), &device())
}

/// Writes a safetensors file holding `tensors` (and `metadata` when given).
fn write_safetensors(
    path: &Path,
    tensors: &[(&str, Vec<usize>)],
    metadata: Option<serde_json::Value>,
) {
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), m);
    }
    let mut offset = 0;
    for (name, shape) in tensors {
        let end = offset + 4 * shape.iter().product::<usize>();
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let header = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.resize(out.len() + offset, 0);
    std::fs::write(path, out).unwrap();
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-fid-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn architecture_has_the_94_conv_layers_of_the_torchscript() {
    let specs = architecture();
    assert_eq!(specs.len(), 94);
    let params: usize = specs
        .iter()
        .map(|s| s.c_out * (s.c_in * s.kernel[0] * s.kernel[1] + 3))
        .sum();
    // What convert_inception.py reports for default_1.pt: 376 tensors, 21 802 784 values.
    assert_eq!(params, 21_802_784);
    // Each block's output width feeds the next block's input width.
    let c_in = |name: &str| specs.iter().find(|s| s.name == name).unwrap().c_in;
    assert_eq!(c_in("mixed_1.conv"), 64 + 64 + 96 + 32);
    assert_eq!(c_in("mixed_3.conv"), 64 + 64 + 96 + 64);
    assert_eq!(c_in("mixed_4.conv"), 384 + 96 + 288);
    assert_eq!(c_in("mixed_9.conv"), 320 + 192 + 768);
    assert_eq!(c_in("mixed_10.conv"), 320 + 2 * 384 + 2 * 384 + 192);
}

#[test]
fn resize_matrix_matches_hand_computed_weights() {
    // Upsampling 2 -> 4: s = 0, 0.5, 1, 1.5; the last one's right neighbour is clamped.
    assert_eq!(
        resize_matrix(2, 4),
        vec![1.0, 0.0, 0.5, 0.5, 0.0, 1.0, 0.0, 1.0]
    );
    // Downsampling 4 -> 2: s = 0, 2 (no averaging, like TF1's resize_bilinear).
    assert_eq!(
        resize_matrix(4, 2),
        vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    );
    // 3 -> 4: s = 0, 0.75, 1.5, 2.25.
    assert_eq!(
        resize_matrix(3, 4),
        vec![
            1.0, 0.0, 0.0, //
            0.25, 0.75, 0.0, //
            0.0, 0.5, 0.5, //
            0.0, 0.0, 1.0,
        ]
    );
    // Same size: identity.
    let id = resize_matrix(5, 5);
    for j in 0..5 {
        for i in 0..5 {
            assert_eq!(id[j * 5 + i], if i == j { 1.0 } else { 0.0 });
        }
    }
}

#[test]
fn resize_bilinear_applies_both_axes() {
    // One 2x3 image [[0, 1, 2], [10, 11, 12]] resized to 4x4.
    let x = Tensor::<4>::from_data(
        TensorData::new(vec![0.0f32, 1.0, 2.0, 10.0, 11.0, 12.0], [1, 1, 2, 3]),
        &device(),
    );
    let y = values(resize_bilinear(x, 4, 4));
    // Columns sample 0, 0.75, 1.5, 2.25 -> 0, 0.75, 1.5, 2 (clamped); rows sample 0, 0.5, 1, 1.5.
    let cols = [0.0, 0.75, 1.5, 2.0];
    let rows = [0.0, 5.0, 10.0, 10.0];
    for (r, row) in rows.iter().enumerate() {
        for (c, col) in cols.iter().enumerate() {
            let got = y[r * 4 + c];
            assert!((got - (row + col)).abs() < 1e-5, "({r}, {c}): {got}");
        }
    }
}

#[test]
fn preprocess_maps_range_channels_and_size() {
    let d = device();
    // Grey 28x28 -> 3 channels, 299x299; -1 -> -1 and 1 -> 0.9921875 (TF range).
    let white = Tensor::<4>::ones([2, 1, 28, 28], &d);
    let out = preprocess(white);
    assert_eq!(out.dims(), [2, 3, INPUT_SIZE, INPUT_SIZE]);
    for v in values(out) {
        assert!((v - MODEL_INPUT_RANGE.1).abs() < 1e-6);
    }
    let black = Tensor::<4>::ones([1, 3, 299, 299], &d).neg();
    for v in values(preprocess(black)) {
        assert_eq!(v, -1.0);
    }
    // Mid grey 0 -> 0.5 * 1.9921875 - 1; out-of-range input is clamped first.
    let x = Tensor::<4>::from_data(
        TensorData::new(vec![0.0f32, 3.0, -3.0, 0.0], [1, 1, 2, 2]),
        &d,
    );
    let v = values(preprocess(x));
    assert!((v[0] - (0.5 * 1.992_187_5 - 1.0)).abs() < 1e-6);
    assert!((v[299 * 299 - 1] - (0.5 * 1.992_187_5 - 1.0)).abs() < 1e-6);
}

#[test]
#[should_panic(expected = "1 or 3 channels")]
fn preprocess_refuses_two_channels() {
    preprocess(Tensor::<4>::zeros([1, 2, 8, 8], &device()));
}

#[test]
fn pools_follow_the_torchscript() {
    let d = device();
    // 3x3 values 1..9: the exclusive average at the corner is (1 + 2 + 4 + 5) / 4.
    let x = Tensor::<4>::from_data(
        TensorData::new((1..=9).map(|v| v as f32).collect::<Vec<_>>(), [1, 1, 3, 3]),
        &d,
    );
    let avg = values(avg_pool_3x3_exclusive(x.clone()));
    assert_eq!(avg.len(), 9);
    assert!((avg[0] - 3.0).abs() < 1e-6);
    assert!((avg[4] - 5.0).abs() < 1e-6);
    // The padded max pool of mixed_10 ignores the padding even when every value is negative.
    let neg = x.neg();
    let max = values(max_pool2d(
        neg,
        MaxPoolOptions::new([3, 3])
            .with_stride([1, 1])
            .with_padding([1, 1]),
    ));
    assert_eq!(max[0], -1.0);
    assert_eq!(max[8], -5.0);
    // Stride-2 unpadded max pool: 9x9 -> 4x4.
    assert_eq!(
        max_pool_3x3_s2(Tensor::<4>::zeros([1, 2, 9, 9], &d)).dims(),
        [1, 2, 4, 4]
    );
}

#[test]
fn network_gives_2048_features_on_a_small_input() {
    let model = random_model();
    // 75x75 is the smallest size the stride-2 stages allow; the FID itself runs at 299.
    let out = model.network(image([2, 3, 75, 75], 3));
    assert_eq!(out.dims(), [2, FEATURE_DIM]);
    let v = values(out);
    assert!(v.iter().all(|x| x.is_finite() && *x >= 0.0));
    assert!(v.iter().any(|x| *x > 0.0));
    // The two images differ, so do their features.
    assert!(v[..FEATURE_DIM] != v[FEATURE_DIM..]);
}

#[test]
fn features_of_grey_images_are_those_of_the_repeated_rgb() {
    let model = random_model();
    let grey = image([1, 1, 28, 28], 11);
    let rgb = grey.clone().repeat_dim(1, 3);
    let a = model.features(grey);
    assert_eq!(a.dims(), [1, FEATURE_DIM]);
    let (a, b) = (values(a), values(model.features(rgb)));
    assert_eq!(a, b);
}

#[test]
fn load_reports_a_missing_file() {
    let path = temp_path("absent.safetensors");
    let err = InceptionFid::load(&path, &device())
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.safetensors"), "{err}");
}

#[test]
fn load_names_a_tensor_with_the_wrong_shape() {
    let path = temp_path("wrong-shape.safetensors");
    write_safetensors(&path, &[("conv.weight", vec![32, 3, 3, 4])], None);
    let err = InceptionFid::load(&path, &device())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`conv.weight`"), "{err}");
    assert!(
        err.contains("[32, 3, 3, 4]") && err.contains("[32, 3, 3, 3]"),
        "{err}"
    );
}

#[test]
fn load_names_a_missing_tensor() {
    let path = temp_path("missing.safetensors");
    write_safetensors(&path, &[("conv.weight", vec![32, 3, 3, 3])], None);
    let err = InceptionFid::load(&path, &device())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`conv.beta` is missing"), "{err}");
}

#[test]
fn load_refuses_a_conv_config_that_differs() {
    let path = temp_path("metadata.safetensors");
    let config = serde_json::json!({"conv": [1, 0, 0]}).to_string();
    write_safetensors(
        &path,
        &[("conv.weight", vec![32, 3, 3, 3])],
        Some(serde_json::json!({ "conv_config": config })),
    );
    let err = InceptionFid::load(&path, &device())
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer `conv`"), "{err}");
}

#[test]
fn from_tensors_refuses_unknown_tensors() {
    let mut map = random_tensors(1);
    map.insert("fc.weight".into(), (vec![1], vec![0.0]));
    let err = InceptionFid::from_tensors(map, Path::new("x"), &device()).unwrap_err();
    assert!(err.to_string().contains("`fc.weight`"), "{err}");
}
