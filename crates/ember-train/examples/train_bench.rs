//! Ember's side of the CPU benchmark against a PyTorch twin (`scripts/bench/`).
//!
//! ```text
//! cargo run --release -p ember-train --example train_bench -- train  --config configs/mnist.toml --batch 128 --warmup 2 --repeats 10
//! cargo run --release -p ember-train --example train_bench -- sample --config configs/mnist.toml --batch 128 --warmup 2 --repeats 2 --steps 50
//! cargo run --release -p ember-train --example train_bench -- resolve --config configs/mnist.toml --out /tmp/resolved.toml
//! cargo run --release -p ember-train --example train_bench -- check  --config configs/mnist.toml --out /tmp/twin-check
//! ```
//!
//! Modes:
//! - `train`: `warmup` untimed optimiser steps, then `repeats` timed ones, each the whole of
//!   [`Trainer::train_step`] (forward, backward, global-norm clip, AdamW, EMA) on one fixed
//!   in-memory batch. Data loading is not part of the figure.
//! - `sample`: DDIM with plain classifier-free guidance (the config's scale, eta and timestep
//!   spacing; no guidance interval, CFG rescale or dynamic thresholding): one untimed run
//!   of `warmup` steps, then `repeats` timed runs of `steps` steps each. Every denoising step is
//!   timed on its own (one batched forward over `2 * batch` images, the guidance mix and the DDIM
//!   update), so a run with fewer than 50 steps still gives an honest 50-step figure:
//!   `images_per_second = batch / (50 * median step time)`.
//! - `params`: builds the network and prints its parameter count (and the process's baseline
//!   peak RSS).
//! - `resolve`: writes the config with every default filled in (TOML), for the twin to read.
//! - `check`: writes what `scripts/bench/torch_twin.py check` needs to confirm that the twin
//!   computes what Ember computes: perturbed weights, the inputs and results of one real
//!   `train_step` (updated weights and EMA), a forward pass and a short guided DDIM run.
//! - `inputs`: writes a fresh run's initial weights and every random input of its first
//!   `--steps` training steps (data order, null-class rows, timesteps, noise), for
//!   `torch_twin.py train-curve --inputs`: the twin then trains from exactly what Ember sees.
//!
//! `train` and `sample` print one JSON line on stdout (the last line). The thread count is
//! `RAYON_NUM_THREADS` when set (burn-flex runs on rayon's global pool), else the number of cores.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use ember_config::ExperimentConfig;
use ember_data::ImageBatch;
use ember_model::init::{perturb_params, seeded_normals};
use ember_model::rng::{Rng, Stream, derive_seed};
use ember_model::{UNet, UNetConfig, labels_tensor};
use ember_sample::guidance::ClassifierFreeGuidance;
use ember_sample::samplers::{Ddim, DpmSolverPp2m, Sampler};
use ember_sample::timesteps::timesteps;
use ember_sample::{Denoiser, NoiseSource, SeededNoise};
use ember_train::Trainer;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The step count the sampling figure is quoted at, whatever `--steps` was.
const REFERENCE_SAMPLING_STEPS: usize = 50;

struct Args {
    mode: String,
    config: PathBuf,
    batch: Option<usize>,
    warmup: usize,
    repeats: usize,
    steps: usize,
    out: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: train_bench <train|sample|params|resolve|check|inputs> [--config PATH] [--batch N] \
         [--warmup N] [--repeats N] [--steps N] [--out PATH]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_else(|| usage());
    let mut args = Args {
        mode,
        config: PathBuf::from("configs/mnist.toml"),
        batch: None,
        warmup: 2,
        repeats: 5,
        steps: REFERENCE_SAMPLING_STEPS,
        out: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        let number = || -> usize {
            value.parse().unwrap_or_else(|_| {
                eprintln!("error: {flag} takes a whole number, got `{value}`");
                std::process::exit(2)
            })
        };
        match flag.as_str() {
            "--config" => args.config = PathBuf::from(&value),
            "--batch" => args.batch = Some(number()),
            "--warmup" => args.warmup = number(),
            "--repeats" => args.repeats = number().max(1),
            "--steps" => args.steps = number().max(1),
            "--out" => args.out = Some(PathBuf::from(&value)),
            _ => usage(),
        }
    }
    args
}

fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// This process's peak resident set so far (VmHWM), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn json_list(values: &[f64]) -> String {
    let items: Vec<String> = values.iter().map(|v| format!("{v:.6}")).collect();
    format!("[{}]", items.join(","))
}

