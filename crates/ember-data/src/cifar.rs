//! Reader for the binary version of CIFAR-10 (`cifar-10-batches-bin`).
//!
//! Each batch file is a sequence of 3073-byte records: one label byte, then the 32x32 red
//! plane, green plane and blue plane, row-major. Training batches are `data_batch_1.bin` ..
//! `data_batch_5.bin` (10,000 records each), the test batch `test_batch.bin`; the class names
//! are the lines of `batches.meta.txt`.

use crate::{DataError, Decoded, Split};
use std::path::{Path, PathBuf};

pub const SIDE: usize = 32;
pub const CHANNELS: usize = 3;
/// Bytes of one record: the label and 3 planes of 32x32 pixels.
pub const RECORD: usize = 1 + CHANNELS * SIDE * SIDE;

/// The class names of CIFAR-10, used when `batches.meta.txt` is absent.
pub const CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The batch files of a split in `root`, sorted by name.
pub fn batch_files(root: &Path, split: Split) -> Result<Vec<PathBuf>, DataError> {
    let missing = |file: &str| DataError::Missing {
        root: root.to_path_buf(),
        file: file.to_string(),
        hint: "the CIFAR-10 binary version (cifar-10-batches-bin); see datasets/README.md".into(),
    };
    match split {
        Split::Test => {
            let path = root.join("test_batch.bin");
            if path.is_file() {
                Ok(vec![path])
            } else {
                Err(missing("test_batch.bin"))
            }
        }
        Split::Train => {
            let entries = std::fs::read_dir(root).map_err(|_| missing("data_batch_*.bin"))?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.file_name().is_some_and(|n| {
                            let n = n.to_string_lossy();
                            n.starts_with("data_batch_") && n.ends_with(".bin")
                        })
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(missing("data_batch_*.bin"));
            }
            Ok(files)
        }
    }
}

/// Reads every batch of a split, checking each file's length and each label.
pub fn read_split(root: &Path, split: Split, num_classes: usize) -> Result<Decoded, DataError> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for path in batch_files(root, split)? {
        let bytes = std::fs::read(&path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        parse_batch(&bytes, num_classes, &mut images, &mut labels).map_err(|message| {
            DataError::Invalid {
                path: path.clone(),
                message,
            }
        })?;
    }
    Ok(Decoded {
        images,
        labels,
        channels: CHANNELS,
        height: SIDE,
        width: SIDE,
        class_names: class_names(root)?,
    })
}

/// Appends the records of one batch file; the error says what was expected.
pub fn parse_batch(
    bytes: &[u8],
    num_classes: usize,
    images: &mut Vec<u8>,
    labels: &mut Vec<u16>,
) -> Result<(), String> {
    if bytes.is_empty() {
        return Err(format!(
            "empty file: expected {RECORD}-byte records (1 label byte + 3x32x32 pixels)"
        ));
    }
    if !bytes.len().is_multiple_of(RECORD) {
        return Err(format!(
            "{} bytes is not a whole number of {RECORD}-byte records (1 label byte + 3x32x32 pixels): {} full records and {} bytes left over",
            bytes.len(),
            bytes.len() / RECORD,
            bytes.len() % RECORD
        ));
    }
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        let label = record[0] as usize;
        if label >= num_classes {
            return Err(format!(
                "record {i} has label {label}, expected 0..{num_classes} (model.num_classes)"
            ));
        }
        labels.push(label as u16);
        images.extend_from_slice(&record[1..]);
    }
    Ok(())
}

/// The class names from `batches.meta.txt` (one per line, blank lines skipped), or CIFAR-10's
/// own when absent. The file must be UTF-8 and the names free of control characters: each
/// becomes one line of a run's `classes.txt`.
fn class_names(root: &Path) -> Result<Vec<String>, DataError> {
    let path = root.join("batches.meta.txt");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(CLASS_NAMES.iter().map(|s| s.to_string()).collect());
        }
        Err(source) => return Err(DataError::Io { path, source }),
    };
    parse_class_names(&bytes).map_err(|message| DataError::Invalid { path, message })
}

/// The class names of a `batches.meta.txt`; the error says which line is wrong and why.
pub fn parse_class_names(bytes: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 text (invalid byte at offset {}); expected one class name per line",
            e.valid_up_to()
        )
    })?;
    let mut names = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.trim();
        if name.chars().any(char::is_control) {
            return Err(format!(
                "line {}: class name {name:?} has a control character; expected printable class \
                 names, one per line",
                i + 1
            ));
        }
        if !name.is_empty() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// Encodes records as a CIFAR-10 batch file; used to build test fixtures.
pub fn encode_batch(labels: &[u8], planar_pixels: &[u8]) -> Vec<u8> {
    let n = CHANNELS * SIDE * SIDE;
    assert_eq!(planar_pixels.len(), labels.len() * n);
    let mut out = Vec::with_capacity(labels.len() * RECORD);
    for (label, pixels) in labels.iter().zip(planar_pixels.chunks_exact(n)) {
        out.push(*label);
        out.extend_from_slice(pixels);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let pixels: Vec<u8> = (0..2 * 3072).map(|i| (i % 251) as u8).collect();
        let bytes = encode_batch(&[3, 9], &pixels);
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        parse_batch(&bytes, 10, &mut images, &mut labels).unwrap();
        assert_eq!(labels, vec![3, 9]);
        assert_eq!(images, pixels);
    }

    #[test]
    fn wrong_length_and_labels_are_named() {
        let bytes = encode_batch(&[1, 2], &vec![0; 2 * 3072]);
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        let err = parse_batch(&bytes[..5000], 10, &mut images, &mut labels).unwrap_err();
        assert!(
            err.contains("5000 bytes") && err.contains("3073-byte records"),
            "{err}"
        );
        let err = parse_batch(&bytes, 2, &mut images, &mut labels).unwrap_err();
        assert!(err.contains("record 1 has label 2"), "{err}");
        let err = parse_batch(&[], 10, &mut images, &mut labels).unwrap_err();
        assert!(err.contains("empty file"), "{err}");
    }

    #[test]
    fn class_names_must_be_utf8_without_control_characters() {
        assert_eq!(
            parse_class_names(b"airplane\r\n\n  automobile \nbird\n").unwrap(),
            ["airplane", "automobile", "bird"]
        );
        let err = parse_class_names(b"cat\ndo\x1bg\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains(r#""do\u{1b}g""#),
            "{err}"
        );
        let err = parse_class_names(b"cat\nd\xffg\n").unwrap_err();
        assert!(
            err.contains("not UTF-8") && err.contains("offset 5"),
            "{err}"
        );
    }
}
