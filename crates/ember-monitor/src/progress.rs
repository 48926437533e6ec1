//! Training progress for people: a live bar on a terminal, plain periodic lines otherwise (CI,
//! `> train.log`), so logs stay readable and greppable. Warnings and errors go to stderr.

use crate::StepReport;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// An indicatif bar on stderr, redrawn in place.
    Bar,
    /// One line on stdout every `every` steps (and on the last).
    Lines { every: usize },
}

impl ProgressMode {
    /// A bar when stderr is a terminal, lines every `every` steps when it is not.
    pub fn detect(every: usize) -> Self {
        if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines {
                every: every.max(1),
            }
        }
    }
}

pub struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    window_loss: f64,
    window_steps: usize,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Self {
        Self {
            mode,
            bar: None,
            window_loss: 0.0,
            window_steps: 0,
        }
    }

    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    fn bar(&mut self, r: &StepReport) -> &ProgressBar {
        self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::with_draw_target(
                Some(r.total_steps as u64),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} step {pos}/{len} {msg} elapsed {elapsed} eta {eta}",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            // A resumed run starts part-way; indicatif's rate and ETA then count only new steps.
            bar.set_position(r.step.saturating_sub(1) as u64);
            bar.reset_eta();
            bar
        })
    }

    pub fn step(&mut self, r: &StepReport) {
        self.window_loss += r.loss;
        self.window_steps += 1;
        match self.mode {
            ProgressMode::Bar => {
                let message = format!(
                    "loss {:.4} lr {:.2e} {:.1} img/s",
                    r.loss, r.learning_rate, r.images_per_second
                );
                let bar = self.bar(r);
                bar.set_message(message);
                bar.set_position(r.step as u64);
                if r.step >= r.total_steps {
                    bar.finish();
                }
            }
            ProgressMode::Lines { every } => {
                if r.step.is_multiple_of(every) || r.step == r.total_steps {
                    let remaining = (r.total_steps - r.step) as f64 * r.elapsed_seconds
                        / r.steps_this_session() as f64;
                    println!(
                        "step {:>6}/{} epoch {:>3} loss {:.4} lr {:.2e} grad-norm {:.3} {:.1} img/s eta {}",
                        r.step,
                        r.total_steps,
                        r.epoch,
                        self.window_loss / self.window_steps as f64,
                        r.learning_rate,
                        r.grad_norm,
                        r.images_per_second,
                        format_duration(remaining)
                    );
                    self.window_loss = 0.0;
                    self.window_steps = 0;
                }
            }
        }
    }

    /// A line of information (checkpoints, grids) that must not tear the bar.
    pub fn info(&self, line: &str) {
        match &self.bar {
            Some(bar) if !bar.is_finished() => bar.println(line),
            _ => println!("{line}"),
        }
    }

    /// A warning on stderr, above the bar.
    pub fn warn(&self, message: &str) {
        let print = || eprintln!("warning: {message}");
        match &self.bar {
            Some(bar) if !bar.is_finished() => bar.suspend(print),
            _ => print(),
        }
    }

    /// Leaves the bar drawn where it stopped (an error or Ctrl-C mid-run).
    pub fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_minutes_or_hours() {
        assert_eq!(format_duration(59.6), "1m00s");
        assert_eq!(format_duration(3599.0), "59m59s");
        assert_eq!(format_duration(7260.0), "2h01m");
        assert_eq!(format_duration(-3.0), "0m00s");
    }
}
