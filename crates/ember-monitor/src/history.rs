//! The per-step training history of a run, `metrics.csv`: what the loss curve is drawn from
//! and what a resumed run continues. A resume first cuts the file back to the checkpoint's
//! step, so the steps a killed run took after its last checkpoint are not counted twice.

use crate::{MonitorError, StepReport};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const HEADER: &str = "step,loss,smoothed_loss,learning_rate,grad_norm,images_per_second,\
elapsed_seconds,training_seconds";
/// The header before `training_seconds` existed; such files are still read (and upgraded when
/// the run is resumed).
const HEADER_V1: &str =
    "step,loss,smoothed_loss,learning_rate,grad_norm,images_per_second,elapsed_seconds";

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub step: usize,
    pub loss: f64,
    pub smoothed_loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
    pub images_per_second: f64,
    /// Seconds since this process started training.
    pub elapsed_seconds: f64,
    /// Seconds of training up to this step over every session of the run: the time of the
    /// sessions before this one (up to the checkpoint each resume started from) plus
    /// `elapsed_seconds`.
    pub training_seconds: f64,
}

impl HistoryRow {
    fn to_csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{}",
            self.step,
            self.loss,
            self.smoothed_loss,
            self.learning_rate,
            self.grad_norm,
            self.images_per_second,
            self.elapsed_seconds,
            self.training_seconds
        )
    }

    /// A row of `columns` fields (8, or 7 in a file written before `training_seconds`, which
    /// is then left NaN for `read_rows` to fill in).
    fn parse(line: &str, columns: usize) -> Option<Self> {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != columns {
            return None;
        }
        let num = |i: usize| f[i].parse::<f64>().ok();
        Some(Self {
            step: f[0].parse().ok()?,
            loss: num(1)?,
            smoothed_loss: num(2)?,
            learning_rate: num(3)?,
            grad_norm: num(4)?,
            images_per_second: num(5)?,
            elapsed_seconds: num(6)?,
            training_seconds: if columns == 8 { num(7)? } else { f64::NAN },
        })
    }
}

/// An exponential moving average of the loss with the start-up bias removed (as in Adam and
/// TensorBoard's own smoothing), so the first steps are not pulled towards zero. Non-finite
/// losses (skipped batches) leave it unchanged.
#[derive(Debug, Clone)]
pub struct Smoother {
    decay: f64,
    average: f64,
    weight: f64,
}

impl Smoother {
    pub fn new(decay: f64) -> Self {
        Self {
            decay,
            average: 0.0,
            weight: 0.0,
        }
    }

    pub fn update(&mut self, value: f64) -> f64 {
        if value.is_finite() {
            self.average = self.decay * self.average + (1.0 - self.decay) * value;
            self.weight = self.decay * self.weight + (1.0 - self.decay);
        }
        self.value()
    }

    pub fn value(&self) -> f64 {
        if self.weight > 0.0 {
            self.average / self.weight
        } else {
            f64::NAN
        }
    }
}

/// Every row of a `metrics.csv` (none when the file does not exist). A partial last line, as a
/// run killed mid-write leaves, is dropped; damage anywhere else is an error naming the line.
pub fn read_rows(path: &Path) -> Result<Vec<HistoryRow>, MonitorError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(MonitorError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let format_error = |message: String| MonitorError::Format {
        path: path.to_path_buf(),
        message,
    };
    let (header, columns) = match text.lines().next() {
        None => return Ok(Vec::new()),
        Some(HEADER) => (HEADER, 8),
        Some(HEADER_V1) => (HEADER_V1, 7),
        Some(_) => return Err(format_error(format!("line 1: expected {HEADER}"))),
    };
    let lines = text.lines().count();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        match HistoryRow::parse(line, columns) {
            Some(row) => rows.push(row),
            None if i + 1 == lines => {}
            None => return Err(format_error(format!("line {}: expected {header}", i + 1))),
        }
    }
    if columns == 7 {
        fill_training_seconds_v1(&mut rows);
    }
    Ok(rows)
}

