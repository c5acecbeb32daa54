//! The fused loss of a training graph: softmax cross-entropy of `logits` `[N, K]`
//! against integer `labels` `[N]` with targets smoothed to `t = (1−ε)·onehot + ε/K`,
//! averaged over the rows that have a label (a scalar f32), and its gradient
//! `dlogits = dloss·(softmax − t)/M`. A negative label marks a row without a target
//! (a language model's padding and prompt positions, PyTorch's `ignore_index`): it
//! adds nothing to the loss, gets a zero gradient and is not counted in `M`; with no
//! labelled row at all the loss is 0. Rows use the max-shifted log-sum-exp; per-row
//! losses are summed in f64 in row order.

use rayon::prelude::*;

use crate::exec::cpu::math;
use crate::exec::cpu::strided::PAR_MIN_ELEMS;
use crate::exec::cpu::value::{CpuValue, OpResult, bail, sh};
use crate::ir::DType;

use super::float_dtype;

/// Batch size, class count and the checked label of each row (`None`: ignored).
struct Batch {
    k: usize,
    labels: Vec<Option<usize>>,
}

impl Batch {
    /// The rows the mean runs over, at least 1.
    fn counted(&self) -> usize {
        self.labels.iter().filter(|l| l.is_some()).count().max(1)
    }
}

fn check_batch(logits: &CpuValue, labels: &CpuValue, smoothing: f32) -> OpResult<Batch> {
    float_dtype(logits, "logits")?;
    if logits.rank() != 2 {
        bail!("logits must be [N, K], got shape {}", sh(logits.dims()));
    }
    let (n, k) = (logits.dims()[0], logits.dims()[1]);
    if n == 0 || k == 0 {
        bail!(
            "logits of shape {} hold no rows or no classes",
            sh(logits.dims())
        );
    }
    if !labels.dtype().is_int() {
        bail!("labels must be integers, got {}", labels.dtype());
    }
    if labels.dims() != [n] {
        bail!(
            "labels of shape {} do not match logits of shape {}",
            sh(labels.dims()),
            sh(logits.dims())
        );
    }
    if !(0.0..=1.0).contains(&smoothing) {
        bail!("label_smoothing must lie in [0, 1], got {smoothing}");
    }
    let labels = labels
        .to_i64_vec()?
        .into_iter()
        .enumerate()
        .map(|(row, v)| match usize::try_from(v) {
            Ok(c) if c < k => Ok(Some(c)),
            Ok(_) => bail!("label {v} of row {row} is out of range for {k} classes"),
            Err(_) => Ok(None),
        })
        .collect::<OpResult<_>>()?;
    Ok(Batch { k, labels })
}

/// Rows handed to one parallel task: a function of the shape only.
fn rows_per_task(k: usize) -> usize {
    ((1usize << 14) / k).max(1)
}

/// `z − max z` into `shifted`; returns Σ exp of it (at least 1).
#[inline(always)]
fn shift_row(z: &[f32], shifted: &mut [f32]) -> f32 {
    let m = math::max(z);
    for (s, &v) in shifted.iter_mut().zip(z) {
        *s = v - m;
    }
    let mut acc = [0f32; 8];
    let chunks = shifted.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += math::exp(c[i]);
        }
    }
    let mut total =
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &s in rest {
        total += math::exp(s);
    }
    total
}

/// −Σ_k t_k log softmax(z)_k of one row; 0 for a row without a label.
fn row_loss(z: &[f32], label: Option<usize>, eps: f64, scratch: &mut Vec<f32>) -> f64 {
    let Some(label) = label else {
        return 0.0;
    };
    scratch.resize(z.len(), 0.0);
    let log_sum = f64::from(shift_row(z, scratch)).ln();
    // log softmax_k = shifted_k − log Σ; the targets sum to 1.
    let mean_shifted = scratch.iter().map(|&s| f64::from(s)).sum::<f64>() / z.len() as f64;
    log_sum - (1.0 - eps) * f64::from(scratch[label]) - eps * mean_shifted
}

