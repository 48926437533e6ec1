//! Reader for an image folder: one sub-folder per class, each holding PNG or JPEG files.
//!
//! Classes are the sub-folder names in byte order (label 0 = the first), as torchvision's
//! `ImageFolder` numbers them; a name must be UTF-8 without control characters, since it
//! becomes one line of a run's `classes.txt`. Hidden entries and folders Ember made
//! ([`ember_io::is_owned_by_ember`], e.g. a classifier saved under the data root) are skipped.
//!
//! Every file is checked and decoded before training starts, so a corrupt image is reported by
//! name before anything is written. Memory stays bounded whatever the files claim:
//! 1. every header is read first and its dimensions checked against [`crate::fit`]'s bounds
//!    (pixels, aspect ratio) before any pixel is decoded;
//! 2. images are decoded in parallel, in waves whose estimated peak memory stays within
//!    [`DECODE_BUDGET`] (an image larger than the budget is decoded alone);
//! 3. each image is decoded straight to 8-bit grey or RGB (grey: Rec. 709 luma 0.2126 R +
//!    0.7152 G + 0.0722 B; RGB: grey replicated, alpha dropped) and fitted to the configured
//!    square size from there (see [`crate::fit`]); only the small fitted result is kept.

use crate::fit::{MAX_SIDE, check_fittable, fit_interleaved, fit_scratch_bytes};
use crate::{DataError, Decoded};
use image::{ImageDecoder, ImageFormat, ImageReader};
use rayon::prelude::*;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// The estimated peak memory of the images decoded at once: 256 MiB. Far more than the few
/// images per core an ordinary dataset needs (a 500x375 photo takes about 1.5 MB), while
/// images at the [`crate::fit::MAX_PIXELS`] bound (up to 440 MB each for 16-bit RGBA) are
/// decoded one at a time, so loading stays well under 1 GiB on any number of cores.
pub const DECODE_BUDGET: u64 = 256 << 20;

/// The class sub-folders of `root`, sorted. Hidden entries, plain files beside them and folders
/// Ember made are ignored; a name that is not UTF-8 or holds a control character is an error.
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
        let path = entry.path();
        let os_name = entry.file_name();
        if os_name.as_encoded_bytes().starts_with(b".")
            || !path.is_dir()
            || ember_io::is_owned_by_ember(&path)
        {
            continue;
        }
        classes.push((class_name(root, &os_name)?, path));
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

/// The class name of a sub-folder of `root`: its name, if it can be one line of `classes.txt`.
fn class_name(root: &Path, name: &std::ffi::OsStr) -> Result<String, DataError> {
    let invalid = |message: String| DataError::Invalid {
        path: root.to_path_buf(),
        message,
    };
    let Some(name) = name.to_str() else {
        return Err(invalid(format!(
            "class folder {:?} has a name that is not valid UTF-8; expected class folder names \
             in UTF-8 (rename it)",
            name.to_string_lossy()
        )));
    };
    if name.chars().any(char::is_control) {
        return Err(invalid(format!(
            "class folder {name:?} has a control character in its name; expected printable \
             class names, one line each in classes.txt (rename it)"
        )));
    }
    Ok(name.to_string())
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
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
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

/// What an image file's header says, read before any pixel is decoded.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
    /// Bytes of the decoder's own output (its native colour type and depth).
    pub decoded_bytes: u64,
}

impl Header {
    /// The estimated peak memory of decoding this image and fitting it to `channels` x `size`
    /// x `size`: the decoder's output, its 8-bit conversion and the resize's scratch.
    pub fn peak_bytes(&self, channels: usize, size: usize) -> u64 {
        let (w, h) = (self.width as usize, self.height as usize);
        self.decoded_bytes + (w * h * channels) as u64 + fit_scratch_bytes(h, w, channels, size)
    }
}

/// Reads and checks the header of an image file: PNG or JPEG, within [`crate::fit`]'s bounds.
pub fn read_header(path: &Path) -> Result<Header, DataError> {
    let invalid = |message: String| DataError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let reader = open(path)?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Png | ImageFormat::Jpeg)) => f,
        Some(f) => return Err(invalid(format!("a {f:?} image; expected PNG or JPEG"))),
        None => {
            return Err(invalid(
                "not a PNG or JPEG image (its first bytes match no image format)".into(),
            ));
        }
    };
    // Without width and height limits, so an oversized image gets the message below rather
    // than the decoder's; the header alone is read.
    let decoder = reader
        .into_decoder()
        .map_err(|e| invalid(format!("corrupt {format:?} image: {e}")))?;
    let (width, height) = decoder.dimensions();
    check_fittable(width.into(), height.into()).map_err(invalid)?;
    Ok(Header {
        format,
        width,
        height,
        decoded_bytes: decoder.total_bytes(),
    })
}

