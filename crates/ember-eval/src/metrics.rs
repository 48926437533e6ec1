//! Sample-quality metrics on feature vectors (all in `f64`): Gaussian feature statistics and the
//! Fréchet distance between them, precision and recall with k-nearest-neighbour manifolds, and
//! an intra-class diversity figure.
//!
//! The features are whatever a [`crate::FeatureExtractor`] produces; `ember eval` uses the
//! penultimate layer of the domain classifier (see [`crate::classifier`]).

use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// The `k` of Kynkäänniemi et al. (2019): each point's manifold radius is the distance to its
/// `k`-th nearest neighbour (the paper's default, `k = 3`).
pub const DEFAULT_K: usize = 3;

/// `n` feature vectors of dimension `dim`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    dim: usize,
    rows: Vec<f64>,
}

impl FeatureSet {
    /// # Panics
    /// If `rows.len()` is not a multiple of `dim` (or `dim` is 0).
    pub fn new(dim: usize, rows: Vec<f64>) -> Self {
        assert!(dim > 0, "feature dimension must be positive");
        assert!(
            rows.len().is_multiple_of(dim),
            "{} values do not make rows of {dim}",
            rows.len()
        );
        Self { dim, rows }
    }

    /// From `f32` values, as a backend tensor returns them.
    pub fn from_f32(dim: usize, rows: &[f32]) -> Self {
        Self::new(dim, rows.iter().map(|&v| v as f64).collect())
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.rows.len() / self.dim
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.rows[i * self.dim..(i + 1) * self.dim]
    }

    /// The rows whose index `keep` accepts, in order.
    pub fn select(&self, mut keep: impl FnMut(usize) -> bool) -> Self {
        let rows = (0..self.len())
            .filter(|&i| keep(i))
            .flat_map(|i| self.row(i).iter().copied())
            .collect();
        Self::new(self.dim, rows)
    }

    /// Appends the rows of `other` (same dimension).
    pub fn extend(&mut self, other: &FeatureSet) {
        assert_eq!(self.dim, other.dim, "feature dimensions differ");
        self.rows.extend_from_slice(&other.rows);
    }

    fn matrix(&self) -> DMatrix<f64> {
        DMatrix::from_row_slice(self.len(), self.dim, &self.rows)
    }
}

/// Mean and covariance of a feature set: the Gaussian the Fréchet distance compares.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianStats {
    pub mean: DVector<f64>,
    /// Unbiased (divided by `n - 1`), as `numpy.cov` and pytorch-fid compute it.
    pub cov: DMatrix<f64>,
}

impl GaussianStats {
    /// Mean and unbiased covariance of at least two vectors.
    ///
    /// # Panics
    /// With fewer than two rows (a covariance needs two).
    pub fn of(set: &FeatureSet) -> Self {
        let n = set.len();
        assert!(
            n >= 2,
            "feature statistics need at least 2 vectors, got {n}"
        );
        let x = set.matrix(); // [n, d]
        let mean = x.row_mean().transpose(); // [d]
        let centred = DMatrix::from_fn(n, set.dim, |i, j| x[(i, j)] - mean[j]);
        let cov = centred.tr_mul(&centred) / (n as f64 - 1.0); // [d, d]
        Self { mean, cov }
    }
}

