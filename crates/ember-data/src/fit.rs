//! Bringing images of any size to the model's square size: the shorter side is resized to the
//! target (a triangle filter, which averages when shrinking), then the centre is cropped, as
//! torchvision's `Resize(size)` followed by `CenterCrop(size)` does.
//!
//! Every image is checked against two bounds before it is decoded or resized
//! ([`check_fittable`]), so a hostile header cannot make the resize allocate gigabytes:
//! [`MAX_PIXELS`] and [`MAX_ASPECT`].

use image::imageops::{self, FilterType};
use image::{GrayImage, ImageBuffer, Pixel};

/// The most pixels one image may have: 40 megapixels. More than the full-resolution output of
/// almost every camera (24-36 MP is usual, 8 MP is a 4K frame), while a model sees at most a
/// few hundred pixels square, so nothing larger is a sensible training or `--init` image. At
/// this bound the widest decoded form (16-bit RGBA PNG) is 320 MB, 8-bit RGB 120 MB.
pub const MAX_PIXELS: u64 = 40_000_000;

/// The most one side may exceed the other: 16:1. The centre crop to the model's square keeps
/// only `1/ratio` of an image, so beyond 16:1 (wider than any panorama) over 94% would be
/// thrown away; the bound also keeps the resize of the shorter side to the model's size from
/// stretching the longer side without limit.
pub const MAX_ASPECT: u64 = 16;

/// The longest side an image within [`MAX_PIXELS`] and [`MAX_ASPECT`] can have (25296 x 1581,
/// just under `sqrt(MAX_PIXELS * MAX_ASPECT)`). Decoders get it as a hard limit too.
pub const MAX_SIDE: u32 = 25_296;

/// Checks an image of `width` x `height` pixels against [`MAX_PIXELS`] and [`MAX_ASPECT`];
/// the error names the dimensions, the bound and what was expected.
pub fn check_fittable(width: u64, height: u64) -> Result<(), String> {
    let dims = format!("{width} x {height} pixels (width x height)");
    if width == 0 || height == 0 {
        return Err(format!("{dims}: expected a non-empty image"));
    }
    let pixels = width.saturating_mul(height);
    if pixels > MAX_PIXELS {
        return Err(format!(
            "{dims}: {:.1} megapixels; expected at most {} megapixels per image",
            pixels as f64 / 1e6,
            MAX_PIXELS / 1_000_000
        ));
    }
    let (long, short) = (width.max(height), width.min(height));
    if long > MAX_ASPECT * short {
        let ratio = if long.is_multiple_of(short) {
            format!("{}", long / short)
        } else {
            format!("{:.1}", long as f64 / short as f64)
        };
        return Err(format!(
            "{dims}: aspect ratio {ratio}:1; expected at most {MAX_ASPECT}:1 (fitting to the \
             model's square keeps only the centre)"
        ));
    }
    Ok(())
}

/// How an image of `height` x `width` is fitted to `size`: resized to `(new_h, new_w)`, then
/// cropped at `(top, left)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fit {
    new_h: usize,
    new_w: usize,
    top: usize,
    left: usize,
}

impl Fit {
    fn new(height: usize, width: usize, size: usize) -> Self {
        let scale = size as f64 / height.min(width) as f64;
        // The shorter side becomes exactly `size`; the longer one at least `size`.
        let (new_h, new_w) = if height <= width {
            (size, ((width as f64 * scale).round() as usize).max(size))
        } else {
            (((height as f64 * scale).round() as usize).max(size), size)
        };
        Self {
            new_h,
            new_w,
            top: (new_h - size) / 2,
            left: (new_w - size) / 2,
        }
    }
}

/// Bytes the fitting of one `height` x `width` image to `size` holds at its peak besides its
/// input: the resize's intermediate (`width` x new height, four f32 per pixel whatever the
/// channels) and its output. With [`check_fittable`]'s bounds this is at most
/// `16 * MAX_SIDE * size` bytes (104 MB for a 256-pixel model).
pub fn fit_scratch_bytes(height: usize, width: usize, channels: usize, size: usize) -> u64 {
    if height == size && width == size {
        return (channels * size * size) as u64;
    }
    let fit = Fit::new(height, width, size);
    let intermediate = 16 * width as u64 * fit.new_h as u64;
    let resized = (channels * fit.new_h * fit.new_w) as u64;
    intermediate + resized
}

