//! A simple baseline detector: logistic regression on per-tensor weight statistics.
//!
//! A model is a list of named tensors, `&[(String, Vec<f32>)]` (name, flat values), so this
//! module does not depend on any particular architecture. For every tensor, in order, the
//! baseline computes [`STATS_PER_TENSOR`] statistics (see [`tensor_features`]) and
//! concatenates them; the features are standardised with the training set's mean and
//! standard deviation and fed to an L2-regularised logistic regression fitted by Newton's
//! method (deterministic; the feature count is small).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A model as its named tensors with flat values, in a fixed order.
pub type NamedTensors = [(String, Vec<f32>)];

/// Number of features computed per tensor.
pub const STATS_PER_TENSOR: usize = 11;

/// Names of the per-tensor features, in the order [`tensor_features`] returns them.
pub const STAT_NAMES: [&str; STATS_PER_TENSOR] = [
    "mean", "std", "min", "max", "mean_abs", "q05", "q25", "q75", "q95", "kurtosis", "l2",
];

/// Errors from fitting or applying the baseline.
#[derive(Debug, Error, PartialEq)]
pub enum BaselineError {
    /// The training set holds no model.
    #[error("the training set is empty")]
    EmptyTrainingSet,
    /// `labels` does not have one entry per model.
    #[error("{models} models but {labels} labels")]
    LabelCount {
        /// Number of models.
        models: usize,
        /// Number of labels.
        labels: usize,
    },
    /// All training labels are equal.
    #[error("the training set needs both clean and backdoored models")]
    SingleClass,
    /// A model has a different number of tensors than the reference layout.
    #[error("model {model}: {found} tensors, expected {expected}")]
    TensorCount {
        /// Index of the offending model (0 when scoring a single model).
        model: usize,
        /// Tensors in the reference layout.
        expected: usize,
        /// Tensors in the model.
        found: usize,
    },
    /// A tensor's name differs from the reference layout's at the same position.
    #[error("model {model}: tensor {index} is named {found:?}, expected {expected:?}")]
    TensorName {
        /// Index of the offending model.
        model: usize,
        /// Position of the tensor.
        index: usize,
        /// Name in the reference layout.
        expected: String,
        /// Name in the model.
        found: String,
    },
    /// A tensor's length differs from the reference layout's.
    #[error("model {model}: tensor {name:?} has {found} values, expected {expected}")]
    TensorLength {
        /// Index of the offending model.
        model: usize,
        /// Name of the tensor.
        name: String,
        /// Length in the reference layout.
        expected: usize,
        /// Length in the model.
        found: usize,
    },
    /// A tensor holds a NaN or infinite value.
    #[error("model {model}: tensor {name:?} holds a non-finite value")]
    NonFinite {
        /// Index of the offending model.
        model: usize,
        /// Name of the tensor.
        name: String,
    },
    /// A hyper-parameter is out of range.
    #[error("invalid parameter: {0}")]
    InvalidParams(String),
    /// The Newton system could not be solved (should not happen with `l2 > 0`).
    #[error("the Newton system is singular")]
    Singular,
}

/// Hyper-parameters of the logistic regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BaselineParams {
    /// L2 penalty `l2 / 2 * |w|²` on the weights (not the bias), added to the mean log-loss.
    pub l2: f64,
    /// Maximum number of Newton iterations.
    pub max_iter: usize,
    /// Stop when the gradient's largest component falls below this.
    pub tol: f64,
}

impl Default for BaselineParams {
    fn default() -> Self {
        Self {
            l2: 1e-2,
            max_iter: 50,
            tol: 1e-9,
        }
    }
}

impl BaselineParams {
    /// Checks the ranges: `l2` finite and `>= 0`, `max_iter >= 1`, `tol` finite and `>= 0`.
    fn validate(&self) -> Result<(), BaselineError> {
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(BaselineError::InvalidParams(format!("l2 = {}", self.l2)));
        }
        if self.max_iter == 0 {
            return Err(BaselineError::InvalidParams("max_iter = 0".into()));
        }
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return Err(BaselineError::InvalidParams(format!("tol = {}", self.tol)));
        }
        Ok(())
    }
}