/// Symmetric positive semi-definite square root through the eigendecomposition
/// `S = V diag(l) V^T`, with eigenvalues below zero (rounding) clamped to zero.
fn sqrt_psd(s: &DMatrix<f64>) -> DMatrix<f64> {
    let eig = SymmetricEigen::new(symmetrised(s));
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

fn symmetrised(m: &DMatrix<f64>) -> DMatrix<f64> {
    (m + m.transpose()) * 0.5
}

/// Fréchet distance between two Gaussians (Dowson & Landau 1982; the "FD" of FID):
///
/// ```text
/// d² = |mu1 - mu2|² + Tr(S1) + Tr(S2) - 2 Tr sqrt(S1^½ S2 S1^½)
/// ```
///
/// `Tr sqrt(S1^½ S2 S1^½)` is the sum of the square roots of the eigenvalues of that symmetric
/// matrix (negative eigenvalues, which only rounding produces, count as zero). The result is the
/// squared distance, as FID reports it, clamped at zero against rounding.
pub fn frechet_distance(a: &GaussianStats, b: &GaussianStats) -> f64 {
    assert_eq!(a.mean.len(), b.mean.len(), "feature dimensions differ");
    let diff = (&a.mean - &b.mean).norm_squared();
    let root_a = sqrt_psd(&a.cov);
    let inner = symmetrised(&(&root_a * &b.cov * &root_a));
    let tr_covmean: f64 = SymmetricEigen::new(inner)
        .eigenvalues
        .iter()
        .map(|l| l.max(0.0).sqrt())
        .sum();
    (diff + a.cov.trace() + b.cov.trace() - 2.0 * tr_covmean).max(0.0)
}

/// Squared Euclidean distances between every row of `a` and every row of `b`, in blocks of
/// `a`'s rows (so memory stays at `block * b.len()` values); `visit(i, row)` receives row `i` of
/// the distance matrix.
fn for_each_distance_row(a: &FeatureSet, b: &FeatureSet, mut visit: impl FnMut(usize, &[f64])) {
    assert_eq!(a.dim, b.dim, "feature dimensions differ");
    const BLOCK: usize = 256;
    let bm = b.matrix(); // [nb, d]
    let b_norms: Vec<f64> = (0..b.len())
        .map(|j| b.row(j).iter().map(|v| v * v).sum())
        .collect();
    let mut row = vec![0.0; b.len()];
    for start in (0..a.len()).step_by(BLOCK) {
        let end = (start + BLOCK).min(a.len());
        let block = FeatureSet::new(a.dim, a.rows[start * a.dim..end * a.dim].to_vec());
        let dots = block.matrix() * bm.transpose(); // [block, nb]
        for i in 0..end - start {
            let a_norm: f64 = block.row(i).iter().map(|v| v * v).sum();
            for (j, d) in row.iter_mut().enumerate() {
                *d = (a_norm + b_norms[j] - 2.0 * dots[(i, j)]).max(0.0);
            }
            visit(start + i, &row);
        }
    }
}

/// Each vector's distance to its `k`-th nearest neighbour within the set (itself excluded):
/// the radius of its hypersphere in Kynkäänniemi et al.'s manifold estimate.
///
/// # Panics
/// If the set has `k` or fewer vectors.
pub fn knn_radii(set: &FeatureSet, k: usize) -> Vec<f64> {
    assert!(k >= 1, "k must be at least 1");
    assert!(
        set.len() > k,
        "k-nearest-neighbour radii with k = {k} need more than {k} vectors, got {}",
        set.len()
    );
    let mut radii = vec![0.0; set.len()];
    let mut scratch = Vec::with_capacity(set.len());
    for_each_distance_row(set, set, |i, row| {
        scratch.clear();
        scratch.extend(
            row.iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &d)| d),
        );
        let (_, kth, _) = scratch.select_nth_unstable_by(k - 1, f64::total_cmp);
        radii[i] = kth.sqrt();
    });
    radii
}

/// The fraction of `queries` that fall inside the manifold of `support`: the union of the balls
/// around each support vector with the radius `support_radii` gives it (boundary included).
pub fn manifold_coverage(support: &FeatureSet, support_radii: &[f64], queries: &FeatureSet) -> f64 {
    assert_eq!(support.len(), support_radii.len());
    if queries.is_empty() {
        return 0.0;
    }
    let r2: Vec<f64> = support_radii.iter().map(|r| r * r).collect();
    let mut inside = 0usize;
    for_each_distance_row(queries, support, |_, row| {
        // A tiny relative slack so that a query equal to a support vector's k-th neighbour
        // counts as inside despite the rounding of |a|² + |b|² - 2 a·b.
        if row
            .iter()
            .zip(&r2)
            .any(|(&d, &r)| d <= r + 1e-9 * (1.0 + r))
        {
            inside += 1;
        }
    });
    inside as f64 / queries.len() as f64
}

/// Improved precision and recall (Kynkäänniemi et al. 2019).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecisionRecall {
    /// Fraction of generated vectors inside the real manifold: are the samples realistic?
    pub precision: f64,
    /// Fraction of real vectors inside the generated manifold: do the samples cover the data?
    pub recall: f64,
}

/// Precision and recall of `fake` against `real`, with manifold radii from the `k`-th nearest
/// neighbour. `real_radii` may be passed in when the same real set is scored many times.
pub fn precision_recall(
    real: &FeatureSet,
    real_radii: Option<&[f64]>,
    fake: &FeatureSet,
    k: usize,
) -> PrecisionRecall {
    let computed;
    let real_radii = match real_radii {
        Some(r) => r,
        None => {
            computed = knn_radii(real, k);
            &computed
        }
    };
    let fake_radii = knn_radii(fake, k);
    PrecisionRecall {
        precision: manifold_coverage(real, real_radii, fake),
        recall: manifold_coverage(fake, &fake_radii, real),
    }
}