/// Resizes planar `[channels, height, width]` pixels so the shorter side is `size`, then crops
/// the centre `size x size`. Returns planar `[channels, size, size]` pixels; images already at
/// that size are returned unchanged. Callers check the shape with [`check_fittable`] first.
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
    let mut out = Vec::with_capacity(channels * size * size);
    for plane in pixels.chunks_exact(height * width) {
        let image: GrayImage = ImageBuffer::from_raw(width as u32, height as u32, plane.to_vec())
            .expect("plane size matches");
        out.extend(fit_interleaved(&image, size));
    }
    out
}

/// Fits a decoded image (interleaved channels, as decoders give them) to `size` like
/// [`fit_square`], and returns planar `[channels, size, size]` pixels. All channels are
/// resized in one pass and only the `size x size` crop is de-interleaved, so no full-size
/// planar copy is ever made. Callers check the shape with [`check_fittable`] first.
pub fn fit_interleaved<P: Pixel<Subpixel = u8> + 'static>(
    image: &ImageBuffer<P, Vec<u8>>,
    size: usize,
) -> Vec<u8> {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let channels = P::CHANNEL_COUNT as usize;
    let (fit, resized);
    let source = if height == size && width == size {
        fit = Fit {
            new_h: size,
            new_w: size,
            top: 0,
            left: 0,
        };
        image.as_raw()
    } else {
        fit = Fit::new(height, width, size);
        resized = imageops::resize(
            image,
            fit.new_w as u32,
            fit.new_h as u32,
            FilterType::Triangle,
        );
        resized.as_raw()
    };
    let mut out = Vec::with_capacity(channels * size * size);
    for c in 0..channels {
        for y in fit.top..fit.top + size {
            let row = (y * fit.new_w + fit.left) * channels;
            out.extend(
                source[row..row + size * channels]
                    .iter()
                    .skip(c)
                    .step_by(channels),
            );
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

    #[test]
    fn interleaved_rgb_fits_like_its_planes_one_by_one() {
        // A seeded 10x7 RGB image: one pass over interleaved pixels gives exactly the pixels of
        // three separate plane resizes (what the image-folder reader used to do).
        let mut state = 7u32;
        let rgb: Vec<u8> = (0..7 * 10 * 3)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (state >> 16) as u8
            })
            .collect();
        let planar: Vec<u8> = (0..3)
            .flat_map(|c| rgb.iter().skip(c).step_by(3).copied())
            .collect();
        let image = image::RgbImage::from_raw(10, 7, rgb).unwrap();
        for size in [4, 7, 12] {
            assert_eq!(
                fit_interleaved(&image, size),
                fit_square(&planar, 3, 7, 10, size),
                "size {size}"
            );
        }
    }

    #[test]
    fn fittable_bounds_name_the_dimensions_and_the_limit() {
        assert!(check_fittable(6000, 4000).is_ok());
        assert!(check_fittable(16, 1).is_ok());
        let err = check_fittable(1, 8_000_000).unwrap_err();
        assert!(
            err.contains("1 x 8000000 pixels") && err.contains("8000000:1"),
            "{err}"
        );
        assert!(err.contains("expected at most 16:1"), "{err}");
        let err = check_fittable(23_000, 23_000).unwrap_err();
        assert!(
            err.contains("529.0 megapixels") && err.contains("at most 40 megapixels"),
            "{err}"
        );
        assert!(check_fittable(35, 2).unwrap_err().contains("17.5:1"));
        assert!(check_fittable(0, 5).unwrap_err().contains("non-empty"));
        // MAX_SIDE is the longest side both bounds allow.
        let side = MAX_SIDE as u64;
        assert!(check_fittable(side, side.div_ceil(MAX_ASPECT)).is_ok());
        assert!(check_fittable(side + 1, (side + 1).div_ceil(MAX_ASPECT)).is_err());
    }

    #[test]
    fn scratch_of_a_fittable_image_is_bounded() {
        // The widest and the tallest image the bounds allow, fitted to 256.
        let short = (MAX_SIDE as usize).div_ceil(MAX_ASPECT as usize);
        for (h, w) in [(short, MAX_SIDE as usize), (MAX_SIDE as usize, short)] {
            let bytes = fit_scratch_bytes(h, w, 3, 256);
            assert!(bytes < 120_000_000, "{h}x{w}: {bytes}");
        }
        assert_eq!(fit_scratch_bytes(28, 28, 1, 28), 784);
    }
}
