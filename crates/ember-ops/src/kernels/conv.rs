//! 2-D convolution (groups 1, dilation 1) as small matrix products over a group of images,
//! NCHW in and out, groups split over the threads.
//!
//! burn-flex 0.22.1 re-lays out the whole input (NCHW -> NHWC) and kernel on the calling thread
//! before each convolution, and Burn computes the weight gradient as a convolution with an
//! H x W "kernel" (a product with 9 output columns). Here a group of `G` images is one product,
//! their patch matrices side by side (`P = G L` columns; `K = C kh kw`, `L = Ho Wo`):
//! - forward: `y[O, P] = W[O, K] col(x)[K, P] + b`,
//! - weight gradient: `dW += dy[O, P] col(x)^T[P, K]`, accumulated per task of a fixed
//!   number of images and summed in task order, so results do not depend on the thread count,
//! - input gradient: `dx = col2im(W^T[K, O] dy[O, P])`.
//!
//! `G` is 1 for large images; small ones (14x14, 7x7) are grouped so that the products are not
//! dominated by packing the weights and by reading and writing `dW` once per 49 pixels
//! ([`ConvShape::images_per_product`]). A 1x1 convolution with stride 1 and no padding of a
//! single image skips im2col: `col(x_n)` is `x_n` itself.

pub use super::shape::ConvShape;

use super::gemm::{Operand, matmul};
use super::winograd;
use super::with_scratch;
use rayon::prelude::*;

/// Where one line of the patch matrix reads from: its output columns `valid` take input
/// columns `first, first + stride, ...` of the input line starting at `line` (an offset in the
/// image); the other columns read padding.
struct Segment {
    line: usize,
    valid: std::ops::Range<usize>,
    first: usize,
}

/// Calls `f(offset, segment)` for every output-row-long line of one image's `[K, L]` patch
/// matrix, in order (`offset` into a matrix whose rows are `row_len >= L` long; `segment` None
/// when the whole line reads padding). im2col and its adjoint col2im are both this walk, one
/// copying and one adding.
fn for_each_patch_line(s: &ConvShape, row_len: usize, mut f: impl FnMut(usize, Option<Segment>)) {
    let mut row = 0;
    for c in 0..s.c_in {
        for ki in 0..s.kh {
            for kj in 0..s.kw {
                let valid = s.strided_columns(kj);
                for oh in 0..s.h_out() {
                    let ih = (oh * s.stride + ki) as isize - s.padding as isize;
                    let inside = ih >= 0 && ih < s.h as isize && !valid.is_empty();
                    let segment = inside.then(|| Segment {
                        line: (c * s.h + ih as usize) * s.w,
                        valid: valid.clone(),
                        first: valid.start * s.stride + kj - s.padding,
                    });
                    f(row * row_len + oh * s.w_out(), segment);
                }
                row += 1;
            }
        }
    }
}

/// Writes the `[K, L]` patch matrix of one image into `col`, whose rows are `row_len` long
/// (`L` for one image; `G L` when `col` starts at the image's columns of a group's matrix).
fn im2col(s: &ConvShape, x: &[f32], col: &mut [f32], row_len: usize) {
    if s.same_size() {
        return im2col_same(s, x, col, row_len);
    }
    let wo = s.w_out();
    for_each_patch_line(s, row_len, |at, segment| {
        let out = &mut col[at..at + wo];
        let Some(segment) = segment else {
            out.fill(0.0);
            return;
        };
        let line = &x[segment.line..segment.line + s.w];
        out[..segment.valid.start].fill(0.0);
        for (o, &v) in out[segment.valid.clone()]
            .iter_mut()
            .zip(line[segment.first..].iter().step_by(s.stride))
        {
            *o = v;
        }
        out[segment.valid.end..].fill(0.0);
    });
}

