//! 3x3 stride-1 "same" convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Each 2x2 block of outputs ("tile") is computed from the 4x4 block of inputs around it as
//! `Y = A^T [(G g G^T) . (B^T d B)] A`: 16 products per input channel instead of the 36 of the
//! direct convolution. Over a group of images the 16 element-wise products become 16 matrix
//! products, one per position `xi` of the 4x4 transformed tile:
//! - forward: `M_xi[O, P] = U_xi[O, C] V_xi[C, P]` (`U = G g G^T` per (o, c), `V = B^T d B` per
//!   (c, tile); `P` = tiles in the group), then `Y = A^T M A` per tile;
//! - input gradient: the forward of `dy` with the flipped, transposed kernel;
//! - weight gradient: `S_xi[O, C] += Z_xi[O, P] V_xi^T[P, C]` with `Z = A dY A^T`, then
//!   `dW = G^T S G` per (o, c) (the adjoint of the forward's weight path).
//!
//! 2.25x fewer multiply-adds than im2col; the transforms are additions, vectorised along the
//! tiles of a row. The error is that of a few more float additions (the twin check measures
//! it against PyTorch's direct convolution).

use super::gemm::{Operand, matmul};
use super::shape::ConvShape;
use super::simd;
use super::with_scratch;
use rayon::prelude::*;

/// Positions in a transformed 4x4 tile.
const XI: usize = 16;

/// Whether F(2x2, 3x3) computes this convolution, and is worth it: 3x3, stride 1, padding 1;
/// enough channels on both sides that the 16 products are real matrix products (the
/// network's first and last convolutions, with 1 to 3 channels, stay on im2col); and tiles
/// that fit the image with little waste: the tile slots (the extra column, half-outside
/// tiles, the padding to 8) may add at most a quarter to the ideal `4 h w` product columns.
/// 28x28 adds 10 % and 14x14 14 %; 7x7 would add 96 % (measured slower than im2col), and some
/// odd sizes such as 15x15 also stay on im2col.
pub fn applies(s: &ConvShape) -> bool {
    let positions = XI * Tiles::of(s).per_image();
    let ideal = 4 * s.h * s.w;
    s.kh == 3
        && s.kw == 3
        && s.stride == 1
        && s.padding == 1
        && s.h >= 2
        && s.w >= 2
        && s.c_in >= MIN_CHANNELS
        && s.c_out >= MIN_CHANNELS
        && 4 * positions <= 5 * ideal
}

const MIN_CHANNELS: usize = 16;

/// The tiling of one image plane: `rows x cols` tiles of 2x2 outputs (the last row or column
/// of tiles half outside an odd-sized image). The transforms index a tile as
/// `q = row * stride + col` with `stride = cols + 1`: every input of every tile is then the
/// same contiguous run of one "phase plane" (the even or odd rows and columns of the padded
/// input), shifted, so each transform step is one long vector loop. The extra column of
/// tiles (`col = cols`) is computed and ignored; its output gradient is zero.
#[derive(Clone, Copy)]
struct Tiles {
    rows: usize,
    cols: usize,
}

impl Tiles {
    fn of(s: &ConvShape) -> Self {
        Self {
            rows: s.h.div_ceil(2),
            cols: s.w.div_ceil(2),
        }
    }

    fn stride(&self) -> usize {
        self.cols + 1
    }

    /// Tile slots of one plane, the extra column included.
    fn slots(&self) -> usize {
        self.rows * self.stride()
    }

    /// Columns of one image in the products: the slots rounded up to a multiple of 8, so a
    /// group's `P` is one too (gemm then reads the column-major `V` in place).
    fn per_image(&self) -> usize {
        self.slots().next_multiple_of(8)
    }

    /// Images per group: `P` at least 256. Shape-only, like
    /// [`ConvShape::images_per_product`], so results do not depend on the thread count.
    fn images_per_group(&self) -> usize {
        256usize.div_ceil(self.per_image())
    }

    /// Floats of per-plane scratch the transforms need.
    fn scratch_len(&self) -> usize {
        4 * self.phase_len() + 16 * self.slots()
    }

