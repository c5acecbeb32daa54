//! Softmax, LayerNormalization, BatchNormalization and GELU against formulas
//! evaluated in f64 in the test.

use super::*;
use crate::ir::GeluApprox;

fn softmax_f64(xs: &[f32]) -> Vec<f32> {
    let m = xs.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let e: Vec<f64> = xs.iter().map(|&x| (x as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| (v / s) as f32).collect()
}

#[test]
fn softmax_over_the_last_axis() {
    let x = f32t(&[2, 3], &[1., 2., 3., -1., 0., 1000.]);
    let mut want = softmax_f64(&[1., 2., 3.]);
    want.extend(softmax_f64(&[-1., 0., 1000.]));
    assert_f32(
        &eval_ok(Op::Softmax { axis: -1 }, &[x]),
        &[2, 3],
        &want,
        1e-6,
    );
}

#[test]
fn softmax_over_an_inner_axis() {
    // Axis 1 of [2,3,2]: each (batch, last) pair normalises over three values.
    let v: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let got = eval_ok(Op::Softmax { axis: 1 }, &[f32t(&[2, 3, 2], &v)]);
    let mut want = vec![0f32; 12];
    for b in 0..2 {
        for l in 0..2 {
            let idx: Vec<usize> = (0..3).map(|j| b * 6 + j * 2 + l).collect();
            let col: Vec<f32> = idx.iter().map(|&i| v[i]).collect();
            for (&i, s) in idx.iter().zip(softmax_f64(&col)) {
                want[i] = s;
            }
        }
    }
    assert_f32(&got, &[2, 3, 2], &want, 1e-6);
    assert!(eval_err(Op::Softmax { axis: 3 }, &[f32t(&[2, 3, 2], &v)]).contains("out of range"));
}

#[test]
fn softmax_of_a_large_tensor_splits_rows_over_threads() {
    let (rows, len) = (400, 197);
    let v = noise(rows * len, 7);
    let got = eval_ok(Op::Softmax { axis: -1 }, &[f32t(&[rows, len], &v)]);
    let want: Vec<f32> = v.chunks(len).flat_map(softmax_f64).collect();
    assert_f32(&got, &[rows, len], &want, 1e-6);
}

fn layer_norm_f64(
    x: &[f32],
    len: usize,
    scale: &[f32],
    bias: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut y, mut means, mut invs) = (Vec::new(), Vec::new(), Vec::new());
    for row in x.chunks(len) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for (i, &v) in row.iter().enumerate() {
            y.push(((v as f64 - mean) * inv * scale[i] as f64 + bias[i] as f64) as f32);
        }
        means.push(mean as f32);
        invs.push(inv as f32);
    }
    (y, means, invs)
}

#[test]
fn layer_norm_with_statistics_outputs() {
    let x = f32t(&[2, 3], &[1., 2., 3., 2., 4., 6.]);
    let scale = f32t(&[3], &[1., 2., 0.5]);
    let bias = f32t(&[3], &[0., 1., -1.]);
    let out = eval_opt(
        Op::LayerNorm {
            axis: -1,
            epsilon: 1e-5,
        },
        &[Some(x), Some(scale), Some(bias)],
        3,
    )
    .unwrap();
    let (y, m, inv) = layer_norm_f64(
        &[1., 2., 3., 2., 4., 6.],
        3,
        &[1., 2., 0.5],
        &[0., 1., -1.],
        1e-5,
    );
    assert_f32(&out[0], &[2, 3], &y, 1e-5);
    assert_f32(&out[1], &[2, 1], &m, 1e-6);
    assert_f32(&out[2], &[2, 1], &inv, 1e-5);
    // Row 1 by hand: mean 2, variance 2/3.
    assert!((out[2].as_f32().unwrap()[0] - 1.0 / (2.0f32 / 3.0 + 1e-5).sqrt()).abs() < 1e-5);
}

