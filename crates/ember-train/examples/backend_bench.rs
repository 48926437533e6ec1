//! Times training steps of a config on each CPU backend this build has, to choose the default.
//!
//! ```text
//! cargo run --release -p ember-train --example backend_bench --features ndarray -- configs/mnist.toml 6
//! ```
//!
//! Prints images/s per backend (median of the timed steps, after one warm-up step).

use burn::prelude::*;
use ember_config::ExperimentConfig;
use ember_data::ImageBatch;
use ember_model::rng::Rng;
use ember_train::Trainer;
use std::path::PathBuf;
use std::time::Instant;

fn batch(config: &ExperimentConfig, device: &Device) -> ImageBatch {
    let (b, s) = (config.train.batch_size, config.model.image_size);
    let pixels = Rng::new(1).normals(b * s * s);
    ImageBatch {
        images: Tensor::<1>::from_data(TensorData::new(pixels, [b * s * s]), device)
            .reshape([b, 1, s, s]),
        labels: (0..b).map(|i| i % config.model.num_classes).collect(),
    }
}

fn images_per_second(config: &ExperimentConfig, device: &Device, steps: usize) -> f64 {
    let mut trainer = Trainer::new(config.clone(), device);
    trainer.train_step(batch(config, device), None); // warm-up
    let mut times: Vec<f64> = (0..steps)
        .map(|_| {
            let start = Instant::now();
            trainer.train_step(batch(config, device), None);
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    config.train.batch_size as f64 / times[times.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().unwrap_or_else(|| "configs/mnist.toml".into()));
    let steps: usize = args
        .next()
        .map_or(5, |s| s.parse().expect("steps: a number"));
    let config = ExperimentConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{} at batch {}, {steps} timed steps",
        path.display(),
        config.train.batch_size
    );
    println!("{:<10} {:>10}", "backend", "images/s");
    #[allow(unused_mut)] // only the ndarray feature adds a second backend
    let mut backends = vec![("flex", Device::flex())];
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // measuring the deprecated backend is the point
    backends.push(("ndarray", Device::ndarray()));
    for (name, device) in backends {
        println!(
            "{name:<10} {:>10.1}",
            images_per_second(&config, &device, steps)
        );
    }
}
