//! Ember's training crate: the classifier-free-guidance training loop (a plain custom loop in
//! the manner of Burn's GAN example), label dropout, EMA, the learning-rate warm-up, global
//! gradient clipping and the run directory with its checkpoints.

pub mod allocator;
pub mod checkpoint;
pub mod device;
pub mod ema;
pub mod label_dropout;
pub mod monitor;
pub mod optim;
pub mod run;

pub use device::select_device;
pub use run::{RunDir, RunError};

use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use ember_config::{ExperimentConfig, LrSchedule, NonFiniteLoss, TimestepSampling};
use ember_data::{EpochView, ImageBatch, ImageBatcher, ImageDataset};
use ember_model::rng::{Rng, Stream, derive_seed};
use ember_model::{
    NoiseSchedule, UNet, UNetConfig, min_snr_weights, weighted_mse, with_backend_rng,
};
use std::sync::Arc;
use std::time::Instant;

pub use ember_monitor::StepReport;
pub use ember_monitor::progress::format_duration;

/// Receives progress; [`monitor::RunMonitor`] records and shows it, tests collect it.
///
/// Per step, in this order: [`on_step`](Self::on_step) (the records: an error stops training,
/// the checkpoints written so far stay intact), the step's checkpoint when one is due, then
/// [`after_step`](Self::after_step) for optional output such as sample grids, which cannot
/// fail the run: what matters most is on disk first.
pub trait TrainingObserver {
    /// After each optimiser step; `trainer` holds the updated weights and EMA.
    fn on_step(&mut self, report: &StepReport, trainer: &Trainer) -> Result<(), RunError>;
    /// After the step's checkpoint (if any): optional output, whose failures are warnings.
    fn after_step(&mut self, _report: &StepReport, _trainer: &Trainer) {}
    fn on_checkpoint(
        &mut self,
        _step: usize,
        _path: &std::path::Path,
        _seconds: f64,
    ) -> Result<(), RunError> {
        Ok(())
    }
    fn on_warning(&mut self, message: &str) {
        eprintln!("warning: {message}");
    }
}

/// The state of a training run between steps.
pub struct Trainer {
    pub config: ExperimentConfig,
    pub model: UNet,
    pub ema: UNet,
    pub schedule: NoiseSchedule,
    optimizer: burn::optim::ModuleOptimizer,
    device: Device,
    /// Optimiser steps taken so far.
    pub step: usize,
}

/// The data loader of one epoch: the dataset in an order (and with flips) drawn from the
/// epoch's streams, so any step's batch is a function of (seed, step) alone, batched by Burn's
/// `DataLoader`. At most one loader thread: Burn splits the data between workers and yields
/// their batches as they arrive, which would make a step's batch depend on thread timing.
pub fn epoch_loader(
    config: &ExperimentConfig,
    dataset: Arc<ImageDataset>,
    epoch: usize,
    device: &Device,
) -> Arc<dyn DataLoader<ImageBatch>> {
    let order = epoch_order(config, dataset.len(), epoch);
    let flips = if config.data.random_flip {
        Rng::for_stream(config.seed, Stream::Flip, epoch as u64).coins(order.len())
    } else {
        Vec::new()
    };
    DataLoaderBuilder::new(ImageBatcher::new(dataset.shape()))
        .batch_size(config.train.batch_size)
        .num_workers(config.data.num_workers.min(1))
        .set_device(device.clone())
        .build(EpochView::new(dataset, order, flips))
}

/// The order in which epoch `epoch` visits a dataset of `len` images (batch `k` is
/// `order[k * batch_size..]`).
pub fn epoch_order(config: &ExperimentConfig, len: usize, epoch: usize) -> Vec<usize> {
    Rng::for_stream(config.seed, Stream::Shuffle, epoch as u64).permutation(len)
}

/// The random draws of training step `step`, each from that step's own stream: which rows use
/// the null class, the timesteps (on `schedule`, as `train.timestep_sampling` says) and the
/// diffusion noise (`rows x image_len`).
#[derive(Debug, Clone, PartialEq)]
pub struct StepDraws {
    pub null_rows: Vec<bool>,
    pub timesteps: Vec<usize>,
    pub noise: Vec<f32>,
}

