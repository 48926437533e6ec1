//! What classifier-free guidance costs per denoising step, against the bare model.
//!
//! ```text
//! cargo run --release -p ember-sample --example cfg_cost -- configs/mnist.toml 64 9
//! ```
//!
//! Times, alternating so that machine noise hits all three alike (median of the repeats, after
//! one warm-up each): one guided step at batch B (one forward over `[x; x]`, the split and the
//! guidance arithmetic), one bare forward at batch 2B (the floor of a guided step) and one at
//! batch B (what an unguided step costs). Prints milliseconds and the guided / 2B ratio.

use burn::prelude::*;
use ember_config::ExperimentConfig;
use ember_model::UNetConfig;
use ember_model::init::seeded_normals;
use ember_sample::guidance::ClassifierFreeGuidance;
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = PathBuf::from(args.first().map_or("configs/mnist.toml", String::as_str));
    let batch: usize = args.get(1).map_or(64, |s| s.parse().expect("batch size"));
    let repeats: usize = args.get(2).map_or(9, |s| s.parse().expect("repeats"));
    let config = ExperimentConfig::load(&path).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    let device = Device::flex();
    let model = UNetConfig::from(&config.model).init(&device, 0);
    let (c, s) = (config.model.image_channels, config.model.image_size);
    let noise = |n: usize| seeded_normals([n, c, s, s], n as u64, &device);
    let classes = config.model.num_classes;
    let labels: Vec<usize> = (0..batch).map(|i| i % classes).collect();
    let labels2: Vec<usize> = labels
        .iter()
        .copied()
        .chain(std::iter::repeat_n(model.null_class(), batch))
        .collect();
    let x = noise(batch);
    let x2 = noise(2 * batch);
    let timestep = config.diffusion.timesteps / 2;
    let t = |n: usize| Tensor::<1>::ones([n], &device).mul_scalar(timestep as f64);
    let schedule = ember_model::NoiseSchedule::new(&config.diffusion);
    let guided = ClassifierFreeGuidance::new(&model, &schedule, &labels, 3.0, None, &device);

    // Reading the result back makes sure the work is done before the clock stops.
    let timed = |f: &mut dyn FnMut() -> Tensor<4>| {
        let start = Instant::now();
        let out = f();
        let _ = out.into_data();
        start.elapsed().as_secs_f64() * 1e3
    };
    let mut run_guided = || guided.output(x.clone(), timestep);
    let mut run_2b = || {
        model.forward(
            x2.clone(),
            t(2 * batch),
            ember_model::labels_tensor(&labels2, &device),
        )
    };
    let mut run_b = || {
        model.forward(
            x.clone(),
            t(batch),
            ember_model::labels_tensor(&labels, &device),
        )
    };
    timed(&mut run_guided);
    timed(&mut run_2b);
    timed(&mut run_b);
    let (mut g, mut f2, mut f1) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeats {
        g.push(timed(&mut run_guided));
        f2.push(timed(&mut run_2b));
        f1.push(timed(&mut run_b));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (g, f2, f1) = (median(&mut g), median(&mut f2), median(&mut f1));
    println!(
        "{} (batch B = {batch}, {repeats} repeats, median ms)",
        path.display()
    );
    println!("guided step at B (scale 3): {g:9.1} ms");
    println!("bare forward at 2B:         {f2:9.1} ms");
    println!("bare forward at B:          {f1:9.1} ms");
    println!("guided / forward(2B):       {:9.3}", g / f2);
    println!("forward(B) / forward(2B):   {:9.3}", f1 / f2);
}