/// Intra-class diversity: for each class, the mean Euclidean distance between all pairs of
/// feature vectors of that class; then the mean of those over the classes that have at least
/// two vectors. Higher means more varied samples within a class; guidance typically lowers it.
/// `labels[i]` is the class of row `i` (for samples: the requested class; for real images: the
/// true label), so the same figure computed on real data is the reference.
///
/// Returns `NaN` when no class has two vectors.
pub fn intra_class_diversity(set: &FeatureSet, labels: &[usize]) -> f64 {
    assert_eq!(set.len(), labels.len(), "one label per feature vector");
    let mut classes: Vec<usize> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut per_class = Vec::new();
    for c in classes {
        let members = set.select(|i| labels[i] == c);
        let n = members.len();
        if n < 2 {
            continue;
        }
        let mut sum = 0.0;
        for_each_distance_row(&members, &members, |i, row| {
            sum += row[i + 1..].iter().map(|d| d.sqrt()).sum::<f64>();
        });
        per_class.push(sum / (n * (n - 1) / 2) as f64);
    }
    if per_class.is_empty() {
        f64::NAN
    } else {
        per_class.iter().sum::<f64>() / per_class.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_model::rng::Rng;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    fn gaussian_set(n: usize, dim: usize, seed: u64) -> FeatureSet {
        let v = Rng::new(seed).normals(n * dim);
        FeatureSet::from_f32(dim, &v)
    }

    fn stats(mean: &[f64], cov: &[f64]) -> GaussianStats {
        let d = mean.len();
        GaussianStats {
            mean: DVector::from_row_slice(mean),
            cov: DMatrix::from_row_slice(d, d, cov),
        }
    }

    #[test]
    fn stats_match_hand_computed_mean_and_unbiased_covariance() {
        // Rows (1, 2), (3, 2), (5, 8): mean (3, 4); deviations (-2,-2), (0,-2), (2,4).
        let s = GaussianStats::of(&FeatureSet::new(2, vec![1., 2., 3., 2., 5., 8.]));
        assert_eq!(s.mean.as_slice(), &[3.0, 4.0]);
        // cov = sum(dev dev^T) / 2 = [[8, 12], [12, 24]] / 2
        assert_eq!(s.cov.as_slice(), &[4.0, 6.0, 6.0, 12.0]);
    }

    #[test]
    fn frechet_distance_of_identical_sets_is_zero() {
        let set = gaussian_set(200, 8, 1);
        let s = GaussianStats::of(&set);
        let d = frechet_distance(&s, &s);
        assert!(d.abs() < 1e-9, "{d}");
    }

    #[test]
    fn frechet_distance_of_a_shifted_set_is_the_squared_shift() {
        // Shifting every vector by delta keeps the covariance, so d² = |delta|² exactly.
        let set = gaussian_set(300, 6, 2);
        let delta = [0.5, -1.0, 2.0, 0.0, 0.25, -0.75];
        let shifted = FeatureSet::new(
            6,
            (0..set.len())
                .flat_map(|i| {
                    set.row(i)
                        .iter()
                        .zip(&delta)
                        .map(|(v, d)| v + d)
                        .collect::<Vec<_>>()
                })
                .collect(),
        );
        let d = frechet_distance(&GaussianStats::of(&set), &GaussianStats::of(&shifted));
        let expected: f64 = delta.iter().map(|d| d * d).sum(); // 5.875
        assert!(close(d, expected, 1e-9), "{d} vs {expected}");
    }

    #[test]
    fn frechet_distance_of_diagonal_gaussians_has_the_closed_form() {
        // Diagonal covariances commute: d² = |mu1 - mu2|² + sum (sqrt(a_i) - sqrt(b_i))².
        let a = stats(&[0.0, 1.0, 2.0], &[4.0, 0., 0., 0., 1.0, 0., 0., 0., 9.0]);
        let b = stats(&[1.0, 1.0, 0.0], &[1.0, 0., 0., 0., 1.0, 0., 0., 0., 16.0]);
        // |(−1, 0, 2)|² = 5; (2−1)² + (1−1)² + (3−4)² = 2.
        let d = frechet_distance(&a, &b);
        assert!(close(d, 7.0, 1e-12), "{d}");
        assert!(close(frechet_distance(&b, &a), 7.0, 1e-12));
    }

    #[test]
    fn frechet_distance_of_non_commuting_covariances_has_the_2x2_closed_form() {
        // For 2x2: Tr sqrt(S1^½ S2 S1^½) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)).
        // S1 = [[2,1],[1,2]], S2 = [[1,0],[0,4]]: tr(S1 S2) = 10, det S1 det S2 = 12.
        let a = stats(&[0.0, 0.0], &[2.0, 1.0, 1.0, 2.0]);
        let b = stats(&[0.0, 0.0], &[1.0, 0.0, 0.0, 4.0]);
        let expected = 4.0 + 5.0 - 2.0 * (10.0 + 2.0 * 12f64.sqrt()).sqrt(); // 0.771...
        let d = frechet_distance(&a, &b);
        assert!(close(d, expected, 1e-12), "{d} vs {expected}");
        assert!(close(frechet_distance(&b, &a), expected, 1e-12));
    }

    #[test]
    fn frechet_distance_clamps_rank_deficient_covariances() {
        // Covariances with zero (and, after rounding, slightly negative) eigenvalues.
        let a = stats(&[0.0, 0.0], &[1.0, 1.0, 1.0, 1.0]);
        let d = frechet_distance(&a, &a);
        assert!(d.abs() < 1e-12 && d >= 0.0, "{d}");
    }

    #[test]
    fn precision_and_recall_of_identical_sets_are_one() {
        let set = gaussian_set(50, 4, 3);
        let pr = precision_recall(&set, None, &set, DEFAULT_K);
        assert_eq!(
            pr,
            PrecisionRecall {
                precision: 1.0,
                recall: 1.0
            }
        );
    }

    #[test]
    fn precision_and_recall_match_a_hand_computed_1d_case() {
        // Real {0, 1, 2, 3, 10}, k = 3: radii 3, 2, 1... computed by hand:
        //   0: neighbours 1, 2, 3 -> 3rd is 3;  1: 1, 1, 2 -> 2;  2: 1, 1, 2 -> 2;
        //   3: 1, 2, 3 -> 3;  10: 7, 8, 9 -> 9.
        let real = FeatureSet::new(1, vec![0., 1., 2., 3., 10.]);
        assert_eq!(knn_radii(&real, 3), vec![3.0, 2.0, 2.0, 3.0, 9.0]);
        // Fake {4, 5, 20, 21}: 4 is within 3 of 3 (and within 9 of 10); 5 is within 9 of 10;
        // 20 and 21 are 10 and 11 from 10 -> outside. Precision 2/4.
        // Fake radii (k = 3): 4: 1, 16, 17 -> 17;  5: 1, 15, 16 -> 16;  20: 1, 15, 16 -> 16;
        //   21: 1, 16, 17 -> 17. Every real point is within 17 of 4 (|10 - 4| = 6): recall 1.
        let fake = FeatureSet::new(1, vec![4., 5., 20., 21.]);
        assert_eq!(knn_radii(&fake, 3), vec![17.0, 16.0, 16.0, 17.0]);
        let pr = precision_recall(&real, None, &fake, 3);
        assert_eq!(pr.precision, 0.5);
        assert_eq!(pr.recall, 1.0);
        // With k = 1 the manifolds shrink: real radii 1, 1, 1, 1, 7; fake radii 1, 1, 1, 1.
        // Precision: 4 (|4-3| = 1 <= 1) and 5 (|5-10| = 5 <= 7) inside, 20 and 21 outside: 1/2.
        // Recall: 3 (within 1 of 4) only: 1/5.
        let pr = precision_recall(&real, None, &fake, 1);
        assert_eq!(pr.precision, 0.5);
        assert_eq!(pr.recall, 0.2);
    }

    #[test]
    fn precision_drops_for_samples_off_the_data_and_recall_for_collapsed_samples() {
        let real = gaussian_set(200, 4, 4);
        // Far-away fakes: none realistic.
        let far = FeatureSet::new(4, real.rows.iter().map(|v| v + 50.0).collect());
        assert_eq!(precision_recall(&real, None, &far, 3).precision, 0.0);
        // Mode collapse: all fakes near one real point -> precise, but low recall.
        let collapsed = FeatureSet::new(
            4,
            (0..50)
                .flat_map(|i| real.row(0).iter().map(move |v| v + 1e-3 * i as f64))
                .collect(),
        );
        let pr = precision_recall(&real, None, &collapsed, 3);
        assert_eq!(pr.precision, 1.0);
        assert!(pr.recall < 0.1, "{pr:?}");
    }

    #[test]
    fn intra_class_diversity_is_the_mean_of_per_class_mean_pairwise_distances() {
        // Class 0: (0,0), (3,4), (0,4): pairwise 5, 4, 3 -> mean 4.
        // Class 1: (1,1), (1,3): pairwise 2 -> mean 2. Class 2: one vector, skipped.
        let set = FeatureSet::new(2, vec![0., 0., 1., 1., 3., 4., 1., 3., 0., 4., 9., 9.]);
        let labels = [0, 1, 0, 1, 0, 2];
        let d = intra_class_diversity(&set, &labels);
        assert!(close(d, 3.0, 1e-12), "{d}");
        assert!(intra_class_diversity(&FeatureSet::new(1, vec![1.0]), &[0]).is_nan());
    }
}