/// The patch matrix of a stride-1 convolution whose output has the input's size (3x3 with
/// padding 1): row (c, ki, kj) is channel c's plane shifted by (ki - p) rows and (kj - p)
/// columns, so it is one long copy, after which the pixels that fell outside the image (whole
/// rows at the top or bottom, one column that wrapped around from the neighbouring row) are
/// zeroed.
fn im2col_same(s: &ConvShape, x: &[f32], col: &mut [f32], row_len: usize) {
    let (h, w, p) = (s.h as isize, s.w as isize, s.padding as isize);
    let plane = s.h * s.w;
    let mut r = 0;
    for c in 0..s.c_in {
        let src = &x[c * plane..(c + 1) * plane];
        for ki in 0..s.kh as isize {
            for kj in 0..s.kw as isize {
                let row = &mut col[r * row_len..r * row_len + plane];
                r += 1;
                let (di, dj) = (ki - p, kj - p);
                let shift = di * w + dj;
                // row[i] = src[i + shift] wherever that index exists.
                let lo = (-shift).clamp(0, h * w) as usize;
                let hi = (h * w - shift).clamp(0, h * w) as usize;
                row[..lo].fill(0.0);
                if lo < hi {
                    let from = (lo as isize + shift) as usize;
                    row[lo..hi].copy_from_slice(&src[from..from + (hi - lo)]);
                }
                row[hi.max(lo)..].fill(0.0);
                zero_outside(s, row, di, dj);
            }
        }
    }
}

/// Zeroes the entries of a shifted plane (row offset `di`, column offset `dj`) whose source
/// pixel lies outside the image: whole lines at the top or bottom, and the `|dj|` columns at
/// one side that wrapped around from the neighbouring line. The columns are written with
/// strided stores: a `fill` per line would be a `memset` call per one or two floats.
fn zero_outside(s: &ConvShape, row: &mut [f32], di: isize, dj: isize) {
    let (h, w) = (s.h as isize, s.w as isize);
    let inside = di.clamp(-h, h);
    let (first, last) = ((-inside).max(0) as usize, (h - inside.max(0)) as usize);
    row[..first * s.w].fill(0.0);
    row[last * s.w..].fill(0.0);
    let columns = if dj < 0 {
        0..(-dj).min(w) as usize
    } else {
        (w - dj).max(0) as usize..s.w
    };
    for column in columns {
        for line in first..last {
            row[line * s.w + column] = 0.0;
        }
    }
}

/// The adjoint of [`im2col_same`]: zero the entries whose source lies outside the image, then
/// add each row back into its channel's plane with one long shifted add.
fn col2im_same(s: &ConvShape, col: &mut [f32], row_len: usize, dx: &mut [f32]) {
    let (h, w, p) = (s.h as isize, s.w as isize, s.padding as isize);
    let plane = s.h * s.w;
    let mut r = 0;
    for c in 0..s.c_in {
        let dst = &mut dx[c * plane..(c + 1) * plane];
        for ki in 0..s.kh as isize {
            for kj in 0..s.kw as isize {
                let row = &mut col[r * row_len..r * row_len + plane];
                r += 1;
                let (di, dj) = (ki - p, kj - p);
                zero_outside(s, row, di, dj);
                let shift = di * w + dj;
                let lo = (-shift).clamp(0, h * w) as usize;
                let hi = (h * w - shift).clamp(0, h * w) as usize;
                if lo < hi {
                    let to = (lo as isize + shift) as usize;
                    for (d, &g) in dst[to..to + (hi - lo)].iter_mut().zip(&row[lo..hi]) {
                        *d += g;
                    }
                }
            }
        }
    }
}

/// Adds one image's `[K, L]` patch-gradient matrix (rows `row_len` long, as in [`im2col`]) into
/// its input gradient `dx` (the adjoint of [`im2col`]); `col` is scratch and may be modified.
fn col2im(s: &ConvShape, col: &mut [f32], row_len: usize, dx: &mut [f32]) {
    if s.same_size() {
        return col2im_same(s, col, row_len, dx);
    }
    for_each_patch_line(s, row_len, |at, segment| {
        if let Some(segment) = segment {
            let grads = &col[at + segment.valid.start..at + segment.valid.end];
            let line = &mut dx[segment.line..segment.line + s.w];
            for (d, &g) in line[segment.first..]
                .iter_mut()
                .step_by(s.stride)
                .zip(grads)
            {
                *d += g;
            }
        }
    });
}

/// Lays out the `[rows, L]` matrices of `images` consecutive images (`per_image` = `rows L`
/// floats each) side by side as one `[rows, images L]` matrix.
fn gather(images: &[f32], rows: usize, l: usize, out: &mut [f32]) {
    let count = images.len() / (rows * l);
    for (j, image) in images.chunks_exact(rows * l).enumerate() {
        for (r, line) in image.chunks_exact(l).enumerate() {
            let at = r * count * l + j * l;
            out[at..at + l].copy_from_slice(line);
        }
    }
}

