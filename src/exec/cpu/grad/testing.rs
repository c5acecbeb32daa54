//! Test support for the backward kernels: building input values from f64 data,
//! running a [`GradOp`] through the backend's dispatch, central finite differences
//! of f64 reference forwards, and tolerance checks of f32 results against f64.

use rand::RngExt;
use rand::rngs::StdRng;

use crate::exec::cpu::Args;
use crate::exec::cpu::value::CpuValue;
use crate::ir::{DType, GradOp, Tensor};

/// An f32 value holding `data` (rounded to f32).
pub(crate) fn f32_value(dims: &[usize], data: &[f64]) -> CpuValue {
    let v: Vec<f32> = data.iter().map(|&x| x as f32).collect();
    CpuValue::from_f32(v, dims, DType::F32).unwrap()
}

pub(crate) fn i64_value(dims: &[usize], data: &[i64]) -> CpuValue {
    CpuValue::from_i64(data.to_vec(), dims, DType::I64).unwrap()
}

pub(crate) fn i32_value(dims: &[usize], data: &[i64]) -> CpuValue {
    CpuValue::from_i64(data.to_vec(), dims, DType::I32).unwrap()
}

/// Values in ±[0.1, 2), rounded to f32 so that an f64 reference sees exactly the
/// kernel's inputs.
pub(crate) fn random_vec(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let m = rng.random_range(0.1f64..2.0);
            let v = if rng.random::<bool>() { m } else { -m };
            v as f32 as f64
        })
        .collect()
}

pub(crate) fn run_all(op: &GradOp, inputs: &[Option<&CpuValue>], outputs: usize) -> Vec<Tensor> {
    let a = Args { slots: inputs };
    match super::run(op, &a, outputs) {
        Ok(vs) => vs.iter().map(|v| v.to_host().unwrap()).collect(),
        Err(e) => panic!("{} failed: {}", op.name(), e.0),
    }
}

pub(crate) fn run_one(op: &GradOp, inputs: &[Option<&CpuValue>]) -> Tensor {
    let mut outs = run_all(op, inputs, 1);
    assert_eq!(outs.len(), 1, "{} outputs", op.name());
    outs.remove(0)
}

/// The error message of a run that must fail.
pub(crate) fn run_err(op: &GradOp, inputs: &[Option<&CpuValue>], outputs: usize) -> String {
    let a = Args { slots: inputs };
    match super::run(op, &a, outputs) {
        Ok(_) => panic!("{} succeeded on bad input", op.name()),
        Err(e) => e.0,
    }
}

const STEP: f64 = 1e-5;

/// (f(x + h) − f(x − h)) / 2h.
pub(crate) fn central_difference(f: impl Fn(f64) -> f64, x: f64) -> f64 {
    (f(x + STEP) - f(x - STEP)) / (2.0 * STEP)
}

/// The gradient of a scalar function of a vector by central differences.
pub(crate) fn numeric_gradient(f: impl Fn(&[f64]) -> f64, x: &[f64]) -> Vec<f64> {
    let mut p = x.to_vec();
    (0..x.len())
        .map(|i| {
            let x0 = p[i];
            p[i] = x0 + STEP;
            let up = f(&p);
            p[i] = x0 - STEP;
            let down = f(&p);
            p[i] = x0;
            (up - down) / (2.0 * STEP)
        })
        .collect()
}

pub(crate) fn dot64(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Checks `|got − want| ≤ tol·max|want|` elementwise; `want` must not vanish, so
/// that the comparison can fail.
pub(crate) fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    assert!(scale > 1e-6, "{what}: reference is all zero");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * scale,
            "{what}: element {i} is {g}, want {w} (error {err:e}, scale {scale:e})"
        );
    }
}

/// Row-major multi-index of flat position `flat`.
pub(crate) fn unravel(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for i in (0..dims.len()).rev() {
        idx[i] = flat % dims[i];
        flat /= dims[i];
    }
    idx
}

/// Flat position of a row-major multi-index.
pub(crate) fn ravel(idx: &[usize], dims: &[usize]) -> usize {
    idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Random dims of rank `rank`, each in `lo..hi`.
pub(crate) fn random_dims(rng: &mut StdRng, rank: usize, lo: usize, hi: usize) -> Vec<usize> {
    (0..rank).map(|_| rng.random_range(lo..hi)).collect()
}
