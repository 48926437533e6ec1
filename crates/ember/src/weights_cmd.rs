//! `ember export` and `ember compare`: weights as safetensors files.

use anyhow::{Context, Result, bail};
use ember_config::DeviceKind;
use ember_train::checkpoint::{Weights, load_model};
use ember_train::{RunDir, select_device};
use std::path::{Path, PathBuf};

/// Writes a checkpoint's EMA (or raw) weights to `out`.
pub(crate) fn export(run: &Path, checkpoint: Option<PathBuf>, raw: bool, out: &Path) -> Result<()> {
    let (run_dir, config) = RunDir::open(run)?;
    let checkpoint = match checkpoint {
        Some(c) => c,
        None => run_dir.latest_checkpoint()?,
    };
    let weights = if raw { Weights::Raw } else { Weights::Ema };
    let device = select_device(DeviceKind::Cpu)?;
    let model = load_model(&config, &checkpoint, weights, &device)?;
    let bytes = ember_model::weights::to_safetensors(&model);
    ember_io::write_atomic(out, &bytes)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "wrote {} ({} weights of {}, {} bytes)",
        out.display(),
        if raw { "raw" } else { "EMA" },
        checkpoint.display(),
        bytes.len()
    );
    Ok(())
}

pub(crate) fn compare(a: &Path, b: &Path) -> Result<()> {
    use ember_model::weights::read_safetensors;
    let (ta, tb) = (read_safetensors(a)?, read_safetensors(b)?);
    if ta.keys().ne(tb.keys()) {
        bail!(
            "{} and {} hold different tensor names",
            a.display(),
            b.display()
        );
    }
    let mut max_diff = 0f32;
    let mut worst = String::new();
    for (name, (shape_a, va)) in &ta {
        let (shape_b, vb) = &tb[name];
        if shape_a != shape_b {
            bail!(
                "tensor `{name}`: shape {shape_a:?} in {}, {shape_b:?} in {}",
                a.display(),
                b.display()
            );
        }
        for (x, y) in va.iter().zip(vb) {
            let d = (x - y).abs();
            if d > max_diff || d.is_nan() {
                max_diff = d;
                worst = name.clone();
            }
        }
    }
    println!("tensors: {}", ta.len());
    println!(
        "max abs difference: {max_diff:e}{}",
        if worst.is_empty() {
            String::new()
        } else {
            format!(" (in {worst})")
        }
    );
    Ok(())
}