    /// A phase plane of the padded input: `rows + 1` lines of `stride`, and one more slot that
    /// the last extra-column tile reads.
    fn phase_len(&self) -> usize {
        (self.rows + 1) * self.stride() + 1
    }
}

/// `U = G g G^T` for every (o, c): 16 matrices `[O, C]`, from `[O, C, 3, 3]` weights.
fn transform_weights(c_out: usize, c_in: usize, weight: &[f32]) -> Vec<f32> {
    let pairs = c_out * c_in;
    let mut u = vec![0.0f32; XI * pairs];
    for (oc, g) in weight.chunks_exact(9).enumerate() {
        // G g (4x3): rows g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2 of the columns.
        let mut t = [[0.0f32; 3]; 4];
        for col in 0..3 {
            let (a, b, c) = (g[col], g[3 + col], g[6 + col]);
            t[0][col] = a;
            t[1][col] = 0.5 * (a + b + c);
            t[2][col] = 0.5 * (a - b + c);
            t[3][col] = c;
        }
        for (r, &[a, b, c]) in t.iter().enumerate() {
            let row = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
            for (m, value) in row.into_iter().enumerate() {
                u[(r * 4 + m) * pairs + oc] = value;
            }
        }
    }
    u
}

#[inline(always)]
fn sub(out: &mut [f32], a: &[f32], b: &[f32]) {
    let n = out.len();
    for ((o, &a), &b) in out.iter_mut().zip(&a[..n]).zip(&b[..n]) {
        *o = a - b;
    }
}

#[inline(always)]
fn add(out: &mut [f32], a: &[f32], b: &[f32]) {
    let n = out.len();
    for ((o, &a), &b) in out.iter_mut().zip(&a[..n]).zip(&b[..n]) {
        *o = a + b;
    }
}

#[inline(always)]
fn negate(out: &mut [f32], a: &[f32]) {
    let n = out.len();
    out.iter_mut().zip(&a[..n]).for_each(|(o, &a)| *o = -a);
}

/// The 1-D input transform `B^T` of four equally long runs: `d0 - d2, d1 + d2, d2 - d1,
/// d1 - d3`.
#[inline(always)]
fn b_transpose(out: [&mut [f32]; 4], d: [&[f32]; 4]) {
    let [t0, t1, t2, t3] = out;
    sub(t0, d[0], d[2]);
    add(t1, d[1], d[2]);
    sub(t2, d[2], d[1]);
    sub(t3, d[1], d[3]);
}

/// Splits `buffer` into `N` consecutive runs of `len`.
#[inline(always)]
fn runs<const N: usize>(buffer: &mut [f32], len: usize) -> [&mut [f32]; N] {
    let mut chunks = buffer.chunks_exact_mut(len);
    std::array::from_fn(|_| chunks.next().expect("buffer holds N runs"))
}

