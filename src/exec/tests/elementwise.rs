//! Binary ops with broadcasting, Pow's mixed types, Equal, unary functions, Clip,
//! Where and Cast.

use half::{bf16, f16};

use super::*;
use crate::ir::{BinaryOp, UnaryOp};

fn bin(op: BinaryOp, a: Tensor, b: Tensor) -> Tensor {
    eval_ok(Op::Binary(op), &[a, b])
}

#[test]
fn add_broadcasts_a_row_over_a_matrix() {
    let a = f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let b = f32t(&[3], &[10., 20., 30.]);
    assert_f32(
        &bin(BinaryOp::Add, a, b),
        &[2, 3],
        &[11., 22., 33., 14., 25., 36.],
        0.0,
    );
}

#[test]
fn sub_broadcasts_both_operands() {
    let a = f32t(&[2, 1], &[1., 2.]);
    let b = f32t(&[1, 3], &[10., 20., 30.]);
    assert_f32(
        &bin(BinaryOp::Sub, a, b),
        &[2, 3],
        &[-9., -19., -29., -8., -18., -28.],
        0.0,
    );
}

#[test]
fn mul_and_div_with_scalars() {
    let a = f32t(&[2, 2], &[1., 2., 3., 4.]);
    assert_f32(
        &bin(BinaryOp::Mul, a.clone(), Tensor::scalar_f32(3.0)),
        &[2, 2],
        &[3., 6., 9., 12.],
        0.0,
    );
    assert_f32(
        &bin(BinaryOp::Div, Tensor::scalar_f32(12.0), a),
        &[2, 2],
        &[12., 6., 4., 3.],
        0.0,
    );
}

#[test]
fn broadcasting_large_tensors_runs_in_parallel_chunks() {
    // Large enough for the parallel path, with a column vector broadcast over rows.
    let (rows, cols) = (300, 257);
    let a: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..rows).map(|r| -(r as f32) * 1000.0).collect();
    let got = bin(BinaryOp::Add, f32t(&[rows, cols], &a), f32t(&[rows, 1], &b));
    let want: Vec<f32> = (0..rows * cols)
        .map(|i| i as f32 - (i / cols) as f32 * 1000.0)
        .collect();
    assert_f32(&got, &[rows, cols], &want, 0.0);
}

#[test]
fn binary_reads_transposed_views() {
    // x is [2,3]; Transpose gives a strided view that Add must read correctly.
    let x = f32t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let mut g = crate::ir::Graph::new("t");
    let xi = g.add_input(
        "x",
        crate::ir::TensorType::new(DType::F32, crate::ir::Shape::known(&[2, 3])),
    );
    let t = g.add_op(
        "t",
        Op::Transpose { perm: None },
        &[Some(crate::ir::Port::new(xi, 0))],
        &["xt"],
    );
    let c = g.add_const("c", f32t(&[2], &[100., 200.]));
    let add = g.add_op(
        "add",
        Op::Binary(BinaryOp::Add),
        &[
            Some(crate::ir::Port::new(t, 0)),
            Some(crate::ir::Port::new(c, 0)),
        ],
        &["y"],
    );
    g.outputs.push(crate::ir::Port::new(add, 0));
    let y = crate::exec::run_cpu(&g, &[("x".into(), x)]).unwrap();
    assert_f32(&y[0], &[3, 2], &[101., 204., 102., 205., 103., 206.], 0.0);
}

#[test]
fn integer_division_truncates_towards_zero() {
    let a = i64t(&[4], &[7, -7, 7, -7]);
    let b = i64t(&[4], &[2, 2, -2, -2]);
    assert_i64(&bin(BinaryOp::Div, a, b), &[4], &[3, -3, -3, 3]);
}

#[test]
fn integer_division_by_zero_is_an_error() {
    let msg = eval_err(
        Op::Binary(BinaryOp::Div),
        &[i64t(&[2], &[1, 2]), i64t(&[2], &[1, 0])],
    );
    assert!(msg.contains("division by zero"), "{msg}");
}

