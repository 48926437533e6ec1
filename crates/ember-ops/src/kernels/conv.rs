//! 2-D convolution (groups 1, dilation 1) as one small matrix product per image, NCHW in and
//! out, images split over the threads.
//!
//! burn-flex 0.22.1 re-lays out the whole input (NCHW -> NHWC) and kernel on the calling thread
//! before each convolution, and Burn computes the weight gradient as a convolution with an
//! H x W "kernel" (a product with 9 output columns). Here each image is one task:
//! - forward: `y_n[O, L] = W[O, K] col(x_n)[K, L] + b` (`K = C kh kw`, `L = Ho Wo`),
//! - weight gradient: `dW += dy_n[O, L] col(x_n)^T[L, K]`, accumulated per task of a fixed
//!   number of images and summed in task order, so results do not depend on the thread count,
//! - input gradient: `dx_n = col2im(W^T[K, O] dy_n[O, L])`.
//!
//! A 1x1 convolution with stride 1 and no padding skips im2col: `col(x_n)` is `x_n` itself.

use super::gemm::{Operand, matmul};
use super::with_scratch;
use rayon::prelude::*;

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvShape {
    pub fn h_out(&self) -> usize {
        (self.h + 2 * self.padding - self.kh) / self.stride + 1
    }

    pub fn w_out(&self) -> usize {
        (self.w + 2 * self.padding - self.kw) / self.stride + 1
    }

    /// Rows of the im2col matrix (inner dimension of the products).
    fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// Output pixels per channel.
    fn l(&self) -> usize {
        self.h_out() * self.w_out()
    }

    fn image_len(&self) -> usize {
        self.c_in * self.h * self.w
    }

    /// Stride 1 and an output of the input's size (e.g. 3x3 with padding 1).
    fn same_size(&self) -> bool {
        self.stride == 1 && self.h_out() == self.h && self.w_out() == self.w
    }

    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.padding == 0
    }

    /// The range of output columns `ow` whose input column `ow * stride + kj - padding` lies
    /// inside the image, for any stride.
    fn strided_columns(&self, kj: usize) -> std::ops::Range<usize> {
        // ow * stride + kj >= padding  and  ow * stride + kj < w + padding.
        let lo = self
            .padding
            .saturating_sub(kj)
            .div_ceil(self.stride)
            .min(self.w_out());
        let hi = (self.w + self.padding)
            .saturating_sub(kj)
            .div_ceil(self.stride)
            .min(self.w_out());
        lo..hi.max(lo)
    }
}

/// Where one line of the patch matrix reads from: its output columns `valid` take input
/// columns `first, first + stride, ...` of the input line starting at `line` (an offset in the
/// image); the other columns read padding.
struct Segment {
    line: usize,
    valid: std::ops::Range<usize>,
    first: usize,
}

/// Calls `f(offset, segment)` for every output-row-long line of the `[K, L]` patch matrix, in
/// order (`offset` into the matrix; `segment` None when the whole line reads padding). im2col
/// and its adjoint col2im are both this walk, one copying and one adding.
fn for_each_patch_line(s: &ConvShape, mut f: impl FnMut(usize, Option<Segment>)) {
    let mut offset = 0;
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
                    f(offset, segment);
                    offset += s.w_out();
                }
            }
        }
    }
}

