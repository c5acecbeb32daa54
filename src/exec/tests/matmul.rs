//! MatMul (1-D promotion, broadcast batches, strided operands) and Gemm, checked
//! against hand-worked products and a direct triple loop written here.

use super::*;
use crate::ir::{GemmAttrs, Graph, Port, Shape, TensorType};

/// Row-major product of `[b, m, k]` by `[b, k, n]` with a plain loop in f64.
fn naive(
    a: &[f32],
    b: &[f32],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    b_shared: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; batch * m * n];
    for t in 0..batch {
        let bo = if b_shared { 0 } else { t * k * n };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += a[t * m * k + i * k + p] as f64 * b[bo + p * n + j] as f64;
                }
                out[t * m * n + i * n + j] = s as f32;
            }
        }
    }
    out
}

#[test]
fn two_by_two_product() {
    let a = f32t(&[2, 2], &[1., 2., 3., 4.]);
    let b = f32t(&[2, 2], &[5., 6., 7., 8.]);
    assert_f32(
        &eval_ok(Op::MatMul, &[a, b]),
        &[2, 2],
        &[19., 22., 43., 50.],
        0.0,
    );
}

#[test]
fn vectors_are_promoted_and_the_extra_axis_removed() {
    let m = f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let got = eval_ok(Op::MatMul, &[f32t(&[2], &[1., 2.]), m.clone()]);
    assert_f32(&got, &[3], &[9., 12., 15.], 0.0);
    let got = eval_ok(Op::MatMul, &[m, f32t(&[3], &[1., 0., -1.])]);
    assert_f32(&got, &[2], &[-2., -2.], 0.0);
    let got = eval_ok(
        Op::MatMul,
        &[f32t(&[3], &[1., 2., 3.]), f32t(&[3], &[4., 5., 6.])],
    );
    assert_f32(&got, &[], &[32.], 0.0);
}

#[test]
fn batch_dimensions_broadcast() {
    // a [2,1,2,2] and b [3,2,2] give [2,3,2,2]: entry (i,j) multiplies a[i] by b[j].
    let av: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let bv: Vec<f32> = (0..12).map(|i| (i as f32) - 5.0).collect();
    let got = eval_ok(
        Op::MatMul,
        &[f32t(&[2, 1, 2, 2], &av), f32t(&[3, 2, 2], &bv)],
    );
    let mut want = Vec::new();
    for i in 0..2 {
        for j in 0..3 {
            want.extend(naive(
                &av[i * 4..i * 4 + 4],
                &bv[j * 4..j * 4 + 4],
                1,
                2,
                2,
                2,
                true,
            ));
        }
    }
    assert_f32(&got, &[2, 3, 2, 2], &want, 0.0);
}

#[test]
fn shared_weight_batches_fold_into_one_product() {
    let (b, m, k, n) = (4, 37, 19, 23);
    let av = noise(b * m * k, 1);
    let wv = noise(k * n, 2);
    let got = eval_ok(Op::MatMul, &[f32t(&[b, m, k], &av), f32t(&[k, n], &wv)]);
    assert_f32(&got, &[b, m, n], &naive(&av, &wv, b, m, k, n, true), 1e-5);
}

#[test]
fn independent_batches_run_across_the_pool() {
    let (b, m, k, n) = (6, 17, 9, 11);
    let av = noise(b * m * k, 3);
    let bv = noise(b * k * n, 4);
    let got = eval_ok(Op::MatMul, &[f32t(&[b, m, k], &av), f32t(&[b, k, n], &bv)]);
    assert_f32(&got, &[b, m, n], &naive(&av, &bv, b, m, k, n, false), 1e-5);
    // Three entries on the pool do not divide evenly: the sequential path.
    let got = eval_ok(
        Op::MatMul,
        &[
            f32t(&[3, m, k], &av[..3 * m * k]),
            f32t(&[3, k, n], &bv[..3 * k * n]),
        ],
    );
    assert_f32(&got, &[3, m, n], &naive(&av, &bv, 3, m, k, n, false), 1e-5);
}