#[test]
fn integer_arithmetic_wraps_in_i32() {
    let a = i32t(&[1], &[i32::MAX]);
    let b = i32t(&[1], &[1]);
    let got = bin(BinaryOp::Add, a, b);
    assert_eq!(got.dtype(), DType::I32);
    assert_eq!(got.data(), &TensorData::I32(vec![i32::MIN]));
}

#[test]
fn pow_covers_float_and_integer_exponents() {
    let x = f32t(&[2], &[2., 9.]);
    assert_f32(
        &bin(BinaryOp::Pow, x.clone(), f32t(&[2], &[3., 0.5])),
        &[2],
        &[8., 3.],
        1e-6,
    );
    assert_f32(
        &bin(BinaryOp::Pow, x.clone(), Tensor::scalar_f32(2.0)),
        &[2],
        &[4., 81.],
        0.0,
    );
    assert_f32(
        &bin(BinaryOp::Pow, x, i64t(&[2], &[2, -1])),
        &[2],
        &[4., 1. / 9.],
        1e-7,
    );
    // Integer bases keep their type; a float exponent truncates the result.
    assert_i64(
        &bin(BinaryOp::Pow, i64t(&[2], &[2, 3]), i64t(&[2], &[10, 3])),
        &[2],
        &[1024, 27],
    );
    assert_i64(
        &bin(BinaryOp::Pow, i64t(&[2], &[2, 3]), f32t(&[2], &[0.5, 2.0])),
        &[2],
        &[1, 9],
    );
    let got = bin(
        BinaryOp::Pow,
        i32t(&[3], &[1, 2, 3]),
        f32t(&[3], &[4., 5., 6.]),
    );
    assert_eq!(got.data(), &TensorData::I32(vec![1, 32, 729]));
}

#[test]
fn equal_gives_bools_for_every_type() {
    let got = bin(
        BinaryOp::Equal,
        f32t(&[3], &[1., 2., 3.]),
        f32t(&[3], &[1., 0., 3.]),
    );
    assert_bool(&got, &[3], &[true, false, true]);
    let got = bin(
        BinaryOp::Equal,
        i32t(&[2, 2], &[1, 2, 3, 4]),
        i32t(&[2], &[1, 4]),
    );
    assert_bool(&got, &[2, 2], &[true, false, false, true]);
    let got = bin(
        BinaryOp::Equal,
        boolt(&[2], &[true, false]),
        boolt(&[], &[false]),
    );
    assert_bool(&got, &[2], &[false, true]);
}

#[test]
fn mismatched_operands_are_errors() {
    let msg = eval_err(
        Op::Binary(BinaryOp::Add),
        &[f32t(&[2, 3], &[0.; 6]), f32t(&[2], &[0.; 2])],
    );
    assert!(msg.contains("cannot broadcast [2,3] with [2]"), "{msg}");
    assert!(msg.starts_with("node 'n' (Add):"), "{msg}");
    let msg = eval_err(
        Op::Binary(BinaryOp::Mul),
        &[f32t(&[1], &[0.]), i64t(&[1], &[0])],
    );
    assert!(msg.contains("types differ"), "{msg}");
    let msg = eval_err(
        Op::Binary(BinaryOp::Add),
        &[boolt(&[1], &[true]), boolt(&[1], &[true])],
    );
    assert!(msg.contains("bool"), "{msg}");
}