fn parameter_count(model: &UNet) -> usize {
    ember_model::weights::named_tensors(model)
        .iter()
        .map(|(_, shape, _)| shape.iter().product::<usize>())
        .sum()
}

/// A fixed batch of `b` seeded images in [-1, 1] with labels cycling through the classes.
fn fixed_batch(config: &ExperimentConfig, b: usize, device: &Device) -> ImageBatch {
    let (c, s) = (config.model.image_channels, config.model.image_size);
    let mut rng = Rng::new(1);
    let pixels: Vec<f32> = (0..b * c * s * s)
        .map(|_| (2.0 * rng.uniform() - 1.0) as f32)
        .collect();
    ImageBatch {
        images: Tensor::<1>::from_data(TensorData::new(pixels, [b * c * s * s]), device)
            .reshape([b, c, s, s]),
        labels: (0..b).map(|i| i % config.model.num_classes).collect(),
    }
}

fn train(config: ExperimentConfig, args: &Args) {
    let device = Device::flex();
    let b = config.train.batch_size;
    let mut trainer = Trainer::new(config.clone(), &device);
    let params = parameter_count(&trainer.model);
    let batch = fixed_batch(&config, b, &device);
    let mut losses = Vec::new();
    for _ in 0..args.warmup {
        losses.push(trainer.train_step(batch.clone(), None).0);
    }
    let mut times = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats {
        let start = Instant::now();
        let (loss, _) = trainer.train_step(batch.clone(), None);
        times.push(start.elapsed().as_secs_f64());
        losses.push(loss);
    }
    let m = median(&times);
    println!(
        "{{\"impl\":\"ember\",\"mode\":\"train\",\"batch\":{b},\"threads\":{},\"params\":{params},\
         \"warmup\":{},\"repeats\":{},\"median_step_seconds\":{m:.6},\"images_per_second\":{:.3},\
         \"step_seconds\":{},\"losses\":{},\"peak_rss_mib\":{:.1}}}",
        threads(),
        args.warmup,
        args.repeats,
        b as f64 / m,
        json_list(&times),
        json_list(&losses),
        peak_rss_mib()
    );
}

/// Guidance with a clock: records when each denoising step asks for its noise prediction.
struct Timed<'a> {
    inner: ClassifierFreeGuidance<'a>,
    marks: RefCell<Vec<Instant>>,
}

impl Denoiser for Timed<'_> {
    fn schedule(&self) -> &ember_model::NoiseSchedule {
        self.inner.schedule()
    }
    fn denoise(&self, x: Tensor<4>, timestep: usize) -> ember_sample::denoiser::Denoised {
        self.marks.borrow_mut().push(Instant::now());
        self.inner.denoise(x, timestep)
    }
}

/// One guided DDIM run of `steps` steps; returns the seconds each step took.
fn ddim_run(
    config: &ExperimentConfig,
    model: &UNet,
    b: usize,
    steps: usize,
    seed: u64,
) -> Vec<f64> {
    let device = Device::flex();
    let (c, s) = (config.model.image_channels, config.model.image_size);
    let labels: Vec<usize> = (0..b).map(|i| i % config.model.num_classes).collect();
    let schedule = ember_model::NoiseSchedule::new(&config.diffusion);
    let guided = Timed {
        inner: ClassifierFreeGuidance::new(
            model,
            &schedule,
            &labels,
            config.sample.guidance_scale,
            None,
            &device,
        ),
        marks: RefCell::new(Vec::with_capacity(steps + 1)),
    };
    let mut noise = SeededNoise::for_rows(seed, b);
    let x_t = noise.normal([b, c, s, s], &device);
    let ts = timesteps(&schedule, steps, config.sample.spacing);
    let ddim = Ddim {
        eta: config.sample.eta,
    };
    let out = ddim.sample(&guided, x_t, &ts, &mut noise);
    let _ = out.into_data(); // the work is done before the last mark
    let mut marks = guided.marks.into_inner();
    marks.push(Instant::now());
    marks
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect()
}