impl StepDraws {
    pub fn of(
        config: &ExperimentConfig,
        schedule: &NoiseSchedule,
        step: usize,
        rows: usize,
        image_len: usize,
    ) -> Self {
        let (seed, step) = (config.seed, step as u64);
        let null_rows = label_dropout::null_mask(
            rows,
            config.train.p_uncond,
            &mut Rng::for_stream(seed, Stream::LabelDropout, step),
        );
        let mut t_rng = Rng::for_stream(seed, Stream::Timesteps, step);
        let timesteps = match config.train.timestep_sampling {
            TimestepSampling::Uniform => (0..rows)
                .map(|_| t_rng.below(schedule.len() as u64) as usize)
                .collect(),
            // ln sigma ~ N(mean, std), then the schedule's first timestep at least that noisy.
            TimestepSampling::LogitNormal => {
                let (mean, std) = (config.train.logit_mean, config.train.logit_std);
                t_rng
                    .normals(rows)
                    .into_iter()
                    .map(|z| schedule.timestep_at_sigma((mean + std * z as f64).exp()))
                    .collect()
            }
        };
        let noise = Rng::for_stream(seed, Stream::Noise, step).normals(rows * image_len);
        Self {
            null_rows,
            timesteps,
            noise,
        }
    }
}

/// Summary of a finished `train` call.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: usize,
    pub final_loss: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

impl Trainer {
    /// A fresh run: the model initialised from the config's seed on `device` (with autodiff).
    pub fn new(config: ExperimentConfig, device: &Device) -> Self {
        let train_device = device.clone().autodiff();
        let model = UNetConfig::from(&config.model)
            .init(&train_device, derive_seed(config.seed, Stream::Init, 0));
        let ema = model.valid();
        let optimizer = AdamWConfig::new()
            .with_weight_decay(config.train.weight_decay as f32)
            .with_epsilon(1e-8)
            .init();
        Self {
            schedule: NoiseSchedule::new(&config.diffusion),
            config,
            model,
            ema,
            optimizer,
            device: device.clone(),
            step: 0,
        }
    }

    /// Continues a run from a checkpoint folder: weights, EMA, AdamW state and step. The
    /// checkpoint's own config must agree with `config` on every key that cannot change
    /// mid-run.
    pub fn from_checkpoint(
        config: ExperimentConfig,
        dir: &std::path::Path,
        device: &Device,
    ) -> Result<Self, checkpoint::CheckpointError> {
        use checkpoint::{CheckpointError, EMA_FILE, MODEL_FILE, OPTIMIZER_FILE};
        let state = checkpoint::verify(dir)?;
        let saved = checkpoint::read_config(dir, &state)?;
        let changed = saved.fixed_keys_changed(&config);
        if !changed.is_empty() {
            return Err(CheckpointError::Load {
                path: dir.join(checkpoint::CONFIG_FILE),
                message: format!(
                    "this checkpoint was trained with other values of {}; these cannot change mid-run",
                    changed.join(", ")
                ),
            });
        }
        let mut trainer = Trainer::new(config, device);
        let train_device = device.clone().autodiff();
        trainer.model =
            checkpoint::load_weights(&trainer.config, &dir.join(MODEL_FILE), &train_device)?;
        trainer.ema = checkpoint::load_weights(&trainer.config, &dir.join(EMA_FILE), device)?;
        let optimizer_path = dir.join(OPTIMIZER_FILE);
        trainer.optimizer = trainer
            .optimizer
            .clone()
            .load(&optimizer_path)
            .map_err(|e| CheckpointError::Load {
                path: optimizer_path,
                message: e.to_string(),
            })?;
        trainer.step = state.step;
        Ok(trainer)
    }