/// The statistics of one tensor, in [`STAT_NAMES`] order:
///
/// 1. mean; 2. standard deviation (population, divisor n); 3. min; 4. max;
/// 5. mean absolute value; 6–9. the 0.05, 0.25, 0.75 and 0.95 quantiles (linear
///    interpolation between order statistics, position `q * (n - 1)`, as NumPy's default);
/// 10. excess kurtosis `m4 / m2² - 3` (central moments; 0 when the variance is 0);
/// 11. L2 norm `sqrt(Σ w²)`.
///
/// Computed in f64. An empty tensor gives all zeros. Values are assumed finite.
pub fn tensor_features(values: &[f32]) -> [f64; STATS_PER_TENSOR] {
    if values.is_empty() {
        return [0.0; STATS_PER_TENSOR];
    }
    let mut sorted: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let m2 = sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let m4 = sorted.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n;
    let kurtosis = if m2 > 0.0 { m4 / (m2 * m2) - 3.0 } else { 0.0 };
    let mean_abs = sorted.iter().map(|v| v.abs()).sum::<f64>() / n;
    let l2 = sorted.iter().map(|v| v * v).sum::<f64>().sqrt();
    [
        mean,
        m2.sqrt(),
        sorted[0],
        sorted[sorted.len() - 1],
        mean_abs,
        quantile(&sorted, 0.05),
        quantile(&sorted, 0.25),
        quantile(&sorted, 0.75),
        quantile(&sorted, 0.95),
        kurtosis,
        l2,
    ]
}

/// The `q` quantile of non-empty ascending `sorted`, interpolating linearly.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = pos - lo as f64;
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

/// The tensor layout (names and lengths) a baseline was fitted on.
fn layout_of(model: &NamedTensors) -> Vec<(String, usize)> {
    model.iter().map(|(n, v)| (n.clone(), v.len())).collect()
}

/// Checks `model` (index `index`, for messages) against `layout` and finiteness.
fn check_model(
    layout: &[(String, usize)],
    model: &NamedTensors,
    index: usize,
) -> Result<(), BaselineError> {
    if model.len() != layout.len() {
        return Err(BaselineError::TensorCount {
            model: index,
            expected: layout.len(),
            found: model.len(),
        });
    }
    for (t, ((name, values), (exp_name, exp_len))) in model.iter().zip(layout).enumerate() {
        if name != exp_name {
            return Err(BaselineError::TensorName {
                model: index,
                index: t,
                expected: exp_name.clone(),
                found: name.clone(),
            });
        }
        if values.len() != *exp_len {
            return Err(BaselineError::TensorLength {
                model: index,
                name: name.clone(),
                expected: *exp_len,
                found: values.len(),
            });
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(BaselineError::NonFinite {
                model: index,
                name: name.clone(),
            });
        }
    }
    Ok(())
}

/// The raw (unstandardised) feature vector of a model: per-tensor statistics concatenated
/// in tensor order. Does not check the layout.
pub fn model_features(model: &NamedTensors) -> Vec<f64> {
    model.iter().flat_map(|(_, v)| tensor_features(v)).collect()
}

/// Logistic regression on standardised per-tensor weight statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightStatsBaseline {
    /// Tensor names and lengths every scored model must match.
    layout: Vec<(String, usize)>,
    /// Training-set mean of each raw feature.
    feature_mean: Vec<f64>,
    /// Training-set standard deviation of each raw feature (1 where it was 0).
    feature_scale: Vec<f64>,
    /// Weights on the standardised features.
    weights: Vec<f64>,
    /// Intercept.
    bias: f64,
}