pub(super) fn softmax_cross_entropy(
    logits: &CpuValue,
    labels: &CpuValue,
    smoothing: f32,
) -> OpResult<CpuValue> {
    let b = check_batch(logits, labels, smoothing)?;
    let eps = f64::from(smoothing);
    let losses: Vec<f64> = logits.read_f32(|v| {
        let zs = v.to_contiguous();
        let task = rows_per_task(b.k);
        let rows = |(t, block): (usize, &[f32])| -> Vec<f64> {
            let mut scratch = Vec::new();
            block
                .chunks_exact(b.k)
                .enumerate()
                .map(|(i, z)| row_loss(z, b.labels[t * task + i], eps, &mut scratch))
                .collect()
        };
        let per_task: Vec<Vec<f64>> = if zs.len() >= PAR_MIN_ELEMS {
            zs.par_chunks(task * b.k).enumerate().map(rows).collect()
        } else {
            zs.chunks(task * b.k).enumerate().map(rows).collect()
        };
        Ok(per_task.into_iter().flatten().collect())
    })?;
    let mean = losses.iter().sum::<f64>() / b.counted() as f64;
    CpuValue::from_f32(vec![mean as f32], &[], DType::F32)
}

/// `scale·(softmax(z) − t)` of one row, written into `out`; zeros for a row
/// without a label.
fn row_grad(z: &[f32], label: Option<usize>, eps: f32, scale: f32, out: &mut [f32]) {
    let Some(label) = label else {
        out.fill(0.0);
        return;
    };
    let total = shift_row(z, out);
    let k = z.len() as f32;
    let p_scale = scale / total;
    let off = scale * eps / k;
    for o in out.iter_mut() {
        *o = math::exp(*o) * p_scale - off;
    }
    out[label] -= scale * (1.0 - eps);
}