/// An image reader on `path` with its format guessed from the first bytes.
fn open(path: &Path) -> Result<ImageReader<BufReader<std::fs::File>>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(io)
}

/// Decodes a file whose header was checked to planar `[channels, size, size]` pixels.
fn decode_checked(
    path: &Path,
    header: &Header,
    channels: usize,
    size: usize,
) -> Result<Vec<u8>, DataError> {
    let invalid = |message: String| DataError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let corrupt = |e| invalid(format!("corrupt {:?} image: {e}", header.format));
    let mut reader = open(path)?;
    reader.set_format(header.format);
    // The decoder's own hard limits too: no side beyond what the checked bounds allow, and
    // image's default cap of 512 MiB on what it allocates.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(corrupt)?;
    // The file may have been replaced since its header was checked.
    let (width, height) = decoder.dimensions();
    if (width, height) != (header.width, header.height) {
        return Err(invalid(format!(
            "changed while it was read: {width} x {height} pixels, {} x {} when first read",
            header.width, header.height
        )));
    }
    let image = image::DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    // `into_*` moves the buffer when it already has the wanted layout; otherwise the decoder's
    // output is dropped as soon as the 8-bit copy exists.
    Ok(if channels == 1 {
        fit_interleaved(&image.into_luma8(), size)
    } else {
        fit_interleaved(&image.into_rgb8(), size)
    })
}