impl WeightStatsBaseline {
    /// Fits the baseline on `train` with `labels` (`true` = backdoored).
    ///
    /// The first model fixes the tensor layout; every model must match it (names and
    /// lengths, in order) and hold only finite values. Fitting minimises the mean log-loss
    /// plus `params.l2 / 2 * |w|²` by Newton's method with step halving, starting from zero;
    /// it is deterministic.
    pub fn fit(
        train: &[Vec<(String, Vec<f32>)>],
        labels: &[bool],
        params: BaselineParams,
    ) -> Result<Self, BaselineError> {
        params.validate()?;
        let first = train.first().ok_or(BaselineError::EmptyTrainingSet)?;
        if labels.len() != train.len() {
            return Err(BaselineError::LabelCount {
                models: train.len(),
                labels: labels.len(),
            });
        }
        if labels.iter().all(|&l| l) || labels.iter().all(|&l| !l) {
            return Err(BaselineError::SingleClass);
        }
        let layout = layout_of(first);
        for (i, m) in train.iter().enumerate() {
            check_model(&layout, m, i)?;
        }
        let raw: Vec<Vec<f64>> = train.par_iter().map(|m| model_features(m)).collect();
        let (feature_mean, feature_scale) = standardisation(&raw);
        let x: Vec<Vec<f64>> = raw
            .iter()
            .map(|r| standardise(r, &feature_mean, &feature_scale))
            .collect();
        let y: Vec<f64> = labels.iter().map(|&l| f64::from(u8::from(l))).collect();
        let theta = newton_logistic(&x, &y, params)?;
        let (bias, weights) = theta
            .split_last()
            .map(|(b, w)| (*b, w.to_vec()))
            .unwrap_or((0.0, Vec::new()));
        Ok(Self {
            layout,
            feature_mean,
            feature_scale,
            weights,
            bias,
        })
    }

    /// P(backdoored) for `model`; an error names the first tensor that does not match the
    /// training layout (or holds a non-finite value).
    pub fn score(&self, model: &NamedTensors) -> Result<f64, BaselineError> {
        check_model(&self.layout, model, 0)?;
        let z = standardise(
            &model_features(model),
            &self.feature_mean,
            &self.feature_scale,
        );
        Ok(sigmoid(dot(&self.weights, &z) + self.bias))
    }

    /// [`score`](Self::score) for many models in parallel; errors carry the model's index.
    pub fn score_all(&self, models: &[Vec<(String, Vec<f32>)>]) -> Result<Vec<f64>, BaselineError> {
        models
            .par_iter()
            .enumerate()
            .map(|(i, m)| {
                check_model(&self.layout, m, i)?;
                let z = standardise(&model_features(m), &self.feature_mean, &self.feature_scale);
                Ok(sigmoid(dot(&self.weights, &z) + self.bias))
            })
            .collect()
    }

    /// Number of features (tensors × [`STATS_PER_TENSOR`]).
    pub fn n_features(&self) -> usize {
        self.weights.len()
    }

    /// Weights on the standardised features, in feature order.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }
}

/// Per-feature mean and population standard deviation of `rows` (non-empty); a zero (or
/// non-finite) deviation becomes 1 so the feature standardises to 0.
pub(crate) fn standardisation(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let d = rows.first().map_or(0, Vec::len);
    let n = rows.len() as f64;
    let mut mean = vec![0.0; d];
    for r in rows {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / n;
        }
    }
    let mut scale = vec![0.0; d];
    for r in rows {
        for ((s, v), m) in scale.iter_mut().zip(r).zip(&mean) {
            *s += (v - m).powi(2) / n;
        }
    }
    for s in &mut scale {
        *s = s.sqrt();
        if !(s.is_finite() && *s > 1e-12) {
            *s = 1.0;
        }
    }
    (mean, scale)
}

/// `(row - mean) / scale`, elementwise.
fn standardise(row: &[f64], mean: &[f64], scale: &[f64]) -> Vec<f64> {
    row.iter()
        .zip(mean)
        .zip(scale)
        .map(|((v, m), s)| (v - m) / s)
        .collect()
}

/// Dot product.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Numerically stable logistic function.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// Linear predictor for `theta = [w..., b]`.
fn predictor(theta: &[f64], row: &[f64]) -> f64 {
    let d = row.len();
    dot(&theta[..d], row) + theta[d]
}

/// Mean log-loss plus the L2 penalty on the weights.
fn objective(x: &[Vec<f64>], y: &[f64], theta: &[f64], l2: f64) -> f64 {
    let d = theta.len() - 1;
    let loss: f64 = x
        .iter()
        .zip(y)
        .map(|(r, &t)| softplus(predictor(theta, r)) - t * predictor(theta, r))
        .sum::<f64>()
        / x.len() as f64;
    loss + 0.5 * l2 * theta[..d].iter().map(|w| w * w).sum::<f64>()
}

