//! Compares Ember's FID features with PyTorch's on the same images.
//!
//! ```text
//! cargo run --release -p ember-fid --example fid_check -- \
//!     [--weights datasets/fid/inception-fid.safetensors] \
//!     [--reference datasets/fid/reference-features.safetensors] [--tolerance 1e-4]
//! ```
//!
//! The reference file comes from `scripts/fid/reference_features.py` (`<batch>.images`,
//! `<batch>.features`). For every batch, and over all of them, it prints
//!
//! * `max_rel` = max |ours − torch| / max |torch| (over the batch's features), the figure the
//!   tolerance applies to;
//! * `median_rel` = the median over feature elements of |ours − torch| / |torch| (elements where
//!   torch gives exactly 0, e.g. a channel that is 0 after ReLU everywhere, are left out and
//!   counted);
//! * `max_abs` = max |ours − torch|.
//!
//! Exits with status 1 when `max_rel` of any batch exceeds the tolerance.

use burn::prelude::*;
use ember_fid::InceptionFid;
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let mut weights = PathBuf::from(ember_fid::DEFAULT_WEIGHTS);
    let mut reference = PathBuf::from("datasets/fid/reference-features.safetensors");
    let mut tolerance = 1e-4f64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--weights" => weights = value().into(),
            "--reference" => reference = value().into(),
            "--tolerance" => {
                tolerance = value()
                    .parse()
                    .unwrap_or_else(|e| fail(&format!("--tolerance: {e}")))
            }
            _ => fail(&format!("unknown argument {arg}")),
        }
    }

    let device = Device::flex();
    let model = InceptionFid::load(&weights, &device).unwrap_or_else(|e| fail(&e.to_string()));
    let tensors =
        ember_model::weights::read_safetensors(&reference).unwrap_or_else(|e| fail(&e.to_string()));
    let batches: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".images").map(str::to_string))
        .collect();
    if batches.is_empty() {
        fail(&format!(
            "{}: no <batch>.images tensors",
            reference.display()
        ));
    }

    println!(
        "{:<12} {:>16} {:>12} {:>12} {:>12} {:>8}",
        "batch", "images", "max_rel", "median_rel", "max_abs", "secs"
    );
    let (mut all_diff, mut all_ref) = (Vec::new(), Vec::new());
    let mut worst = 0.0f64;
    for name in &batches {
        let (shape, images) = &tensors[&format!("{name}.images")];
        let (fshape, expected) = tensors
            .get(&format!("{name}.features"))
            .unwrap_or_else(|| fail(&format!("{name}.features is missing")));
        let dims: [usize; 4] = shape
            .as_slice()
            .try_into()
            .unwrap_or_else(|_| fail(&format!("{name}.images: shape {shape:?} is not 4-d")));
        let start = Instant::now();
        let x = Tensor::<4>::from_data(TensorData::new(images.clone(), dims), &device);
        let ours = model
            .features(x)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 features");
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(fshape, &vec![dims[0], ember_fid::FEATURE_DIM]);
        let diff: Vec<f64> = ours
            .iter()
            .zip(expected)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .collect();
        let refs: Vec<f64> = expected.iter().map(|b| *b as f64).collect();
        let (max_rel, median_rel, max_abs, zeros) = stats(&diff, &refs);
        worst = worst.max(max_rel);
        println!(
            "{:<12} {:>16} {:>12.3e} {:>12.3e} {:>12.3e} {:>8.2}{}",
            name,
            format!("{dims:?}"),
            max_rel,
            median_rel,
            max_abs,
            secs,
            if zeros > 0 {
                format!("  ({zeros} exact zeros in torch left out of the median)")
            } else {
                String::new()
            }
        );
        all_diff.extend(diff);
        all_ref.extend(refs);
    }
    let (max_rel, median_rel, max_abs, _) = stats(&all_diff, &all_ref);
    println!(
        "{:<12} {:>16} {:>12.3e} {:>12.3e} {:>12.3e}",
        "all",
        format!("{} values", all_ref.len()),
        max_rel,
        median_rel,
        max_abs
    );
    if worst > tolerance {
        println!("FAIL: max_rel {worst:.3e} > tolerance {tolerance:.0e}");
        std::process::exit(1);
    }
    println!("OK: max_rel {worst:.3e} <= tolerance {tolerance:.0e}");
}

/// (max |d| / max |ref|, median of |d| / |ref| over ref != 0, max |d|, count of ref == 0).
fn stats(diff: &[f64], refs: &[f64]) -> (f64, f64, f64, usize) {
    let max_abs = diff.iter().cloned().fold(0.0, f64::max);
    let max_ref = refs.iter().map(|r| r.abs()).fold(0.0, f64::max);
    let mut rel: Vec<f64> = diff
        .iter()
        .zip(refs)
        .filter(|(_, r)| **r != 0.0)
        .map(|(d, r)| d / r.abs())
        .collect();
    let zeros = refs.len() - rel.len();
    rel.sort_by(|a, b| a.total_cmp(b));
    let median = if rel.is_empty() {
        0.0
    } else {
        rel[rel.len() / 2]
    };
    (max_abs / max_ref, median, max_abs, zeros)
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}
