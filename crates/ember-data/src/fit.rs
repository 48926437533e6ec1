//! Bringing images of any size to the model's square size: the shorter side is resized to the
//! target (a triangle filter, which averages when shrinking), then the centre is cropped, as
//! torchvision's `Resize(size)` followed by `CenterCrop(size)` does.

use image::imageops::{self, FilterType};
use image::{GrayImage, ImageBuffer};

/// Resizes planar `[channels, height, width]` pixels so the shorter side is `size`, then crops
/// the centre `size x size`. Returns planar `[channels, size, size]` pixels; images already at
/// that size are returned unchanged.
pub fn fit_square(
    pixels: &[u8],
    channels: usize,
    height: usize,
    width: usize,
    size: usize,
) -> Vec<u8> {
    assert_eq!(pixels.len(), channels * height * width, "planar pixels");
    if height == size && width == size {
        return pixels.to_vec();
    }
    let scale = size as f64 / height.min(width) as f64;
    // The shorter side becomes exactly `size`; the longer one at least `size`.
    let (new_h, new_w) = if height <= width {
        (size, ((width as f64 * scale).round() as usize).max(size))
    } else {
        (((height as f64 * scale).round() as usize).max(size), size)
    };
    let (top, left) = ((new_h - size) / 2, (new_w - size) / 2);
    let mut out = Vec::with_capacity(channels * size * size);
    for plane in pixels.chunks_exact(height * width) {
        let image: GrayImage = ImageBuffer::from_raw(width as u32, height as u32, plane.to_vec())
            .expect("plane size matches");
        let resized = imageops::resize(&image, new_w as u32, new_h as u32, FilterType::Triangle);
        for y in top..top + size {
            let row = y * new_w;
            out.extend_from_slice(&resized.as_raw()[row + left..row + left + size]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_untouched() {
        let px: Vec<u8> = (0..2 * 4 * 4).map(|i| i as u8).collect();
        assert_eq!(fit_square(&px, 2, 4, 4, 4), px);
    }

    #[test]
    fn wide_image_keeps_its_centre() {
        // 4 rows x 8 columns: left quarter black, centre white, right quarter black. Fitting to 4
        // keeps the 4 centre columns (no resize needed for the height), all white.
        let mut px = vec![0u8; 4 * 8];
        for y in 0..4 {
            for x in 2..6 {
                px[y * 8 + x] = 255;
            }
        }
        let out = fit_square(&px, 1, 4, 8, 4);
        assert_eq!(out, vec![255; 16]);
    }

    #[test]
    fn constant_images_stay_constant_when_resized_per_channel() {
        // An RGB 10x6 image (planes 10, 100, 200) shrunk and cropped to 3x3.
        let mut px = vec![10u8; 60];
        px.extend(vec![100u8; 60]);
        px.extend(vec![200u8; 60]);
        let out = fit_square(&px, 3, 6, 10, 3);
        assert_eq!(out.len(), 27);
        assert!(out[..9].iter().all(|&v| v == 10), "{out:?}");
        assert!(out[9..18].iter().all(|&v| v == 100), "{out:?}");
        assert!(out[18..].iter().all(|&v| v == 200), "{out:?}");
    }

    #[test]
    fn upscaling_28_to_32_interpolates() {
        // A horizontal ramp stays monotonic after upscaling.
        let px: Vec<u8> = (0..28 * 28).map(|i| ((i % 28) * 9) as u8).collect();
        let out = fit_square(&px, 1, 28, 28, 32);
        assert_eq!(out.len(), 32 * 32);
        let row = &out[16 * 32..17 * 32];
        assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
        assert!(row[0] < 10 && row[31] > 230, "{row:?}");
    }
}
