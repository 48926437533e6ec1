//! Bad input never hurts: each malformed config, dataset, argument or path below must stop
//! `ember` with exit code 2 and a message naming the file (and key or record) and what was
//! expected, and must leave nothing behind (no run directory, no output file).
//!
//! Every case builds its own small fixture in a fresh folder; one test runs them all and lists
//! every case that misbehaves. Hostile files (images and streams that claim gigabytes) have a
//! table of their own, run under an address-space limit so a regression fails fast instead of
//! exhausting the machine.

mod common;

use common::*;
use ember_config::ExperimentConfig;
use ember_data::folder::encode_black_png;
use ember_data::idx::{encode_idx, gzip_with_zeros};
use std::path::{Path, PathBuf};
use std::process::Output;
use toml::Value;

/// One malformed input: `setup` builds the fixture in a folder and returns the arguments;
/// the output must contain every `expect` fragment (`{dir}` stands for the case folder).
struct Case {
    name: &'static str,
    setup: fn(&Path) -> Vec<String>,
    expect: &'static [&'static str],
}

/// What every case writes to, if it wrongly wrote anything: the run directory or output file.
fn out(dir: &Path) -> PathBuf {
    dir.join("out")
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// `ember train CONFIG --run-dir DIR/out`.
fn train_args(dir: &Path, config: &Path) -> Vec<String> {
    vec!["train".into(), s(config), "--run-dir".into(), s(&out(dir))]
}

/// The smoke config on `data_root` with `edits` (dotted key, TOML value; `None` removes),
/// written as `dir/cfg.toml`.
fn config_with(dir: &Path, data_root: &Path, edits: &[(&str, Option<Value>)]) -> PathBuf {
    let shipped = manifest_dir().join("../../configs/smoke.toml");
    let mut config = ExperimentConfig::load(&shipped).unwrap();
    config.data.root = data_root.to_path_buf();
    let mut value = Value::try_from(&config).unwrap();
    for (key, new) in edits {
        let (tables, last) = key.rsplit_once('.').unwrap_or(("", key));
        let mut table = value.as_table_mut().unwrap();
        for t in tables.split('.').filter(|t| !t.is_empty()) {
            table = table
                .entry(t)
                .or_insert_with(|| Value::Table(Default::default()))
                .as_table_mut()
                .unwrap();
        }
        match new {
            Some(v) => {
                table.insert(last.to_string(), v.clone());
            }
            None => {
                table.remove(last);
            }
        }
    }
    let path = dir.join("cfg.toml");
    std::fs::write(&path, toml::to_string(&value).unwrap()).unwrap();
    path
}

/// The IDX fixture in `dir/data` and a config on it with `edits`.
fn idx_case(dir: &Path, edits: &[(&str, Option<Value>)]) -> Vec<String> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_fixture(&data);
    let config = config_with(dir, &data, edits);
    train_args(dir, &config)
}

/// The IDX fixture with one of its files replaced by `bytes`.
fn idx_file_case(dir: &Path, file: &str, bytes: Vec<u8>) -> Vec<String> {
    let args = idx_case(dir, &[]);
    std::fs::write(dir.join("data").join(file), bytes).unwrap();
    args
}

fn images_file(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("data/train-images-idx3-ubyte")).unwrap()
}

fn str_value(v: &str) -> Option<Value> {
    Some(Value::String(v.into()))
}

fn int(v: i64) -> Option<Value> {
    Some(Value::Integer(v))
}

/// A CIFAR-10 config (RGB 32x32, fitted to 8x8 to stay small) on `dir/data`.
fn cifar_case(dir: &Path, edits: &[(&str, Option<Value>)]) -> Vec<String> {
    let data = dir.join("data");
    write_cifar_fixture(&data, 4);
    let mut all = vec![
        ("data.format", str_value("cifar10")),
        ("model.image_channels", int(3)),
        ("model.image_size", int(8)),
    ];
    all.extend_from_slice(edits);
    let config = config_with(dir, &data, &all);
    train_args(dir, &config)
}

/// An image-folder config (classes `a` and `b`, RGB 8x8) on `dir/data`.
fn folder_case(dir: &Path) -> Vec<String> {
    let data = dir.join("data");
    write_image_folder(&data, &["a", "b"], 3);
    let config = config_with(
        dir,
        &data,
        &[
            ("data.format", str_value("image-folder")),
            ("model.num_classes", int(2)),
            ("model.image_channels", int(3)),
            ("model.image_size", int(8)),
        ],
    );
    train_args(dir, &config)
}

/// A trained 2-step run in `dir/run` (for the sampling cases).
fn trained_run(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_fixture(&data);
    let config = config_with(dir, &data, &[("train.steps", int(2))]);
    let run = dir.join("run");
    let result = train(&config, &run);
    assert!(result.status.success(), "{}", text(&result));
    run
}

