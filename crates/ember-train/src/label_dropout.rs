//! Classifier-free label dropout: each label is replaced by the null class with probability
//! `p_uncond`, so one network learns both the conditional and the unconditional model.

use ember_model::rng::Rng;

/// Which of `n` rows use the null class: each with probability `p_uncond` (one uniform draw
/// per row, drawn even when `p_uncond` is 0 so the stream's use does not depend on it).
pub fn null_mask(n: usize, p_uncond: f64, rng: &mut Rng) -> Vec<bool> {
    (0..n).map(|_| rng.uniform() < p_uncond).collect()
}

/// Replaces exactly the rows where `mask` is true by `null_class`.
pub fn apply_mask(labels: &[usize], mask: &[bool], null_class: usize) -> Vec<usize> {
    assert_eq!(labels.len(), mask.len(), "one mask entry per label");
    labels
        .iter()
        .zip(mask)
        .map(|(&l, &drop)| if drop { null_class } else { l })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_mask_uses_the_null_row_exactly_where_it_says() {
        let labels = [0, 1, 2, 3, 4];
        let out = apply_mask(&labels, &[false, true, false, false, true], 10);
        assert_eq!(out, vec![0, 10, 2, 3, 10]);
    }

    #[test]
    fn zero_probability_never_uses_the_null_row() {
        let labels: Vec<usize> = (0..10_000).map(|i| i % 10).collect();
        let out = apply_mask(&labels, &null_mask(labels.len(), 0.0, &mut Rng::new(1)), 10);
        assert_eq!(out, labels);
    }

    #[test]
    fn probability_one_always_uses_it() {
        let out = apply_mask(&[1, 2, 3], &null_mask(3, 1.0, &mut Rng::new(1)), 10);
        assert_eq!(out, vec![10, 10, 10]);
    }

    #[test]
    fn dropout_rate_matches_p_uncond() {
        let labels = vec![3; 100_000];
        let out = apply_mask(&labels, &null_mask(labels.len(), 0.1, &mut Rng::new(2)), 10);
        let rate = out.iter().filter(|&&l| l == 10).count() as f64 / labels.len() as f64;
        assert!((rate - 0.1).abs() < 0.005, "{rate}");
    }
}