#[test]
fn unary_functions_match_the_standard_library() {
    let xs = [0.25f32, 0.5, 1.0, 2.0, 3.5];
    let t = f32t(&[5], &xs);
    let check = |op: UnaryOp, f: fn(f64) -> f64| {
        let want: Vec<f32> = xs.iter().map(|&x| f(x as f64) as f32).collect();
        assert_f32(
            &eval_ok(Op::Unary(op), std::slice::from_ref(&t)),
            &[5],
            &want,
            1e-6,
        );
    };
    check(UnaryOp::Sqrt, f64::sqrt);
    check(UnaryOp::Reciprocal, |x| 1.0 / x);
    check(UnaryOp::Neg, |x| -x);
    check(UnaryOp::Exp, f64::exp);
    check(UnaryOp::Log, f64::ln);
    check(UnaryOp::Tanh, f64::tanh);
    check(UnaryOp::Sigmoid, |x| 1.0 / (1.0 + (-x).exp()));
    check(UnaryOp::Sin, f64::sin);
    check(UnaryOp::Cos, f64::cos);
    // sin(π/6) = 1/2, cos(π/3) = 1/2, sin(0) = 0, cos(π) = −1.
    let got = eval_ok(
        Op::Unary(UnaryOp::Sin),
        &[f32t(&[2], &[std::f32::consts::FRAC_PI_6, 0.0])],
    );
    assert_f32(&got, &[2], &[0.5, 0.0], 1e-7);
    let got = eval_ok(
        Op::Unary(UnaryOp::Cos),
        &[f32t(
            &[2],
            &[std::f32::consts::FRAC_PI_3, std::f32::consts::PI],
        )],
    );
    assert_f32(&got, &[2], &[0.5, -1.0], 1e-7);
    // erf(0.5) and erf(2) from tables.
    let got = eval_ok(Op::Unary(UnaryOp::Erf), &[f32t(&[3], &[0.5, -2.0, 0.0])]);
    assert_f32(&got, &[3], &[0.520_499_9, -0.995_322_3, 0.0], 1e-6);
    let got = eval_ok(Op::Unary(UnaryOp::Relu), &[f32t(&[3], &[-1., 0., 2.])]);
    assert_f32(&got, &[3], &[0., 0., 2.], 0.0);
    let got = eval_ok(Op::Unary(UnaryOp::Abs), &[f32t(&[2], &[-1.5, 2.])]);
    assert_f32(&got, &[2], &[1.5, 2.], 0.0);
}

#[test]
fn integer_unary_ops_and_float_only_ones() {
    let x = i64t(&[3], &[-3, 0, 5]);
    assert_i64(
        &eval_ok(Op::Unary(UnaryOp::Neg), std::slice::from_ref(&x)),
        &[3],
        &[3, 0, -5],
    );
    assert_i64(
        &eval_ok(Op::Unary(UnaryOp::Abs), std::slice::from_ref(&x)),
        &[3],
        &[3, 0, 5],
    );
    assert_i64(
        &eval_ok(Op::Unary(UnaryOp::Relu), std::slice::from_ref(&x)),
        &[3],
        &[0, 0, 5],
    );
    assert!(eval_err(Op::Unary(UnaryOp::Sqrt), &[x]).contains("not defined on i64"));
}

#[test]
fn half_precision_computes_through_f32() {
    let x = Tensor::new(
        vec![2],
        TensorData::F16(vec![f16::from_f32(1.5), f16::from_f32(-2.0)]),
    )
    .unwrap();
    let got = eval_ok(Op::Binary(BinaryOp::Mul), &[x.clone(), x]);
    assert_eq!(
        got.data(),
        &TensorData::F16(vec![f16::from_f32(2.25), f16::from_f32(4.0)])
    );
}

#[test]
fn clip_with_optional_bounds() {
    let x = f32t(&[4], &[-2., 0.5, 3., f32::NAN]);
    let lo = Tensor::scalar_f32(0.0);
    let hi = Tensor::scalar_f32(1.0);
    let got = eval_opt(
        Op::Clip,
        &[Some(x.clone()), Some(lo.clone()), Some(hi.clone())],
        1,
    )
    .unwrap();
    assert_f32(&got[0], &[4], &[0., 0.5, 1., f32::NAN], 0.0);
    let got = eval_opt(Op::Clip, &[Some(x.clone()), Some(lo), None], 1).unwrap();
    assert_f32(&got[0], &[4], &[0., 0.5, 3., f32::NAN], 0.0);
    let got = eval_opt(Op::Clip, &[Some(x.clone()), None, Some(hi)], 1).unwrap();
    assert_f32(&got[0], &[4], &[-2., 0.5, 1., f32::NAN], 0.0);
    let got = eval_opt(Op::Clip, &[Some(x)], 1).unwrap();
    assert_f32(&got[0], &[4], &[-2., 0.5, 3., f32::NAN], 0.0);
    // min above max: everything becomes max, as numpy's clip does.
    let got = eval_opt(
        Op::Clip,
        &[
            Some(f32t(&[2], &[0., 5.])),
            Some(Tensor::scalar_f32(3.)),
            Some(Tensor::scalar_f32(1.)),
        ],
        1,
    )
    .unwrap();
    assert_f32(&got[0], &[2], &[1., 1.], 0.0);
    let got = eval_opt(
        Op::Clip,
        &[
            Some(i64t(&[3], &[-5, 2, 9])),
            Some(Tensor::scalar_i64(0)),
            Some(Tensor::scalar_i64(4)),
        ],
        1,
    )
    .unwrap();
    assert_i64(&got[0], &[3], &[0, 2, 4]);
}

