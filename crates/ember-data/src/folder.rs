//! Reader for an image folder: one sub-folder per class, each holding PNG or JPEG files.
//!
//! Classes are the sub-folder names in byte order (label 0 = the first), as torchvision's
//! `ImageFolder` numbers them. Every file is decoded (in parallel) and validated before training
//! starts, so a corrupt image is reported by name before anything is written; each image is
//! converted to the configured channels (grey: Rec. 709 luma 0.2126 R + 0.7152 G + 0.0722 B;
//! RGB: grey replicated, alpha dropped) and fitted to the configured square size (see [`crate::fit`]).

use crate::fit::fit_square;
use crate::{DataError, Decoded};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// The class sub-folders of `root`, sorted. Hidden entries and plain files beside them are
/// ignored.
pub fn class_folders(root: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let entries = std::fs::read_dir(root).map_err(|source| DataError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let mut classes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DataError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            classes.push((name, entry.path()));
        }
    }
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::Invalid {
            path: root.to_path_buf(),
            message:
                "expected one sub-folder per class (data.format = \"image-folder\"), found none"
                    .into(),
        });
    }
    Ok(classes)
}

/// The image files of one class folder, sorted; anything but a file is an error.
fn class_files(folder: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io {
        path: folder.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if !path.is_file() {
            return Err(DataError::Invalid {
                path,
                message: "expected only PNG or JPEG files in a class folder, found a folder".into(),
            });
        }
        files.push(path);
    }
    files.sort();
    if files.is_empty() {
        return Err(DataError::Invalid {
            path: folder.to_path_buf(),
            message: "class folder is empty: expected at least one PNG or JPEG image".into(),
        });
    }
    Ok(files)
}

/// Decodes one file to planar `[channels, size, size]` pixels.
pub fn decode_file(path: &Path, channels: usize, size: usize) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |message: String| DataError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let format = image::guess_format(&bytes).map_err(|_| {
        invalid("not a PNG or JPEG image (its first bytes match no image format)".into())
    })?;
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
        return Err(invalid(format!("a {format:?} image; expected PNG or JPEG")));
    }
    let image = image::load_from_memory_with_format(&bytes, format)
        .map_err(|e| invalid(format!("corrupt {format:?} image: {e}")))?;
    let (w, h) = (image.width() as usize, image.height() as usize);
    let planar = if channels == 1 {
        image.to_luma8().into_raw()
    } else {
        let rgb = image.to_rgb8().into_raw();
        (0..3)
            .flat_map(|c| rgb.iter().skip(c).step_by(3).copied().collect::<Vec<_>>())
            .collect()
    };
    Ok(fit_square(&planar, channels, h, w, size))
}

/// Reads the whole folder: every class, every image, fitted to `size` with `channels` channels.
pub fn read_folder(
    root: &Path,
    channels: usize,
    size: usize,
    num_classes: usize,
) -> Result<Decoded, DataError> {
    let classes = class_folders(root)?;
    if classes.len() != num_classes {
        let names: Vec<&str> = classes.iter().map(|(n, _)| n.as_str()).collect();
        return Err(DataError::Invalid {
            path: root.to_path_buf(),
            message: format!(
                "found {} class folders ({}), but model.num_classes is {num_classes}",
                classes.len(),
                names.join(", ")
            ),
        });
    }
    let mut files = Vec::new();
    for (label, (_, folder)) in classes.iter().enumerate() {
        files.extend(class_files(folder)?.into_iter().map(|f| (label, f)));
    }
    // Decoding dominates; the first error in file order is reported, whichever thread saw it.
    let decoded: Vec<Result<Vec<u8>, DataError>> = files
        .par_iter()
        .map(|(_, path)| decode_file(path, channels, size))
        .collect();
    let mut images = Vec::with_capacity(files.len() * channels * size * size);
    for result in decoded {
        images.extend(result?);
    }
    Ok(Decoded {
        images,
        labels: files.iter().map(|(l, _)| *l as u16).collect(),
        channels,
        height: size,
        width: size,
        class_names: classes.into_iter().map(|(n, _)| n).collect(),
    })
}