fn sample(config: ExperimentConfig, args: &Args) {
    let device = Device::flex();
    let b = args.batch.unwrap_or(config.train.batch_size);
    // The sampler runs on the EMA, a plain (non-autodiff) copy; a fresh init has the same cost.
    let model =
        UNetConfig::from(&config.model).init(&device, derive_seed(config.seed, Stream::Init, 0));
    let params = parameter_count(&model);
    if args.warmup > 0 {
        ddim_run(&config, &model, b, args.warmup, 1);
    }
    let mut run_seconds = Vec::new();
    let mut step_seconds = Vec::new();
    for r in 0..args.repeats {
        let steps = ddim_run(&config, &model, b, args.steps, 2 + r as u64);
        run_seconds.push(steps.iter().sum());
        step_seconds.extend(steps);
    }
    let m = median(&step_seconds);
    println!(
        "{{\"impl\":\"ember\",\"mode\":\"sample\",\"batch\":{b},\"threads\":{},\"params\":{params},\
         \"guidance_scale\":{},\"eta\":{},\"steps\":{},\"warmup\":{},\"repeats\":{},\
         \"median_step_seconds\":{m:.6},\"reference_steps\":{REFERENCE_SAMPLING_STEPS},\
         \"images_per_second\":{:.3},\"measured_images_per_second\":{:.3},\
         \"run_seconds\":{},\"step_seconds\":{},\"peak_rss_mib\":{:.1}}}",
        threads(),
        config.sample.guidance_scale,
        config.sample.eta,
        args.steps,
        args.warmup,
        args.repeats,
        b as f64 / (REFERENCE_SAMPLING_STEPS as f64 * m),
        b as f64 / median(&run_seconds),
        json_list(&run_seconds),
        json_list(&step_seconds),
        peak_rss_mib()
    );
}

/// Makes every parameter a tracked autodiff leaf again: weights assigned from a file are plain
/// tensors, and `backward` needs tracked leaves.
struct Track;

impl ModuleMapper for Track {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| t.require_grad())
    }
}

/// Loads `path` into `model` (on the autodiff device) as trainable weights.
fn load_trainable(model: UNet, path: &Path) -> UNet {
    ember_model::weights::load_safetensors(model, path)
        .unwrap()
        .map(&mut Track)
}

/// Named tensors of a model with its parameter names, in visiting order.
fn named(model: &UNet, prefix: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    ember_model::weights::named_tensors(model)
        .into_iter()
        .map(|(n, s, v)| (format!("{prefix}{n}"), s, v))
        .collect()
}

/// Writes F32 tensors as a safetensors file (the twin reads it with json + numpy).
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let mut entries = Vec::new();
    let mut offset = 0usize;
    for (name, shape, data) in tensors {
        let end = offset + 4 * data.len();
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        entries.push(format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            dims.join(",")
        ));
        offset = end;
    }
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    while !(8 + header.len()).is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for (_, _, data) in tensors {
        for v in data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::write(path, out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn entry<const D: usize>(name: &str, t: Tensor<D>) -> (String, Vec<usize>, Vec<f32>) {
    let (shape, data) = values(t);
    (name.to_string(), shape, data)
}

fn values<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let shape = t.dims().to_vec();
    (
        shape,
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap(),
    )
}

/// Sum of squared gradients by parameter name, to locate a mismatch.
struct GradNames<'a> {
    grads: &'a burn::optim::GradientsParams,
    path: Vec<String>,
    out: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for GradNames<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.out.insert(self.path.join("."), values(g));
        }
    }
}

