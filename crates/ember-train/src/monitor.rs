//! What a run records while it trains (the `[log]` table): the history in `metrics.csv`,
//! TensorBoard scalars, sample grids of the EMA weights at every configured guidance scale
//! (PNG under `samples/` and TensorBoard images, from the same noise each time so they are
//! comparable over the run), the resolved config as TensorBoard text, the progress display, and
//! the loss curve `loss.png` at the end.

use crate::{RunDir, RunError, StepReport, Trainer, TrainingObserver};
use ember_config::ExperimentConfig;
use ember_monitor::history::{History, HistoryRow};
use ember_monitor::plot::{Panel, Series, write_panels};
use ember_monitor::progress::{Progress, ProgressMode};
use ember_monitor::tensorboard::EventLog;
use ember_sample::{Guidance, SampleRequest, sample_grid};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const HISTORY_FILE: &str = "metrics.csv";
pub const LOSS_PLOT_FILE: &str = "loss.png";

pub struct RunMonitor {
    run: RunDir,
    config: ExperimentConfig,
    progress: Progress,
    history: History,
    events: Option<EventLog>,
}

impl RunMonitor {
    /// Opens the records of `run` for a process that trains on from `start_step` (0 for a
    /// fresh run): history rows past it are dropped, and TensorBoard is told to forget events
    /// past it, since the steps after the checkpoint are about to be taken again.
    pub fn open(
        run: &RunDir,
        config: &ExperimentConfig,
        start_step: usize,
        mode: ProgressMode,
    ) -> Result<Self, RunError> {
        let history = History::open(
            &run.root().join(HISTORY_FILE),
            start_step,
            config.log.loss_smoothing,
        )?;
        let events = if config.log.tensorboard {
            let mut events = EventLog::create(run.root())?;
            if start_step > 0 {
                events.restart_at(start_step + 1);
            }
            events.text("config", start_step, &config_markdown(config));
            events.flush();
            Some(events)
        } else {
            None
        };
        Ok(Self {
            run: run.clone(),
            config: config.clone(),
            progress: Progress::new(mode),
            history,
            events,
        })
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    fn is_sample_step(&self, r: &StepReport) -> bool {
        let every = self.config.log.sample_every;
        r.step == r.total_steps || (every > 0 && r.step.is_multiple_of(every))
    }

    /// One grid per configured scale from the EMA weights, same noise every time. Every
    /// `[sample]` option applies except classifier guidance, whose classifier training does
    /// not load, and autoguidance, whose weak model it does not load either (its grids use
    /// CFG at the same scale).
    fn write_grids(&mut self, trainer: &Trainer) -> Result<(), RunError> {
        let m = &self.config.model;
        let shape = [m.image_channels, m.image_size, m.image_size];
        let mut settings = ember_config::SampleConfig {
            classifier_guidance: 0.0,
            ..self.config.sample.clone()
        };
        if settings.guidance_method == ember_config::GuidanceMethod::Autoguidance {
            settings.guidance_method = ember_config::GuidanceMethod::Cfg;
        }
        for scale in self.config.log_sample_scales() {
            let started = Instant::now();
            let request = SampleRequest {
                classes: (0..m.num_classes).collect(),
                guidance: Guidance::new(&settings, None).at_scale(scale),
                init: None,
            };
            let grid = sample_grid(
                &trainer.ema,
                &trainer.schedule,
                &request,
                shape,
                trainer.device(),
            );
            let path = self.run.sample_path(trainer.step, scale, &request.classes);
            ember_io::write_png(&grid, &path).map_err(|e| RunError::Sample(e.to_string()))?;
            if let Some(events) = &mut self.events {
                let tag = format!("samples/scale-{}", ember_config::scale_label(scale));
                events.image(&tag, trainer.step, &grid);
                events.flush();
            }
            self.progress.info(&format!(
                "sample grid (EMA weights, scale {scale}, one row per class): {} ({:.1}s)",
                path.display(),
                started.elapsed().as_secs_f64()
            ));
        }
        Ok(())
    }

    /// Draws `loss.png` from the whole history (earlier sessions of a resumed run included)
    /// and closes the event file. The plot is optional output: a failure is a warning and
    /// gives `None`.
    pub fn finish(mut self) -> Option<PathBuf> {
        if let Some(events) = &mut self.events {
            events.flush();
        }
        let path = self.run.root().join(LOSS_PLOT_FILE);
        match write_loss_plot(&self.history, &loss_name(&self.config), &path) {
            Ok(()) => Some(path),
            Err(e) => {
                self.progress.warn(&format!("no loss curve: {e}"));
                None
            }
        }
    }

    /// Call when training stopped on an error, so the bar does not hide it.
    pub fn abandon(&self) {
        self.progress.abandon();
    }
}

impl TrainingObserver for RunMonitor {
    fn on_step(&mut self, r: &StepReport, _trainer: &Trainer) -> Result<(), RunError> {
        let smoothed = self.history.record(r)?.smoothed_loss;
        if let Some(events) = &mut self.events {
            let mut scalar = |tag: &str, value: f64| {
                // TensorBoard cannot draw NaN; a skipped batch shows as a gap.
                if value.is_finite() {
                    events.scalar(tag, r.step, value);
                }
            };
            scalar("train/loss", r.loss);
            scalar("train/loss_smoothed", smoothed);
            scalar("train/learning_rate", r.learning_rate);
            scalar("train/grad_norm", r.grad_norm);
            scalar("train/images_per_second", r.images_per_second);
        }
        self.progress.step(r);
        Ok(())
    }

