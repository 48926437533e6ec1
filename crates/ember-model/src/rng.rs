//! The host-side random streams behind every draw Ember makes (timesteps, diffusion noise, label
//! dropout, data order, flips, sampler noise).
//!
//! Backend RNGs are global and their state cannot be saved, so Ember draws on the host from a
//! stream that is a pure function of `(seed, stream, index)`: the same step always sees the same
//! numbers, whichever thread runs it and however often the run was stopped and resumed.
//!
//! The generator is ChaCha8 (`rand`'s `ChaCha8Rng`, from the `chacha20` crate: the successor of
//! `rand_chacha`). ChaCha is counter-based: the key is the run seed and each `(stream, index)`
//! pair selects one of its 2^64 independent 64-bit stream ids, so no two pairs ever overlap
//! and none needs the state of another. Normals come from `rand_distr`'s ziggurat
//! `StandardNormal`, permutations from `rand`'s Fisher-Yates `shuffle`, bounded integers from
//! its unbiased `random_range`.

use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use rand::{Rng as _, RngExt as _, SeedableRng};
use rand_distr::StandardNormal;

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
    /// Draws of a generator made by [`Rng::new`] (tests, benchmarks): stream id 0.
    Plain = 0,
}

/// Bits of the ChaCha stream id that hold the index; the stream kind sits above them.
const INDEX_BITS: u32 = 56;

/// The ChaCha stream id of `(stream, index)`. Indices are steps, epochs, classes or draw
/// counters; 2^56 of each is beyond any run, so the mapping is one-to-one in practice, and an
/// index that would spill into the kind's bits is refused rather than aliased.
fn stream_id(stream: Stream, index: u64) -> u64 {
    assert!(
        index < 1 << INDEX_BITS,
        "random stream index {index} out of range"
    );
    ((stream as u64) << INDEX_BITS) | index
}

/// Derives the seed of `(stream, index)` under a run seed, e.g. for a nested stream (the
/// initial noise of sample `j` of class `c`) or a library that takes a `u64` seed.
pub fn derive_seed(seed: u64, stream: Stream, index: u64) -> u64 {
    Rng::for_stream(seed, stream, index).next_u64()
}

/// One stream of draws.
#[derive(Debug)]
pub struct Rng {
    inner: ChaCha8Rng,
}

impl Rng {
    /// A generator for tests and benchmarks: stream [`Stream::Plain`] under `seed`.
    pub fn new(seed: u64) -> Self {
        Self::for_stream(seed, Stream::Plain, 0)
    }

    /// The generator of `(stream, index)` under `seed`.
    pub fn for_stream(seed: u64, stream: Stream, index: u64) -> Self {
        let mut inner = ChaCha8Rng::seed_from_u64(seed);
        inner.set_stream(stream_id(stream, index));
        Self { inner }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.inner.random::<f64>()
    }

    /// Uniform integer in `0..n` (n > 0), unbiased.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.inner.random_range(0..n)
    }

    /// A uniformly random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut self.inner);
        order
    }

    /// `n` fair coin flips.
    pub fn coins(&mut self, n: usize) -> Vec<bool> {
        (0..n).map(|_| self.inner.random::<bool>()).collect()
    }

    /// `n` standard normal samples.
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (&mut self.inner)
            .sample_iter(StandardNormal)
            .take(n)
            .collect()
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
        let e = Rng::for_stream(8, Stream::Noise, 3).normals(16);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_ne!(a, e);
    }

    #[test]
    fn a_stream_is_a_function_of_its_coordinates_alone() {
        // Drawing from one stream never moves another: the resume guarantee.
        let mut other = Rng::for_stream(7, Stream::Noise, 2);
        let _ = other.normals(1000);
        let fresh = Rng::for_stream(7, Stream::Noise, 3).normals(8);
        assert_eq!(fresh, Rng::for_stream(7, Stream::Noise, 3).normals(8));
        assert_ne!(
            derive_seed(1, Stream::Init, 0),
            derive_seed(1, Stream::Init, 1)
        );
        assert_eq!(
            derive_seed(1, Stream::Init, 0),
            derive_seed(1, Stream::Init, 0)
        );
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

    #[test]
    #[should_panic(expected = "out of range")]
    fn an_index_beyond_the_stream_bits_is_refused() {
        Rng::for_stream(0, Stream::Noise, 1 << 56);
    }
}
