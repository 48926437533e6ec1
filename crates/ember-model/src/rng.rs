//! A small counter-based random number generator for every host-side draw Ember makes
//! (timesteps, diffusion noise, label dropout, sampler noise).
//!
//! Backend RNGs are global and their state cannot be saved, so Ember draws on the host from a
//! stream that is a pure function of `(seed, stream, index)`: the same step always sees the same
//! numbers, whichever thread runs it and however often the run was stopped and resumed.

/// Independent streams, so that e.g. changing the batch size does not change label dropout of
/// other steps in surprising ways and so streams never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    Timesteps = 1,
    Noise = 2,
    LabelDropout = 3,
    DropoutLayers = 4,
    Shuffle = 5,
    SamplerInit = 6,
    SamplerStep = 7,
    Init = 8,
    Flip = 9,
}

/// SplitMix64's finaliser: a bijective mix with good avalanche, used to derive seeds.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Derives the seed of `(stream, index)` under a run seed, e.g. the noise of step 1234.
pub fn derive_seed(seed: u64, stream: Stream, index: u64) -> u64 {
    mix(mix(mix(seed) ^ (stream as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) ^ index)
}

/// SplitMix64 generator with Box-Muller normals.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The generator of `(stream, index)` under `seed`.
    pub fn for_stream(seed: u64, stream: Stream, index: u64) -> Self {
        Self::new(derive_seed(seed, stream, index))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (n > 0), by rejection so it is unbiased.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// A uniformly random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        order
    }

    /// `n` fair coin flips.
    pub fn coins(&mut self, n: usize) -> Vec<bool> {
        (0..n).map(|_| self.next_u64() >> 63 == 1).collect()
    }

    /// `n` standard normal samples (Box-Muller, both outputs used).
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            // 1 - u is in (0, 1], so the log is finite.
            let u1 = 1.0 - self.uniform();
            let u2 = self.uniform();
            let r = (-2.0 * u1.ln()).sqrt();
            let theta = std::f64::consts::TAU * u2;
            out.push((r * theta.cos()) as f32);
            out.push((r * theta.sin()) as f32);
        }
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a = Rng::for_stream(7, Stream::Noise, 3).normals(16);
        let b = Rng::for_stream(7, Stream::Noise, 3).normals(16);
        let c = Rng::for_stream(7, Stream::Noise, 4).normals(16);
        let d = Rng::for_stream(7, Stream::Timesteps, 3).normals(16);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn normals_have_unit_moments() {
        let x = Rng::new(1).normals(200_000);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn permutations_are_complete_and_seeded() {
        let p = Rng::new(5).permutation(100);
        let mut sorted = p.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(p, Rng::new(5).permutation(100));
        assert_ne!(p, Rng::new(6).permutation(100));
        let heads = Rng::new(1).coins(10_000).iter().filter(|&&c| c).count();
        assert!((4_800..5_200).contains(&heads), "{heads}");
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(3);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = rng.below(10) as usize;
            seen[v] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