    /// Grids come after the step's checkpoint, and a grid that cannot be written is a warning:
    /// it never costs the run a step.
    fn after_step(&mut self, r: &StepReport, trainer: &Trainer) {
        if self.is_sample_step(r)
            && let Err(e) = self.write_grids(trainer)
        {
            self.progress.warn(&format!(
                "no sample grid at step {} (training goes on; the checkpoint is written): {e}",
                r.step
            ));
        }
    }

    fn on_checkpoint(&mut self, step: usize, path: &Path, seconds: f64) -> Result<(), RunError> {
        if let Some(events) = &mut self.events {
            events.flush();
        }
        self.progress.info(&checkpoint_line(step, path, seconds));
        Ok(())
    }

    fn on_warning(&mut self, message: &str) {
        self.progress.warn(message);
    }
}

pub fn checkpoint_line(step: usize, path: &Path, seconds: f64) -> String {
    let bytes: u64 = std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    format!(
        "checkpoint at step {step}: {} ({:.1} MB, written in {:.0} ms)",
        path.display(),
        bytes as f64 / 1e6,
        seconds * 1e3
    )
}

/// The resolved config as a TOML code block (TensorBoard's text tab renders Markdown).
fn config_markdown(config: &ExperimentConfig) -> String {
    let indented: String = config
        .to_toml()
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect();
    format!("Resolved config of this run:\n\n{indented}")
}

/// What the loss is, for the plot's title: `v MSE, min-SNR-5 weighted`, and the timestep
/// distribution when it is not uniform (its loss is an average over other noise levels, so not
/// comparable with a uniform run's).
fn loss_name(config: &ExperimentConfig) -> String {
    let target = match config.diffusion.prediction {
        ember_config::Prediction::Epsilon => "epsilon",
        ember_config::Prediction::V => "v",
        ember_config::Prediction::X0 => "x0",
    };
    let mut name = match config.train.min_snr_gamma {
        g if g > 0.0 => format!("{target} MSE, min-SNR-{g} weighted"),
        _ => format!("{target} MSE"),
    };
    if config.train.timestep_sampling == ember_config::TimestepSampling::LogitNormal {
        let (m, s) = (config.train.logit_mean, config.train.logit_std);
        name.push_str(&format!(", logit-normal({m}, {s}) timesteps"));
    }
    name
}

fn write_loss_plot(history: &History, loss: &str, path: &Path) -> Result<(), RunError> {
    let rows = history.rows();
    // The first steps' loss (~1) dwarfs the rest; the middle panel shows the last 90 %.
    let tail_from = rows.last().map_or(0, |r| r.step / 10);
    let series = |name: &str, from: usize, value: fn(&HistoryRow) -> f64| Series {
        name: name.to_string(),
        points: rows
            .iter()
            .filter(|r| r.step >= from)
            .map(|r| (r.step as f64, value(r)))
            .collect(),
    };
    let loss_panel = |title: String, from: usize| Panel {
        title,
        y_label: "loss".into(),
        series: vec![
            series("per step", from, |r| r.loss),
            series("smoothed", from, |r| r.smoothed_loss),
        ],
        markers: false,
    };
    let panels = [
        loss_panel(format!("Training loss ({loss})"), 0),
        loss_panel(format!("Loss from step {tail_from}"), tail_from),
        Panel {
            title: "Learning rate".into(),
            y_label: "lr".into(),
            series: vec![series("lr", 0, |r| r.learning_rate)],
            markers: false,
        },
    ];
    write_panels(path, "step", &panels, 3)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_name_says_the_weighting_and_a_non_uniform_timestep_distribution() {
        let mut config = ExperimentConfig::default();
        config.diffusion.prediction = ember_config::Prediction::V;
        config.train.min_snr_gamma = 5.0;
        assert_eq!(loss_name(&config), "v MSE, min-SNR-5 weighted");
        config.train.timestep_sampling = ember_config::TimestepSampling::LogitNormal;
        config.train.logit_mean = -0.5;
        assert_eq!(
            loss_name(&config),
            "v MSE, min-SNR-5 weighted, logit-normal(-0.5, 1) timesteps"
        );
    }
}