/// Training time for a file written before `training_seconds` existed. Only `elapsed_seconds`
/// is there, which restarts with every process; a restart is recognised where it goes down.
/// (A session killed before it logged more time than the next one's first step is missed:
/// the reason the column now exists.)
fn fill_training_seconds_v1(rows: &mut [HistoryRow]) {
    let (mut offset, mut last) = (0.0, 0.0);
    for row in rows {
        if row.elapsed_seconds < last {
            offset += last;
        }
        last = row.elapsed_seconds;
        row.training_seconds = offset + row.elapsed_seconds;
    }
}

/// Seconds of training up to each step, over every session of the run.
pub fn training_seconds(rows: &[HistoryRow]) -> Vec<(usize, f64)> {
    rows.iter()
        .map(|row| (row.step, row.training_seconds))
        .collect()
}

/// `metrics.csv` of a run, open for appending.
pub struct History {
    path: PathBuf,
    file: std::fs::File,
    rows: Vec<HistoryRow>,
    smoother: Smoother,
    /// Training seconds of the sessions before this one, up to the step it resumed from.
    earlier_seconds: f64,
}

impl History {
    /// Opens (or creates) the history and keeps only the rows up to `resume_step`; a fresh run
    /// passes 0. The smoothed loss carries on from the kept rows.
    pub fn open(path: &Path, resume_step: usize, smoothing: f64) -> Result<Self, MonitorError> {
        let io = |source| MonitorError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut rows = read_rows(path)?;
        rows.retain(|row| row.step <= resume_step);
        let mut smoother = Smoother::new(smoothing);
        for row in &rows {
            smoother.update(row.loss);
        }
        let earlier_seconds = rows.last().map_or(0.0, |row| row.training_seconds);
        // Rewrite the kept rows atomically (in the current format), then append to that file.
        let mut text = format!("{HEADER}\n");
        for row in &rows {
            text.push_str(&row.to_csv());
            text.push('\n');
        }
        ember_io::write_atomic(path, text.as_bytes()).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            rows,
            smoother,
            earlier_seconds,
        })
    }

    /// Appends one step; returns its row (with the smoothed loss).
    pub fn record(&mut self, r: &StepReport) -> Result<&HistoryRow, MonitorError> {
        let row = HistoryRow {
            step: r.step,
            loss: r.loss,
            smoothed_loss: self.smoother.update(r.loss),
            learning_rate: r.learning_rate,
            grad_norm: r.grad_norm,
            images_per_second: r.images_per_second,
            elapsed_seconds: r.elapsed_seconds,
            training_seconds: self.earlier_seconds + r.elapsed_seconds,
        };
        writeln!(self.file, "{}", row.to_csv()).map_err(|source| MonitorError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.rows.push(row);
        Ok(self.rows.last().unwrap())
    }

    pub fn rows(&self) -> &[HistoryRow] {
        &self.rows
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(step: usize, loss: f64) -> StepReport {
        StepReport {
            step,
            total_steps: 10,
            epoch: 0,
            loss,
            learning_rate: 1e-3,
            grad_norm: 1.0,
            images_per_second: 10.0,
            elapsed_seconds: step as f64,
            start_step: 0,
        }
    }

    fn temp_csv(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("ember-history-{name}-{}.csv", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn training_time_adds_up_across_resumed_sessions_even_a_short_one() {
        let path = temp_csv("sessions");
        let at = |step: usize, elapsed_seconds: f64| StepReport {
            elapsed_seconds,
            ..report(step, 1.0)
        };
        // Session 1: steps 1-3 (checkpoint at 3). Session 2 resumes from 3 and is killed after
        // step 4, having logged less time than session 3's first step: the case a restart
        // detected by elapsed time going down misses. Session 3 resumes from step 4.
        let mut h = History::open(&path, 0, 0.9).unwrap();
        for (step, t) in [(1, 10.0), (2, 20.0), (3, 30.0)] {
            h.record(&at(step, t)).unwrap();
        }
        drop(h);
        let mut h = History::open(&path, 3, 0.9).unwrap();
        h.record(&at(4, 0.5)).unwrap();
        drop(h);
        let mut h = History::open(&path, 4, 0.9).unwrap();
        h.record(&at(5, 9.0)).unwrap();
        drop(h);
        assert_eq!(
            training_seconds(&read_rows(&path).unwrap()),
            vec![(1, 10.0), (2, 20.0), (3, 30.0), (4, 30.5), (5, 39.5)]
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_file_from_before_the_training_time_column_is_read_and_upgraded_on_resume() {
        let path = temp_csv("v1");
        // Steps 1-3 in the first process, 4-5 after a resume from step 3.
        let rows = [(1, 2.0), (2, 4.0), (3, 6.0), (4, 1.5), (5, 3.0)];
        let mut text = format!("{HEADER_V1}\n");
        for (step, elapsed) in rows {
            text.push_str(&format!("{step},1,1,0.001,1,1,{elapsed}\n"));
        }
        std::fs::write(&path, text).unwrap();
        let expected = vec![(1, 2.0), (2, 4.0), (3, 6.0), (4, 7.5), (5, 9.0)];
        assert_eq!(training_seconds(&read_rows(&path).unwrap()), expected);

        let mut resumed = History::open(&path, 5, 0.9).unwrap();
        resumed.record(&report(6, 1.0)).unwrap();
        drop(resumed);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("{HEADER}\n")), "{text}");
        let mut upgraded = expected;
        upgraded.push((6, 15.0));
        assert_eq!(training_seconds(&read_rows(&path).unwrap()), upgraded);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn smoothing_is_unbiased_and_skips_non_finite_losses() {
        let mut s = Smoother::new(0.9);
        assert_eq!(s.update(2.0), 2.0, "first value is the average, not 0.2");
        assert_eq!(s.update(f64::NAN), 2.0);
        let v = s.update(1.0);
        // (0.9 * 0.1 * 2 + 0.1 * 1) / (0.9 * 0.1 + 0.1)
        assert!((v - (0.18 + 0.1) / 0.19).abs() < 1e-12, "{v}");
    }

    #[test]
    fn resume_cuts_back_to_the_checkpoint_and_continues_the_average() {
        let path = temp_csv("resume");
        let mut straight = History::open(&path, 0, 0.9).unwrap();
        for step in 1..=6 {
            straight.record(&report(step, step as f64)).unwrap();
        }
        let mut expected = straight.rows().to_vec();
        drop(straight);
        // The resumed process's clock starts again; its training time carries on.
        let restarted = |step: usize| StepReport {
            elapsed_seconds: (step - 4) as f64,
            ..report(step, step as f64)
        };
        expected[4].elapsed_seconds = 1.0;
        expected[5].elapsed_seconds = 2.0;

        // A run killed after step 6 whose last checkpoint was at step 4, plus a torn line.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("7,0.5,0.");
        std::fs::write(&path, text).unwrap();
        let mut resumed = History::open(&path, 4, 0.9).unwrap();
        assert_eq!(resumed.rows(), &expected[..4]);
        resumed.record(&restarted(5)).unwrap();
        resumed.record(&restarted(6)).unwrap();
        assert_eq!(resumed.rows(), &expected[..]);
        drop(resumed);
        let reread = History::open(&path, usize::MAX, 0.9).unwrap();
        assert_eq!(reread.rows(), &expected[..]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_damaged_line_in_the_middle_is_an_error_naming_it() {
        let path = temp_csv("bad");
        std::fs::write(
            &path,
            format!("{HEADER}\n1,x,1,1,1,1,1,1\n2,1,1,1,1,1,1,1\n"),
        )
        .unwrap();
        let err = History::open(&path, 10, 0.9).err().unwrap().to_string();
        assert!(err.contains("line 2"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