#[test]
fn where_selects_with_broadcasting() {
    let c = boolt(&[2], &[true, false]);
    let a = f32t(&[2, 2], &[1., 2., 3., 4.]);
    let b = Tensor::scalar_f32(-1.0);
    assert_f32(
        &eval_ok(Op::Where, &[c.clone(), a, b]),
        &[2, 2],
        &[1., -1., 3., -1.],
        0.0,
    );
    let got = eval_ok(Op::Where, &[c, i64t(&[2], &[7, 8]), i64t(&[2, 1], &[0, 1])]);
    assert_i64(&got, &[2, 2], &[7, 0, 7, 1]);
    assert!(
        eval_err(
            Op::Where,
            &[f32t(&[1], &[1.]), f32t(&[1], &[1.]), f32t(&[1], &[1.])]
        )
        .contains("bool")
    );
}

#[test]
fn cast_truncates_rounds_and_tests_nonzero() {
    let x = f32t(&[4], &[1.7, -1.7, 0.0, 2.5]);
    assert_i64(
        &eval_ok(Op::Cast { to: DType::I64 }, std::slice::from_ref(&x)),
        &[4],
        &[1, -1, 0, 2],
    );
    assert_bool(
        &eval_ok(Op::Cast { to: DType::Bool }, std::slice::from_ref(&x)),
        &[4],
        &[true, true, false, true],
    );
    let got = eval_ok(Op::Cast { to: DType::I32 }, &[x]);
    assert_eq!(got.data(), &TensorData::I32(vec![1, -1, 0, 2]));
    let got = eval_ok(Op::Cast { to: DType::F32 }, &[i64t(&[2], &[-3, 1 << 40])]);
    assert_f32(&got, &[2], &[-3.0, (1u64 << 40) as f32], 0.0);
    let got = eval_ok(Op::Cast { to: DType::I64 }, &[boolt(&[2], &[true, false])]);
    assert_i64(&got, &[2], &[1, 0]);
    let got = eval_ok(Op::Cast { to: DType::I32 }, &[i64t(&[1], &[(1 << 32) + 5])]);
    assert_eq!(got.data(), &TensorData::I32(vec![5]));
    let got = eval_ok(Op::Cast { to: DType::Bool }, &[i64t(&[2], &[0, -4])]);
    assert_bool(&got, &[2], &[false, true]);
}

#[test]
fn cast_to_half_types_rounds_to_nearest_even() {
    // 1 + 2^-11 lies halfway between two f16 values: ties go to the even 1.0.
    let x = f32t(&[2], &[1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11)]);
    let got = eval_ok(Op::Cast { to: DType::F16 }, &[x]);
    assert_eq!(
        got.data(),
        &TensorData::F16(vec![f16::from_f32(1.0), f16::from_f32(1.0 + 2f32.powi(-9))])
    );
    let x = f32t(&[2], &[1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-9)]);
    let got = eval_ok(Op::Cast { to: DType::BF16 }, &[x]);
    assert_eq!(
        got.data(),
        &TensorData::BF16(vec![
            bf16::from_f32(1.0),
            bf16::from_f32(1.0 + 2f32.powi(-7))
        ])
    );
}
