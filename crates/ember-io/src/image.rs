//! 8-bit grey or RGB images (sample grids, plots) and their PNG files.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode PNG {path}: {message}")]
    Encode { path: PathBuf, message: String },
    #[error("cannot read PNG {path}: {message}")]
    Decode { path: PathBuf, message: String },
}

/// An 8-bit grey (1 channel) or RGB (3) image, row-major with interleaved channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridImage {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

impl GridImage {
    /// The pixel at `(x, y)` of channel `c`.
    pub fn at(&self, x: usize, y: usize, c: usize) -> u8 {
        self.pixels[(y * self.width + x) * self.channels + c]
    }
}

/// Writes a PNG atomically (see [`crate::write_atomic`]).
pub fn write_png(image: &GridImage, path: &Path) -> Result<(), ImageError> {
    let encode = |e: png::EncodingError| ImageError::Encode {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, image.width as u32, image.height as u32);
        encoder.set_color(if image.channels == 3 {
            png::ColorType::Rgb
        } else {
            png::ColorType::Grayscale
        });
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(encode)?;
        writer.write_image_data(&image.pixels).map_err(encode)?;
    }
    crate::write_atomic(path, &bytes).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an 8-bit grey or RGB PNG (for tests and tools).
pub fn read_png(path: &Path) -> Result<GridImage, ImageError> {
    let decode = |message: String| ImageError::Decode {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| decode(e.to_string()))?;
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(|e| decode(e.to_string()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| decode(e.to_string()))?;
    buf.truncate(info.buffer_size());
    let channels = match (info.color_type, info.bit_depth) {
        (png::ColorType::Grayscale, png::BitDepth::Eight) => 1,
        (png::ColorType::Rgb, png::BitDepth::Eight) => 3,
        (color, depth) => {
            return Err(decode(format!(
                "expected an 8-bit grey or RGB PNG, found {color:?} {depth:?}"
            )));
        }
    };
    Ok(GridImage {
        width: info.width as usize,
        height: info.height as usize,
        channels,
        pixels: buf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_and_rgb_images_round_trip_through_png() {
        let dir = std::env::temp_dir().join(format!("ember-io-png-{}", std::process::id()));
        for channels in [1, 3] {
            let image = GridImage {
                width: 5,
                height: 3,
                channels,
                pixels: (0..5 * 3 * channels).map(|i| (i * 7) as u8).collect(),
            };
            let path = dir.join(format!("c{channels}.png"));
            write_png(&image, &path).unwrap();
            assert_eq!(read_png(&path).unwrap(), image);
        }
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(files, 2, "no temporary file is left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
