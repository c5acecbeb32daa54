//! Softmax cross-entropy and accuracy for classification training, computed on the host.
//!
//! The trainer hands over the head's logits `[B, C]` (row-major f32) read back from the
//! executor together with the batch's integer labels; this module returns the mean loss
//! and its gradient with respect to the logits, which the trainer feeds back into the
//! backward pass, and the batch accuracy it logs.

use crate::ir::Tensor;

/// Why a loss or accuracy could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LossError {
    #[error("logits hold {got} values but batch {batch} x classes {classes} needs {expected}")]
    LogitsLength {
        batch: usize,
        classes: usize,
        expected: usize,
        got: usize,
    },
    #[error("logits tensor must be f32 of rank 2 [batch, classes], got {dtype} {shape:?}")]
    LogitsTensor { dtype: String, shape: Vec<usize> },
    #[error("{labels} labels given for a batch of {batch}")]
    LabelCount { labels: usize, batch: usize },
    #[error("label {label} of sample {sample} is out of range for {classes} classes")]
    LabelRange {
        sample: usize,
        label: usize,
        classes: usize,
    },
    #[error("batch and class count must be positive, got batch {batch}, classes {classes}")]
    Empty { batch: usize, classes: usize },
    #[error("label smoothing must lie in [0, 1), got {0}")]
    Smoothing(f32),
    #[error("non-finite logit in sample {sample}, class {class}")]
    NonFiniteLogit { sample: usize, class: usize },
    #[error("non-finite loss")]
    NonFiniteLoss,
}

/// Mean cross-entropy over a batch and its gradient with respect to the logits.
#[derive(Debug, Clone, PartialEq)]
pub struct CrossEntropy {
    pub loss: f32,
    /// d(loss)/d(logits), laid out like the logits: `[batch, classes]` row-major.
    pub grad: Vec<f32>,
}

/// Softmax cross-entropy over `logits` `[batch, classes]` with integer `labels`, averaged
/// over the batch. With `smoothing` ε the target of each row is `(1−ε)·one_hot + ε/C`.
pub fn softmax_cross_entropy(
    logits: &[f32],
    batch: usize,
    classes: usize,
    labels: &[usize],
    smoothing: f32,
) -> Result<CrossEntropy, LossError> {
    check_batch(logits, batch, classes, labels)?;
    if !(0.0..1.0).contains(&smoothing) {
        return Err(LossError::Smoothing(smoothing));
    }
    let eps = f64::from(smoothing);
    let inv_batch = 1.0 / batch as f64;
    let mut total = 0.0f64;
    let mut grad = Vec::with_capacity(logits.len());
    for (row, &label) in logits.chunks_exact(classes).zip(labels) {
        let probs = softmax_f64(row);
        let log_sum = log_sum_exp(row);
        for (class, (&z, p)) in row.iter().zip(probs).enumerate() {
            let target = smoothed_target(class == label, eps, classes);
            // -sum_j t_j log p_j with log p_j = z_j - logsumexp(z)
            total += target * (log_sum - f64::from(z));
            grad.push(((p - target) * inv_batch) as f32);
        }
    }
    let loss = (total * inv_batch) as f32;
    if !loss.is_finite() {
        return Err(LossError::NonFiniteLoss);
    }
    Ok(CrossEntropy { loss, grad })
}

/// [`softmax_cross_entropy`] on an f32 tensor `[batch, classes]`; the gradient comes back
/// as a tensor of the same shape.
pub fn softmax_cross_entropy_tensor(
    logits: &Tensor,
    labels: &[usize],
    smoothing: f32,
) -> Result<(f32, Tensor), LossError> {
    let (values, batch, classes) = logits_of(logits)?;
    let ce = softmax_cross_entropy(values, batch, classes, labels, smoothing)?;
    let grad =
        Tensor::from_f32(vec![batch, classes], ce.grad).map_err(|_| LossError::LogitsTensor {
            dtype: logits.dtype().to_string(),
            shape: logits.shape().to_vec(),
        })?;
    Ok((ce.loss, grad))
}

/// Sums over the rows of a batch that have a label: cross-entropy, rows whose
/// argmax is the label, and how many rows that is.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RowScores {
    pub loss_sum: f64,
    pub correct: usize,
    pub counted: usize,
}

impl RowScores {
    pub fn add(&mut self, other: RowScores) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.counted += other.counted;
    }

    /// The mean loss per counted row (0 when none).
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.counted.max(1) as f64
    }

    /// The fraction of counted rows predicted right (0 when none).
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.counted.max(1) as f64
    }
}