#[test]
fn layer_norm_over_trailing_axes_without_bias() {
    let v = noise(2 * 3 * 4, 8);
    let s = noise(12, 9);
    let out = eval_opt(
        Op::LayerNorm {
            axis: 1,
            epsilon: 1e-3,
        },
        &[Some(f32t(&[2, 3, 4], &v)), Some(f32t(&[3, 4], &s)), None],
        1,
    )
    .unwrap();
    let (y, _, _) = layer_norm_f64(&v, 12, &s, &[0.; 12], 1e-3);
    assert_f32(&out[0], &[2, 3, 4], &y, 1e-5);
    // A large input takes the parallel path.
    let (rows, len) = (300, 384);
    let v = noise(rows * len, 10);
    let s = noise(len, 11);
    let b = noise(len, 12);
    let out = eval_opt(
        Op::LayerNorm {
            axis: -1,
            epsilon: 1e-6,
        },
        &[
            Some(f32t(&[rows, len], &v)),
            Some(f32t(&[len], &s)),
            Some(f32t(&[len], &b)),
        ],
        1,
    )
    .unwrap();
    let (y, _, _) = layer_norm_f64(&v, len, &s, &b, 1e-6);
    assert_f32(&out[0], &[rows, len], &y, 1e-5);
}

#[test]
fn layer_norm_rejects_a_scale_of_the_wrong_size() {
    let msg = eval_opt(
        Op::LayerNorm {
            axis: -1,
            epsilon: 1e-5,
        },
        &[
            Some(f32t(&[2, 3], &[0.; 6])),
            Some(f32t(&[4], &[1.; 4])),
            None,
        ],
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("scale of shape [4] does not fit [3]"), "{msg}");
}

#[test]
fn batch_norm_normalises_each_channel() {
    // x [1,2,2]: channel 0 = [1,3], channel 1 = [2,4].
    let x = f32t(&[1, 2, 2], &[1., 3., 2., 4.]);
    let scale = f32t(&[2], &[2., 1.]);
    let bias = f32t(&[2], &[0.5, -1.]);
    let mean = f32t(&[2], &[2., 3.]);
    let var = f32t(&[2], &[4., 1.]);
    let got = eval_ok(Op::BatchNorm { epsilon: 0.0 }, &[x, scale, bias, mean, var]);
    // (1−2)/2·2+0.5 = −0.5, (3−2)/2·2+0.5 = 1.5, (2−3)/1−1 = −2, (4−3)−1 = 0.
    assert_f32(&got, &[1, 2, 2], &[-0.5, 1.5, -2., 0.], 1e-6);
}

#[test]
fn gelu_both_forms() {
    let xs = [-3.0f32, -0.5, 0.0, 0.7, 2.0];
    let erf_form: Vec<f32> = xs
        .iter()
        .map(|&x| {
            let x = x as f64;
            (0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x / 2f64.sqrt()))) as f32
        })
        .collect();
    let got = eval_ok(
        Op::Gelu {
            approximate: GeluApprox::None,
        },
        &[f32t(&[5], &xs)],
    );
    assert_f32(&got, &[5], &erf_form, 1e-6);
    let tanh_form: Vec<f32> = xs
        .iter()
        .map(|&x| {
            let x = x as f64;
            (0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()))
                as f32
        })
        .collect();
    let got = eval_ok(
        Op::Gelu {
            approximate: GeluApprox::Tanh,
        },
        &[f32t(&[5], &xs)],
    );
    assert_f32(&got, &[5], &tanh_form, 1e-6);
}

#[test]
fn half_precision_rows_keep_their_type() {
    use half::f16;
    let v = [1.0f32, 2.0, 3.0, 0.5];
    let x = Tensor::new(
        vec![1, 4],
        TensorData::F16(v.iter().map(|&a| f16::from_f32(a)).collect()),
    )
    .unwrap();
    let got = eval_ok(Op::Softmax { axis: -1 }, std::slice::from_ref(&x));
    let want = softmax_f64(&v);
    match got.data() {
        TensorData::F16(h) => {
            for (a, b) in h.iter().zip(&want) {
                assert!((a.to_f32() - b).abs() < 1e-3, "{h:?} vs {want:?}");
            }
        }
        d => panic!("expected f16, got {:?}", d.dtype()),
    }
    let out = eval_opt(
        Op::LayerNorm {
            axis: -1,
            epsilon: 1e-5,
        },
        &[Some(x), Some(f32t(&[4], &[1.; 4])), None],
        2,
    );
    // Scale of another type than the input is accepted through f32; the mean is f32.
    let out = out.unwrap();
    assert_eq!(out[0].dtype(), DType::F16);
    assert_f32(&out[1], &[1, 1], &[1.625], 1e-3);
}