/// The initial weights and the random inputs of steps `0..--steps` of a fresh run, as raw
/// little-endian arrays in `--out`: `init.safetensors`; `order.u32` (the data order of every
/// epoch the steps touch, concatenated); per step, in step order, `null.u8` (1 = the row uses
/// the null class), `timesteps.u32` and `noise.f32` (`rows x c x h x w`); `inputs.json`.
fn inputs(config: ExperimentConfig, args: &Args) {
    use ember_data::{ImageDataset, Split};
    use std::io::Write;
    let dir = args.out.clone().unwrap_or_else(|| usage());
    std::fs::create_dir_all(&dir).unwrap();
    let dataset = ImageDataset::load(&config.data, &config.model, Split::Train, config.data.limit)
        .unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(2)
        });
    let len = burn::data::dataset::Dataset::len(&dataset);
    let trainer = Trainer::new(config.clone(), &Device::flex());
    write_safetensors(&dir.join("init.safetensors"), &named(&trainer.model, ""));
    let (b, m) = (config.train.batch_size, &config.model);
    let image_len = m.image_channels * m.image_size * m.image_size;
    let per_epoch = len.div_ceil(b);
    let file = |name: &str| std::io::BufWriter::new(std::fs::File::create(dir.join(name)).unwrap());
    let mut order = file("order.u32");
    for epoch in 0..args.steps.div_ceil(per_epoch) {
        for i in ember_train::epoch_order(&config, len, epoch) {
            order.write_all(&(i as u32).to_le_bytes()).unwrap();
        }
    }
    let (mut null, mut times, mut noise) =
        (file("null.u8"), file("timesteps.u32"), file("noise.f32"));
    for step in 0..args.steps {
        let rows = b.min(len - (step % per_epoch) * b);
        let draws = ember_train::StepDraws::of(&config, &trainer.schedule, step, rows, image_len);
        for &n in &draws.null_rows {
            null.write_all(&[n as u8]).unwrap();
        }
        for &t in &draws.timesteps {
            times.write_all(&(t as u32).to_le_bytes()).unwrap();
        }
        for v in &draws.noise {
            noise.write_all(&v.to_le_bytes()).unwrap();
        }
    }
    for mut f in [order, null, times, noise] {
        f.flush().unwrap();
    }
    std::fs::write(
        dir.join("inputs.json"),
        format!(
            "{{\"steps\":{},\"batch\":{b},\"dataset_len\":{len},\"image_len\":{image_len}}}\n",
            args.steps
        ),
    )
    .unwrap();
    println!(
        "{{\"impl\":\"ember\",\"mode\":\"inputs\",\"steps\":{},\"dir\":\"{}\"}}",
        args.steps,
        dir.display()
    );
}

