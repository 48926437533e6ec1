//! Times the convolution kernels alone at the default MNIST UNet's layer shapes (batch 128),
//! printing GFLOP/s per product, to see which shapes the kernels run badly.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p ember-ops --example conv_bench [repeats] [SHAPES]`
//!
//! `SHAPES` is a file with one layer per line, `c_in c_out k stride padding h w count` (as
//! written by `scripts/bench/conv_layers.py` from the twin of any config); the table then has
//! those layers and a total weighted by `count`, comparable with the script's PyTorch total.

use ember_ops::kernels::conv::{self, ConvShape};
use std::time::Instant;

fn values(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .map_or(5, |s| s.parse().expect("repeats"));
    let base = ConvShape {
        batch: 128,
        c_in: 16,
        h: 28,
        w: 28,
        c_out: 16,
        kh: 3,
        kw: 3,
        stride: 1,
        padding: 1,
    };
    let shapes = match std::env::args().nth(2) {
        Some(path) => read_shapes(&path, base),
        None => default_shapes(base),
    };
    println!(
        "| layer | count | forward ms | GFLOP/s | backward ms | GFLOP/s | of which dW + db ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let (mut total_forward, mut total_backward) = (0.0, 0.0);
    for (name, s, count) in shapes {
        let x = values(s.batch * s.c_in * s.h * s.w);
        let w = values(s.c_out * s.c_in * s.kh * s.kw);
        let b = values(s.c_out);
        let dy = values(s.batch * s.c_out * s.h_out() * s.w_out());
        let macs = (s.batch * s.c_out * s.c_in * s.kh * s.kw * s.h_out() * s.w_out()) as f64;
        let mut forward = Vec::new();
        let mut backward = Vec::new();
        let mut weight_only = Vec::new();
        for _ in 0..repeats + 1 {
            let start = Instant::now();
            std::hint::black_box(conv::forward(&s, &x, &w, &b));
            forward.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            std::hint::black_box(conv::backward(&s, &x, &w, &dy, true));
            backward.push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            std::hint::black_box(conv::backward(&s, &x, &w, &dy, false));
            weight_only.push(start.elapsed().as_secs_f64());
        }
        let (f, bw) = (
            median(forward[1..].to_vec()),
            median(backward[1..].to_vec()),
        );
        total_forward += f * count as f64;
        total_backward += bw * count as f64;
        println!(
            "| {name} | {count} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} |",
            f * 1e3,
            2.0 * macs / f / 1e9,
            bw * 1e3,
            4.0 * macs / bw / 1e9,
            median(weight_only[1..].to_vec()) * 1e3
        );
    }
    println!(
        "total (weighted by count): forward {:.1} ms, backward {:.1} ms",
        total_forward * 1e3,
        total_backward * 1e3
    );
}

/// Reads `c_in c_out k stride padding h w count` lines (batch from `base`).
fn read_shapes(path: &str, base: ConvShape) -> Vec<(String, ConvShape, usize)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let v: Vec<usize> = line
                .split_whitespace()
                .map(|f| {
                    f.parse()
                        .unwrap_or_else(|_| panic!("{path}: bad field in {line:?}"))
                })
                .collect();
            let [c_in, c_out, k, stride, padding, h, w, count] = v[..] else {
                panic!("{path}: expected 8 fields in {line:?}");
            };
            let s = ConvShape {
                c_in,
                c_out,
                kh: k,
                kw: k,
                stride,
                padding,
                h,
                w,
                ..base
            };
            (format!("{k}x{k} {c_in}->{c_out} /{stride} @{h}"), s, count)
        })
        .collect()
}

fn default_shapes(base: ConvShape) -> Vec<(String, ConvShape, usize)> {
    let shapes = [
        ("3x3 16->16 @28", base),
        (
            "3x3 32->32 @14",
            ConvShape {
                c_in: 32,
                c_out: 32,
                h: 14,
                w: 14,
                ..base
            },
        ),
        (
            "3x3 32->32 @7",
            ConvShape {
                c_in: 32,
                c_out: 32,
                h: 7,
                w: 7,
                ..base
            },
        ),
        ("3x3 16->16 /2 @28", ConvShape { stride: 2, ..base }),
        (
            "1x1 32->96 @7",
            ConvShape {
                c_in: 32,
                c_out: 96,
                h: 7,
                w: 7,
                kh: 1,
                kw: 1,
                padding: 0,
                ..base
            },
        ),
    ];
    shapes
        .into_iter()
        .map(|(n, s)| (n.to_string(), s, 1))
        .collect()
}