simd::multiversion! {
    /// `B^T d B` of every 4x4 input tile of one `[h, w]` plane: row `xi` of the result goes to
    /// `v[xi * row_stride..][..tiles.per_image()]` (its padding zeroed).
    fn input_plane(
        plane: &[f32],
        h: usize,
        w: usize,
        tiles: Tiles,
        scratch: &mut [f32],
        v: &mut [f32],
        row_stride: usize,
    ) {
        let (stride, slots) = (tiles.stride(), tiles.slots());
        let phase_len = tiles.phase_len();
        let (phases, t) = scratch.split_at_mut(4 * phase_len);
        // Phase (a, b) holds padded[2 i + a][2 j + b] = x[2 i + a - 1][2 j + b - 1]: input row
        // r goes to line (r + 1) / 2 of the phases a = (r + 1) % 2; its odd columns to phase
        // b = 0 (padded column 2 j, from slot 1) and its even ones to b = 1.
        phases.fill(0.0);
        let (pairs, odd_width) = (w / 2, w % 2 == 1);
        for (r, source) in plane.chunks_exact(w).enumerate().take(h) {
            let (i, a) = (r.div_ceil(2), (r + 1) % 2);
            let (up_to_b0, from_b1) = phases.split_at_mut((a * 2 + 1) * phase_len);
            let line_b0 = &mut up_to_b0[a * 2 * phase_len + i * stride..][..stride];
            let line_b1 = &mut from_b1[i * stride..][..stride];
            let slots_b0 = line_b0[1..].iter_mut();
            let slots_b1 = line_b1[..pairs].iter_mut();
            let columns = source.chunks_exact(2).zip(slots_b0).zip(slots_b1);
            for ((pair, odd_column), even_column) in columns {
                *even_column = pair[0];
                *odd_column = pair[1];
            }
            if odd_width {
                line_b1[pairs] = source[w - 1];
            }
        }
        let phase = |a: usize, b: usize, shift: usize| {
            let at = (a * 2 + b) * phase_len + shift;
            &phases[at..at + slots]
        };
        // t[k][m] = (B^T d)[k] at column m, for all tiles at once.
        let t_runs: [&mut [f32]; 16] = runs(t, slots);
        let [t00, t01, t02, t03, t10, t11, t12, t13, t20, t21, t22, t23, t30, t31, t32, t33] =
            t_runs;
        let columns = [
            [t00, t10, t20, t30],
            [t01, t11, t21, t31],
            [t02, t12, t22, t32],
            [t03, t13, t23, t33],
        ];
        for (m, out) in columns.into_iter().enumerate() {
            let (b, dj) = (m % 2, m / 2);
            let d = [
                phase(0, b, dj),
                phase(1, b, dj),
                phase(0, b, stride + dj),
                phase(1, b, stride + dj),
            ];
            b_transpose(out, d);
        }
        let per_image = tiles.per_image();
        let t = &*t;
        let row = |k: usize, m: usize| &t[(k * 4 + m) * slots..(k * 4 + m + 1) * slots];
        for k in 0..4 {
            let mut out: [&mut [f32]; 4] = std::array::from_fn(|_| &mut [][..]);
            let mut rest = &mut v[k * 4 * row_stride..];
            for (m, slot) in out.iter_mut().enumerate() {
                let (this, next) = rest.split_at_mut(if m < 3 { row_stride } else { per_image });
                this[slots..per_image].fill(0.0);
                *slot = &mut this[..slots];
                rest = next;
            }
            b_transpose(out, [row(k, 0), row(k, 1), row(k, 2), row(k, 3)]);
        }
    }
}

simd::multiversion! {
    /// `Y = A^T M A + bias` of every tile of one `[h, w]` output plane, from the 16 rows
    /// `m[xi * row_stride..]`.
    fn output_plane(
        m: &[f32],
        row_stride: usize,
        bias: f32,
        tiles: Tiles,
        scratch: &mut [f32],
        h: usize,
        w: usize,
        plane: &mut [f32],
    ) {
        let (stride, slots) = (tiles.stride(), tiles.slots());
        let row = |xi: usize| &m[xi * row_stride..xi * row_stride + slots];
        let [s00, s01, s02, s03, s10, s11, s12, s13, y00, y01, y10, y11]: [&mut [f32]; 12] =
            runs(scratch, slots);
        // (A^T M)[a][col]: rows m0 + m1 + m2 and m1 - m2 - m3.
        let columns = [
            (&mut *s00, &mut *s10),
            (&mut *s01, &mut *s11),
            (&mut *s02, &mut *s12),
            (&mut *s03, &mut *s13),
        ];
        for (col, (s0, s1)) in columns.into_iter().enumerate() {
            let (m0, m1, m2, m3) = (row(col), row(4 + col), row(8 + col), row(12 + col));
            for j in 0..slots {
                s0[j] = m0[j] + m1[j] + m2[j];
                s1[j] = m1[j] - m2[j] - m3[j];
            }
        }
        for (s, (y0, y1)) in [[&*s00, &*s01, &*s02, &*s03], [&*s10, &*s11, &*s12, &*s13]]
            .into_iter()
            .zip([(&mut *y00, &mut *y01), (&mut *y10, &mut *y11)])
        {
            for j in 0..slots {
                y0[j] = s[0][j] + s[1][j] + s[2][j] + bias;
                y1[j] = s[1][j] - s[2][j] - s[3][j] + bias;
            }
        }
        // Output (2 i + a, 2 j + b) is y_ab at tile (i, j).
        for (r, line) in plane.chunks_exact_mut(w).enumerate().take(h) {
            let (i, a) = (r / 2, r % 2);
            let (y0, y1) = if a == 0 { (&*y00, &*y01) } else { (&*y10, &*y11) };
            let (y0, y1) = (&y0[i * stride..], &y1[i * stride..]);
            let mut pairs = line.chunks_exact_mut(2);
            for ((pair, &v0), &v1) in (&mut pairs).zip(y0).zip(y1) {
                pair[0] = v0;
                pair[1] = v1;
            }
            if let [last] = pairs.into_remainder() {
                *last = y0[w / 2];
            }
        }
    }
}