fn check(config: ExperimentConfig, args: &Args) {
    let dir = args.out.clone().unwrap_or_else(|| usage());
    std::fs::create_dir_all(&dir).unwrap();
    let device = Device::flex();
    let train_device = device.clone().autodiff();
    let b = args.batch.unwrap_or(8);
    let (c, s) = (config.model.image_channels, config.model.image_size);
    let unet = UNetConfig::from(&config.model);

    // 1. Perturbed weights, shared by both sides.
    let base = perturb_params(unet.init(&device, 7), 1000, 0.05);
    let weights = dir.join("weights.safetensors");
    ember_model::weights::save_safetensors(&base, &weights).unwrap();

    // 2. A forward pass and the loss gradient at fixed inputs.
    let mut rng = Rng::new(11);
    let t_max = config.diffusion.timesteps as u64;
    let timesteps: Vec<usize> = (0..b).map(|_| rng.below(t_max) as usize).collect();
    let x0: Vec<f32> = (0..b * c * s * s)
        .map(|_| (2.0 * rng.uniform() - 1.0) as f32)
        .collect();
    let x0 =
        Tensor::<1>::from_data(TensorData::new(x0, [b * c * s * s]), &device).reshape([b, c, s, s]);
    let null = base.null_class();
    let labels: Vec<usize> = (0..b)
        .map(|i| {
            if i % 4 == 3 {
                null
            } else {
                i % config.model.num_classes
            }
        })
        .collect();
    let noise = seeded_normals([b, c, s, s], 12, &device);
    let schedule = ember_model::NoiseSchedule::new(&config.diffusion);
    let x_t = schedule.add_noise(x0.clone(), noise.clone(), &timesteps);
    let tf: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
    let t = Tensor::<1>::from_data(TensorData::new(tf, [b]), &device);
    let eps = base.forward(x_t.clone(), t.clone(), labels_tensor(&labels, &device));
    let model_ad = load_trainable(unet.init(&train_device, 0), &weights);
    let pred = model_ad.forward(
        x_t.clone().to_device(&train_device),
        t.clone().to_device(&train_device),
        labels_tensor(&labels, &train_device),
    );
    let loss = ember_model::epsilon_mse(pred, noise.clone().to_device(&train_device));
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model_ad);
    let mut names = GradNames {
        grads: &grads,
        path: Vec::new(),
        out: HashMap::new(),
    };
    model_ad.visit(&mut names);
    let mut grad_tensors: Vec<(String, Vec<usize>, Vec<f32>)> = names
        .out
        .into_iter()
        .map(|(n, (s, v))| (format!("grad.{n}"), s, v))
        .collect();
    grad_tensors.sort_by(|a, b| a.0.cmp(&b.0));

    // 3. One real Trainer::train_step from the perturbed weights (its inputs recomputed from
    //    the step-0 streams exactly as train_step draws them; label dropout forced by a mask).
    let mut trainer = Trainer::new(config.clone(), &device);
    trainer.model = load_trainable(trainer.model.clone(), &weights);
    trainer.ema = trainer.model.valid();
    let batch = ImageBatch {
        images: x0.clone(),
        labels: (0..b).map(|i| i % config.model.num_classes).collect(),
    };
    let mask: Vec<bool> = (0..b).map(|i| i % 4 == 1).collect();
    let step_labels = ember_train::label_dropout::apply_mask(&batch.labels, &mask, null);
    // The draws train_step makes at step 0 (its own mask replaces their null rows).
    let draws = ember_train::StepDraws::of(&config, &trainer.schedule, 0, b, c * s * s);
    let step_t: Vec<f32> = draws.timesteps.iter().map(|&t| t as f32).collect();
    let step_noise = draws.noise;
    let lr = trainer.learning_rate(0);
    let (step_loss, step_norm) = trainer.train_step(batch, Some(&mask));

    // 4. A short guided DDIM run on the perturbed weights.
    let sample_steps = 4;
    let sample_labels: Vec<usize> = (0..b).map(|i| i % config.model.num_classes).collect();
    let guided = ClassifierFreeGuidance::new(
        &base,
        &schedule,
        &sample_labels,
        config.sample.guidance_scale,
        None,
        &device,
    );
    let x_start = seeded_normals([b, c, s, s], 13, &device);
    let visited =
        ember_sample::timesteps::timesteps(&schedule, sample_steps, config.sample.spacing);
    let sampled = Ddim {
        eta: config.sample.eta,
    }
    .sample(
        &guided,
        x_start.clone(),
        &visited,
        &mut SeededNoise::for_rows(14, b),
    );
    // 5. The same start and timesteps through DPM-Solver++(2M), the quality configs' sampler.
    let dpm_sampled = DpmSolverPp2m.sample(
        &guided,
        x_start.clone(),
        &visited,
        &mut SeededNoise::for_rows(14, b),
    );

    let as_f32 = |v: &[usize]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let scalar = |name: &str, v: f64| (name.to_string(), vec![1], vec![v as f32]);
    let mut tensors = vec![
        entry("x_t", x_t),
        ("t".to_string(), vec![b], as_f32(&timesteps)),
        ("labels".to_string(), vec![b], as_f32(&labels)),
        entry("noise", noise),
        entry("eps", eps),
        scalar("loss", loss.into_scalar::<f32>() as f64),
        ("step.x0".to_string(), values(x0.clone()).0, values(x0).1),
        ("step.t".to_string(), vec![b], step_t),
        ("step.labels".to_string(), vec![b], as_f32(&step_labels)),
        ("step.noise".to_string(), vec![b, c, s, s], step_noise),
        scalar("step.lr", lr),
        scalar("step.loss", step_loss),
        scalar("step.grad_norm", step_norm),
        entry("sample.x_start", x_start),
        ("sample.labels".to_string(), vec![b], as_f32(&sample_labels)),
        scalar("sample.steps", sample_steps as f64),
        entry("sample.out", sampled),
        entry("sample.dpm_out", dpm_sampled),
    ];
    tensors.extend(grad_tensors);
    tensors.extend(named(&trainer.model.valid(), "after.model."));
    tensors.extend(named(&trainer.ema, "after.ema."));
    write_safetensors(&dir.join("check.safetensors"), &tensors);
    println!(
        "{{\"impl\":\"ember\",\"mode\":\"check\",\"params\":{},\"dir\":\"{}\"}}",
        parameter_count(&base),
        dir.display()
    );
}

fn main() {
    // As the ember binary does (see ember_train::allocator).
    ember_train::allocator::keep_freed_memory();
    let args = parse_args();
    let mut config = ExperimentConfig::load(&args.config).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    if let Some(b) = args.batch {
        config.train.batch_size = b;
    }
    match args.mode.as_str() {
        "train" => train(config, &args),
        "sample" => sample(config, &args),
        "check" => check(config, &args),
        "inputs" => inputs(config, &args),
        "params" => {
            // The network alone: its parameter count and the process's baseline memory.
            let model = UNetConfig::from(&config.model).init(&Device::flex(), 0);
            println!(
                "{{\"impl\":\"ember\",\"mode\":\"params\",\"params\":{},\"peak_rss_mib\":{:.1}}}",
                parameter_count(&model),
                peak_rss_mib()
            );
        }
        "resolve" => {
            let text = config.to_toml();
            match &args.out {
                Some(path) => std::fs::write(path, text).unwrap(),
                None => print!("{text}"),
            }
        }
        _ => usage(),
    }
}