/// Gradient and Hessian of [`objective`] at `theta` (bias last; a tiny ridge keeps the
/// Hessian positive definite).
fn grad_hess(x: &[Vec<f64>], y: &[f64], theta: &[f64], l2: f64) -> (Vec<f64>, Vec<Vec<f64>>) {
    let p = theta.len();
    let d = p - 1;
    let n = x.len() as f64;
    let mut g = vec![0.0; p];
    let mut h = vec![vec![0.0; p]; p];
    for (r, &t) in x.iter().zip(y) {
        let mu = sigmoid(predictor(theta, r));
        let w = mu * (1.0 - mu) / n;
        let xi: Vec<f64> = r.iter().copied().chain(std::iter::once(1.0)).collect();
        for ((gj, hj), &xj) in g.iter_mut().zip(&mut h).zip(&xi) {
            *gj += (mu - t) * xj / n;
            for (hjk, &xk) in hj.iter_mut().zip(&xi) {
                *hjk += w * xj * xk;
            }
        }
    }
    for (j, (gj, hj)) in g.iter_mut().zip(&mut h).enumerate() {
        if j < d {
            *gj += l2 * theta[j];
            hj[j] += l2;
        }
        hj[j] += 1e-10;
    }
    (g, h)
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` if singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() <= 1e-300 || !a[pivot][col].is_finite() {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col].clone();
        let pivot_b = b[col];
        for (row, b_row) in a.iter_mut().zip(b.iter_mut()).skip(col + 1) {
            let f = row[col] / pivot_row[col];
            for (v, pv) in row.iter_mut().zip(&pivot_row).skip(col) {
                *v -= f * pv;
            }
            *b_row -= f * pivot_b;
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Newton's method with step halving for L2-regularised logistic regression on standardised
/// rows `x` and 0/1 targets `y`. Returns `[w..., b]`.
fn newton_logistic(
    x: &[Vec<f64>],
    y: &[f64],
    params: BaselineParams,
) -> Result<Vec<f64>, BaselineError> {
    let d = x.first().map_or(0, Vec::len);
    let mut theta = vec![0.0; d + 1];
    let mut f = objective(x, y, &theta, params.l2);
    for _ in 0..params.max_iter {
        let (g, h) = grad_hess(x, y, &theta, params.l2);
        if g.iter().all(|v| v.abs() < params.tol) {
            break;
        }
        let step = solve(h, g).ok_or(BaselineError::Singular)?;
        let Some((next, f_next)) = line_search(x, y, &theta, &step, f, params.l2) else {
            break;
        };
        theta = next;
        f = f_next;
    }
    Ok(theta)
}

/// Tries `theta - t * step` for `t = 1, 1/2, ...`; the first that lowers the objective.
fn line_search(
    x: &[Vec<f64>],
    y: &[f64],
    theta: &[f64],
    step: &[f64],
    f: f64,
    l2: f64,
) -> Option<(Vec<f64>, f64)> {
    let mut t = 1.0;
    for _ in 0..30 {
        let cand: Vec<f64> = theta.iter().zip(step).map(|(a, s)| a - t * s).collect();
        let fc = objective(x, y, &cand, l2);
        if fc < f {
            return Some((cand, fc));
        }
        t /= 2.0;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::auroc;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A standard normal draw (Box-Muller).
    fn normal(rng: &mut StdRng) -> f64 {
        let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
        let u2: f64 = rng.gen();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn tensor(rng: &mut StdRng, n: usize, std: f64) -> Vec<f32> {
        (0..n).map(|_| (normal(rng) * std) as f32).collect()
    }

    /// A synthetic model; backdoored ones have a 15% larger std in `fc.weight`.
    fn model(rng: &mut StdRng, backdoored: bool) -> Vec<(String, Vec<f32>)> {
        let fc_std = if backdoored { 0.115 } else { 0.1 };
        vec![
            ("conv.weight".to_string(), tensor(rng, 200, 0.2)),
            ("conv.bias".to_string(), tensor(rng, 8, 0.05)),
            ("fc.weight".to_string(), tensor(rng, 400, fc_std)),
        ]
    }

    type Models = Vec<Vec<(String, Vec<f32>)>>;

    fn dataset(seed: u64, n: usize) -> (Models, Vec<bool>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let labels: Vec<bool> = (0..n).map(|i| i % 2 == 1).collect();
        let models = labels.iter().map(|&l| model(&mut rng, l)).collect();
        (models, labels)
    }

    #[test]
    fn features_of_a_known_tensor() {
        let f = tensor_features(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(f[0], 2.5);
        assert!((f[1] - 1.25f64.sqrt()).abs() < 1e-12);
        assert_eq!((f[2], f[3], f[4]), (1.0, 4.0, 2.5));
        assert!((f[5] - 1.15).abs() < 1e-12);
        assert!((f[6] - 1.75).abs() < 1e-12);
        assert!((f[7] - 3.25).abs() < 1e-12);
        assert!((f[8] - 3.85).abs() < 1e-12);
        // m4 = (2*1.5^4 + 2*0.5^4)/4 = 2.5625; m2² = 1.5625
        assert!((f[9] - (2.5625 / 1.5625 - 3.0)).abs() < 1e-12);
        assert!((f[10] - 30f64.sqrt()).abs() < 1e-12);
        assert_eq!(tensor_features(&[]), [0.0; STATS_PER_TENSOR]);
        assert_eq!(tensor_features(&[3.0; 5])[9], 0.0);
    }

    #[test]
    fn separates_larger_std_held_out() {
        let (train, train_labels) = dataset(1, 120);
        let (test, test_labels) = dataset(2, 120);
        let b = WeightStatsBaseline::fit(&train, &train_labels, BaselineParams::default()).unwrap();
        assert_eq!(b.n_features(), 3 * STATS_PER_TENSOR);
        let scores = b.score_all(&test).unwrap();
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
        let a = auroc(&scores, &test_labels).unwrap();
        assert!(a > 0.9, "held-out AUROC {a}");
        // single scoring agrees with batch scoring; fitting is deterministic
        assert_eq!(b.score(&test[0]).unwrap(), scores[0]);
        let b2 =
            WeightStatsBaseline::fit(&train, &train_labels, BaselineParams::default()).unwrap();
        assert_eq!(b, b2);
    }

    #[test]
    fn mismatched_models_error() {
        let (train, labels) = dataset(3, 10);
        let b = WeightStatsBaseline::fit(&train, &labels, BaselineParams::default()).unwrap();
        let mut renamed = train[0].clone();
        renamed[1].0 = "conv.b".into();
        let err = b.score(&renamed).unwrap_err();
        assert!(err.to_string().contains("conv.b"), "{err}");
        let mut resized = train[0].clone();
        resized[2].1.pop();
        let err = b.score(&resized).unwrap_err();
        assert!(err.to_string().contains("fc.weight"), "{err}");
        let short = train[0][..2].to_vec();
        assert!(matches!(
            b.score(&short),
            Err(BaselineError::TensorCount { .. })
        ));
        let mut nan = train[0].clone();
        nan[0].1[0] = f32::NAN;
        assert!(matches!(
            b.score(&nan),
            Err(BaselineError::NonFinite { .. })
        ));
        // in training, the mismatching model is reported by index
        let mut bad_train = train.clone();
        bad_train[4] = resized;
        assert!(matches!(
            WeightStatsBaseline::fit(&bad_train, &labels, BaselineParams::default()),
            Err(BaselineError::TensorLength { model: 4, .. })
        ));
    }

    #[test]
    fn fit_rejects_bad_input() {
        let (train, labels) = dataset(4, 6);
        let p = BaselineParams::default();
        assert_eq!(
            WeightStatsBaseline::fit(&[], &[], p),
            Err(BaselineError::EmptyTrainingSet)
        );
        assert!(matches!(
            WeightStatsBaseline::fit(&train, &labels[..3], p),
            Err(BaselineError::LabelCount { .. })
        ));
        assert_eq!(
            WeightStatsBaseline::fit(&train, &[true; 6], p),
            Err(BaselineError::SingleClass)
        );
        let bad = BaselineParams { l2: -1.0, ..p };
        assert!(matches!(
            WeightStatsBaseline::fit(&train, &labels, bad),
            Err(BaselineError::InvalidParams(_))
        ));
    }
}