simd::multiversion! {
    /// `A dY A^T` of every 2x2 output-gradient tile of one `[h, w]` plane: row `xi` goes to
    /// `z[xi * row_stride..][..tiles.per_image()]`; the extra column and padding are zero.
    fn grad_plane(
        plane: &[f32],
        h: usize,
        w: usize,
        tiles: Tiles,
        scratch: &mut [f32],
        z: &mut [f32],
        row_stride: usize,
    ) {
        let (stride, slots) = (tiles.stride(), tiles.slots());
        let (phases, rest) = scratch.split_at_mut(4 * slots);
        // Phase (a, b) holds dy[2 i + a][2 j + b] (zero outside the image).
        phases.fill(0.0);
        for (r, source) in plane.chunks_exact(w).enumerate().take(h) {
            let (i, a) = (r / 2, r % 2);
            for b in 0..2 {
                let at = (a * 2 + b) * slots + i * stride;
                let line = &mut phases[at..at + stride];
                for (slot, &value) in line.iter_mut().zip(source[b..].iter().step_by(2)) {
                    *slot = value;
                }
            }
        }
        let phase = |a: usize, b: usize| &phases[(a * 2 + b) * slots..(a * 2 + b + 1) * slots];
        // (A dY)[k] per column phase b: dy0, dy0 + dy1, dy0 - dy1, -dy1.
        let [r00, r01, r10, r11, r20, r21, r30, r31]: [&mut [f32]; 8] = runs(rest, slots);
        let phases_b = [
            [&mut *r00, &mut *r10, &mut *r20, &mut *r30],
            [&mut *r01, &mut *r11, &mut *r21, &mut *r31],
        ];
        for (b, [z0, z1, z2, z3]) in phases_b.into_iter().enumerate() {
            z0.copy_from_slice(phase(0, b));
            add(z1, phase(0, b), phase(1, b));
            sub(z2, phase(0, b), phase(1, b));
            negate(z3, phase(1, b));
        }
        let rows = [(&*r00, &*r01), (&*r10, &*r11), (&*r20, &*r21), (&*r30, &*r31)];
        let per_image = tiles.per_image();
        for (k, (even, odd)) in rows.into_iter().enumerate() {
            // (A dY A^T)[k]: even, even + odd, even - odd, -odd (the tile's two columns).
            for m in 0..4 {
                let at = (k * 4 + m) * row_stride;
                let out = &mut z[at..at + per_image];
                out[slots..].fill(0.0);
                let out = &mut out[..slots];
                match m {
                    0 => out.copy_from_slice(even),
                    1 => add(out, even, odd),
                    2 => sub(out, even, odd),
                    _ => negate(out, odd),
                }
            }
        }
    }
}

/// The layout of a group's 16 side-by-side `[channels, P]` matrices (one per transform
/// position, `row_stride` apart): the row stride, and the first column of plane `c` of image `n`.
fn side_by_side(
    tiles: Tiles,
    channels: usize,
    images: usize,
) -> (usize, impl Fn(usize, usize) -> usize) {
    let p = images * tiles.per_image();
    (channels * p, move |n, c| c * p + n * tiles.per_image())
}