/// The inverse of [`gather`]: splits a `[rows, images L]` matrix into per-image `[rows, L]`
/// matrices, adding `bias[r]` to row `r` (an empty `bias` adds nothing).
fn scatter(side_by_side: &[f32], rows: usize, l: usize, bias: &[f32], images: &mut [f32]) {
    let count = images.len() / (rows * l);
    for (j, image) in images.chunks_exact_mut(rows * l).enumerate() {
        for (r, line) in image.chunks_exact_mut(l).enumerate() {
            let at = r * count * l + j * l;
            let from = &side_by_side[at..at + l];
            match bias.get(r) {
                Some(&b) => line.iter_mut().zip(from).for_each(|(y, &v)| *y = v + b),
                None => line.copy_from_slice(from),
            }
        }
    }
}

/// Writes the side-by-side `[K, images L]` patch matrix of `images` consecutive images.
fn im2col_group(s: &ConvShape, images: &[f32], col: &mut [f32]) {
    let count = images.len() / s.image_len();
    let row_len = count * s.l();
    for (j, x_n) in images.chunks_exact(s.image_len()).enumerate() {
        im2col(s, x_n, &mut col[j * s.l()..], row_len);
    }
}

/// `y = conv(x, weight) + bias`, shapes `[N, C, H, W]`, `[O, C, kh, kw]`, `[O]` -> `[N, O, Ho, Wo]`.
pub fn forward(s: &ConvShape, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let (k, l, o) = (s.k(), s.l(), s.c_out);
    assert_eq!(x.len(), s.batch * s.image_len());
    assert_eq!(weight.len(), o * k);
    assert_eq!(bias.len(), o);
    if winograd::applies(s) {
        return winograd::forward(s, x, weight, Some(bias));
    }
    let mut y = super::zeros(s.batch * o * l);
    let g = s.images_per_product();
    y.par_chunks_mut(g * o * l)
        .zip(x.par_chunks(g * s.image_len()))
        .for_each(|(y_g, x_g)| {
            let images = y_g.len() / (o * l);
            let p = images * l;
            let in_place = images == 1 && s.pointwise();
            let col_len = if in_place { 0 } else { k * p };
            let out_len = if images == 1 { 0 } else { o * p };
            with_scratch([col_len, out_len], |[col, out]| {
                let col: &[f32] = if in_place {
                    x_g
                } else {
                    im2col_group(s, x_g, col);
                    col
                };
                // One image writes its output in place, after the bias; a group writes a
                // side-by-side [O, P] matrix that is then split per image.
                let dst = if images == 1 {
                    for (row, &b) in y_g.chunks_exact_mut(l).zip(bias) {
                        row.fill(b);
                    }
                    &mut *y_g
                } else {
                    &mut *out
                };
                // SAFETY: weight is [O, K] and col [K, P], both checked above.
                unsafe {
                    // dst^T[P, O] = col^T[P, K] W^T[K, O].
                    matmul(
                        p,
                        o,
                        k,
                        dst,
                        true,
                        images == 1,
                        Operand::transposed(col, p),
                        Operand::transposed(weight, k),
                    );
                }
                if images > 1 {
                    scatter(out, o, l, bias, y_g);
                }
            })
        });
    y
}

/// The kernel of the transposed convolution: `[C, O, kh, kw]` with both spatial axes reversed.
fn flip_kernel(s: &ConvShape, weight: &[f32]) -> Vec<f32> {
    let (kh, kw) = (s.kh, s.kw);
    let mut flipped = vec![0.0; weight.len()];
    for o in 0..s.c_out {
        for c in 0..s.c_in {
            for i in 0..kh {
                for j in 0..kw {
                    flipped[((c * s.c_out + o) * kh + kh - 1 - i) * kw + kw - 1 - j] =
                        weight[((o * s.c_in + c) * kh + i) * kw + j];
                }
            }
        }
    }
    flipped
}

/// Images per backward task, at least: each task keeps its own weight-gradient sum. A task is
/// a whole number of product groups.
const IMAGES_PER_TASK: usize = 4;

