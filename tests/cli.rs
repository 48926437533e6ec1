//! End-to-end tests of the `ember` binary on a generated MNIST-shaped fixture: train the smoke
//! config, sample from the run, and check the errors users see for bad input.

use ember_config::ExperimentConfig;
use ember_data::idx::encode_idx;
use ember_model::rng::Rng;
use ember_sample::grid::{GRID_PADDING, read_png};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ember(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("ember runs")
}

/// `ember train CONFIG --run-dir RUN`.
fn train(config: &Path, run: &Path) -> Output {
    ember(&[
        "train",
        config.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ])
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 64 seeded 28x28 images, ten classes, written as the four IDX files.
fn write_fixture(dir: &Path) {
    let n = 64;
    let mut rng = Rng::new(11);
    let pixels: Vec<u8> = (0..n * 28 * 28).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for prefix in ["train", "t10k"] {
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            encode_idx(&[n, 28, 28], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            encode_idx(&[n], &labels),
        )
        .unwrap();
    }
}

/// The shipped smoke config, pointed at a fixture folder.
fn smoke_config(dir: &Path, data_root: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/smoke.toml");
    let mut config = ExperimentConfig::load(&shipped).unwrap();
    config.data.root = data_root.to_path_buf();
    let path = dir.join("smoke.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    path
}

/// `ember sample` of classes 3 and 7, three each, scale 2, three steps, plus `extra` flags.
fn sample_two_classes(run: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "sample",
        "--run",
        run.to_str().unwrap(),
        "--guidance",
        "2",
        "--class",
        "3,7",
        "--per-class",
        "3",
        "--steps",
        "3",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ember(&args)
}

fn grid_size(rows: usize, cols: usize, side: usize) -> (usize, usize) {
    let p = GRID_PADDING;
    (cols * (side + p) + p, rows * (side + p) + p)
}

#[test]
fn smoke_config_trains_checkpoints_and_samples() {
    let dir = workdir("smoke");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_fixture(&data);
    let config = smoke_config(&dir, &data);
    let run = dir.join("run");

    let out = train(&config, &run);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(
        log.contains("step      4/4"),
        "progress line with the step: {log}"
    );
    assert!(log.contains("img/s") && log.contains("loss"), "{log}");

    // The run directory: resolved config, checkpoints with model + EMA, a final grid.
    let resolved = ExperimentConfig::load(&run.join("config.toml")).unwrap();
    assert_eq!(resolved.train.steps, 4);
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "step-00000004");
    for file in [
        "model.bpk",
        "ema.bpk",
        "optimizer.bpk",
        "config.toml",
        "state.toml",
    ] {
        assert!(
            run.join("checkpoints/step-00000004").join(file).is_file(),
            "{file}"
        );
    }
    assert!(run.join("checkpoints/step-00000002/ema.bpk").is_file());
    let grid = read_png(&run.join("samples/step-00000004_scale-3.png")).unwrap();
    let per_class = resolved.sample.per_class;
    assert_eq!((grid.width, grid.height), grid_size(10, per_class, 28));

    // Sampling two classes from the run: one row each.
    let png = dir.join("two.png");
    let out = sample_two_classes(&run, &png, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let grid = read_png(&png).unwrap();
    assert_eq!((grid.width, grid.height), grid_size(2, 3, 28));

    // Same seed, same request: the same grid (deterministic DDIM, eta 0).
    let again = dir.join("again.png");
    let out = sample_two_classes(&run, &again, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read_png(&again).unwrap(), grid);

    // Exported EMA weights give exactly the grid the checkpoint gives.
    let weights = dir.join("ema.safetensors");
    let out = ember(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--out",
        weights.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let from_file = dir.join("from-file.png");
    let out = sample_two_classes(&run, &from_file, &["--weights", weights.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read_png(&from_file).unwrap(), grid);

    // Resuming with a changed model shape is refused by key; more steps are fine.
    let mut wider = ExperimentConfig::load(&config).unwrap();
    wider.model.base_channels = 16;
    let wider_path = dir.join("wider.toml");
    std::fs::write(&wider_path, wider.to_toml()).unwrap();
    let out = ember(&[
        "train",
        wider_path.to_str().unwrap(),
        "--resume",
        run.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("model.base_channels"), "{}", text(&out));
    let out = ember(&["train", "--resume", run.to_str().unwrap(), "--steps", "6"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("at step 4") && text(&out).contains("step      6/6"),
        "{}",
        text(&out)
    );

    // A second train into the same directory is refused rather than clobbering the run.
    let out = train(&config, &run);
    assert!(!out.status.success());
    assert!(text(&out).contains("already holds a run"), "{}", text(&out));

    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unknown_config_key_is_rejected_by_name_with_non_zero_exit() {
    let dir = workdir("badkey");
    let config = dir.join("bad.toml");
    std::fs::write(&config, "[train]\nsteps = 3\nlearning_rat = 0.1\n").unwrap();
    let out = train(&config, &dir.join("run"));
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("learning_rat") && msg.contains("bad.toml"),
        "{msg}"
    );
    assert!(
        !dir.join("run").exists(),
        "nothing is written for a bad config"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn truncated_dataset_file_is_named_in_the_error() {
    let dir = workdir("truncated");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_fixture(&data);
    let images = data.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() - 100]).unwrap();
    let config = smoke_config(&dir, &data);
    let out = train(&config, &dir.join("run"));
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("train-images-idx3-ubyte") && msg.contains("truncated"),
        "{msg}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sampling_a_class_the_model_lacks_is_an_error() {
    let dir = workdir("badclass");
    std::fs::create_dir_all(dir.join("run")).unwrap();
    std::fs::write(
        dir.join("run/config.toml"),
        ExperimentConfig::default().to_toml(),
    )
    .unwrap();
    let out = ember(&[
        "sample",
        "--run",
        dir.join("run").to_str().unwrap(),
        "--class",
        "12",
        "--out",
        dir.join("x.png").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--class 12 is out of range"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}
