//! Helpers shared by the end-to-end tests: running the binary and generated fixtures.
#![allow(dead_code)] // each test crate uses its own subset

use ember_config::ExperimentConfig;
use ember_data::idx::encode_idx;
use ember_model::rng::Rng;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `ember` crate's directory, as cargo reports it when the tests run. The compile-time
/// `env!("CARGO_MANIFEST_DIR")` can name another clone: cargo reuses a test binary built
/// from a clone elsewhere that shares the target directory (CI's clones do).
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn ember(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .current_dir(manifest_dir())
        .output()
        .expect("ember runs")
}

/// `ember` under an address-space limit of `bytes` (RLIMIT_AS), so a command that tries to
/// allocate gigabytes fails at once instead of exhausting the machine. glibc is held to two
/// malloc arenas (each reserves 64 MiB of address space), so the room a run needs does not grow
/// with the core count; a small run on the smoke config needs about 150 MiB.
pub fn ember_within(bytes: u64, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
    command
        .args(args)
        .current_dir(manifest_dir())
        .env("MALLOC_ARENA_MAX", "2");
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: between fork and exec the closure only calls setrlimit, which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command.output().expect("ember runs")
}

/// `ember ARGS` with files limited to `bytes` (RLIMIT_FSIZE) and SIGXFSZ ignored, so a write
/// past the limit fails with EFBIG as on a full disk, in the middle of the file.
pub fn ember_with_file_limit(bytes: u64, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
    command.args(args).current_dir(manifest_dir());
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: between fork and exec the closure only calls signal and setrlimit, both
    // async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command.output().expect("ember runs")
}

/// `ember train CONFIG --run-dir RUN`.
pub fn train(config: &Path, run: &Path) -> Output {
    ember(&[
        "train",
        config.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ])
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 64 seeded 28x28 images, ten classes, written as the four IDX files.
pub fn write_fixture(dir: &Path) {
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
pub fn smoke_config(dir: &Path, data_root: &Path) -> PathBuf {
    let shipped = manifest_dir().join("../../configs/smoke.toml");
    let mut config = ExperimentConfig::load(&shipped).unwrap();
    config.data.root = data_root.to_path_buf();
    let path = dir.join("smoke.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    path
}

/// The fixture in `dir/data` and the smoke config pointed at it; returns the config's path.
pub fn smoke_config_on_fixture(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_fixture(&data);
    smoke_config(dir, &data)
}

/// A work directory `name` with the fixture, the smoke config on it, and a run trained from it
/// (asserted to succeed): `(dir, config, run)`.
pub fn trained_smoke_run(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = workdir(name);
    let config = smoke_config_on_fixture(&dir);
    let run = dir.join("run");
    let out = train(&config, &run);
    assert!(out.status.success(), "{}", text(&out));
    (dir, config, run)
}

/// [`trained_smoke_run`] plus its domain classifier (one epoch, beside the data, asserted to
/// succeed): what `ember eval` needs. Returns `(dir, run)`.
pub fn judged_smoke_run(name: &str) -> (PathBuf, PathBuf) {
    let (dir, config, run) = trained_smoke_run(name);
    let out = ember(&[
        "classifier",
        "train",
        "--config",
        config.to_str().unwrap(),
        "--epochs",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    (dir, run)
}

/// `n` seeded CIFAR-10 records (32x32 RGB, labels cycling through `classes`) as one batch file.
pub fn cifar_batch(n: usize, classes: u8, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let labels: Vec<u8> = (0..n).map(|i| i as u8 % classes).collect();
    let pixels: Vec<u8> = (0..n * 3072).map(|_| rng.below(256) as u8).collect();
    ember_data::cifar::encode_batch(&labels, &pixels)
}

/// A CIFAR-10 folder: two training batches and a test batch of `n` records each.
pub fn write_cifar_fixture(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, name) in ["data_batch_1.bin", "data_batch_2.bin", "test_batch.bin"]
        .iter()
        .enumerate()
    {
        std::fs::write(dir.join(name), cifar_batch(n, 10, i as u64)).unwrap();
    }
}

/// A seeded RGB image of `width` x `height`: noise around a per-class colour.
pub fn noise_image(width: u32, height: u32, base: [u8; 3], seed: u64) -> image::RgbImage {
    let mut rng = Rng::new(seed);
    image::RgbImage::from_fn(width, height, |_, _| {
        image::Rgb(base.map(|b| b.saturating_add(rng.below(40) as u8)))
    })
}

/// An image folder: one sub-folder per name with `per_class` images of mixed sizes, PNG and
/// JPEG.
pub fn write_image_folder(dir: &Path, classes: &[&str], per_class: usize) {
    for (c, class) in classes.iter().enumerate() {
        let folder = dir.join(class);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..per_class {
            let base = [(c * 100 % 256) as u8, (i * 30 % 256) as u8, 60];
            let (w, h) = if i % 2 == 0 { (20, 14) } else { (16, 16) };
            let image = noise_image(w, h, base, (c * 100 + i) as u64);
            let ext = if i % 3 == 2 { "jpg" } else { "png" };
            image.save(folder.join(format!("{i:03}.{ext}"))).unwrap();
        }
    }
}