    pub fn optimizer(&self) -> &burn::optim::ModuleOptimizer {
        &self.optimizer
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Learning rate at optimiser step `step` (0-based): linear warm-up, then constant or a
    /// cosine decay to `final_learning_rate` at the last step.
    pub fn learning_rate(&self, step: usize) -> f64 {
        let t = &self.config.train;
        if step < t.warmup_steps {
            return t.learning_rate * (step + 1) as f64 / t.warmup_steps as f64;
        }
        match t.lr_schedule {
            LrSchedule::Constant => t.learning_rate,
            LrSchedule::Cosine => {
                let span = t.steps.saturating_sub(t.warmup_steps).max(1) as f64;
                let progress = ((step - t.warmup_steps) as f64 / span).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                t.final_learning_rate + (t.learning_rate - t.final_learning_rate) * cosine
            }
        }
    }

    /// One optimiser step on a batch; returns `(loss, grad_norm)`.
    ///
    /// `forced_null`, when given, says exactly which rows use the null class (tests); otherwise
    /// rows drop their label with probability `p_uncond`, drawn from this step's stream.
    pub fn train_step(&mut self, batch: ImageBatch, forced_null: Option<&[bool]>) -> (f64, f64) {
        let seed = self.config.seed;
        let step = self.step as u64;
        let train_device = self.device.clone().autodiff();
        let [b, c, h, w] = batch.images.dims();

        // 1-2. this step's draws: labels with classifier-free dropout, timesteps, noise
        let draws = StepDraws::of(&self.config, &self.schedule, self.step, b, c * h * w);
        let null_rows = forced_null.unwrap_or(&draws.null_rows);
        let labels = label_dropout::apply_mask(&batch.labels, null_rows, self.model.null_class());
        let timesteps = draws.timesteps;
        let noise =
            Tensor::<4>::from_data(TensorData::new(draws.noise, [b, c, h, w]), &train_device);

        // 3. forward noising and the prediction
        let x0 = batch.images.to_device(&train_device);
        let target = self.schedule.target(x0.clone(), noise.clone(), &timesteps);
        let x_t = self.schedule.add_noise(x0, noise, &timesteps); // [b, c, h, w]
        let t: Vec<f32> = timesteps.iter().map(|&t| t as f32).collect();
        let t = Tensor::<1>::from_data(TensorData::new(t, [b]), &train_device);
        let labels = ember_model::labels_tensor(&labels, &train_device);
        // Dropout layers draw from the backend RNG: seed it for this step (see with_backend_rng).
        let predicted = if self.config.model.dropout > 0.0 {
            let dropout_seed = derive_seed(seed, Stream::DropoutLayers, step);
            with_backend_rng(&train_device, dropout_seed, || {
                self.model.forward(x_t, t, labels)
            })
        } else {
            self.model.forward(x_t, t, labels)
        };
        // 4. the loss against the configured target, min-SNR weighted if asked
        let gamma = self.config.train.min_snr_gamma;
        let weights = (gamma > 0.0).then(|| min_snr_weights(&self.schedule, &timesteps, gamma));
        let loss = weighted_mse(predicted, target, weights.as_deref());
        let loss_value: f64 = loss.clone().into_scalar::<f32>() as f64;
        if !loss_value.is_finite() {
            // No update and no EMA step: the batch is consumed and the weights stay as they were.
            self.step += 1;
            return (loss_value, f64::NAN);
        }

        // 5. backward, global-norm clipping, AdamW, EMA
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let (grads, grad_norm) =
            optim::clip_global_norm(&self.model, grads, self.config.train.grad_clip_norm);
        let lr = self.learning_rate(self.step);
        self.model = self.optimizer.step(lr, self.model.clone(), grads);
        self.step += 1;
        let decay = ema::effective_decay(self.config.train.ema_decay, self.step);
        self.ema = ema::update(self.ema.clone(), &self.model, decay);
        (loss_value, grad_norm)
    }

    /// Trains until `config.train.steps`, one epoch after another over `dataset`, reporting to
    /// `observer` and writing checkpoints into `run` when given.
    pub fn train(
        &mut self,
        dataset: ImageDataset,
        run: Option<&RunDir>,
        observer: &mut dyn TrainingObserver,
    ) -> Result<TrainSummary, RunError> {
        let dataset = Arc::new(dataset);
        let t = self.config.train.clone();
        let start = Instant::now();
        let start_step = self.step;
        let mut images = 0usize;
        let mut last_loss = f64::NAN;
        let batches_per_epoch = dataset.len().div_ceil(t.batch_size).max(1);
        while self.step < t.steps {
            let epoch = self.step / batches_per_epoch;
            let skip = self.step % batches_per_epoch;
            let loader = epoch_loader(&self.config, dataset.clone(), epoch, &self.device);
            for batch in loader.iter().skip(skip) {
                let batch = batch.map_err(|e| RunError::Data(e.to_string()))?;
                let n = batch.labels.len();
                let (loss, grad_norm) = self.train_step(batch, None);
                if !loss.is_finite() {
                    match t.on_nonfinite_loss {
                        NonFiniteLoss::Stop => {
                            return Err(RunError::NonFinite {
                                step: self.step,
                                loss,
                            });
                        }
                        NonFiniteLoss::Skip => observer.on_warning(&format!(
                            "loss is {loss} at step {}; skipped that batch (train.on_nonfinite_loss = \"skip\")",
                            self.step
                        )),
                    }
                }
                images += n;
                last_loss = loss;
                let elapsed = start.elapsed().as_secs_f64();
                let report = StepReport {
                    step: self.step,
                    total_steps: t.steps,
                    epoch,
                    loss,
                    learning_rate: self.learning_rate(self.step - 1),
                    grad_norm,
                    images_per_second: images as f64 / elapsed,
                    elapsed_seconds: elapsed,
                    start_step,
                };
                observer.on_step(&report, self)?;
                let periodic =
                    t.checkpoint_every > 0 && self.step.is_multiple_of(t.checkpoint_every);
                if let Some(run) = run
                    && (periodic || self.step == t.steps)
                {
                    let started = Instant::now();
                    let path = run.save_checkpoint(self)?;
                    observer.on_checkpoint(self.step, &path, started.elapsed().as_secs_f64())?;
                }
                observer.after_step(&report, self);
                if self.step >= t.steps {
                    break;
                }
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(TrainSummary {
            steps: self.step - start_step,
            final_loss: last_loss,
            seconds,
            images_per_second: images as f64 / seconds.max(1e-9),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> ExperimentConfig {
        let mut c = ExperimentConfig::default();
        c.model.base_channels = 8;
        c.model.channel_mults = vec![1, 2];
        c.model.attention_levels = vec![];
        c.model.norm_groups = 4;
        c.model.image_size = 8;
        c.diffusion.timesteps = 50;
        c.train.batch_size = 4;
        c.train.warmup_steps = 1;
        c.train.p_uncond = 0.0;
        c
    }

    fn batch(device: &Device) -> ImageBatch {
        ImageBatch {
            images: ember_model::init::seeded_normals([4, 1, 8, 8], 5, device),
            labels: vec![0, 1, 2, 3],
        }
    }

    fn null_row(trainer: &Trainer) -> Vec<f32> {
        let null = trainer.model.null_class();
        trainer
            .model
            .class_embedding_weights()
            .narrow(0, null, 1)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn null_row_learns_only_when_the_forced_mask_uses_it() {
        let device = Device::flex();
        let mut trainer = Trainer::new(tiny_config(), &device);
        let before = null_row(&trainer);
        // Zero-initialised output layers delay gradients into the embeddings by two steps;
        // with no row masked, the null row must stay exactly as initialised throughout.
        for _ in 0..4 {
            let (loss, _) = trainer.train_step(batch(&device), Some(&[false; 4]));
            assert!(loss.is_finite());
        }
        assert_eq!(null_row(&trainer), before, "unused null row must not move");
        trainer.train_step(batch(&device), Some(&[false, true, false, false]));
        assert_ne!(
            null_row(&trainer),
            before,
            "masked row must train the null row"
        );
    }

    #[test]
    fn a_step_trains_on_exactly_its_published_draws() {
        // `StepDraws` is what `train_bench inputs` hands the PyTorch twin: the loss of a step
        // rebuilt from it must be the loss train_step computes.
        let device = Device::flex();
        let mut config = tiny_config();
        config.train.p_uncond = 0.5;
        let mut trainer = Trainer::new(config.clone(), &device);
        let model = trainer.model.clone();
        let schedule = &trainer.schedule;
        let draws = StepDraws::of(&config, schedule, 0, 4, 64);
        assert_eq!(draws, StepDraws::of(&config, schedule, 0, 4, 64));
        assert_ne!(draws, StepDraws::of(&config, schedule, 1, 4, 64));
        assert!(draws.timesteps.iter().all(|&t| t < 50));

        let labels = label_dropout::apply_mask(&[0, 1, 2, 3], &draws.null_rows, model.null_class());
        let x0 = batch(&device).images;
        let noise =
            Tensor::<4>::from_data(TensorData::new(draws.noise.clone(), [4, 1, 8, 8]), &device);
        let target = schedule.target(x0.clone(), noise.clone(), &draws.timesteps);
        let x_t = schedule.add_noise(x0, noise, &draws.timesteps);
        let t: Vec<f32> = draws.timesteps.iter().map(|&t| t as f32).collect();
        let predicted = model.valid().forward(
            x_t,
            Tensor::<1>::from_data(TensorData::new(t, [4]), &device),
            ember_model::labels_tensor(&labels, &device),
        );
        let expected = weighted_mse(predicted, target, None).into_scalar::<f32>() as f64;
        let (loss, _) = trainer.train_step(batch(&device), None);
        assert!(
            (loss - expected).abs() <= 1e-6 * expected,
            "{loss} vs {expected}"
        );
    }

    #[test]
    fn logit_normal_timesteps_follow_the_normal_in_log_sigma() {
        let mut config = ExperimentConfig::default();
        config.diffusion.prediction = ember_config::Prediction::V;
        config.diffusion.zero_terminal_snr = true;
        let schedule = NoiseSchedule::new(&config.diffusion);
        let rows = 20_000;
        // Uniform keeps the draws every earlier run trained on (and resumes into).
        let uniform = StepDraws::of(&config, &schedule, 3, rows, 1).timesteps;
        let mut t_rng = Rng::for_stream(config.seed, Stream::Timesteps, 3);
        assert!(uniform.iter().all(|&t| t == t_rng.below(1000) as usize));

        config.train.timestep_sampling = TimestepSampling::LogitNormal;
        for (mean, std) in [(0.0, 1.0), (-1.2, 1.2)] {
            config.train.logit_mean = mean;
            config.train.logit_std = std;
            let drawn = StepDraws::of(&config, &schedule, 3, rows, 1).timesteps;
            assert_eq!(
                drawn,
                StepDraws::of(&config, &schedule, 3, rows, 1).timesteps
            );
            // The share of draws at most as noisy as sigma = exp(mean + k std) is Phi(k).
            let share_below = |k: f64| {
                let t = schedule.timestep_at_sigma((mean + k * std).exp());
                drawn.iter().filter(|&&d| d <= t).count() as f64 / rows as f64
            };
            for (k, phi) in [(-1.0, 0.1587), (0.0, 0.5), (1.0, 0.8413), (2.0, 0.9772)] {
                let share = share_below(k);
                assert!(
                    (share - phi).abs() < 0.015,
                    "N({mean}, {std}) at {k}: {share}"
                );
            }
        }
    }

    #[test]
    fn identical_runs_are_identical_and_the_loss_falls() {
        let device = Device::flex();
        let run = || {
            let mut trainer = Trainer::new(tiny_config(), &device);
            (0..30)
                .map(|_| trainer.train_step(batch(&device), None).0)
                .collect::<Vec<_>>()
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b);
        let early: f64 = a[..5].iter().sum::<f64>() / 5.0;
        let late: f64 = a[25..].iter().sum::<f64>() / 5.0;
        assert!(
            late < early,
            "loss should fall on a fixed batch: {early} -> {late}"
        );
    }

    #[test]
    fn checkpoint_round_trips_and_a_mismatched_model_is_refused_by_file_name() {
        let device = Device::flex();
        let dir = std::env::temp_dir().join(format!("ember-ckpt-{}", std::process::id()));
        let config = tiny_config();
        let run = RunDir::create(&dir, &config, true).unwrap();
        let mut trainer = Trainer::new(config.clone(), &device);
        trainer.train_step(batch(&device), None);
        let path = run.save_checkpoint(&trainer).unwrap();
        assert_eq!(run.latest_checkpoint().unwrap(), path);

        let loaded =
            checkpoint::load_model(&config, &path, checkpoint::Weights::Ema, &device).unwrap();
        let a = loaded
            .class_embedding_weights()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let b = trainer
            .ema
            .class_embedding_weights()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert_eq!(a, b, "EMA weights survive the round trip bit for bit");

        let mut wider = config;
        wider.model.base_channels = 16;
        let err = checkpoint::load_model(&wider, &path, checkpoint::Weights::Ema, &device)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ema.bpk") && err.contains("shape mismatch"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Ten seeded 8x8 images, so an epoch is three batches of four (the last one partial).
    fn fixture() -> ImageDataset {
        let mut rng = Rng::new(21);
        let pixels = (0..10 * 64).map(|_| rng.below(256) as u8).collect();
        ImageDataset::from_parts(pixels, (0..10).map(|i| i % 10).collect(), 8, 8)
    }

    struct Quiet;
    impl TrainingObserver for Quiet {
        fn on_step(&mut self, _: &StepReport, _: &Trainer) -> Result<(), RunError> {
            Ok(())
        }
    }

    fn temp_root(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("ember-{name}-{}", std::process::id()))
    }

    /// Trains `config` on the fixture into a fresh run directory at `dir`.
    fn train_into(
        dir: &std::path::Path,
        config: &ExperimentConfig,
    ) -> (RunDir, Result<Trainer, RunError>) {
        let run = RunDir::create(dir, config, true).unwrap();
        let mut trainer = Trainer::new(config.clone(), &Device::flex());
        let result = trainer
            .train(fixture(), Some(&run), &mut Quiet)
            .map(|_| trainer);
        (run, result)
    }

    fn tensors(model: &UNet) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        ember_model::weights::named_tensors(model)
    }

    /// Names of the tensors whose values differ (empty = bit-identical).
    fn differing(a: &UNet, b: &UNet) -> Vec<String> {
        tensors(a)
            .into_iter()
            .zip(tensors(b))
            .filter(|(x, y)| x != y)
            .map(|(x, _)| x.0)
            .collect()
    }

    #[test]
    fn stop_and_resume_is_bit_identical_to_an_uninterrupted_run() {
        let device = Device::flex();
        let root = temp_root("resume");
        let mut config = tiny_config();
        config.train.steps = 7;
        config.train.checkpoint_every = 2;
        config.train.p_uncond = 0.3;
        config.model.dropout = 0.1;

        // One go.
        let mut a = train_into(&root.join("a"), &config).1.unwrap();

        // Stop after 4 steps (mid-epoch), resume from the run directory, finish.
        let mut short = config.clone();
        short.train.steps = 4;
        let (run_b, first_half) = train_into(&root.join("b"), &short);
        first_half.unwrap();
        let (mut b, warnings) = run_b.resume(&config, &device).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(b.step, 4);
        b.train(fixture(), Some(&run_b), &mut Quiet).unwrap();

        assert_eq!(a.step, b.step);
        assert_eq!(
            differing(&a.model, &b.model),
            Vec::<String>::new(),
            "weights differ"
        );
        assert_eq!(
            differing(&a.ema, &b.ema),
            Vec::<String>::new(),
            "EMA differs"
        );
        // AdamW's moments and step count: one more identical step must land identically.
        let (la, _) = a.train_step(batch(&device), None);
        let (lb, _) = b.train_step(batch(&device), None);
        assert_eq!(la, lb);
        assert_eq!(
            differing(&a.model, &b.model),
            Vec::<String>::new(),
            "optimizer state differs"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn corrupted_checkpoints_are_named_and_resume_falls_back() {
        let device = Device::flex();
        let root = temp_root("corrupt");
        let mut config = tiny_config();
        config.train.steps = 4;
        config.train.checkpoint_every = 2;
        let (run, trained) = train_into(&root, &config);
        trained.unwrap();
        let newest = run.latest_checkpoint().unwrap();
        let ema = newest.join(checkpoint::EMA_FILE);
        let bytes = std::fs::read(&ema).unwrap();

        // Truncated: named, and resume falls back to step 2 with a warning.
        std::fs::write(&ema, &bytes[..bytes.len() / 2]).unwrap();
        let err = checkpoint::verify(&newest).unwrap_err().to_string();
        assert!(
            err.contains("ema.bpk") && err.contains("truncated or corrupted"),
            "{err}"
        );
        let (trainer, warnings) = run.resume(&config, &device).unwrap();
        assert_eq!(trainer.step, 2);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("ema.bpk") && warnings[0].contains("falling back"));

        // Garbled (same length, one byte flipped): caught by the checksum.
        let mut garbled = bytes.clone();
        let mid = garbled.len() / 2;
        garbled[mid] ^= 0x5a;
        std::fs::write(&ema, &garbled).unwrap();
        assert!(
            checkpoint::verify(&newest)
                .unwrap_err()
                .to_string()
                .contains("ema.bpk")
        );
        std::fs::write(&ema, &bytes).unwrap();
        checkpoint::verify(&newest).unwrap();

        // Another format version: an older one (FNV-1a checksums) or a newer one.
        let state_path = newest.join(checkpoint::STATE_FILE);
        let state = std::fs::read_to_string(&state_path).unwrap();
        let current = format!("format_version = {}", checkpoint::FORMAT_VERSION);
        assert!(state.contains(&current), "{state}");
        assert!(state.contains("config_hash = \"crc32:"), "{state}");
        for (version, expected) in [
            (
                1,
                "checkpoint format version 1, but this ember reads version 2",
            ),
            (
                99,
                "checkpoint format version 99, but this ember reads version 2",
            ),
        ] {
            std::fs::write(
                &state_path,
                state.replace(&current, &format!("format_version = {version}")),
            )
            .unwrap();
            let err = checkpoint::verify(&newest).unwrap_err().to_string();
            assert!(
                err.contains("state.toml") && err.contains(expected),
                "{err}"
            );
        }
        std::fs::write(&state_path, &state).unwrap();

        // A changed model shape is refused, naming the key.
        let mut wider = config.clone();
        wider.model.base_channels = 16;
        let err = Trainer::from_checkpoint(wider, &newest, &device)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("model.base_channels"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn keeps_only_the_newest_checkpoints() {
        let root = temp_root("keep");
        let mut config = tiny_config();
        config.train.steps = 5;
        config.train.checkpoint_every = 1;
        config.train.keep_checkpoints = 2;
        let (run, trained) = train_into(&root, &config);
        trained.unwrap();
        let steps: Vec<usize> = run
            .checkpoints()
            .unwrap()
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(steps, vec![5, 4]);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn keep_every_spares_the_checkpoints_of_a_quality_curve() {
        let root = temp_root("keep-every");
        let mut config = tiny_config();
        config.train.steps = 7;
        config.train.checkpoint_every = 1;
        config.train.keep_checkpoints = 2;
        config.train.keep_every = 3;
        let (run, trained) = train_into(&root, &config);
        trained.unwrap();
        let steps: Vec<usize> = run
            .checkpoints()
            .unwrap()
            .into_iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(steps, vec![7, 6, 3]);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn non_finite_loss_skips_the_update_or_stops_the_run() {
        let device = Device::flex();
        let mut trainer = Trainer::new(tiny_config(), &device);
        let before = tensors(&trainer.model);
        let mut bad = batch(&device);
        bad.images = bad.images.mul_scalar(f32::NAN);
        let (loss, _) = trainer.train_step(bad, None);
        assert!(loss.is_nan());
        assert_eq!(trainer.step, 1, "the batch is consumed");
        assert_eq!(tensors(&trainer.model), before, "no update from a NaN loss");

        // A run that blows up stops with a clear error and leaves its last checkpoint intact.
        let root = temp_root("nan");
        let mut config = tiny_config();
        config.train.steps = 6;
        config.train.checkpoint_every = 1;
        config.train.grad_clip_norm = 0.0;
        config.train.learning_rate = 1e30;
        let (run, result) = train_into(&root, &config);
        let Err(err) = result else {
            panic!("a run with learning rate 1e30 should not finish");
        };
        let RunError::NonFinite { step, .. } = err else {
            panic!("expected a non-finite loss error, got {err}");
        };
        let latest = run.latest_checkpoint().unwrap();
        assert_eq!(checkpoint::verify(&latest).unwrap().step, step - 1);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn warmup_reaches_the_peak_learning_rate() {
        let mut config = tiny_config();
        config.train.warmup_steps = 4;
        let trainer = Trainer::new(config, &Device::flex());
        let lrs: Vec<f64> = (0..6).map(|s| trainer.learning_rate(s)).collect();
        assert_eq!(lrs, vec![2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3]);
    }

    #[test]
    fn cosine_schedule_decays_from_the_peak_to_the_final_rate() {
        let mut config = tiny_config();
        config.train.warmup_steps = 2;
        config.train.steps = 12;
        config.train.lr_schedule = LrSchedule::Cosine;
        config.train.final_learning_rate = 1e-4;
        let trainer = Trainer::new(config, &Device::flex());
        let lr = |s| trainer.learning_rate(s);
        assert_eq!((lr(0), lr(1), lr(2)), (5e-4, 1e-3, 1e-3));
        // Halfway through the decay: the mean of the peak and the floor.
        assert!((lr(7) - 5.5e-4).abs() < 1e-12, "{}", lr(7));
        assert!((lr(12) - 1e-4).abs() < 1e-12, "{}", lr(12));
        let decay: Vec<f64> = (2..=12).map(lr).collect();
        assert!(decay.windows(2).all(|w| w[1] < w[0]), "{decay:?}");
    }
}
