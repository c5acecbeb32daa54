//! Unit tests of the executor: each op family against hand-worked values or an
//! independent direct computation written in the test, plus the plan, the session's
//! input checks, buffer lifetimes and error reporting.

mod conv;
mod elementwise;
mod matmul;
mod norm;
mod real_models;
mod reduce;
mod resize;
mod session;
mod shape_ops;
mod speed;

use std::path::PathBuf;

use crate::ir::eval::NodeEval;
use crate::ir::{DType, Node, Op, Tensor, TensorData, Value};

use super::CpuBackend;

pub(super) fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
}

pub(super) fn i64t(shape: &[usize], v: &[i64]) -> Tensor {
    Tensor::from_i64(shape.to_vec(), v.to_vec()).unwrap()
}

pub(super) fn i32t(shape: &[usize], v: &[i32]) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::I32(v.to_vec())).unwrap()
}

pub(super) fn boolt(shape: &[usize], v: &[bool]) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::Bool(v.to_vec())).unwrap()
}

/// A node with one slot per input and `outputs` outputs.
pub(super) fn node(op: Op, inputs: usize, outputs: usize) -> Node {
    let outs = (0..outputs).map(|i| Value::new(format!("y{i}"))).collect();
    Node::new("n", op, inputs, outs)
}

/// Runs `op` on the CPU backend with optional inputs.
pub(super) fn eval_opt(
    op: Op,
    inputs: &[Option<Tensor>],
    outputs: usize,
) -> anyhow::Result<Vec<Tensor>> {
    CpuBackend.eval(&node(op, inputs.len(), outputs), inputs)
}

/// Runs a one-output `op` on the CPU backend.
pub(super) fn eval(op: Op, inputs: &[Tensor]) -> anyhow::Result<Tensor> {
    let ins: Vec<Option<Tensor>> = inputs.iter().cloned().map(Some).collect();
    Ok(eval_opt(op, &ins, 1)?.remove(0))
}

pub(super) fn eval_ok(op: Op, inputs: &[Tensor]) -> Tensor {
    match eval(op.clone(), inputs) {
        Ok(t) => t,
        Err(e) => panic!("{op} failed: {e}"),
    }
}

/// Asserts shape, dtype f32 and values within `tol` (absolute, relative to
/// max(1, |want|)); NaN must meet NaN.
#[track_caller]
pub(super) fn assert_f32(got: &Tensor, shape: &[usize], want: &[f32], tol: f32) {
    assert_eq!(got.shape(), shape, "shape");
    assert_eq!(got.dtype(), DType::F32, "dtype");
    let g = got.as_f32().unwrap();
    assert_eq!(g.len(), want.len(), "length");
    for (i, (&a, &b)) in g.iter().zip(want).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || (a - b).abs() <= tol * b.abs().max(1.0);
        assert!(
            ok,
            "element {i}: got {a}, want {b}\n got {g:?}\nwant {want:?}"
        );
    }
}

#[track_caller]
pub(super) fn assert_i64(got: &Tensor, shape: &[usize], want: &[i64]) {
    assert_eq!(got.shape(), shape, "shape");
    assert_eq!(got.as_i64(), Some(want), "values");
}

#[track_caller]
pub(super) fn assert_bool(got: &Tensor, shape: &[usize], want: &[bool]) {
    assert_eq!(got.shape(), shape, "shape");
    assert_eq!(got.as_bool(), Some(want), "values");
}

/// The error message of a failing evaluation.
#[track_caller]
pub(super) fn eval_err(op: Op, inputs: &[Tensor]) -> String {
    match eval(op, inputs) {
        Ok(t) => panic!("expected an error, got {:?}", t.shape()),
        Err(e) => e.to_string(),
    }
}

/// Deterministic pseudo-random values in [-1, 1).
pub(super) fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A model file: `fixtures:<path>` under the fixtures directory (env GLORA_FIXTURES
/// or ~/.cache/glora/fixtures), anything else as given; `None` when it is missing.
pub(super) fn model_path(p: &str) -> Option<PathBuf> {
    let path = if let Some(rest) = p.strip_prefix("fixtures:") {
        let root = std::env::var_os("GLORA_FIXTURES")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/glora/fixtures"))
            })?;
        root.join(rest)
    } else {
        PathBuf::from(p)
    };
    path.is_file().then_some(path)
}