/// Scores `logits` rows of `classes` against `labels`, one per row; a negative
/// label leaves its row out (a language model's prompt or padding position), as
/// the training loss does.
pub fn score_rows(logits: &[f32], classes: usize, labels: &[i64]) -> Result<RowScores, LossError> {
    if classes == 0 || logits.len() != labels.len() * classes {
        return Err(LossError::LogitsLength {
            batch: labels.len(),
            classes,
            expected: labels.len() * classes,
            got: logits.len(),
        });
    }
    let mut s = RowScores::default();
    for (sample, (row, &label)) in logits.chunks_exact(classes).zip(labels).enumerate() {
        let Ok(label) = usize::try_from(label) else {
            continue;
        };
        if label >= classes {
            return Err(LossError::LabelRange {
                sample,
                label,
                classes,
            });
        }
        if let Some(class) = row.iter().position(|z| !z.is_finite()) {
            return Err(LossError::NonFiniteLogit { sample, class });
        }
        s.loss_sum += log_sum_exp(row) - f64::from(row[label]);
        s.correct += usize::from(argmax(row) == label);
        s.counted += 1;
    }
    Ok(s)
}

/// Index of the largest logit of each row; ties go to the lowest index.
pub fn argmax_rows(logits: &[f32], batch: usize, classes: usize) -> Result<Vec<usize>, LossError> {
    check_shape(logits, batch, classes)?;
    Ok(logits.chunks_exact(classes).map(argmax).collect())
}

/// Fraction of rows whose argmax equals the label, in [0, 1].
pub fn accuracy(
    logits: &[f32],
    batch: usize,
    classes: usize,
    labels: &[usize],
) -> Result<f32, LossError> {
    check_batch(logits, batch, classes, labels)?;
    let correct = argmax_rows(logits, batch, classes)?
        .iter()
        .zip(labels)
        .filter(|(pred, label)| pred == label)
        .count();
    Ok(correct as f32 / batch as f32)
}

/// [`accuracy`] on an f32 tensor `[batch, classes]`.
pub fn accuracy_tensor(logits: &Tensor, labels: &[usize]) -> Result<f32, LossError> {
    let (values, batch, classes) = logits_of(logits)?;
    accuracy(values, batch, classes, labels)
}

fn logits_of(logits: &Tensor) -> Result<(&[f32], usize, usize), LossError> {
    let bad = || LossError::LogitsTensor {
        dtype: logits.dtype().to_string(),
        shape: logits.shape().to_vec(),
    };
    match (logits.as_f32(), logits.shape()) {
        (Some(values), &[batch, classes]) => Ok((values, batch, classes)),
        _ => Err(bad()),
    }
}

fn smoothed_target(is_label: bool, eps: f64, classes: usize) -> f64 {
    let uniform = eps / classes as f64;
    if is_label {
        1.0 - eps + uniform
    } else {
        uniform
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &z) in row.iter().enumerate().skip(1) {
        // strict comparison keeps the lowest index on ties
        if z > row[best] {
            best = i;
        }
    }
    best
}

fn row_max(row: &[f32]) -> f64 {
    row.iter()
        .map(|&z| f64::from(z))
        .fold(f64::NEG_INFINITY, f64::max)
}

/// log(sum exp z) with the row maximum taken out first so no exponent overflows.
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row_max(row);
    let sum: f64 = row.iter().map(|&z| (f64::from(z) - max).exp()).sum();
    max + sum.ln()
}

