//! Sample grids as greyscale PNG files: one row per class, one column per sample.

use burn::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Pixels between tiles (and around the border).
pub const GRID_PADDING: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode PNG {path}: {message}")]
    Encode { path: PathBuf, message: String },
}

/// A greyscale image in row-major `u8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreyImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Lays out `rows * cols` single-channel images in [-1, 1] as a grid, row-major.
///
/// # Shapes
/// - images: `[rows * cols, 1, h, w]`
pub fn make_grid(images: Tensor<4>, rows: usize, cols: usize) -> GreyImage {
    let [n, c, h, w] = images.dims();
    assert_eq!(
        n,
        rows * cols,
        "grid of {rows}x{cols} needs {} images, got {n}",
        rows * cols
    );
    assert_eq!(c, 1, "greyscale images expected");
    let values = images
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32 images");
    let p = GRID_PADDING;
    let width = cols * (w + p) + p;
    let height = rows * (h + p) + p;
    let mut pixels = vec![0u8; width * height];
    for (i, img) in values.chunks_exact(h * w).enumerate() {
        let (r, col) = (i / cols, i % cols);
        let (top, left) = (p + r * (h + p), p + col * (w + p));
        for y in 0..h {
            for x in 0..w {
                let v = (img[y * w + x].clamp(-1.0, 1.0) + 1.0) * 127.5;
                pixels[(top + y) * width + left + x] = v.round() as u8;
            }
        }
    }
    GreyImage {
        width,
        height,
        pixels,
    }
}

/// Writes a PNG atomically: to a temporary file in the same folder, then renamed over `path`.
pub fn write_png(image: &GreyImage, path: &Path) -> Result<(), GridError> {
    let io = |source| GridError::Io {
        path: path.to_path_buf(),
        source,
    };
    let encode = |e: png::EncodingError| GridError::Encode {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, image.width as u32, image.height as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(encode)?;
        writer.write_image_data(&image.pixels).map_err(encode)?;
    }
    write_atomic(path, &bytes).map_err(io)
}

/// Writes `bytes` to `path` through a temporary sibling and a rename, so readers never see a
/// half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Reads a greyscale 8-bit PNG (for tests and tools).
pub fn read_png(path: &Path) -> Result<GreyImage, GridError> {
    let file = std::fs::File::open(path).map_err(|source| GridError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let decode = |e: png::DecodingError| GridError::Encode {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(decode)?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(decode)?;
    buf.truncate(info.buffer_size());
    Ok(GreyImage {
        width: info.width as usize,
        height: info.height as usize,
        pixels: buf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_tiles_row_by_row_and_round_trips_through_png() {
        let device = Device::flex();
        // 2 rows x 3 cols of 4x4 tiles; tile i is filled with a distinct value.
        let tiles: Vec<f32> = (0..6)
            .flat_map(|i| vec![-1.0 + 0.4 * i as f32; 16])
            .collect();
        let images =
            Tensor::<1>::from_data(TensorData::new(tiles, [96]), &device).reshape([6, 1, 4, 4]);
        let grid = make_grid(images, 2, 3);
        assert_eq!((grid.width, grid.height), (3 * 6 + 2, 2 * 6 + 2));
        let at = |r: usize, c: usize| grid.pixels[(2 + r * 6) * grid.width + 2 + c * 6];
        assert_eq!(at(0, 0), 0);
        assert_eq!(
            at(1, 2),
            ((-1.0f32 + 0.4 * 5.0 + 1.0) * 127.5).round() as u8
        );
        assert_eq!(grid.pixels[0], 0, "padding is black");

        let dir = std::env::temp_dir().join(format!("ember-grid-{}", std::process::id()));
        let path = dir.join("grid.png");
        write_png(&grid, &path).unwrap();
        assert_eq!(read_png(&path).unwrap(), grid);
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