/// Writes `B^T d B` of every tile of `images` (`[C, H, W]` each) into `v`: 16 matrices
/// `[C, P]`.
fn transform_input(
    s: &ConvShape,
    tiles: Tiles,
    images: &[f32],
    v: &mut [f32],
    scratch: &mut [f32],
) {
    let plane_len = s.h * s.w;
    let (row_stride, at) = side_by_side(tiles, s.c_in, images.len() / (s.c_in * plane_len));
    for (n, image) in images.chunks_exact(s.c_in * plane_len).enumerate() {
        for (c, plane) in image.chunks_exact(plane_len).enumerate() {
            input_plane(
                plane,
                s.h,
                s.w,
                tiles,
                scratch,
                &mut v[at(n, c)..],
                row_stride,
            );
        }
    }
}

/// Writes `A dY A^T` of every tile of `images` (`[O, H, W]` each) into `z`: 16 matrices
/// `[O, P]`.
fn transform_output_grad(
    s: &ConvShape,
    tiles: Tiles,
    images: &[f32],
    z: &mut [f32],
    scratch: &mut [f32],
) {
    let plane_len = s.h * s.w;
    let (row_stride, at) = side_by_side(tiles, s.c_out, images.len() / (s.c_out * plane_len));
    for (n, image) in images.chunks_exact(s.c_out * plane_len).enumerate() {
        for (o, plane) in image.chunks_exact(plane_len).enumerate() {
            grad_plane(
                plane,
                s.h,
                s.w,
                tiles,
                scratch,
                &mut z[at(n, o)..],
                row_stride,
            );
        }
    }
}

/// `Y = A^T M A + b` for every tile: reads the 16 matrices `[O, P]` in `m` and writes the
/// images `[O, H, W]` of `y`.
fn transform_output(
    s: &ConvShape,
    tiles: Tiles,
    m: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    let plane_len = s.h * s.w;
    let (row_stride, at) = side_by_side(tiles, s.c_out, y.len() / (s.c_out * plane_len));
    for (n, image) in y.chunks_exact_mut(s.c_out * plane_len).enumerate() {
        for (o, plane) in image.chunks_exact_mut(plane_len).enumerate() {
            let b = bias.map_or(0.0, |b| b[o]);
            output_plane(
                &m[at(n, o)..],
                row_stride,
                b,
                tiles,
                scratch,
                s.h,
                s.w,
                plane,
            );
        }
    }
}

/// `y = conv(x, weight) + bias` (shapes as im2col's `forward`); `bias` None adds nothing.
pub fn forward(s: &ConvShape, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    assert!(applies(s));
    let (c, o) = (s.c_in, s.c_out);
    let (image_in, image_out) = (c * s.h * s.w, o * s.h * s.w);
    assert_eq!(x.len(), s.batch * image_in);
    assert_eq!(weight.len(), o * c * 9);
    let u = transform_weights(o, c, weight);
    let tiles = Tiles::of(s);
    let g = tiles.images_per_group();
    let mut y = super::zeros(s.batch * image_out);
    y.par_chunks_mut(g * image_out)
        .zip(x.par_chunks(g * image_in))
        .for_each(|(y_g, x_g)| {
            let p = y_g.len() / image_out * tiles.per_image();
            with_scratch(
                [XI * c * p, XI * o * p, tiles.scratch_len()],
                |[v, m, scratch]| {
                    transform_input(s, tiles, x_g, v, scratch);
                    for xi in 0..XI {
                        // SAFETY: v holds 16 [C, P], u 16 [O, C] and m 16 [O, P] matrices.
                        unsafe {
                            // M_xi^T[P, O] = V_xi^T[P, C] U_xi^T[C, O].
                            matmul(
                                p,
                                o,
                                c,
                                &mut m[xi * o * p..(xi + 1) * o * p],
                                true,
                                false,
                                Operand::transposed(&v[xi * c * p..], p),
                                Operand::transposed(&u[xi * o * c..], c),
                            );
                        }
                    }
                    transform_output(s, tiles, m, bias, y_g, scratch);
                },
            )
        });
    y
}