/// Decodes one file to planar `[channels, size, size]` pixels, checking its header first.
pub fn decode_file(path: &Path, channels: usize, size: usize) -> Result<Vec<u8>, DataError> {
    let header = read_header(path)?;
    decode_checked(path, &header, channels, size)
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
    // 1. Every header, in parallel; the first error in file order is reported, whichever
    //    thread saw it.
    let headers = files
        .par_iter()
        .map(|(_, path)| read_header(path))
        .collect::<Vec<_>>()
        .into_iter()
        .collect::<Result<Vec<Header>, DataError>>()?;
    // 2. Waves of images within the budget, each decoded in parallel.
    let peaks: Vec<u64> = headers
        .iter()
        .map(|h| h.peak_bytes(channels, size))
        .collect();
    let mut images = Vec::with_capacity(files.len() * channels * size * size);
    for wave in waves(&peaks, DECODE_BUDGET) {
        let decoded: Vec<Result<Vec<u8>, DataError>> = wave
            .into_par_iter()
            .map(|i| decode_checked(&files[i].1, &headers[i], channels, size))
            .collect();
        for result in decoded {
            images.extend(result?);
        }
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

/// Splits items with these peak-memory estimates into consecutive waves whose estimates add up
/// to at most `budget`; an item over the budget on its own makes a wave alone.
fn waves(peaks: &[u64], budget: u64) -> Vec<std::ops::Range<usize>> {
    let mut waves = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, &peak) in peaks.iter().enumerate() {
        if i > start && bytes.saturating_add(peak) > budget {
            waves.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(peak);
    }
    if start < peaks.len() {
        waves.push(start..peaks.len());
    }
    waves
}

/// Encodes an all-black greyscale PNG of `width` x `height` at `bit_depth` bits per pixel (1,
/// 2, 4, 8 or 16). Its image data is all zeros, compressed as it streams, so even a gigapixel
/// image is a small file built in little memory. Used to build test fixtures of hostile images.
pub fn encode_black_png(width: u32, height: u32, bit_depth: u8) -> Vec<u8> {
    use std::io::Write;
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(kind);
        out.extend(data);
        out.extend(crc.sum().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = [width.to_be_bytes(), height.to_be_bytes()].concat();
    // Greyscale, deflate, per-row filters, not interlaced.
    ihdr.extend([bit_depth, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // Each row is a filter byte (0, none) and its pixels, all zero: the whole stream is zeros.
    let row = 1 + (u64::from(width) * u64::from(bit_depth)).div_ceil(8);
    let mut left = row * u64::from(height);
    let zeros = vec![0u8; 1 << 20];
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        zlib.write_all(&zeros[..n]).unwrap();
        left -= n as u64;
    }
    chunk(&mut out, b"IDAT", &zlib.finish().unwrap());
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ember-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn tall_png_is_refused_from_its_header() {
        // 1 x 8,000,000 pixels in a few KB: fitting it to 28 would resize it to 224M x 28.
        let dir = temp("tall");
        let path = dir.join("tall.png");
        std::fs::write(&path, encode_black_png(1, 8_000_000, 8)).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() < 100_000);
        // The header check, and the path `ember sample --init` takes.
        for err in [
            read_header(&path).map(|_| ()).unwrap_err(),
            decode_file(&path, 3, 28).map(|_| ()).unwrap_err(),
        ] {
            let err = err.to_string();
            assert!(err.contains("tall.png"), "{err}");
            assert!(
                err.contains("1 x 8000000 pixels") && err.contains("aspect ratio 8000000:1"),
                "{err}"
            );
            assert!(err.contains("expected at most 16:1"), "{err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn huge_one_bit_png_is_refused_before_decoding() {
        // 23000 x 23000 at 1 bit per pixel: 64 KB on disk, 529 MB as 8-bit grey.
        let dir = temp("huge");
        let path = dir.join("huge.png");
        std::fs::write(&path, encode_black_png(23_000, 23_000, 1)).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() < 200_000);
        let err = decode_file(&path, 1, 28).unwrap_err().to_string();
        assert!(
            err.contains("huge.png") && err.contains("23000 x 23000 pixels"),
            "{err}"
        );
        assert!(
            err.contains("529.0 megapixels") && err.contains("at most 40 megapixels"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn aspect_ratio_over_16_is_refused_and_16_fits() {
        let dir = temp("aspect");
        let wide = dir.join("wide.png");
        std::fs::write(&wide, encode_black_png(17, 1, 8)).unwrap();
        let err = decode_file(&wide, 1, 4).unwrap_err().to_string();
        assert!(
            err.contains("wide.png") && err.contains("aspect ratio 17:1"),
            "{err}"
        );
        let edge = dir.join("edge.png");
        std::fs::write(&edge, encode_black_png(1, 16, 8)).unwrap();
        assert_eq!(decode_file(&edge, 3, 4).unwrap(), vec![0; 3 * 16]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn class_dirs(root: &Path, names: &[&std::ffi::OsStr]) {
        for name in names {
            let folder = root.join(name);
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("0.png"), encode_black_png(4, 4, 8)).unwrap();
        }
    }

    #[test]
    fn class_name_with_a_newline_is_refused() {
        // Would add a line to classes.txt and shift every later class by one.
        let root = temp("newline");
        class_dirs(&root, &["a\nb".as_ref(), "c".as_ref(), "d".as_ref()]);
        let err = class_folders(&root).unwrap_err().to_string();
        assert!(err.contains(r#"class folder "a\nb""#), "{err}");
        assert!(err.contains("control character"), "{err}");
        assert!(err.contains(&root.display().to_string()), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn class_name_that_is_not_utf8_is_refused() {
        use std::os::unix::ffi::OsStrExt;
        let root = temp("latin1");
        class_dirs(
            &root,
            &[std::ffi::OsStr::from_bytes(b"caf\xe9"), "tea".as_ref()],
        );
        let err = class_folders(&root).unwrap_err().to_string();
        assert!(err.contains("class folder \"caf\u{fffd}\""), "{err}");
        assert!(err.contains("not valid UTF-8"), "{err}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn folders_ember_made_are_not_classes() {
        // A classifier saved under the data root: Ember's marker, files that are not images.
        let root = temp("marked");
        class_dirs(&root, &["ant".as_ref(), "bee".as_ref()]);
        let classifier = root.join("classifier");
        std::fs::create_dir_all(&classifier).unwrap();
        std::fs::write(classifier.join(ember_io::MARKER_FILE), "ember classifier\n").unwrap();
        std::fs::write(classifier.join("model.mpk"), "weights").unwrap();
        let names: Vec<String> = class_folders(&root)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["ant", "bee"]);
        let decoded = read_folder(&root, 1, 4, 2).unwrap();
        assert_eq!(decoded.labels, [0, 1]);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn waves_stay_within_the_budget_and_keep_the_order() {
        assert_eq!(waves(&[3, 3, 3, 3, 3], 7), [0..2, 2..4, 4..5]);
        // An item over the budget is decoded alone, between its neighbours.
        assert_eq!(waves(&[1, 20, 1, 1], 7), [0..1, 1..2, 2..4]);
        assert_eq!(waves(&[], 7), Vec::<std::ops::Range<usize>>::new());
    }
}