fn softmax_f64(row: &[f32]) -> Vec<f64> {
    let max = row_max(row);
    let exps: Vec<f64> = row.iter().map(|&z| (f64::from(z) - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn check_shape(logits: &[f32], batch: usize, classes: usize) -> Result<(), LossError> {
    if batch == 0 || classes == 0 {
        return Err(LossError::Empty { batch, classes });
    }
    let expected = batch * classes;
    if logits.len() != expected {
        return Err(LossError::LogitsLength {
            batch,
            classes,
            expected,
            got: logits.len(),
        });
    }
    if let Some(pos) = logits.iter().position(|z| !z.is_finite()) {
        return Err(LossError::NonFiniteLogit {
            sample: pos / classes,
            class: pos % classes,
        });
    }
    Ok(())
}

fn check_batch(
    logits: &[f32],
    batch: usize,
    classes: usize,
    labels: &[usize],
) -> Result<(), LossError> {
    check_shape(logits, batch, classes)?;
    if labels.len() != batch {
        return Err(LossError::LabelCount {
            labels: labels.len(),
            batch,
        });
    }
    if let Some((sample, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(LossError::LabelRange {
            sample,
            label,
            classes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn row_scores_leave_out_negative_labels_by_hand() {
        // Row 0: softmax [1/6, 2/6, 3/6], label 2: loss ln 2, right. Row 1 ignored.
        // Row 2: [1, 1, 1], label 1: loss ln 3, argmax 0 (ties go low): wrong.
        let (ln2, ln3) = (2f32.ln(), 3f32.ln());
        let logits = [0.0, ln2, ln3, 9.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let s = score_rows(&logits, 3, &[2, -100, 1]).unwrap();
        assert_eq!((s.correct, s.counted), (1, 2));
        assert!(close(s.loss_sum, 2f64.ln() + 3f64.ln(), 1e-6));
        assert!(close(s.mean_loss(), (2f64.ln() + 3f64.ln()) / 2.0, 1e-6));
        assert_eq!(s.accuracy(), 0.5);
        assert!(score_rows(&logits, 3, &[2, 3, 1]).is_err());
        assert!(score_rows(&logits, 3, &[2, 1]).is_err());
        let none = score_rows(&logits, 3, &[-1, -1, -1]).unwrap();
        assert_eq!((none.counted, none.mean_loss()), (0, 0.0));
    }

    #[test]
    fn value_and_gradient_match_hand_worked_numbers() {
        // row 0: logits [0, ln 2, ln 3] -> softmax [1/6, 2/6, 3/6], label 2
        // row 1: logits [1, 1, 1]       -> softmax [1/3, 1/3, 1/3], label 0
        let ln2 = 2f32.ln();
        let ln3 = 3f32.ln();
        let logits = [0.0, ln2, ln3, 1.0, 1.0, 1.0];
        let ce = softmax_cross_entropy(&logits, 2, 3, &[2, 0], 0.0).unwrap();
        let expected_loss = (-(0.5f64).ln() - (1.0f64 / 3.0).ln()) / 2.0;
        assert!(
            close(f64::from(ce.loss), expected_loss, 1e-6),
            "{}",
            ce.loss
        );
        let expected_grad = [
            1.0 / 12.0,
            2.0 / 12.0,
            -3.0 / 12.0,
            (1.0 / 3.0 - 1.0) / 2.0,
            1.0 / 6.0,
            1.0 / 6.0,
        ];
        for (g, e) in ce.grad.iter().zip(expected_grad) {
            assert!(close(f64::from(*g), e, 1e-6), "{g} vs {e}");
        }
    }

    /// Independent f64 reference: -sum_j t_j log softmax_j, averaged over rows.
    fn reference_loss(logits: &[f64], classes: usize, labels: &[usize], eps: f64) -> f64 {
        let mut total = 0.0;
        for (row, &label) in logits.chunks(classes).zip(labels) {
            let norm: f64 = row.iter().map(|z| z.exp()).sum();
            for (j, z) in row.iter().enumerate() {
                let t = if j == label { 1.0 - eps } else { 0.0 } + eps / classes as f64;
                total -= t * (z.exp() / norm).ln();
            }
        }
        total / labels.len() as f64
    }

    #[test]
    fn gradient_matches_central_differences() {
        let logits: Vec<f32> = vec![
            0.3, -1.2, 2.0, 0.5, -0.7, 1.1, 0.0, -2.5, 0.9, 0.4, 1.7, -0.3,
        ];
        let labels = [3, 0, 1];
        for eps in [0.0f32, 0.1] {
            let ce = softmax_cross_entropy(&logits, 3, 4, &labels, eps).unwrap();
            let base: Vec<f64> = logits.iter().map(|&z| f64::from(z)).collect();
            let h = 1e-5;
            for i in 0..base.len() {
                let mut up = base.clone();
                let mut down = base.clone();
                up[i] += h;
                down[i] -= h;
                let numeric = (reference_loss(&up, 4, &labels, f64::from(eps))
                    - reference_loss(&down, 4, &labels, f64::from(eps)))
                    / (2.0 * h);
                assert!(
                    (f64::from(ce.grad[i]) - numeric).abs() < 1e-6,
                    "eps {eps} index {i}: {} vs {numeric}",
                    ce.grad[i]
                );
            }
            let expected = reference_loss(&base, 4, &labels, f64::from(eps));
            assert!(close(f64::from(ce.loss), expected, 1e-6));
        }
    }

    #[test]
    fn huge_logits_stay_finite() {
        let logits = [1e4, -1e4, 0.0, -1e4, 1e4, 1e4];
        let ce = softmax_cross_entropy(&logits, 2, 3, &[1, 0], 0.0).unwrap();
        // row 0: label logit -1e4 vs max 1e4 -> loss 2e4; row 1: label at -1e4 vs two at
        // 1e4 -> loss 2e4 + ln 2
        let expected = (2e4 + 2e4 + 2f64.ln()) / 2.0;
        assert!(close(f64::from(ce.loss), expected, 1e-6), "{}", ce.loss);
        assert!(ce.grad.iter().all(|g| g.is_finite()));
        let expected_grad = [0.5, -0.5, 0.0, -0.5, 0.25, 0.25];
        for (g, e) in ce.grad.iter().zip(expected_grad) {
            assert!((f64::from(*g) - e).abs() < 1e-7, "{g} vs {e}");
        }
    }

    #[test]
    fn label_smoothing_by_hand() {
        // 4 equal logits: softmax 1/4 each, so loss = ln 4 whatever the target
        let ce = softmax_cross_entropy(&[2.0; 4], 1, 4, &[1], 0.2).unwrap();
        assert!(close(f64::from(ce.loss), 4f64.ln(), 1e-6));
        // targets: 0.8 + 0.05 = 0.85 on the label, 0.05 elsewhere; grad = p - t
        let expected_grad = [0.2, -0.6, 0.2, 0.2];
        for (g, e) in ce.grad.iter().zip(expected_grad) {
            assert!((f64::from(*g) - e).abs() < 1e-7, "{g} vs {e}");
        }
        // logits [0, ln 3]: p = [1/4, 3/4], eps 0.5, label 0 -> t = [0.75, 0.25]
        let ce = softmax_cross_entropy(&[0.0, 3f32.ln()], 1, 2, &[0], 0.5).unwrap();
        let expected = -(0.75 * 0.25f64.ln() + 0.25 * 0.75f64.ln());
        assert!(close(f64::from(ce.loss), expected, 1e-6));
        assert!((f64::from(ce.grad[0]) - (0.25 - 0.75)).abs() < 1e-7);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let logits = [0.0f32; 6];
        assert_eq!(
            softmax_cross_entropy(&logits, 2, 3, &[0, 3], 0.0),
            Err(LossError::LabelRange {
                sample: 1,
                label: 3,
                classes: 3
            })
        );
        assert!(matches!(
            softmax_cross_entropy(&logits, 2, 4, &[0, 1], 0.0),
            Err(LossError::LogitsLength { .. })
        ));
        assert!(matches!(
            softmax_cross_entropy(&logits, 2, 3, &[0], 0.0),
            Err(LossError::LabelCount { .. })
        ));
        assert!(matches!(
            softmax_cross_entropy(&logits, 2, 3, &[0, 1], 1.0),
            Err(LossError::Smoothing(_))
        ));
        let mut bad = logits;
        bad[4] = f32::NAN;
        assert_eq!(
            softmax_cross_entropy(&bad, 2, 3, &[0, 1], 0.0),
            Err(LossError::NonFiniteLogit {
                sample: 1,
                class: 1
            })
        );
        bad[4] = f32::INFINITY;
        assert!(accuracy(&bad, 2, 3, &[0, 1]).is_err());
        let wrong_rank = Tensor::from_f32(vec![6], logits.to_vec()).unwrap();
        assert!(matches!(
            softmax_cross_entropy_tensor(&wrong_rank, &[0], 0.0),
            Err(LossError::LogitsTensor { .. })
        ));
    }

    #[test]
    fn accuracy_breaks_ties_to_lowest_index() {
        let logits = [1.0, 3.0, 3.0, 5.0, 5.0, 0.0, -1.0, -2.0, -1.0];
        assert_eq!(argmax_rows(&logits, 3, 3).unwrap(), vec![1, 0, 0]);
        let acc = accuracy(&logits, 3, 3, &[1, 1, 0]).unwrap();
        assert!((acc - 2.0 / 3.0).abs() < 1e-7);
        let t = Tensor::from_f32(vec![3, 3], logits.to_vec()).unwrap();
        assert_eq!(accuracy_tensor(&t, &[2, 1, 2]).unwrap(), 0.0);
        let (loss, grad) = softmax_cross_entropy_tensor(&t, &[1, 0, 0], 0.0).unwrap();
        assert!(loss.is_finite());
        assert_eq!(grad.shape(), &[3, 3]);
    }
}