/// Images per weight-gradient task, at least (each task keeps its own sums): a whole number of
/// groups.
const IMAGES_PER_TASK: usize = 4;

/// `(dweight, dbias)` of [`forward`], summed per fixed task in task order.
pub fn weight_grad(s: &ConvShape, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    assert!(applies(s));
    let (c, o) = (s.c_in, s.c_out);
    let (image_in, image_out) = (c * s.h * s.w, o * s.h * s.w);
    assert_eq!(x.len(), s.batch * image_in);
    assert_eq!(dy.len(), s.batch * image_out);
    let tiles = Tiles::of(s);
    let g = tiles.images_per_group();
    let task_len = g * IMAGES_PER_TASK.div_ceil(g);
    let partial: Vec<(Vec<f32>, Vec<f32>)> = x
        .par_chunks(task_len * image_in)
        .zip(dy.par_chunks(task_len * image_out))
        .map(|(x_t, dy_t)| {
            let mut sums = vec![0.0f32; XI * o * c];
            let mut db = vec![0.0f32; o];
            let p_max = g.min(s.batch) * tiles.per_image();
            let lengths = [XI * c * p_max, XI * o * p_max, tiles.scratch_len()];
            with_scratch(lengths, |[v, z, scratch]| {
                for (x_g, dy_g) in x_t.chunks(g * image_in).zip(dy_t.chunks(g * image_out)) {
                    let p = dy_g.len() / image_out * tiles.per_image();
                    for image in dy_g.chunks_exact(image_out) {
                        for (db, plane) in db.iter_mut().zip(image.chunks_exact(s.h * s.w)) {
                            *db += super::simd::sum(plane);
                        }
                    }
                    transform_input(s, tiles, x_g, v, scratch);
                    transform_output_grad(s, tiles, dy_g, z, scratch);
                    for xi in 0..XI {
                        // SAFETY: z holds 16 [O, P], v 16 [C, P], sums 16 [O, C] matrices.
                        unsafe {
                            // S_xi[O, C] += Z_xi[O, P] V_xi^T[P, C].
                            matmul(
                                o,
                                c,
                                p,
                                &mut sums[xi * o * c..(xi + 1) * o * c],
                                false,
                                true,
                                Operand::rows(&z[xi * o * p..], p),
                                Operand::transposed(&v[xi * c * p..], p),
                            );
                        }
                    }
                }
            });
            (sums, db)
        })
        .collect();
    let mut sums = vec![0.0f32; XI * o * c];
    let mut db = vec![0.0f32; o];
    for (ps, pb) in &partial {
        sums.iter_mut().zip(ps).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (transform_weight_grad(o * c, &sums), db)
}

/// `dW = G^T S G` for every (o, c): `[O, C, 3, 3]` from the 16 `[O, C]` sums.
fn transform_weight_grad(pairs: usize, sums: &[f32]) -> Vec<f32> {
    let mut dw = vec![0.0f32; pairs * 9];
    for (oc, out) in dw.chunks_exact_mut(9).enumerate() {
        let s = |k: usize, m: usize| sums[(k * 4 + m) * pairs + oc];
        // G^T S (3x4), column by column: s0 + (s1 + s2) / 2, (s1 - s2) / 2, (s1 + s2) / 2 + s3.
        let columns: [[f32; 3]; 4] = std::array::from_fn(|m| {
            let (s0, s1, s2, s3) = (s(0, m), s(1, m), s(2, m), s(3, m));
            [s0 + 0.5 * (s1 + s2), 0.5 * (s1 - s2), 0.5 * (s1 + s2) + s3]
        });
        // (G^T S) G: the same combination along each row.
        for (r, row) in out.chunks_exact_mut(3).enumerate() {
            let [t0, t1, t2, t3] = columns.map(|column| column[r]);
            row[0] = t0 + 0.5 * (t1 + t2);
            row[1] = 0.5 * (t1 - t2);
            row[2] = 0.5 * (t1 + t2) + t3;
        }
    }
    dw
}
