//! Sample grids as PNG files (grey or RGB): one row per class, one column per sample.

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

/// Lays out `rows * cols` grey or RGB images in [-1, 1] as a grid, row-major.
///
/// # Shapes
/// - images: `[rows * cols, channels (1 or 3), h, w]`
pub fn make_grid(images: Tensor<4>, rows: usize, cols: usize) -> GridImage {
    let [n, c, h, w] = images.dims();
    assert_eq!(
        n,
        rows * cols,
        "grid of {rows}x{cols} needs {} images, got {n}",
        rows * cols
    );
    assert!(
        c == 1 || c == 3,
        "grey or RGB images expected, got {c} channels"
    );
    let values = images
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32 images");
    let p = GRID_PADDING;
    let width = cols * (w + p) + p;
    let height = rows * (h + p) + p;
    let mut pixels = vec![0u8; width * height * c];
    for (i, img) in values.chunks_exact(c * h * w).enumerate() {
        let (r, col) = (i / cols, i % cols);
        let (top, left) = (p + r * (h + p), p + col * (w + p));
        for (ch, plane) in img.chunks_exact(h * w).enumerate() {
            for y in 0..h {
                for x in 0..w {
                    let v = (plane[y * w + x].clamp(-1.0, 1.0) + 1.0) * 127.5;
                    pixels[((top + y) * width + left + x) * c + ch] = v.round() as u8;
                }
            }
        }
    }
    GridImage {
        width,
        height,
        channels: c,
        pixels,
    }
}

/// Writes a PNG atomically: to a temporary file in the same folder, then renamed over `path`.
pub fn write_png(image: &GridImage, path: &Path) -> Result<(), GridError> {
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
        encoder.set_color(if image.channels == 3 {
            png::ColorType::Rgb
        } else {
            png::ColorType::Grayscale
        });
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

/// Reads an 8-bit grey or RGB PNG (for tests and tools).
pub fn read_png(path: &Path) -> Result<GridImage, GridError> {
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
    let channels = match (info.color_type, info.bit_depth) {
        (png::ColorType::Grayscale, png::BitDepth::Eight) => 1,
        (png::ColorType::Rgb, png::BitDepth::Eight) => 3,
        (color, depth) => {
            return Err(GridError::Encode {
                path: path.to_path_buf(),
                message: format!("expected an 8-bit grey or RGB PNG, found {color:?} {depth:?}"),
            });
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

    #[test]
    fn rgb_tiles_keep_their_channels() {
        // One 2x2 tile: red plane 1, green plane -1, blue plane 0.
        let values: Vec<f32> = [1.0f32, -1.0, 0.0].iter().flat_map(|&v| [v; 4]).collect();
        let images = Tensor::<1>::from_data(TensorData::new(values, [12]), &Device::flex())
            .reshape([1, 3, 2, 2]);
        let grid = make_grid(images, 1, 1);
        assert_eq!(grid.channels, 3);
        assert_eq!(grid.pixels.len(), grid.width * grid.height * 3);
        let p = GRID_PADDING;
        assert_eq!(
            [grid.at(p, p, 0), grid.at(p, p, 1), grid.at(p + 1, p + 1, 2)],
            [255, 0, 128]
        );
        let dir = std::env::temp_dir().join(format!("ember-grid-rgb-{}", std::process::id()));
        let path = dir.join("rgb.png");
        write_png(&grid, &path).unwrap();
        assert_eq!(read_png(&path).unwrap(), grid);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