pub(super) fn softmax_cross_entropy_grad(
    logits: &CpuValue,
    labels: &CpuValue,
    dloss: &CpuValue,
    smoothing: f32,
) -> OpResult<CpuValue> {
    let b = check_batch(logits, labels, smoothing)?;
    let dtype = logits.dtype();
    float_dtype(dloss, "dloss")?;
    if dloss.numel() != 1 {
        bail!("dloss must be a scalar, got shape {}", sh(dloss.dims()));
    }
    let scale = (dloss.to_f64_vec()?[0] / b.counted() as f64) as f32;
    let out = logits.read_f32(|v| {
        let zs = v.to_contiguous();
        let mut out = vec![0f32; zs.len()];
        let task = rows_per_task(b.k);
        let rows = |(t, (o, block)): (usize, (&mut [f32], &[f32]))| {
            for (i, (orow, z)) in o
                .chunks_exact_mut(b.k)
                .zip(block.chunks_exact(b.k))
                .enumerate()
            {
                row_grad(z, b.labels[t * task + i], smoothing, scale, orow);
            }
        };
        if zs.len() >= PAR_MIN_ELEMS {
            out.par_chunks_mut(task * b.k)
                .zip(zs.par_chunks(task * b.k))
                .enumerate()
                .for_each(rows);
        } else {
            out.chunks_mut(task * b.k)
                .zip(zs.chunks(task * b.k))
                .enumerate()
                .for_each(rows);
        }
        Ok(out)
    })?;
    CpuValue::from_f32(out, logits.dims(), dtype)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::super::testing::*;
    use crate::ir::GradOp;

    /// −Σ_k t_k·log softmax(z)_k of one row, straight from the definition.
    fn row_loss64(z: &[f64], label: usize, eps: f64) -> f64 {
        let k = z.len() as f64;
        let total: f64 = z.iter().map(|v| v.exp()).sum();
        z.iter()
            .enumerate()
            .map(|(c, &v)| {
                let t = if c == label { 1.0 - eps } else { 0.0 } + eps / k;
                -t * (v.exp() / total).ln()
            })
            .sum()
    }

    fn loss64(z: &[f64], k: usize, labels: &[usize], eps: f64) -> f64 {
        let rows = z.chunks(k).zip(labels);
        rows.map(|(r, &l)| row_loss64(r, l, eps)).sum::<f64>() / labels.len() as f64
    }

    fn case(n: usize, k: usize, rng: &mut StdRng) -> (Vec<f64>, Vec<usize>) {
        let z: Vec<f64> = random_vec(rng, n * k).iter().map(|v| v * 3.0).collect();
        let labels = (0..n).map(|_| rng.random_range(0..k)).collect();
        (z, labels)
    }

    fn labels_value(labels: &[usize]) -> crate::exec::cpu::value::CpuValue {
        let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        i64_value(&[labels.len()], &v)
    }

    fn check(n: usize, k: usize, eps: f32, rng: &mut StdRng) {
        let (z, labels) = case(n, k, rng);
        let e64 = eps as f64;
        let logits = f32_value(&[n, k], &z);
        let lv = labels_value(&labels);
        let what = format!("N {n} K {k} smoothing {eps}");
        let loss = run_one(
            &GradOp::SoftmaxCrossEntropy {
                label_smoothing: eps,
            },
            &[Some(&logits), Some(&lv)],
        );
        assert_eq!(loss.shape(), &[] as &[usize]);
        let want = loss64(&z, k, &labels, e64);
        let got = loss.to_f32_vec()[0] as f64;
        assert!(
            (got - want).abs() <= 1e-5 * want.abs(),
            "{what}: loss {got}, want {want}"
        );
        let dloss = 0.75;
        let grad = run_one(
            &GradOp::SoftmaxCrossEntropyGrad {
                label_smoothing: eps,
            },
            &[Some(&logits), Some(&lv), Some(&f32_value(&[], &[dloss]))],
        );
        assert_eq!(grad.shape(), &[n, k]);
        // Rows enter the mean independently, so each row's gradient is the
        // finite difference of its own term.
        let want: Vec<f64> = z
            .chunks(k)
            .zip(&labels)
            .flat_map(|(r, &l)| {
                numeric_gradient(|v| row_loss64(v, l, e64), r)
                    .into_iter()
                    .map(|g| g * dloss / n as f64)
            })
            .collect();
        assert_close(&grad.to_f32_vec(), &want, 1e-4, &what);
        if n * k <= 400 {
            let full = numeric_gradient(|v| dloss * loss64(v, k, &labels, e64), &z);
            assert_close(&grad.to_f32_vec(), &full, 1e-4, &what);
        }
    }

    #[test]
    fn loss_and_gradient_match_the_definition() {
        let mut rng = StdRng::seed_from_u64(71);
        for eps in [0.0, 0.1] {
            check(1, 2, eps, &mut rng);
            check(4, 7, eps, &mut rng);
            check(9, 33, eps, &mut rng);
            let (n, k) = (rng.random_range(1..12), rng.random_range(2..20));
            check(n, k, eps, &mut rng);
        }
    }

    #[test]
    fn large_batches_run_in_parallel() {
        let mut rng = StdRng::seed_from_u64(72);
        check(64, 600, 0.1, &mut rng);
    }

    #[test]
    fn large_logits_stay_finite() {
        // Row 0: two equal logits of 1000, label 0: loss ln 2. Row 1: logits
        // [1000, 0], label 1: loss 1000, or with ε = 0.1 (targets 0.05, 0.95) 950.
        let logits = f32_value(&[2, 2], &[1000.0, 1000.0, 1000.0, 0.0]);
        let labels = i32_value(&[2], &[0, 1]);
        for (eps, row1) in [(0.0f32, 1000.0), (0.1, 950.0)] {
            let loss = run_one(
                &GradOp::SoftmaxCrossEntropy {
                    label_smoothing: eps,
                },
                &[Some(&logits), Some(&labels)],
            );
            let want = (std::f64::consts::LN_2 + row1) / 2.0;
            let got = loss.to_f32_vec()[0] as f64;
            assert!((got - want).abs() < 1e-4, "ε {eps}: {got}, want {want}");
        }
        let grad = run_one(
            &GradOp::SoftmaxCrossEntropyGrad {
                label_smoothing: 0.0,
            },
            &[Some(&logits), Some(&labels), Some(&f32_value(&[1], &[2.0]))],
        );
        // dloss/N = 1; row 0: softmax [½, ½] − [1, 0]; row 1: [1, 0] − [0, 1].
        assert_eq!(grad.to_f32_vec(), vec![-0.5, 0.5, 1.0, -1.0]);
    }

    #[test]
    fn negative_labels_are_left_out_of_the_mean_by_hand() {
        // Row 0: [0, 0], label 0: ln 2. Row 1 is ignored (−100). Row 2: [1000, 0],
        // label 1: 1000. The mean runs over the 2 labelled rows.
        let logits = f32_value(&[3, 2], &[0.0, 0.0, 5.0, 1.0, 1000.0, 0.0]);
        let labels = i64_value(&[3], &[0, -100, 1]);
        let op = GradOp::SoftmaxCrossEntropy {
            label_smoothing: 0.0,
        };
        let loss = run_one(&op, &[Some(&logits), Some(&labels)]);
        let want = (std::f64::consts::LN_2 + 1000.0) / 2.0;
        assert!((loss.to_f32_vec()[0] as f64 - want).abs() < 1e-4);
        let grad = GradOp::SoftmaxCrossEntropyGrad {
            label_smoothing: 0.0,
        };
        let two = f32_value(&[], &[2.0]);
        let g = run_one(&grad, &[Some(&logits), Some(&labels), Some(&two)]);
        // dloss/M = 1; the ignored row gets no gradient.
        assert_eq!(g.to_f32_vec(), vec![-0.5, 0.5, 0.0, 0.0, 1.0, -1.0]);
        // Nothing labelled: loss 0, gradient 0 (not 0/0).
        let none = i64_value(&[3], &[-1, -100, -7]);
        let loss = run_one(&op, &[Some(&logits), Some(&none)]);
        assert_eq!(loss.to_f32_vec(), vec![0.0]);
        let g = run_one(&grad, &[Some(&logits), Some(&none), Some(&two)]);
        assert_eq!(g.to_f32_vec(), vec![0.0; 6]);
    }

    #[test]
    fn bad_labels_and_shapes_are_errors() {
        let logits = f32_value(&[3, 4], &[0.5; 12]);
        let op = GradOp::SoftmaxCrossEntropy {
            label_smoothing: 0.0,
        };
        let grad = GradOp::SoftmaxCrossEntropyGrad {
            label_smoothing: 0.0,
        };
        let one = f32_value(&[], &[1.0]);
        let e = run_err(&op, &[Some(&logits), Some(&i64_value(&[3], &[0, 4, 1]))], 1);
        assert!(
            e.contains("label 4 of row 1 is out of range for 4 classes"),
            "{e}"
        );
        let e = run_err(
            &grad,
            &[
                Some(&logits),
                Some(&i64_value(&[3], &[0, 1, 5])),
                Some(&one),
            ],
            1,
        );
        assert!(e.contains("label 5 of row 2"), "{e}");
        let e = run_err(&op, &[Some(&logits), Some(&i64_value(&[2], &[0, 1]))], 1);
        assert!(
            e.contains("labels of shape [2] do not match logits of shape [3,4]"),
            "{e}"
        );
        let e = run_err(
            &op,
            &[
                Some(&f32_value(&[4], &[0.5; 4])),
                Some(&i64_value(&[1], &[0])),
            ],
            1,
        );
        assert!(e.contains("logits must be [N, K]"), "{e}");
        let e = run_err(&op, &[Some(&logits), Some(&f32_value(&[3], &[0.0; 3]))], 1);
        assert!(e.contains("labels must be integers"), "{e}");
        let labels = i64_value(&[3], &[0, 1, 2]);
        let e = run_err(
            &grad,
            &[
                Some(&logits),
                Some(&labels),
                Some(&f32_value(&[2], &[1.0, 1.0])),
            ],
            1,
        );
        assert!(e.contains("dloss must be a scalar"), "{e}");
        let bad = GradOp::SoftmaxCrossEntropy {
            label_smoothing: 1.5,
        };
        let e = run_err(&bad, &[Some(&logits), Some(&labels)], 1);
        assert!(e.contains("label_smoothing"), "{e}");
        let e = run_err(
            &op,
            &[Some(&f32_value(&[0, 4], &[])), Some(&i64_value(&[0], &[]))],
            1,
        );
        assert!(e.contains("no rows"), "{e}");
    }
}