/// Writes the `[K, L]` patch matrix of one image into `col`.
fn im2col(s: &ConvShape, x: &[f32], col: &mut [f32]) {
    if s.same_size() {
        return im2col_same(s, x, col);
    }
    let wo = s.w_out();
    for_each_patch_line(s, |at, segment| {
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
fn im2col_same(s: &ConvShape, x: &[f32], col: &mut [f32]) {
    let (h, w, p) = (s.h as isize, s.w as isize, s.padding as isize);
    let plane = s.h * s.w;
    let mut rows = col.chunks_exact_mut(plane);
    for c in 0..s.c_in {
        let src = &x[c * plane..(c + 1) * plane];
        for ki in 0..s.kh as isize {
            for kj in 0..s.kw as isize {
                let row = rows.next().expect("K rows");
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
fn col2im_same(s: &ConvShape, col: &mut [f32], dx: &mut [f32]) {
    let (h, w, p) = (s.h as isize, s.w as isize, s.padding as isize);
    let plane = s.h * s.w;
    let mut rows = col.chunks_exact_mut(plane);
    for c in 0..s.c_in {
        let dst = &mut dx[c * plane..(c + 1) * plane];
        for ki in 0..s.kh as isize {
            for kj in 0..s.kw as isize {
                let row = rows.next().expect("K rows");
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

/// Adds the `[K, L]` patch-gradient matrix of one image into its input gradient `dx`
/// (the adjoint of [`im2col`]); `col` is scratch and may be modified.
fn col2im(s: &ConvShape, col: &mut [f32], dx: &mut [f32]) {
    if s.same_size() {
        return col2im_same(s, col, dx);
    }
    for_each_patch_line(s, |at, segment| {
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

/// `y = conv(x, weight) + bias`, shapes `[N, C, H, W]`, `[O, C, kh, kw]`, `[O]` -> `[N, O, Ho, Wo]`.
pub fn forward(s: &ConvShape, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let (k, l, o) = (s.k(), s.l(), s.c_out);
    assert_eq!(x.len(), s.batch * s.image_len());
    assert_eq!(weight.len(), o * k);
    assert_eq!(bias.len(), o);
    let mut y = super::zeros(s.batch * o * l);
    let col_len = if s.pointwise() { 0 } else { k * l };
    y.par_chunks_mut(o * l).enumerate().for_each(|(n, y_n)| {
        with_scratch(col_len, 0, |col, _| {
            let x_n = &x[n * s.image_len()..(n + 1) * s.image_len()];
            for (row, &b) in y_n.chunks_exact_mut(l).zip(bias) {
                row.fill(b);
            }
            let col: &[f32] = if s.pointwise() {
                x_n
            } else {
                im2col(s, x_n, col);
                col
            };
            // SAFETY: weight is [O, K] and col [K, L], both checked above.
            unsafe {
                // y_n^T[L, O] = col^T[L, K] W^T[K, O].
                matmul(
                    l,
                    o,
                    k,
                    y_n,
                    true,
                    true,
                    Operand::transposed(col, l),
                    Operand::transposed(weight, k),
                );
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

/// Images per backward task: each task keeps its own weight-gradient sum.
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
    let mut dx = super::zeros(if need_dx { x.len() } else { 0 });
    // A same-size stride-1 convolution's input gradient is itself a same-size convolution of
    // dy with the flipped, transposed kernel. Computed that way its product has the inner
    // dimension 9 O instead of O (col2im's `W^T dy`), which the micro-kernel runs far better.
    let transposed = (need_dx && s.same_size()).then(|| {
        let shape = ConvShape {
            c_in: o,
            c_out: s.c_in,
            ..*s
        };
        (shape, flip_kernel(s, weight))
    });
    let tasks = s.batch.div_ceil(IMAGES_PER_TASK);
    let task_images = |t: usize| t * IMAGES_PER_TASK..((t + 1) * IMAGES_PER_TASK).min(s.batch);
    let run_task = |t: usize, mut dx_task: Option<&mut [f32]>| {
        let mut dw = vec![0.0f32; o * k];
        let mut db = vec![0.0f32; o];
        let col_len = if s.pointwise() { 0 } else { k * l };
        let dcol_len = match &transposed {
            _ if s.pointwise() || !need_dx => 0,
            Some((t, _)) => t.k() * l,
            None => k * l,
        };
        with_scratch(col_len, dcol_len, |col_buffer, dcol| {
            for (j, n) in task_images(t).enumerate() {
                let x_n = &x[n * s.image_len()..(n + 1) * s.image_len()];
                let dy_n = &dy[n * o * l..(n + 1) * o * l];
                for (db, row) in db.iter_mut().zip(dy_n.chunks_exact(l)) {
                    *db += super::simd::sum(row);
                }
                let col: &[f32] = if s.pointwise() {
                    x_n
                } else {
                    im2col(s, x_n, col_buffer);
                    &*col_buffer
                };
                // SAFETY: dy_n is [O, L], col [K, L] (read transposed), weight [O, K] (read
                // transposed): all sized by the asserts above.
                unsafe {
                    // dW[O, K] += dy_n[O, L] col^T[L, K].
                    matmul(
                        o,
                        k,
                        l,
                        &mut dw,
                        false,
                        true,
                        Operand::rows(dy_n, l),
                        Operand::transposed(col, l),
                    );
                    if let Some(dx_task) = dx_task.as_deref_mut() {
                        let dx_n = &mut dx_task[j * s.image_len()..(j + 1) * s.image_len()];
                        // dcol^T[L, K] = dy_n^T[L, O] W[O, K]; for 1x1 convolutions dcol is dx_n.
                        let (dy_t, w) = (Operand::transposed(dy_n, l), Operand::rows(weight, k));
                        if s.pointwise() {
                            matmul(l, k, o, dx_n, true, false, dy_t, w);
                        } else if let Some((t, flipped)) = &transposed {
                            // dx_n^T[L, C] = col(dy_n)^T[L, 9 O] flipped^T[9 O, C].
                            im2col(t, dy_n, dcol);
                            let (dcol_t, w_t) = (
                                Operand::transposed(dcol, l),
                                Operand::transposed(flipped, t.k()),
                            );
                            matmul(l, s.c_in, t.k(), dx_n, true, false, dcol_t, w_t);
                        } else {
                            matmul(l, k, o, dcol, true, false, dy_t, w);
                            col2im(s, dcol, dx_n);
                        }
                    }
                }
            }
        });
        (dw, db)
    };
    let partial: Vec<(Vec<f32>, Vec<f32>)> = if need_dx {
        dx.par_chunks_mut(IMAGES_PER_TASK * s.image_len())
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
        ]
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
            assert!(worst < 1e-5, "{s:?}: worst difference {worst}");
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
        let s = shapes()[0];
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
        assert_eq!(run(1), run(3));
    }
}