fn sample_args(dir: &Path, run: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "sample".into(),
        "--run".into(),
        s(run),
        "--out".into(),
        s(&out(dir)),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// `dir/name`: a safetensors file whose 8-byte header length is `n` (the true length when
/// `None`), followed by `header` and no tensor data.
fn crafted_safetensors(dir: &Path, name: &str, n: Option<u64>, header: &str) -> PathBuf {
    let n = n.unwrap_or(header.len() as u64);
    let mut bytes = n.to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `ember compare` on the crafted file against itself.
fn compare_args(crafted: &Path) -> Vec<String> {
    vec!["compare".into(), s(crafted), s(crafted)]
}

/// The IDX fixture with the images replaced by a gzipped file holding `prefix` and then
/// `zeros` zero bytes.
fn idx_gz_images_case(dir: &Path, prefix: &[u8], zeros: u64) -> Vec<String> {
    let args = idx_case(dir, &[]);
    let raw = dir.join("data/train-images-idx3-ubyte");
    std::fs::remove_file(&raw).unwrap();
    std::fs::write(raw.with_extension("gz"), gzip_with_zeros(prefix, zeros)).unwrap();
    args
}

/// An IDX header (unsigned bytes) with these dimensions.
fn idx_header(dims: &[u32]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes
}

/// A PNG of 1 x 8,000,000 black pixels (a few KB): fitting it to the model's size used to
/// resize it to 224M x 28 pixels.
fn tall_png(path: &Path) {
    std::fs::write(path, encode_black_png(1, 8_000_000, 8)).unwrap();
}

const CASES: &[Case] = &[
    // --- the config file ---
    Case {
        name: "config file missing",
        setup: |dir| train_args(dir, &dir.join("nope.toml")),
        expect: &["cannot read config file", "nope.toml"],
    },
    Case {
        name: "config is not TOML",
        setup: |dir| {
            let path = dir.join("cfg.toml");
            std::fs::write(&path, "[train\nsteps = 4\n").unwrap();
            train_args(dir, &path)
        },
        expect: &["invalid config file", "cfg.toml", "line 1"],
    },
    Case {
        name: "unknown key",
        setup: |dir| idx_case(dir, &[("train.stepz", int(4))]),
        expect: &["cfg.toml", "unknown field `stepz`", "expected one of"],
    },
    Case {
        name: "unknown table",
        setup: |dir| idx_case(dir, &[("trian.steps", int(4))]),
        expect: &["cfg.toml", "unknown field `trian`"],
    },
    Case {
        name: "mistyped value",
        setup: |dir| idx_case(dir, &[("train.steps", str_value("four"))]),
        expect: &["cfg.toml", "steps", "invalid type: string \"four\""],
    },
    Case {
        name: "negative steps",
        setup: |dir| idx_case(dir, &[("train.steps", int(-5))]),
        expect: &["cfg.toml", "steps", "-5"],
    },
    Case {
        name: "zero steps",
        setup: |dir| idx_case(dir, &[("train.steps", int(0))]),
        expect: &["cfg.toml", "train.steps", "expected at least 1"],
    },
    Case {
        name: "p_uncond 1.5",
        setup: |dir| idx_case(dir, &[("train.p_uncond", Some(Value::Float(1.5)))]),
        expect: &["cfg.toml", "train.p_uncond", "expected [0, 1], got 1.5"],
    },
    Case {
        name: "zero classes",
        setup: |dir| idx_case(dir, &[("model.num_classes", int(0))]),
        expect: &["cfg.toml", "model.num_classes", "expected at least 1"],
    },
    Case {
        name: "negative learning rate",
        setup: |dir| idx_case(dir, &[("train.learning_rate", Some(Value::Float(-0.1)))]),
        expect: &["cfg.toml", "train.learning_rate", "positive"],
    },
    Case {
        name: "image size the levels cannot halve",
        setup: |dir| idx_case(dir, &[("model.image_size", int(27))]),
        expect: &["cfg.toml", "model.channel_mults", "not divisible by 2"],
    },
    Case {
        name: "zero terminal SNR with noise prediction",
        setup: |dir| {
            idx_case(
                dir,
                &[("diffusion.zero_terminal_snr", Some(Value::Boolean(true)))],
            )
        },
        expect: &[
            "cfg.toml",
            "diffusion.zero_terminal_snr",
            "prediction = \"v\" or \"x0\"",
        ],
    },
    Case {
        name: "unknown data format",
        setup: |dir| idx_case(dir, &[("data.format", str_value("hdf5"))]),
        expect: &["cfg.toml", "hdf5", "idx", "cifar10", "image-folder"],
    },
    Case {
        name: "IDX with 3 channels",
        setup: |dir| idx_case(dir, &[("model.image_channels", int(3))]),
        expect: &[
            "cfg.toml",
            "model.image_channels",
            "\"idx\" holds 1-channel images",
        ],
    },
    Case {
        name: "image folder without a root",
        setup: |dir| {
            idx_case(
                dir,
                &[
                    ("data.format", str_value("image-folder")),
                    ("data.root", None),
                ],
            )
        },
        expect: &["cfg.toml", "data.root", "one sub-folder per class"],
    },
    Case {
        name: "test_root for IDX",
        setup: |dir| idx_case(dir, &[("data.test_root", str_value("elsewhere"))]),
        expect: &["cfg.toml", "data.test_root", "only format \"image-folder\""],
    },
    Case {
        name: "--steps 0 on the command line",
        setup: |dir| {
            let mut args = idx_case(dir, &[]);
            args.extend(["--steps".into(), "0".into()]);
            args
        },
        expect: &["--steps must be at least 1"],
    },
    // --- IDX files ---
    Case {
        name: "data folder missing",
        setup: |dir| {
            let config = config_with(dir, &dir.join("no-such-data"), &[]);
            train_args(dir, &config)
        },
        expect: &["no-such-data", "does not exist", "scripts/setup.sh"],
    },
    Case {
        name: "data root is a file",
        setup: |dir| {
            std::fs::write(dir.join("mnist.gz"), "not a folder").unwrap();
            let config = config_with(dir, &dir.join("mnist.gz"), &[]);
            train_args(dir, &config)
        },
        expect: &["data folder", "mnist.gz is a file", "expected the folder"],
    },
    Case {
        name: "IDX images file missing",
        setup: |dir| {
            let args = idx_case(dir, &[]);
            std::fs::remove_file(dir.join("data/train-images-idx3-ubyte")).unwrap();
            args
        },
        expect: &["missing train-images-idx3-ubyte (or train-images-idx3-ubyte.gz)"],
    },
    Case {
        name: "IDX wrong magic",
        setup: |dir| {
            let args = idx_case(dir, &[]);
            let mut bytes = images_file(dir);
            bytes[0] = 0x50;
            std::fs::write(dir.join("data/train-images-idx3-ubyte"), bytes).unwrap();
            args
        },
        expect: &[
            "train-images-idx3-ubyte",
            "bad magic number",
            "expected 00 00",
        ],
    },
    Case {
        name: "IDX truncated data",
        setup: |dir| {
            let args = idx_case(dir, &[]);
            let bytes = images_file(dir);
            let path = dir.join("data/train-images-idx3-ubyte");
            std::fs::write(path, &bytes[..bytes.len() - 100]).unwrap();
            args
        },
        expect: &[
            "train-images-idx3-ubyte",
            "truncated data",
            "need 50176 bytes",
        ],
    },
    Case {
        name: "IDX truncated header",
        setup: |dir| idx_file_case(dir, "train-labels-idx1-ubyte", vec![0, 0, 8]),
        expect: &["train-labels-idx1-ubyte", "truncated header"],
    },
    Case {
        name: "IDX float element type",
        setup: |dir| {
            let mut bytes = encode_idx(&[64], &[1; 64]);
            bytes[2] = 0x0d;
            idx_file_case(dir, "train-labels-idx1-ubyte", bytes)
        },
        expect: &[
            "train-labels-idx1-ubyte",
            "unsupported element type 0x0d",
            "expected 0x08",
        ],
    },
    Case {
        name: "IDX trailing bytes",
        setup: |dir| {
            let mut bytes = encode_idx(&[64], &[1; 64]);
            bytes.extend([0, 0, 0]);
            idx_file_case(dir, "train-labels-idx1-ubyte", bytes)
        },
        expect: &["train-labels-idx1-ubyte", "3 unexpected trailing bytes"],
    },
    Case {
        name: "image/label count mismatch",
        setup: |dir| idx_file_case(dir, "train-labels-idx1-ubyte", encode_idx(&[60], &[1; 60])),
        expect: &["train-labels-idx1-ubyte", "60 labels for the 64 images"],
    },
    Case {
        name: "label >= num_classes",
        setup: |dir| {
            let mut labels = vec![1u8; 64];
            labels[5] = 12;
            idx_file_case(dir, "train-labels-idx1-ubyte", encode_idx(&[64], &labels))
        },
        expect: &[
            "train-labels-idx1-ubyte",
            "record 5 has label 12",
            "expected 0..10",
        ],
    },
    Case {
        name: "IDX images with 2 dimensions",
        setup: |dir| {
            let bytes = encode_idx(&[64, 784], &vec![0; 64 * 784]);
            idx_file_case(dir, "train-images-idx3-ubyte", bytes)
        },
        expect: &["train-images-idx3-ubyte", "expected 3 dimensions"],
    },
    Case {
        name: "damaged gzip",
        setup: |dir| {
            let args = idx_case(dir, &[]);
            let path = dir.join("data/train-images-idx3-ubyte");
            std::fs::remove_file(&path).unwrap();
            // The gzip magic, then garbage.
            std::fs::write(path.with_extension("gz"), [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
            args
        },
        expect: &["train-images-idx3-ubyte.gz", "gzip stream is damaged"],
    },
    Case {
        name: "gzipped IDX with trailing data",
        setup: |dir| {
            let args = idx_case(dir, &[]);
            let path = dir.join("data/train-labels-idx1-ubyte");
            std::fs::remove_file(&path).unwrap();
            let mut labels = encode_idx(&[64], &[1; 64]);
            labels.extend([0; 3]);
            std::fs::write(path.with_extension("gz"), gzip_with_zeros(&labels, 0)).unwrap();
            args
        },
        expect: &[
            "train-labels-idx1-ubyte.gz",
            "unexpected trailing bytes after the 64 bytes",
        ],
    },
    Case {
        name: "IDX header declaring a terabyte",
        setup: |dir| {
            idx_file_case(
                dir,
                "train-images-idx3-ubyte",
                idx_header(&[100_000, 100_000, 100]),
            )
        },
        expect: &[
            "train-images-idx3-ubyte",
            "declare 1000000000000 bytes",
            "expected at most 1073741824",
        ],
    },
    // --- CIFAR-10 batches ---
    Case {
        name: "CIFAR batch of the wrong length",
        setup: |dir| {
            let args = cifar_case(dir, &[]);
            let bytes = cifar_batch(3, 10, 7);
            std::fs::write(dir.join("data/data_batch_2.bin"), &bytes[..5000]).unwrap();
            args
        },
        expect: &[
            "data_batch_2.bin",
            "5000 bytes",
            "3073-byte records",
            "1 full records and 1927 bytes left over",
        ],
    },
    Case {
        name: "empty CIFAR batch",
        setup: |dir| {
            let args = cifar_case(dir, &[]);
            std::fs::write(dir.join("data/data_batch_1.bin"), []).unwrap();
            args
        },
        expect: &["data_batch_1.bin", "empty file", "3073-byte records"],
    },
    Case {
        name: "CIFAR label >= num_classes",
        setup: |dir| cifar_case(dir, &[("model.num_classes", int(3))]),
        expect: &["data_batch_1.bin", "record 3 has label 3", "expected 0..3"],
    },
    Case {
        name: "CIFAR folder without training batches",
        setup: |dir| {
            let args = cifar_case(dir, &[]);
            for b in ["data_batch_1.bin", "data_batch_2.bin"] {
                std::fs::remove_file(dir.join("data").join(b)).unwrap();
            }
            args
        },
        expect: &["missing data_batch_*.bin", "datasets/README.md"],
    },
    Case {
        name: "CIFAR class name with a control character",
        setup: |dir| {
            let args = cifar_case(dir, &[]);
            let names = "airplane\nauto\x1bmobile\nbird\n";
            std::fs::write(dir.join("data/batches.meta.txt"), names).unwrap();
            args
        },
        expect: &[
            "batches.meta.txt",
            "line 2",
            r#""auto\u{1b}mobile" has a control character"#,
        ],
    },
    Case {
        name: "CIFAR with 1 channel",
        setup: |dir| cifar_case(dir, &[("model.image_channels", int(1))]),
        expect: &[
            "cfg.toml",
            "model.image_channels",
            "\"cifar10\" holds 3-channel images",
        ],
    },
    // --- image folders ---
    Case {
        name: "image folder missing",
        setup: |dir| {
            let args = folder_case(dir);
            std::fs::remove_dir_all(dir.join("data")).unwrap();
            args
        },
        expect: &[
            "data",
            "does not exist",
            "one sub-folder of images per class",
        ],
    },
    Case {
        name: "image folder with no class folders",
        setup: |dir| {
            let args = folder_case(dir);
            std::fs::remove_dir_all(dir.join("data")).unwrap();
            std::fs::create_dir_all(dir.join("data")).unwrap();
            std::fs::write(dir.join("data/readme.txt"), "no classes here").unwrap();
            args
        },
        expect: &["data", "expected one sub-folder per class", "found none"],
    },
    Case {
        name: "empty class folder",
        setup: |dir| {
            let args = folder_case(dir);
            for f in std::fs::read_dir(dir.join("data/b")).unwrap() {
                std::fs::remove_file(f.unwrap().path()).unwrap();
            }
            args
        },
        expect: &["data/b", "class folder is empty"],
    },
    Case {
        name: "non-image file in a class folder",
        setup: |dir| {
            let args = folder_case(dir);
            std::fs::write(dir.join("data/a/notes.txt"), "not an image").unwrap();
            args
        },
        expect: &["data/a/notes.txt", "not a PNG or JPEG image"],
    },
    Case {
        name: "corrupt PNG",
        setup: |dir| {
            let args = folder_case(dir);
            let path = dir.join("data/b/001.png");
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            args
        },
        expect: &["data/b/001.png", "corrupt Png image"],
    },
    Case {
        name: "GIF in a class folder",
        setup: |dir| {
            let args = folder_case(dir);
            std::fs::write(dir.join("data/a/anim.gif"), b"GIF89a\x01\x00\x01\x00").unwrap();
            args
        },
        expect: &["data/a/anim.gif", "Gif image; expected PNG or JPEG"],
    },
    Case {
        name: "folder inside a class folder",
        setup: |dir| {
            let args = folder_case(dir);
            std::fs::create_dir_all(dir.join("data/a/nested")).unwrap();
            args
        },
        expect: &["data/a/nested", "expected only PNG or JPEG files"],
    },
    Case {
        name: "class folder name with a newline",
        setup: |dir| {
            // Would be two lines of classes.txt: `--class c` would sample folder `d`.
            let args = folder_case(dir);
            write_image_folder(&dir.join("data"), &["a\nb", "c", "d"], 1);
            args
        },
        expect: &["data", r#"class folder "a\nb""#, "control character"],
    },
    Case {
        name: "class folder name not in UTF-8",
        setup: |dir| {
            use std::os::unix::ffi::OsStrExt;
            let args = folder_case(dir);
            let latin1 = dir
                .join("data")
                .join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
            std::fs::create_dir_all(&latin1).unwrap();
            std::fs::copy(dir.join("data/a/000.png"), latin1.join("000.png")).unwrap();
            args
        },
        expect: &["class folder \"caf\u{fffd}\"", "not valid UTF-8"],
    },
    Case {
        name: "class folders vs num_classes",
        setup: |dir| {
            let args = folder_case(dir);
            write_image_folder(&dir.join("data"), &["c"], 1);
            args
        },
        expect: &["found 3 class folders (a, b, c)", "model.num_classes is 2"],
    },
    // --- the run directory ---
    Case {
        name: "run directory under a file",
        setup: |dir| {
            let mut args = idx_case(dir, &[]);
            std::fs::write(dir.join("file"), "a file, not a folder").unwrap();
            let last = args.len() - 1;
            args[last] = s(&dir.join("file/run"));
            args
        },
        expect: &["cannot create run directory", "file/run"],
    },
    Case {
        name: "run directory already holds a run",
        setup: |dir| {
            let args = idx_case(dir, &[]);
            std::fs::create_dir_all(out(dir)).unwrap();
            std::fs::write(out(dir).join(".ember"), "ember run\n").unwrap();
            std::fs::write(out(dir).join("config.toml"), "# an earlier run\n").unwrap();
            args
        },
        expect: &["already holds a run", "--overwrite"],
    },
    Case {
        name: "--overwrite on a folder Ember did not make",
        setup: |dir| {
            let mut args = idx_case(dir, &[]);
            std::fs::create_dir_all(out(dir).join("photos")).unwrap();
            std::fs::write(out(dir).join("config.toml"), "# someone else's\n").unwrap();
            args.push("--overwrite".into());
            args
        },
        expect: &["not made by ember", "config.toml", "photos", "out"],
    },
    Case {
        name: "resume with a changed model",
        setup: |dir| {
            let run = trained_run(dir);
            let data = dir.join("data");
            let config = config_with(dir, &data, &[("model.base_channels", int(16))]);
            vec!["train".into(), s(&config), "--resume".into(), s(&run)]
        },
        expect: &["cannot resume", "model.base_channels"],
    },
    Case {
        name: "resume a run that never wrote a checkpoint",
        setup: |dir| {
            let args = idx_case(dir, &[]);
            std::fs::create_dir_all(dir.join("run")).unwrap();
            std::fs::write(dir.join("run/.ember"), "ember run\n").unwrap();
            std::fs::copy(dir.join("cfg.toml"), dir.join("run/config.toml")).unwrap();
            let _ = args;
            vec!["train".into(), "--resume".into(), s(&dir.join("run"))]
        },
        expect: &[
            "no checkpoint in",
            "stopped before writing its first one",
            "--overwrite",
        ],
    },
    Case {
        name: "resume a run another process is training",
        setup: |dir| {
            let run = trained_run(dir);
            let lock = std::fs::File::open(run.join(".ember")).unwrap();
            lock.try_lock().unwrap();
            // Held until the test process ends, like a training process would hold it.
            std::mem::forget(lock);
            vec![
                "train".into(),
                "--resume".into(),
                s(&run),
                "--steps".into(),
                "4".into(),
            ]
        },
        expect: &["is in use by another `ember train`", ".ember"],
    },
    Case {
        name: "image size beyond the limit",
        setup: |dir| idx_case(dir, &[("model.image_size", int(100_000))]),
        expect: &["cfg.toml", "model.image_size", "at most 1024"],
    },
    Case {
        name: "a billion classes",
        setup: |dir| idx_case(dir, &[("model.num_classes", int(1_000_000_000))]),
        expect: &["cfg.toml", "model.num_classes", "at most 65535"],
    },
    Case {
        name: "two billion timesteps",
        setup: |dir| idx_case(dir, &[("diffusion.timesteps", int(2_000_000_000))]),
        expect: &["cfg.toml", "diffusion.timesteps", "expected 2 to 100000"],
    },
    Case {
        name: "base_channels beyond the limit",
        setup: |dir| idx_case(dir, &[("model.base_channels", int(100_000))]),
        expect: &["cfg.toml", "model.base_channels", "at most 1024"],
    },
    Case {
        name: "65 levels",
        setup: |dir| {
            let mults = Value::Array(vec![Value::Integer(1); 65]);
            idx_case(dir, &[("model.channel_mults", Some(mults))])
        },
        expect: &[
            "cfg.toml",
            "model.channel_mults",
            "1 to 8 positive multipliers",
        ],
    },
    Case {
        name: "a model too large for this machine's memory",
        setup: |dir| {
            idx_case(
                dir,
                &[
                    ("model.image_size", int(1024)),
                    ("model.base_channels", int(512)),
                    (
                        "model.channel_mults",
                        Some(Value::Array(vec![Value::Integer(1); 2])),
                    ),
                    ("model.norm_groups", int(8)),
                    ("train.batch_size", int(4096)),
                ],
            )
        },
        expect: &[
            "cfg.toml",
            "train.batch_size = 4096",
            "needs about",
            "available",
        ],
    },
    Case {
        name: "a classifier too large for this machine's memory",
        setup: |dir| {
            let data = dir.join("data");
            std::fs::create_dir_all(&data).unwrap();
            write_fixture(&data);
            let config = config_with(
                dir,
                &data,
                &[
                    ("model.image_size", int(1024)),
                    ("classifier.feature_dim", int(4096)),
                    ("classifier.batch_size", int(65536)),
                ],
            );
            vec![
                "classifier".into(),
                "train".into(),
                "--config".into(),
                s(&config),
            ]
        },
        expect: &[
            "cfg.toml",
            "classifier.batch_size = 65536",
            "needs about",
            "available",
        ],
    },
    Case {
        name: "classifier --out onto a run directory",
        setup: |dir| {
            let run = trained_run(dir);
            let config = dir.join("cfg.toml");
            vec![
                "classifier".into(),
                "train".into(),
                "--config".into(),
                s(&config),
                "--out".into(),
                s(&run),
            ]
        },
        expect: &[
            "not made by `ember classifier train`",
            "config.toml",
            "choose another --out",
        ],
    },
    Case {
        name: "classifier --out onto the working folder",
        setup: |dir| {
            let args = idx_case(dir, &[]);
            let _ = args;
            let config = dir.join("cfg.toml");
            vec![
                "classifier".into(),
                "train".into(),
                "--config".into(),
                s(&config),
                "--out".into(),
                s(dir),
            ]
        },
        expect: &["not made by `ember classifier train`", "cfg.toml", "data"],
    },
    Case {
        name: "export onto a folder",
        setup: |dir| {
            let run = trained_run(dir);
            std::fs::create_dir_all(dir.join("target/inside")).unwrap();
            vec![
                "export".into(),
                "--run".into(),
                s(&run),
                "--out".into(),
                s(&dir.join("target")),
            ]
        },
        expect: &["cannot write", "target"],
    },
    // --- sampling ---
    Case {
        name: "sample a billion per class",
        setup: |dir| {
            let run = trained_run(dir);
            sample_args(dir, &run, &["--per-class", "1000000000"])
        },
        expect: &["--per-class: expected at most 1024", "1000000000"],
    },
    Case {
        name: "sample by name from a damaged classes.txt",
        setup: |dir| {
            let run = trained_run(dir);
            let names = std::fs::read_to_string(run.join("classes.txt")).unwrap();
            std::fs::write(run.join("classes.txt"), format!("a\n{names}")).unwrap();
            sample_args(dir, &run, &["--class", "3"])
        },
        expect: &["classes.txt", "lists 11 class names", "10 classes"],
    },
    Case {
        name: "a guidance scale of 1e300",
        setup: |dir| {
            let run = trained_run(dir);
            sample_args(dir, &run, &["--guidance", "1e300"])
        },
        expect: &["--guidance", "expected a finite guidance scale"],
    },
    Case {
        name: "sample from a missing run",
        setup: |dir| sample_args(dir, &dir.join("no-run"), &[]),
        expect: &["cannot read config file", "no-run/config.toml"],
    },
    Case {
        name: "sample an unknown class name",
        setup: |dir| {
            let run = trained_run(dir);
            sample_args(dir, &run, &["--class", "dragon"])
        },
        expect: &["--class dragon", "classes.txt", "the classes are: 0, 1, 2"],
    },
    Case {
        name: "sample a class number out of range",
        setup: |dir| {
            let run = trained_run(dir);
            sample_args(dir, &run, &["--class", "12"])
        },
        expect: &["--class 12 is out of range", "0..10"],
    },
    Case {
        name: "sample with eta 2",
        setup: |dir| {
            let run = trained_run(dir);
            sample_args(dir, &run, &["--eta", "2"])
        },
        expect: &["--eta: expected [0, 1], got 2"],
    },
    Case {
        name: "sample output under a file",
        setup: |dir| {
            let run = trained_run(dir);
            std::fs::write(dir.join("file"), "a file, not a folder").unwrap();
            let target = s(&dir.join("file/grid.png"));
            vec![
                "sample".into(),
                "--run".into(),
                s(&run),
                "--steps".into(),
                "2".into(),
                "--out".into(),
                target,
            ]
        },
        expect: &["cannot write", "file/grid.png"],
    },
    // --- safetensors weight files ---
    Case {
        name: "compare a file whose header length is near u64::MAX",
        setup: |dir| {
            // 8 + n wraps to 0: the old hand-written parser panicked here.
            let path = crafted_safetensors(dir, "wrapped.safetensors", Some(u64::MAX - 7), "{}");
            compare_args(&path)
        },
        expect: &[
            "wrapped.safetensors: not a valid safetensors file",
            "declare a 18446744073709551608-byte header, the file has 10 bytes",
        ],
    },
    Case {
        name: "compare a tensor whose shape product overflows",
        setup: |dir| {
            let header =
                r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#;
            let path = crafted_safetensors(dir, "huge.safetensors", None, header);
            compare_args(&path)
        },
        expect: &["huge.safetensors: not a valid safetensors file", "overflow"],
    },
    Case {
        name: "compare a truncated file",
        setup: |dir| {
            let header = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
            let path = crafted_safetensors(dir, "short.safetensors", None, header);
            compare_args(&path)
        },
        expect: &[
            "short.safetensors: not a valid safetensors file",
            "truncated?",
        ],
    },
    Case {
        name: "compare a tensor of another dtype",
        setup: |dir| {
            let header = r#"{"w":{"dtype":"F16","shape":[0],"data_offsets":[0,0]}}"#;
            let path = crafted_safetensors(dir, "half.safetensors", None, header);
            compare_args(&path)
        },
        expect: &["half.safetensors: tensor `w`: dtype F16, expected F32"],
    },
    Case {
        name: "sample with crafted --weights",
        setup: |dir| {
            let run = trained_run(dir);
            let path = crafted_safetensors(dir, "w.safetensors", Some(u64::MAX), "{}");
            sample_args(dir, &run, &["--weights", &s(&path)])
        },
        expect: &[
            "w.safetensors: not a valid safetensors file",
            "header too large",
        ],
    },
    Case {
        name: "sample with --weights missing a tensor",
        setup: |dir| {
            let run = trained_run(dir);
            let path = crafted_safetensors(dir, "empty.safetensors", None, "{}");
            sample_args(dir, &run, &["--weights", &s(&path)])
        },
        expect: &["empty.safetensors: tensor `", "missing from the file"],
    },
];

/// Every path under `root` with its bytes (`None` for a folder).
fn snapshot(root: &Path) -> std::collections::BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut tree = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if path.is_dir() {
                tree.insert(rel, None);
                stack.push(path);
            } else {
                tree.insert(rel, Some(std::fs::read(&path).unwrap()));
            }
        }
    }
    tree
}

/// What differs between two snapshots: created, deleted or changed paths.
fn tree_changes(
    before: &std::collections::BTreeMap<PathBuf, Option<Vec<u8>>>,
    after: &std::collections::BTreeMap<PathBuf, Option<Vec<u8>>>,
) -> Vec<String> {
    let mut changes = Vec::new();
    for (path, bytes) in before {
        match after.get(path) {
            None => changes.push(format!("{} deleted", path.display())),
            Some(now) if now != bytes => changes.push(format!("{} changed", path.display())),
            _ => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        changes.push(format!("{} created", path.display()));
    }
    changes
}

/// The address space the hostile cases run in: 2 GiB. A small run needs about 150 MiB (see
/// [`ember_within`]); each hole these cases reproduce tried to allocate 4-7 GB.
const ADDRESS_SPACE: u64 = 2 << 30;

/// Inputs that claim far more memory than their size: each must be refused from its header.
const HOSTILE_CASES: &[Case] = &[
    Case {
        name: "image folder with a PNG of 1 x 8,000,000 pixels",
        setup: |dir| {
            let args = folder_case(dir);
            tall_png(&dir.join("data/a/tall.png"));
            args
        },
        expect: &[
            "data/a/tall.png",
            "1 x 8000000 pixels (width x height)",
            "aspect ratio 8000000:1",
            "expected at most 16:1",
        ],
    },
    Case {
        name: "image folder with two 1-bit PNGs of 23000 x 23000",
        setup: |dir| {
            let args = folder_case(dir);
            let huge = encode_black_png(23_000, 23_000, 1);
            for class in ["a", "b"] {
                std::fs::write(dir.join("data").join(class).join("huge.png"), &huge).unwrap();
            }
            args
        },
        expect: &[
            "data/a/huge.png",
            "23000 x 23000 pixels",
            "529.0 megapixels",
            "expected at most 40 megapixels",
        ],
    },
    Case {
        name: "sample --init with a PNG of 1 x 8,000,000 pixels",
        setup: |dir| {
            let run = trained_run(dir);
            let init = dir.join("tall.png");
            tall_png(&init);
            sample_args(dir, &run, &["--init", &s(&init)])
        },
        expect: &["--init", "tall.png", "aspect ratio 8000000:1"],
    },
    Case {
        name: "IDX images of 1 x 8,000,000 pixels (gzipped)",
        setup: |dir| {
            let header = idx_header(&[2, 1, 8_000_000]);
            let args = idx_gz_images_case(dir, &header, 16_000_000);
            let labels = encode_idx(&[2], &[0, 1]);
            std::fs::write(dir.join("data/train-labels-idx1-ubyte"), labels).unwrap();
            args
        },
        expect: &[
            "train-images-idx3-ubyte.gz",
            "images of 8000000 x 1 pixels",
            "aspect ratio 8000000:1",
        ],
    },
    Case {
        name: "gzip bomb: MNIST's header, then 4 GiB of zeros",
        setup: |dir| idx_gz_images_case(dir, &idx_header(&[60_000, 28, 28]), 4 << 30),
        expect: &[
            "train-images-idx3-ubyte.gz",
            "unexpected trailing bytes after the 47040000 bytes",
        ],
    },
];

/// Runs every case of a table in its own folder under `root` through `run`, and lists every
/// case that misbehaves: another exit code than 2, a missing message fragment, no `error:` line,
/// or anything written.
fn misbehaving(cases: &[Case], root: &Path, run: impl Fn(&[&str]) -> Output) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let dir = root.join(format!("{i:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        let args = (case.setup)(&dir);
        let before = snapshot(&dir);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let result = run(&refs);
        let message = text(&result);
        let mut problems = Vec::new();
        if result.status.code() != Some(2) {
            problems.push(format!("{}, expected exit code 2", result.status));
        }
        for fragment in case.expect {
            if !message.contains(fragment) {
                problems.push(format!("message lacks {fragment:?}"));
            }
        }
        // Everything that was there stays byte for byte; nothing appears, not even a
        // temporary file.
        let changes = tree_changes(&before, &snapshot(&dir));
        if !changes.is_empty() {
            problems.push(format!("the folder changed: {}", changes.join(", ")));
        }
        if !message.starts_with("error: ") && !message.contains("\nerror: ") {
            problems.push("no `error:` line".into());
        }
        if std::env::var_os("EMBER_SHOW_ERRORS").is_some() {
            eprintln!(
                "--- case {i} ({}): exit {:?}\n{}",
                case.name,
                result.status.code(),
                message.trim()
            );
        }
        if !problems.is_empty() {
            failures.push(format!(
                "case {i} ({}): {}\n  output: {}",
                case.name,
                problems.join("; "),
                message.trim().replace('\n', "\n  ")
            ));
        }
    }
    failures
}

#[test]
fn every_bad_input_exits_2_with_a_clear_message_and_writes_nothing() {
    assert!(CASES.len() >= 30, "the issue asks for at least 30 cases");
    let root = workdir("bad-input");
    // Every bad input is refused within the same address space as the hostile files.
    let failures = misbehaving(CASES, &root, |args| ember_within(ADDRESS_SPACE, args));
    assert!(
        failures.is_empty(),
        "{} of {} cases misbehave:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn hostile_files_are_refused_within_a_2_gib_address_space() {
    let root = workdir("hostile-input");
    let failures = misbehaving(HOSTILE_CASES, &root, |args| {
        ember_within(ADDRESS_SPACE, args)
    });
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases misbehave:\n{}",
        failures.len(),
        HOSTILE_CASES.len(),
        failures.join("\n")
    );
    std::fs::remove_dir_all(root).unwrap();
}
