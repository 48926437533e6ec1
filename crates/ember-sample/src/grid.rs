//! Sample grids (grey or RGB): one row per class, one column per sample, laid out from a batch
//! of image tensors. The pixels and their PNG files are `ember_io`'s.

use burn::prelude::*;
pub use ember_io::GridImage;

/// Pixels between tiles (and around the border).
pub const GRID_PADDING: usize = 2;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_tiles_row_by_row() {
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
    }
}
