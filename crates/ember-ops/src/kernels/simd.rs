//! Element-wise maths written so that LLVM vectorises it, compiled twice: for the baseline
//! target and for AVX2+FMA, chosen once at run time.
//!
//! Burn-flex evaluates `exp` with libm's scalar `expf`, one element at a time, and that was 7 %
//! of a training step's CPU time (scripts/bench/NOTES.md). Here `exp` is a branch-free
//! polynomial (Cephes' `expf`, relative error < 2e-7 on the clamped range) that the loops around
//! it vectorise.

/// `exp(x)` for f32, branch-free; inputs are clamped to [-87, 88] so that 2^n stays a normal
/// float (sigmoid and SiLU only need the clamped range: beyond it their results are exact to f32).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer without a rounding
    // instruction (SSE2 has none).
    const ROUND: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    // The integer n sits in the low mantissa bits of `shifted`; reading it from there keeps
    // the loop vectorised (an `as i32` cast saturates and checks for NaN lane by lane).
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
    e * scale
}

/// `1 / (1 + exp(-x))`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Independent accumulators per reduction: float addition is not associative, so LLVM keeps a
/// plain `sum += x` loop scalar; eight partial sums let it use one vector register.
pub const LANES: usize = 8;

/// Sum of `values`, in [`LANES`] partial sums (vectorised; the order is fixed, so the result is
/// reproducible).
#[inline(always)]
pub fn sum(values: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Sum of `(v - center)^2` over `values`, in [`LANES`] partial sums.
#[inline(always)]
pub fn sum_squared_deviation(values: &[f32], center: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += (v - center) * (v - center);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|&v| (v - center) * (v - center))
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Defines `fn $name(args)` that runs `$body` compiled for AVX2+FMA when the CPU has them
/// and for the baseline target otherwise. The body must be plain loops over slices.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if $crate::kernels::simd::has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Whether the CPU has AVX2 and FMA (detected once).
#[cfg(target_arch = "x86_64")]
pub fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let relative = (exp(x) - x.exp()).abs() / x.exp();
            worst = worst.max(relative);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
    }

    #[test]
    fn sigmoid_saturates_cleanly() {
        assert_eq!(sigmoid(200.0), 1.0);
        assert!(sigmoid(-200.0) >= 0.0 && sigmoid(-200.0) < 1e-37);
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-7);
        assert!(!sigmoid(f32::MAX).is_nan() && !sigmoid(f32::MIN).is_nan());
    }
}