/// Gradients of [`forward`]: `(dx, dweight, dbias)`; `dx` is empty unless `need_dx`.
pub fn backward(
    s: &ConvShape,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    need_dx: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (k, l, o) = (s.k(), s.l(), s.c_out);
    assert_eq!(x.len(), s.batch * s.image_len());
    assert_eq!(weight.len(), o * k);
    assert_eq!(dy.len(), s.batch * o * l);
    if winograd::applies(s) {
        // The input gradient is the convolution of dy with the flipped, transposed kernel.
        let dx = if need_dx {
            let transposed = ConvShape {
                c_in: o,
                c_out: s.c_in,
                ..*s
            };
            winograd::forward(&transposed, dy, &flip_kernel(s, weight), None)
        } else {
            Vec::new()
        };
        let (dw, db) = winograd::weight_grad(s, x, dy);
        return (dx, dw, db);
    }
    let mut dx = super::zeros(if need_dx { x.len() } else { 0 });
    // A same-size stride-1 convolution's input gradient is itself a same-size convolution of
    // dy with the flipped, transposed kernel. Computed that way its product has the inner
    // dimension 9 O instead of O (col2im's `W^T dy`), which the micro-kernel runs far better.
    let transposed = (need_dx && s.same_size() && !s.pointwise()).then(|| {
        let shape = ConvShape {
            c_in: o,
            c_out: s.c_in,
            ..*s
        };
        (shape, flip_kernel(s, weight))
    });
    let g = s.images_per_product();
    let task_len = g * IMAGES_PER_TASK.div_ceil(g);
    let tasks = s.batch.div_ceil(task_len);
    let task_images = |t: usize| t * task_len..((t + 1) * task_len).min(s.batch);
    let run_task = |t: usize, mut dx_task: Option<&mut [f32]>| {
        let mut dw = vec![0.0f32; o * k];
        let mut db = vec![0.0f32; o];
        let first_image = task_images(t).start;
        let groups = task_images(t).step_by(g).map(|n| n..(n + g).min(s.batch));
        // Scratch: patch matrix, side-by-side dy, patch-gradient matrix, side-by-side dx.
        let p_max = g.min(s.batch) * l;
        let dcol_rows = match &transposed {
            _ if !need_dx => 0,
            Some((t, _)) => t.k(),
            None if s.pointwise() => 0,
            None => k,
        };
        let lengths = [
            if g == 1 && s.pointwise() {
                0
            } else {
                k * p_max
            },
            if g > 1 { o * p_max } else { 0 },
            dcol_rows * p_max,
            if need_dx && g > 1 { s.c_in * p_max } else { 0 },
        ];
        with_scratch(lengths, |[col_buffer, dy_buffer, dcol, dx_buffer]| {
            for group in groups {
                let images = group.len();
                let p = images * l;
                let x_g = &x[group.start * s.image_len()..group.end * s.image_len()];
                let dy_g = &dy[group.start * o * l..group.end * o * l];
                // dy of the group as one [O, P] matrix.
                let dy_p: &[f32] = if images == 1 {
                    dy_g
                } else {
                    gather(dy_g, o, l, dy_buffer);
                    &dy_buffer[..o * p]
                };
                for (db, row) in db.iter_mut().zip(dy_p.chunks_exact(p)) {
                    *db += super::simd::sum(row);
                }
                let col: &[f32] = if images == 1 && s.pointwise() {
                    x_g
                } else {
                    im2col_group(s, x_g, col_buffer);
                    &col_buffer[..k * p]
                };
                // SAFETY: dy_p is [O, P], col [K, P] (read transposed), weight [O, K] (read
                // transposed): all sized by the asserts above.
                unsafe {
                    // dW[O, K] += dy[O, P] col^T[P, K].
                    matmul(
                        o,
                        k,
                        p,
                        &mut dw,
                        false,
                        true,
                        Operand::rows(dy_p, p),
                        Operand::transposed(col, p),
                    );
                }
                let Some(dx_task) = dx_task.as_deref_mut() else {
                    continue;
                };
                let at = (group.start - first_image) * s.image_len();
                let dx_g = &mut dx_task[at..at + images * s.image_len()];
                // One image writes its gradient in place; a group a side-by-side [C, P] matrix.
                let dx_p: &mut [f32] = if images == 1 {
                    &mut *dx_g
                } else {
                    &mut dx_buffer[..s.c_in * p]
                };
                // SAFETY: as above; dcol holds dcol_rows x P.
                unsafe {
                    let (dy_t, w) = (Operand::transposed(dy_p, p), Operand::rows(weight, k));
                    if s.pointwise() {
                        // dx^T[P, C] = dy^T[P, O] W[O, C].
                        matmul(p, k, o, dx_p, true, false, dy_t, w);
                    } else if let Some((t, flipped)) = &transposed {
                        // dx^T[P, C] = col(dy)^T[P, 9 O] flipped^T[9 O, C].
                        im2col_group(t, dy_g, dcol);
                        let (dcol_t, w_t) = (
                            Operand::transposed(dcol, p),
                            Operand::transposed(flipped, t.k()),
                        );
                        matmul(p, s.c_in, t.k(), dx_p, true, false, dcol_t, w_t);
                    } else {
                        // dcol^T[P, K] = dy^T[P, O] W[O, K], then col2im image by image.
                        matmul(p, k, o, dcol, true, false, dy_t, w);
                        for (j, dx_n) in dx_g.chunks_exact_mut(s.image_len()).enumerate() {
                            col2im(s, &mut dcol[j * l..], p, dx_n);
                        }
                        continue;
                    }
                }
                if images > 1 {
                    scatter(&dx_buffer[..s.c_in * p], s.c_in, l, &[], dx_g);
                }
            }
        });
        (dw, db)
    };
    let partial: Vec<(Vec<f32>, Vec<f32>)> = if need_dx {
        dx.par_chunks_mut(task_len * s.image_len())
            .enumerate()
            .map(|(t, dx_task)| run_task(t, Some(dx_task)))
            .collect()
    } else {
        (0..tasks)
            .into_par_iter()
            .map(|t| run_task(t, None))
            .collect()
    };
    let mut dw = vec![0.0f32; o * k];
    let mut db = vec![0.0f32; o];
    for (pw, pb) in &partial {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dx, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 7-loop convolution, the definition.
    fn reference(s: &ConvShape, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
        let (ho, wo) = (s.h_out(), s.w_out());
        let mut y = vec![0.0; s.batch * s.c_out * ho * wo];
        for n in 0..s.batch {
            for o in 0..s.c_out {
                for oh in 0..ho {
                    for ow in 0..wo {
                        let mut acc = b[o] as f64;
                        for c in 0..s.c_in {
                            for ki in 0..s.kh {
                                for kj in 0..s.kw {
                                    let ih = (oh * s.stride + ki) as isize - s.padding as isize;
                                    let iw = (ow * s.stride + kj) as isize - s.padding as isize;
                                    if ih < 0 || iw < 0 || ih >= s.h as isize || iw >= s.w as isize
                                    {
                                        continue;
                                    }
                                    let xi =
                                        ((n * s.c_in + c) * s.h + ih as usize) * s.w + iw as usize;
                                    let wi = ((o * s.c_in + c) * s.kh + ki) * s.kw + kj;
                                    acc += x[xi] as f64 * w[wi] as f64;
                                }
                            }
                        }
                        y[((n * s.c_out + o) * ho + oh) * wo + ow] = acc as f32;
                    }
                }
            }
        }
        y
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        crate::kernels::test_values(len, seed)
    }

    fn shapes() -> Vec<ConvShape> {
        let base = ConvShape {
            batch: 5,
            c_in: 3,
            h: 7,
            w: 6,
            c_out: 4,
            kh: 3,
            kw: 3,
            stride: 1,
            padding: 1,
        };
        vec![
            base,
            ConvShape { stride: 2, ..base },
            ConvShape {
                kh: 1,
                kw: 1,
                padding: 0,
                ..base
            },
            ConvShape { padding: 0, ..base },
            ConvShape {
                kh: 5,
                kw: 5,
                padding: 2,
                ..base
            },
            ConvShape {
                kh: 2,
                kw: 3,
                padding: 2,
                stride: 2,
                ..base
            },
            // One image per product (16 x 16 = 256 pixels), the 1x1 one read in place.
            ConvShape {
                h: 16,
                w: 16,
                ..base
            },
            ConvShape {
                h: 16,
                w: 16,
                kh: 1,
                kw: 1,
                padding: 0,
                ..base
            },
            // Groups of 8 images at 7x7 (and a stride-2 layer with a 7x7 output), with a last
            // group of 3, in backward tasks of one group.
            ConvShape {
                batch: 11,
                h: 7,
                w: 7,
                ..base
            },
            ConvShape {
                batch: 11,
                h: 7,
                w: 7,
                kh: 1,
                kw: 1,
                padding: 0,
                ..base
            },
            ConvShape {
                batch: 11,
                h: 14,
                w: 14,
                stride: 2,
                ..base
            },
            // Winograd F(2x2, 3x3): odd sizes (half-outside tiles), one partial group, several
            // groups, more outputs than inputs and the other way round.
            ConvShape {
                c_in: 16,
                c_out: 16,
                h: 27,
                w: 26,
                ..base
            },
            ConvShape {
                batch: 9,
                c_in: 16,
                c_out: 20,
                h: 16,
                w: 16,
                ..base
            },
            ConvShape {
                batch: 3,
                c_in: 20,
                c_out: 16,
                h: 25,
                w: 25,
                ..base
            },
            ConvShape {
                batch: 2,
                c_in: 16,
                c_out: 16,
                h: 26,
                w: 27,
                ..base
            },
        ]
    }

    #[test]
    fn winograd_computes_the_larger_3x3_layers() {
        let winograd: Vec<bool> = shapes().iter().map(winograd::applies).collect();
        assert_eq!(winograd.iter().filter(|&&w| w).count(), 4);
        let s = |side| ConvShape {
            c_in: 32,
            c_out: 32,
            h: side,
            w: side,
            ..shapes()[0]
        };
        assert!(winograd::applies(&s(28)) && winograd::applies(&s(14)));
        assert!(
            !winograd::applies(&s(7)),
            "7x7: the tile slots nearly double the products"
        );
    }

    #[test]
    fn groups_make_products_of_at_least_256_pixels_in_multiples_of_8() {
        for (side, expected) in [(28, 1), (16, 1), (14, 2), (7, 8), (5, 16), (1, 256)] {
            let s = ConvShape {
                h: side,
                w: side,
                ..shapes()[0]
            };
            let g = s.images_per_product();
            assert_eq!(g, expected, "{side}x{side}");
            assert!(g * s.l() >= 256 && (g * s.l()).is_multiple_of(8));
        }
    }

    #[test]
    fn forward_matches_the_definition() {
        for s in shapes() {
            let x = values(s.batch * s.image_len(), 1);
            let w = values(s.c_out * s.k(), 2);
            let b = values(s.c_out, 3);
            let fast = forward(&s, &x, &w, &b);
            let slow = reference(&s, &x, &w, &b);
            let worst = fast
                .iter()
                .zip(&slow)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let largest = slow.iter().map(|v| v.abs()).fold(0f32, f32::max);
            assert!(
                worst < 1e-6 * largest.max(1.0) * (s.k() as f32).sqrt(),
                "{s:?}: worst difference {worst} (largest output {largest})"
            );
        }
    }

    /// The convolution is linear in x and in w, so its gradients are adjoints:
    /// <dy, conv(x, w)> = <dx, x> = <dw, w>, and the bias adds <db, b>.
    #[test]
    fn backward_is_the_adjoint_of_forward() {
        for s in shapes() {
            let x = values(s.batch * s.image_len(), 4);
            let w = values(s.c_out * s.k(), 5);
            let b = values(s.c_out, 6);
            let dy = values(s.batch * s.c_out * s.l(), 7);
            let (dx, dw, db) = backward(&s, &x, &w, &dy, true);
            let dot = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
            };
            let zero_b = vec![0.0; s.c_out];
            // y is linear in x (with w, no bias): <dy, conv(x)> = <dx, x>.
            let lhs = dot(&dy, &forward(&s, &x, &w, &zero_b));
            assert!(
                (lhs - dot(&dx, &x)).abs() < 1e-3 * lhs.abs().max(1.0),
                "{s:?} dx"
            );
            // ... and linear in w: <dy, conv_w(x)> = <dw, w>.
            assert!(
                (lhs - dot(&dw, &w)).abs() < 1e-3 * lhs.abs().max(1.0),
                "{s:?} dw"
            );
            // ... and the bias adds <dy, b broadcast> = <db, b>.
            let with_b = dot(&dy, &forward(&s, &x, &w, &b)) - lhs;
            assert!(
                (with_b - dot(&db, &b)).abs() < 1e-3 * with_b.abs().max(1.0),
                "{s:?} db"
            );
            let (no_dx, dw2, db2) = backward(&s, &x, &w, &dy, false);
            assert!(no_dx.is_empty());
            assert_eq!((dw2, db2), (dw, db));
        }
    }

    /// Exact resume across machines needs results that do not depend on the thread count:
    /// gradients are summed per fixed task in task order.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        for s in shapes() {
            let x = values(s.batch * s.image_len(), 10);
            let w = values(s.c_out * s.k(), 11);
            let b = values(s.c_out, 12);
            let dy = values(s.batch * s.c_out * s.l(), 13);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| (forward(&s, &x, &w, &b), backward(&s, &x, &w, &dy, true)))
            };
            assert_eq!(run(1), run(3), "{s:?}");
        }
    }
}