#[test]
fn transposed_operand_is_read_in_place() {
    // y = x · wᵀ with the transpose as a separate node, as attention computes q·kᵀ.
    let (m, k, n) = (5, 4, 3);
    let xv = noise(m * k, 5);
    let wv = noise(n * k, 6);
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::new(DType::F32, Shape::known(&[m, k])));
    let w = g.add_const("w", f32t(&[n, k], &wv));
    let wt = g.add_op(
        "wt",
        Op::Transpose {
            perm: Some(vec![1, 0]),
        },
        &[Some(Port::new(w, 0))],
        &["wt"],
    );
    let y = g.add_op(
        "mm",
        Op::MatMul,
        &[Some(Port::new(x, 0)), Some(Port::new(wt, 0))],
        &["y"],
    );
    g.outputs.push(Port::new(y, 0));
    let got = crate::exec::run_cpu(&g, &[("x".into(), f32t(&[m, k], &xv))]).unwrap();
    let mut wt_v = vec![0f32; k * n];
    for i in 0..n {
        for j in 0..k {
            wt_v[j * n + i] = wv[i * k + j];
        }
    }
    assert_f32(&got[0], &[m, n], &naive(&xv, &wt_v, 1, m, k, n, true), 1e-5);
}

#[test]
fn integer_matmul() {
    let got = eval_ok(
        Op::MatMul,
        &[i64t(&[2, 2], &[1, 2, 3, 4]), i64t(&[2, 1], &[5, 6])],
    );
    assert_i64(&got, &[2, 1], &[17, 39]);
}

#[test]
fn mismatched_inner_dims_are_reported() {
    let msg = eval_err(
        Op::MatMul,
        &[f32t(&[2, 3], &[0.; 6]), f32t(&[4, 2], &[0.; 8])],
    );
    assert_eq!(msg, "node 'n' (MatMul): cannot multiply [2,3] by [4,2]");
    let msg = eval_err(
        Op::MatMul,
        &[f32t(&[2, 2, 3], &[0.; 12]), f32t(&[3, 3, 2], &[0.; 18])],
    );
    assert!(msg.contains("cannot multiply"), "{msg}");
}

#[test]
fn empty_inner_dimension_gives_zeros() {
    let got = eval_ok(Op::MatMul, &[f32t(&[2, 0], &[]), f32t(&[0, 3], &[])]);
    assert_f32(&got, &[2, 3], &[0.; 6], 0.0);
}

fn gemm(attrs: GemmAttrs, a: Tensor, b: Tensor, c: Option<Tensor>) -> Tensor {
    eval_opt(Op::Gemm(attrs), &[Some(a), Some(b), c], 1)
        .unwrap()
        .remove(0)
}

#[test]
fn gemm_scales_transposes_and_broadcasts_c() {
    // A [2,3], B given as [2,3] with trans_b: A·Bᵀ = [[1·1+2·0+3·1, 1·2+2·1+3·0],
    // [4·1+5·0+6·1, 4·2+5·1+6·0]] = [[4, 4], [10, 13]].
    let a = f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let bt = f32t(&[2, 3], &[1., 0., 1., 2., 1., 0.]);
    let attrs = GemmAttrs {
        alpha: 2.0,
        beta: 0.5,
        trans_a: false,
        trans_b: true,
    };
    let c = f32t(&[2], &[10., 20.]);
    let got = gemm(attrs, a.clone(), bt.clone(), Some(c));
    assert_f32(&got, &[2, 2], &[13., 18., 25., 36.], 0.0);
    let got = gemm(attrs, a.clone(), bt.clone(), None);
    assert_f32(&got, &[2, 2], &[8., 8., 20., 26.], 0.0);
    // trans_a on Aᵀ stored as [3,2] gives the same product.
    let at = f32t(&[3, 2], &[1., 4., 2., 5., 3., 6.]);
    let attrs_t = GemmAttrs {
        trans_a: true,
        ..attrs
    };
    let got = gemm(attrs_t, at, bt, Some(Tensor::scalar_f32(2.0)));
    assert_f32(&got, &[2, 2], &[9., 9., 21., 27.], 0.0);
}

#[test]
fn gemm_rejects_bad_shapes() {
    let attrs = GemmAttrs::default();
    let msg = eval_opt(
        Op::Gemm(attrs),
        &[
            Some(f32t(&[2, 3], &[0.; 6])),
            Some(f32t(&[2, 3], &[0.; 6])),
            None,
        ],
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("cannot multiply [2,3] by [2,3]"), "{msg}");
    let msg = eval_opt(
        Op::Gemm(attrs),
        &[
            Some(f32t(&[2, 3], &[0.; 6])),
            Some(f32t(&[3, 2], &[0.; 6])),
            Some(f32t(&[3], &[0.; 3])),
        ],
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("does not broadcast"), "{msg}");
}
