//! Throughput of `InceptionFid::features` on the CPU backend.
//!
//! ```text
//! cargo run --release -p ember-fid --example fid_bench -- \
//!     [--weights datasets/fid/inception-fid.safetensors] [--batch 16] [--batches 3] [--size 28] [--channels 1]
//! ```
//!
//! Runs one warm-up batch, then `--batches` timed batches of seeded random images
//! `[batch, channels, size, size]` (MNIST-like by default: grey 28x28, resized to 299 inside).

use burn::prelude::*;
use ember_fid::InceptionFid;
use std::time::Instant;

fn main() {
    let mut weights = ember_fid::DEFAULT_WEIGHTS.to_string();
    let (mut batch, mut batches, mut size, mut channels) = (16usize, 3usize, 28usize, 1usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        let number = || {
            value
                .parse::<usize>()
                .unwrap_or_else(|e| panic!("{arg}: {e}"))
        };
        match arg.as_str() {
            "--weights" => weights = value.clone(),
            "--batch" => batch = number(),
            "--batches" => batches = number(),
            "--size" => size = number(),
            "--channels" => channels = number(),
            _ => panic!("unknown argument {arg}"),
        }
    }
    let device = Device::flex();
    let start = Instant::now();
    let model = InceptionFid::load(&weights, &device).unwrap_or_else(|e| panic!("{e}"));
    println!("loaded {weights} in {:.2}s", start.elapsed().as_secs_f64());

    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut images = || {
        let n = batch * channels * size * size;
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        Tensor::<4>::from_data(
            TensorData::new(data, [batch, channels, size, size]),
            &device,
        )
    };
    let run = |x: Tensor<4>| {
        let f = model.features(x);
        assert_eq!(f.dims(), [batch, ember_fid::FEATURE_DIM]);
        // Reading the values back forces the whole computation.
        let _ = f.into_data();
    };
    let t = Instant::now();
    run(images());
    println!("warm-up batch: {:.2}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    for _ in 0..batches {
        run(images());
    }
    let secs = t.elapsed().as_secs_f64();
    let n = batch * batches;
    println!(
        "{n} images ([{batch}, {channels}, {size}, {size}] x {batches}) in {secs:.2}s: {:.2} images/s",
        n as f64 / secs
    );
}
