//! Does loading keep up with training? Measures, for a config's training data: loading and
//! checking the files (decoding and fitting, at start-up), serving batches through the epoch
//! loader alone (on the training thread and on one background thread), and training steps.
//!
//! ```text
//! cargo run --release -p ember-train --example loader_bench -- configs/mnist.toml
//! cargo run --release -p ember-train --example loader_bench -- my-folder.toml 200 5
//! ```
//!
//! Arguments: config, batches to serve (default 300), training steps to time (default 5).
//! Prints images/s of each.

use burn::data::dataset::Dataset;
use burn::prelude::*;
use ember_config::ExperimentConfig;
use ember_data::{ImageDataset, Split};
use ember_train::{Trainer, epoch_loader};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().unwrap_or_else(|| "configs/mnist.toml".into()));
    let batches: usize = args
        .next()
        .map_or(300, |s| s.parse().expect("batches: a number"));
    let steps: usize = args
        .next()
        .map_or(5, |s| s.parse().expect("steps: a number"));
    let mut config = ExperimentConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let device = Device::flex();
    let b = config.train.batch_size;

    let start = Instant::now();
    let dataset = ImageDataset::load(&config.data, &config.model, Split::Train, config.data.limit)
        .unwrap_or_else(|e| panic!("{e}"));
    let load_seconds = start.elapsed().as_secs_f64();
    let n = dataset.len();
    let [c, h, w] = dataset.shape();
    println!(
        "{}: {n} images ({} {c}x{h}x{w}, random_flip {}), batch {b}",
        path.display(),
        config.data.format.name(),
        config.data.random_flip
    );
    println!("{:<44} {:>12}", "stage", "images/s");
    println!(
        "{:<44} {:>12.0}   ({load_seconds:.2} s for all {n})",
        "read + check + decode + fit (start-up, once)",
        n as f64 / load_seconds
    );

    let dataset = Arc::new(dataset);
    for workers in [0, 1] {
        config.data.num_workers = workers;
        let mut served = 0usize;
        let start = Instant::now();
        let mut epoch = 0;
        'serve: loop {
            for batch in epoch_loader(&config, dataset.clone(), epoch, &device).iter() {
                // Touch the data so lazy work cannot hide.
                let batch = batch.expect("batch");
                served += batch.labels.len();
                if served >= batches * b {
                    break 'serve;
                }
            }
            epoch += 1;
        }
        let seconds = start.elapsed().as_secs_f64();
        println!(
            "{:<44} {:>12.0}   ({served} images)",
            format!("loader alone, {workers} background thread(s)"),
            served as f64 / seconds
        );
    }

    let mut trainer = Trainer::new(config.clone(), &device);
    let epoch0 = epoch_loader(&config, dataset.clone(), 0, &device);
    let mut loader = epoch0.iter();
    let mut next = || {
        loader
            .next()
            .expect("one epoch has enough batches")
            .expect("batch")
    };
    trainer.train_step(next(), None); // warm-up
    let mut times: Vec<f64> = (0..steps)
        .map(|_| {
            let batch = next();
            let start = Instant::now();
            trainer.train_step(batch, None);
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{:<44} {:>12.1}   (median of {steps} steps)",
        "training (forward + backward + AdamW + EMA)",
        b as f64 / times[times.len() / 2]
    );
}
