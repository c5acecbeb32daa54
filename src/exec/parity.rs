//! Backend parity: the same computations run on a backend under test and on the CPU
//! backend, which serves as the reference, with the same seeded random inputs.
//!
//! [`op_cases`] builds one [`OpCase`] per checked variant of every op a training
//! backend must run: forward ops (elementwise, normalisation, reductions, shape ops,
//! products, convolutions), every [`GradOp`], and the GLoRA layer forward and
//! backward for every option of every term. [`run_op_parity`] uploads each case's
//! host tensors to both backends, runs the node, downloads the outputs and compares
//! them. Each check yields a [`ParityCase`]; `crate::train::parity` compares a whole
//! supernet training step the same way. Tests and the command line call these with
//! the backend they want checked; nothing here needs a Rust toolchain at run time.
//!
//! Error measure: for each output, `max |a − b| / max(max |b|, 1e-6)` with `a` the
//! tested value and `b` the reference, and the case's error is the largest over its
//! outputs. Scaling by the tensor's largest reference magnitude, not element by
//! element, keeps values that are near zero by chance from dominating, while an
//! error anywhere in the tensor still counts in full. Non-finite values must match
//! exactly; integer and boolean outputs must be equal.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use anyhow::anyhow;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{Backend, CpuBackend, ExecError};
use crate::glora::{AbOption, AdapterTensors, COption, DeOption, LayerConfig, LayerShape};
use crate::ir::eval::NodeEval;
use crate::ir::{
    BinaryOp, ConvAttrs, DType, GLORA_LINEAR_INPUTS, GeluApprox, GemmAttrs, GloraLinearAttrs,
    GradOp, Node, Op, ReduceOp, Tensor, TensorData, UnaryGradKind, UnaryOp, Value, WeightLayout,
};

/// Tolerance of [`run_op_parity`] that an f32 backend computing in a different
/// order than the CPU should meet.
pub const DEFAULT_OP_TOLERANCE: f64 = 1e-4;
/// Smallest reference magnitude the error is scaled by, so that an all-zero
/// reference still yields a finite error.
const REFERENCE_FLOOR: f64 = 1e-6;

/// One parity check: an op (or a whole step) run on the backend under test and on the
/// CPU backend with the same random inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct ParityCase {
    pub name: String,
    /// Largest error over the outputs (see the module doc); infinite when the case
    /// could not be compared.
    pub max_rel_err: f64,
    pub tolerance: f64,
    pub passed: bool,
    /// Why the case could not be compared: the backend's error or panic, a missing
    /// output, a shape or dtype mismatch, non-finite or unequal integer values.
    pub error: Option<String>,
    /// The output with the largest error, as `name: max |a − b| = …, max |ref| = …`.
    pub worst: Option<String>,
}

impl ParityCase {
    fn failed(name: &str, tolerance: f64, error: String) -> ParityCase {
        ParityCase {
            name: name.to_string(),
            max_rel_err: f64::INFINITY,
            tolerance,
            passed: false,
            error: Some(error),
            worst: None,
        }
    }

    pub(crate) fn compared(
        name: &str,
        tolerance: f64,
        result: Result<OutputError, String>,
    ) -> ParityCase {
        match result {
            Err(e) => ParityCase::failed(name, tolerance, e),
            Ok(worst) => ParityCase {
                name: name.to_string(),
                max_rel_err: worst.rel,
                tolerance,
                passed: worst.rel <= tolerance,
                error: None,
                worst: worst.describe(),
            },
        }
    }
}

impl fmt::Display for ParityCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.passed { "ok  " } else { "FAIL" };
        write!(
            f,
            "{status} {}  rel err {:.2e} (tolerance {:.1e})",
            self.name, self.max_rel_err, self.tolerance
        )?;
        if let Some(e) = &self.error {
            write!(f, "  error: {e}")?;
        } else if !self.passed
            && let Some(w) = &self.worst
        {
            write!(f, "  worst {w}")?;
        }
        Ok(())
    }
}

/// How a case's node is run: an ordinary node through [`Backend::run_node`], or a
/// GLoRA layer (forward or backward) under a fixed config.
#[derive(Clone, Debug)]
pub enum CaseOp {
    Node(Node),
    Glora {
        node: Node,
        attrs: GloraLinearAttrs,
        config: LayerConfig,
    },
    GloraGrad {
        node: Node,
        attrs: GloraLinearAttrs,
        config: LayerConfig,
    },
}

impl CaseOp {
    pub fn node(&self) -> &Node {
        match self {
            CaseOp::Node(n) | CaseOp::Glora { node: n, .. } | CaseOp::GloraGrad { node: n, .. } => {
                n
            }
        }
    }
}

/// One op parity check: a node and its input slots (`None` for an empty optional
/// slot). Names start with the op's name and a `/`, then the variant.
#[derive(Clone, Debug)]
pub struct OpCase {
    pub name: String,
    pub op: CaseOp,
    pub inputs: Vec<Option<Tensor>>,
}

/// The largest error over one case's outputs and where it is.
#[derive(Clone, Debug, Default)]
pub(crate) struct OutputError {
    rel: f64,
    at: Option<(String, f64, f64)>,
}

impl OutputError {
    fn describe(&self) -> Option<String> {
        self.at.as_ref().map(|(name, diff, reference)| {
            format!("{name}: max |a - b| = {diff:.3e}, max |ref| = {reference:.3e}")
        })
    }
}

/// Largest absolute difference and largest reference magnitude of two tensors of the
/// same shape and dtype; an error when they cannot be compared.
fn difference(got: &Tensor, want: &Tensor) -> Result<(f64, f64), String> {
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {}, expected {}", got.dtype(), want.dtype()));
    }
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    if !want.dtype().is_float() {
        let (g, w) = (got.to_i64_vec(), want.to_i64_vec());
        let differing: Vec<usize> = (0..w.len()).filter(|&i| g[i] != w[i]).collect();
        return match differing.first() {
            None => Ok((0.0, 0.0)),
            Some(&i) => Err(format!(
                "{} of {} elements differ, the first at {i}: {} instead of {}",
                differing.len(),
                w.len(),
                g[i],
                w[i]
            )),
        };
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let (mut diff, mut reference) = (0f64, 0f64);
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let both_nan = a.is_nan() && b.is_nan();
        if !a.is_finite() || !b.is_finite() {
            if both_nan || a == b {
                continue;
            }
            return Err(format!("element {i} is {a}, expected {b}"));
        }
        diff = diff.max((a - b).abs());
        reference = reference.max(b.abs());
    }
    Ok((diff, reference))
}

/// The error of `got` against the reference `want`: `max |a − b| / max(max |b|,
/// 1e-6)`. Tensors of different shape or dtype, non-finite values that differ and
/// unequal integer or boolean elements are errors.
pub fn relative_error(got: &Tensor, want: &Tensor) -> Result<f64, String> {
    let (diff, reference) = difference(got, want)?;
    Ok(diff / reference.max(REFERENCE_FLOOR))
}

/// Compares a backend's outputs with the reference's, output by output.
pub(crate) fn compare_outputs(
    names: &[String],
    got: &[Tensor],
    want: &[Tensor],
) -> Result<OutputError, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{} outputs, the reference has {}",
            got.len(),
            want.len()
        ));
    }
    let mut worst = OutputError::default();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("output {i}"));
        let (diff, reference) = difference(g, w).map_err(|e| format!("{name}: {e}"))?;
        let rel = diff / reference.max(REFERENCE_FLOOR);
        if worst.at.is_none() || rel > worst.rel {
            worst = OutputError {
                rel,
                at: Some((name, diff, reference)),
            };
        }
    }
    Ok(worst)
}

/// Runs `f`, turning a panic into an error message.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            Err(format!("{what} panicked: {msg}"))
        }
    }
}

/// Uploads a case's inputs, runs its node and downloads every output.
fn run_case_on<B: Backend>(backend: &B, case: &OpCase) -> Result<Vec<Tensor>, String> {
    let values: Vec<Option<B::Value>> = case
        .inputs
        .iter()
        .enumerate()
        .map(|(slot, t)| {
            t.as_ref()
                .map(|t| backend.upload(t))
                .transpose()
                .map_err(|e| format!("uploading input {slot}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<Option<&B::Value>> = values.iter().map(Option::as_ref).collect();
    let outs = match &case.op {
        CaseOp::Node(node) => backend.run_node(node, &refs),
        CaseOp::Glora {
            node,
            attrs,
            config,
        } => backend
            .run_glora_linear(node, attrs, config, &refs)
            .map(|v| vec![v]),
        CaseOp::GloraGrad {
            node,
            attrs,
            config,
        } => backend.run_glora_linear_grad(node, attrs, config, &refs),
    }
    .map_err(|e| e.to_string())?;
    outs.iter()
        .map(|v| backend.download(v))
        .collect::<Result<Vec<_>, ExecError>>()
        .map_err(|e| format!("downloading: {e}"))
}

/// Runs one case on `backend` and on the CPU reference and compares the outputs.
pub fn run_op_case<B: Backend>(backend: &B, case: &OpCase, tolerance: f64) -> ParityCase {
    let want = match guarded("the cpu backend", || run_case_on(&CpuBackend, case)) {
        Ok(w) => w,
        Err(e) => return ParityCase::failed(&case.name, tolerance, format!("reference: {e}")),
    };
    let got = guarded(&format!("the {} backend", backend.name()), || {
        run_case_on(backend, case)
    });
    let names: Vec<String> = case
        .op
        .node()
        .outputs
        .iter()
        .map(|v| v.name.clone())
        .collect();
    ParityCase::compared(
        &case.name,
        tolerance,
        got.and_then(|got| compare_outputs(&names, &got, &want)),
    )
}

/// Runs every case of [`op_cases`] on `backend` against the CPU backend; `progress`
/// sees each result as it comes. A backend error or panic makes a failed case,
/// never a panic here.
pub fn run_op_parity<B: Backend>(
    backend: &B,
    tolerance: f64,
    seed: u64,
    mut progress: impl FnMut(&ParityCase),
) -> Vec<ParityCase> {
    let cases = match op_cases(seed) {
        Ok(c) => c,
        Err(e) => {
            let case = ParityCase::failed("setup", tolerance, format!("building the cases: {e:#}"));
            progress(&case);
            return vec![case];
        }
    };
    cases
        .iter()
        .map(|case| {
            let result = run_op_case(backend, case, tolerance);
            progress(&result);
            result
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Case generation.
// ---------------------------------------------------------------------------------

/// Seeded random host tensors and the growing list of cases.
struct Cases {
    rng: StdRng,
    list: Vec<OpCase>,
}

fn make_node(name: &str, op: Op, inputs: usize, outputs: usize) -> Node {
    let outs = (0..outputs)
        .map(|i| Value::new(format!("{name}:{i}")))
        .collect();
    Node::new(name, op, inputs, outs)
}

fn some(ts: Vec<Tensor>) -> Vec<Option<Tensor>> {
    ts.into_iter().map(Some).collect()
}

fn f32_tensor(shape: &[usize], v: Vec<f32>) -> anyhow::Result<Tensor> {
    Ok(Tensor::from_f32(shape.to_vec(), v)?)
}

fn i64_vec(v: &[i64]) -> Tensor {
    Tensor::vec_i64(v.to_vec())
}

fn dims(shape: &[usize]) -> String {
    let d: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", d.join(","))
}

/// Runs `op` on the CPU backend, for inputs derived from others (a forward output
/// fed to its backward rule), so that both backends get the same tensors.
fn reference(op: Op, inputs: &[Option<Tensor>], outputs: usize) -> anyhow::Result<Vec<Tensor>> {
    let node = make_node("derived", op, inputs.len(), outputs);
    CpuBackend.eval(&node, inputs)
}

impl Cases {
    fn new(seed: u64) -> Cases {
        Cases {
            rng: StdRng::seed_from_u64(seed),
            list: Vec::new(),
        }
    }

    fn push(&mut self, name: String, op: Op, outputs: usize, inputs: Vec<Option<Tensor>>) {
        let node = make_node(&name, op, inputs.len(), outputs);
        self.list.push(OpCase {
            name,
            op: CaseOp::Node(node),
            inputs,
        });
    }

    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, shape: &[usize], lo: f32, hi: f32) -> anyhow::Result<Tensor> {
        let n = shape.iter().product();
        let v = (0..n).map(|_| self.rng.random_range(lo..hi)).collect();
        f32_tensor(shape, v)
    }

    /// Magnitudes uniform in `[lo, hi)`, random signs.
    fn nonzero(&mut self, shape: &[usize], lo: f32, hi: f32) -> anyhow::Result<Tensor> {
        let n = shape.iter().product();
        let v = (0..n)
            .map(|_| {
                let m = self.rng.random_range(lo..hi);
                if self.rng.random_bool(0.5) { m } else { -m }
            })
            .collect();
        f32_tensor(shape, v)
    }

    /// Small integers as floats, so that equal elements occur.
    fn levels(&mut self, shape: &[usize]) -> anyhow::Result<Tensor> {
        let n = shape.iter().product();
        let v = (0..n).map(|_| self.rng.random_range(0..3) as f32).collect();
        f32_tensor(shape, v)
    }

    fn bools(&mut self, shape: &[usize]) -> anyhow::Result<Tensor> {
        let n = shape.iter().product();
        let v = (0..n).map(|_| self.rng.random_bool(0.5)).collect();
        Ok(Tensor::new(shape.to_vec(), TensorData::Bool(v))?)
    }

    fn labels(&mut self, n: usize, classes: usize) -> Tensor {
        let v = (0..n)
            .map(|_| self.rng.random_range(0..classes as i64))
            .collect();
        Tensor::vec_i64(v)
    }
}

/// Every op parity case, with inputs drawn from `seed`. Fails only when the CPU
/// backend cannot compute an input derived from others.
pub fn op_cases(seed: u64) -> anyhow::Result<Vec<OpCase>> {
    let mut c = Cases::new(seed);
    binary_cases(&mut c)?;
    unary_cases(&mut c)?;
    norm_cases(&mut c)?;
    reduce_cases(&mut c)?;
    shape_cases(&mut c)?;
    index_cases(&mut c)?;
    product_cases(&mut c)?;
    conv_cases(&mut c)?;
    grad_cases(&mut c)?;
    glora_cases(&mut c)?;
    Ok(c.list)
}

fn binary_cases(c: &mut Cases) -> anyhow::Result<()> {
    let pairs: [(&[usize], &[usize]); 6] = [
        (&[7, 45], &[7, 45]),
        (&[7, 45], &[45]),
        (&[4, 1, 33], &[5, 1]),
        (&[], &[3, 70]),
        (&[1, 37], &[29, 1]),
        (&[2, 3, 1, 40], &[3, 40, 1]),
    ];
    let ops = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Equal,
    ];
    for op in ops {
        for (sa, sb) in pairs {
            let (a, b) = match op {
                BinaryOp::Div => (c.uniform(sa, -2.0, 2.0)?, c.nonzero(sb, 0.5, 2.0)?),
                BinaryOp::Pow => (c.uniform(sa, 0.5, 2.0)?, c.uniform(sb, -2.0, 2.0)?),
                BinaryOp::Equal => (c.levels(sa)?, c.levels(sb)?),
                _ => (c.uniform(sa, -2.0, 2.0)?, c.uniform(sb, -2.0, 2.0)?),
            };
            let name = format!("{}/{}x{}", Op::Binary(op).name(), dims(sa), dims(sb));
            c.push(name, Op::Binary(op), 1, some(vec![a, b]));
        }
    }
    Ok(())
}

/// Inputs inside the domain of each elementwise function, away from its kinks.
fn unary_input(c: &mut Cases, op: UnaryOp, shape: &[usize]) -> anyhow::Result<Tensor> {
    match op {
        UnaryOp::Sqrt => c.uniform(shape, 0.1, 4.0),
        UnaryOp::Reciprocal => c.nonzero(shape, 0.25, 4.0),
        UnaryOp::Log => c.uniform(shape, 0.05, 5.0),
        UnaryOp::Exp => c.uniform(shape, -4.0, 4.0),
        UnaryOp::Abs | UnaryOp::Relu => c.nonzero(shape, 0.05, 3.0),
        _ => c.uniform(shape, -3.0, 3.0),
    }
}

fn unary_cases(c: &mut Cases) -> anyhow::Result<()> {
    let shape = [37, 61];
    for op in UnaryOp::ALL {
        let x = unary_input(c, op, &shape)?;
        let name = format!("{}/{}", Op::Unary(op).name(), dims(&shape));
        c.push(name, Op::Unary(op), 1, some(vec![x]));
    }
    let bounds = [
        ("min,max", Some(-0.5), Some(1.2)),
        ("min", Some(-0.5), None),
        ("max", None, Some(0.7)),
        ("unbounded", None, None),
    ];
    for (label, lo, hi) in bounds {
        let x = c.uniform(&shape, -3.0, 3.0)?;
        let inputs = vec![
            Some(x),
            lo.map(Tensor::scalar_f32),
            hi.map(Tensor::scalar_f32),
        ];
        c.push(format!("Clip/{label}"), Op::Clip, 1, inputs);
    }
    for (label, approximate) in [("erf", GeluApprox::None), ("tanh", GeluApprox::Tanh)] {
        let x = c.uniform(&shape, -4.0, 4.0)?;
        c.push(
            format!("Gelu/{label}"),
            Op::Gelu { approximate },
            1,
            some(vec![x]),
        );
    }
    let x = c.uniform(&shape, -3.0, 3.0)?;
    c.push(
        "Cast/f32->f32".into(),
        Op::Cast { to: DType::F32 },
        1,
        some(vec![x]),
    );
    Ok(())
}

fn norm_cases(c: &mut Cases) -> anyhow::Result<()> {
    let softmax: [(&[usize], i64); 4] = [
        (&[5, 33, 27], -1),
        (&[5, 33, 27], 1),
        (&[5, 33, 27], 0),
        (&[19, 197], -1),
    ];
    for (shape, axis) in softmax {
        let x = c.uniform(shape, -3.0, 3.0)?;
        let name = format!("Softmax/axis={axis} {}", dims(shape));
        c.push(name, Op::Softmax { axis }, 1, some(vec![x]));
    }
    // (axis, normalised shape, bias, outputs)
    let layer_norms: [(i64, &[usize], bool, usize); 4] = [
        (-1, &[70], true, 1),
        (-1, &[70], true, 3),
        (-1, &[70], false, 3),
        (-2, &[17, 70], true, 3),
    ];
    for (axis, norm_shape, bias, outputs) in layer_norms {
        let x = c.uniform(&[4, 17, 70], -2.0, 3.0)?;
        let scale = c.nonzero(norm_shape, 0.5, 1.5)?;
        let b = if bias {
            Some(c.uniform(norm_shape, -1.0, 1.0)?)
        } else {
            None
        };
        let name = format!(
            "LayerNormalization/axis={axis} {} outputs={outputs}",
            if bias { "bias" } else { "no_bias" }
        );
        let op = Op::LayerNorm {
            axis,
            epsilon: 1e-5,
        };
        c.push(name, op, outputs, vec![Some(x), Some(scale), b]);
    }
    Ok(())
}

fn reduce_cases(c: &mut Cases) -> anyhow::Result<()> {
    let shape = [6, 35, 19];
    let axes_sets: [Option<&[i64]>; 4] = [Some(&[1]), Some(&[0, 2]), Some(&[-1]), None];
    for op in [ReduceOp::Mean, ReduceOp::Sum, ReduceOp::Max] {
        for axes in axes_sets {
            for keepdims in [true, false] {
                let x = c.uniform(&shape, -2.0, 2.0)?;
                let op = Op::Reduce {
                    op,
                    axes: axes.map(<[i64]>::to_vec),
                    keepdims,
                    noop_with_empty_axes: false,
                };
                let name = format!(
                    "{}/axes={} keepdims={keepdims}",
                    op.name(),
                    axes.map_or("all".to_string(), |a| format!("{a:?}"))
                );
                c.push(name, op, 1, some(vec![x]));
            }
        }
    }
    Ok(())
}

fn shape_cases(c: &mut Cases) -> anyhow::Result<()> {
    let base = [6, 35, 4];
    for target in [&[0, -1][..], &[-1, 20, 7], &[840], &[2, 3, 5, 7, 4]] {
        let x = c.uniform(&base, -1.0, 1.0)?;
        let name = format!("Reshape/{}->{target:?}", dims(&base));
        let op = Op::Reshape { allowzero: false };
        c.push(name, op, 1, some(vec![x, i64_vec(target)]));
    }
    for axis in [0, 1, 2, -1] {
        let x = c.uniform(&base, -1.0, 1.0)?;
        c.push(
            format!("Flatten/axis={axis}"),
            Op::Flatten { axis },
            1,
            some(vec![x]),
        );
    }
    for axes in [None, Some(vec![1]), Some(vec![-1]), Some(vec![1, 3])] {
        let x = c.uniform(&[3, 1, 40, 1], -1.0, 1.0)?;
        let name = format!(
            "Squeeze/axes={}",
            axes.as_ref()
                .map_or("all".to_string(), |a| format!("{a:?}"))
        );
        c.push(name, Op::Squeeze { axes }, 1, some(vec![x]));
    }
    for axes in [vec![0], vec![1, 3], vec![-1]] {
        let x = c.uniform(&[33, 40], -1.0, 1.0)?;
        let name = format!("Unsqueeze/axes={axes:?}");
        c.push(name, Op::Unsqueeze { axes }, 1, some(vec![x]));
    }
    let perms: [(&[usize], Option<&[usize]>); 5] = [
        (&[6, 35, 19], None),
        (&[6, 35, 19], Some(&[0, 2, 1])),
        (&[6, 35, 19], Some(&[2, 0, 1])),
        (&[2, 17, 4, 16], Some(&[0, 2, 1, 3])),
        (&[2, 17, 4, 16], Some(&[0, 2, 3, 1])),
    ];
    for (shape, perm) in perms {
        let x = c.uniform(shape, -1.0, 1.0)?;
        let name = format!(
            "Transpose/{} perm={}",
            dims(shape),
            perm.map_or("reversed".to_string(), |p| format!("{p:?}"))
        );
        let op = Op::Transpose {
            perm: perm.map(<[usize]>::to_vec),
        };
        c.push(name, op, 1, some(vec![x]));
    }
    let concats: [(&[&[usize]], i64); 3] = [
        (&[&[7, 45], &[3, 45]], 0),
        (&[&[4, 33, 5], &[4, 33, 11], &[4, 33, 2]], -1),
        (&[&[2, 5, 40], &[2, 7, 40]], 1),
    ];
    for (shapes, axis) in concats {
        let xs = shapes
            .iter()
            .map(|s| c.uniform(s, -1.0, 1.0))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let parts: Vec<String> = shapes.iter().map(|s| dims(s)).collect();
        let name = format!("Concat/axis={axis} {}", parts.join("+"));
        c.push(name, Op::Concat { axis }, 1, some(xs));
    }
    let splits: [(i64, Option<&[usize]>, usize); 4] = [
        (1, None, 3),
        (1, Some(&[5, 20, 10]), 3),
        (0, None, 2),
        (-1, Some(&[4, 15]), 2),
    ];
    for (axis, sizes, outputs) in splits {
        let x = c.uniform(&[6, 35, 19], -1.0, 1.0)?;
        let name = format!(
            "Split/axis={axis} {}",
            sizes.map_or(format!("{outputs} equal"), |s| format!("sizes={s:?}"))
        );
        let op = Op::Split {
            axis,
            sizes: sizes.map(<[usize]>::to_vec),
        };
        c.push(name, op, outputs, some(vec![x]));
    }
    let expands: [(&[usize], &[i64]); 3] = [
        (&[1, 37], &[5, 37]),
        (&[3, 1, 20], &[2, 3, 4, 20]),
        (&[29, 1], &[1, 33]),
    ];
    for (shape, target) in expands {
        let x = c.uniform(shape, -1.0, 1.0)?;
        let name = format!("Expand/{}->{target:?}", dims(shape));
        c.push(name, Op::Expand, 1, some(vec![x, i64_vec(target)]));
    }
    let wheres: [(&[usize], &[usize], &[usize]); 2] =
        [(&[7, 45], &[7, 45], &[45]), (&[7, 1], &[1, 45], &[])];
    for (sc, sa, sb) in wheres {
        let cond = c.bools(sc)?;
        let (a, b) = (c.uniform(sa, -1.0, 1.0)?, c.uniform(sb, -1.0, 1.0)?);
        let name = format!("Where/{}?{}:{}", dims(sc), dims(sa), dims(sb));
        c.push(name, Op::Where, 1, some(vec![cond, a, b]));
    }
    Ok(())
}

/// Slice inputs: starts, ends, axes?, steps?.
type SliceSpec = (
    &'static [i64],
    &'static [i64],
    Option<&'static [i64]>,
    Option<&'static [i64]>,
);

const SLICES: [SliceSpec; 6] = [
    (&[2], &[15], Some(&[0]), None),
    (&[1, 0], &[37, 9], Some(&[1, 2]), Some(&[2, 3])),
    (&[-5], &[-1], Some(&[1]), None),
    (&[-1], &[-1000], Some(&[1]), Some(&[-2])),
    (&[0, 3, 1], &[20, 30, 8], None, None),
    (&[5], &[1000], Some(&[-1]), Some(&[1])),
];

fn slice_inputs(x: Tensor, (starts, ends, axes, steps): SliceSpec) -> Vec<Option<Tensor>> {
    vec![
        Some(x),
        Some(i64_vec(starts)),
        Some(i64_vec(ends)),
        axes.map(i64_vec),
        steps.map(i64_vec),
    ]
}

fn slice_name(op: &str, (starts, ends, axes, steps): SliceSpec) -> String {
    format!("{op}/starts={starts:?} ends={ends:?} axes={axes:?} steps={steps:?}")
}

/// Gather cases: data shape, axis, index shape and values.
type GatherSpec = (&'static [usize], i64, &'static [usize], &'static [i64]);

const GATHERS: [GatherSpec; 4] = [
    (&[29, 45], 0, &[7], &[0, 28, -1, 5, -29, 13, 5]),
    (
        &[29, 45],
        1,
        &[3, 4],
        &[0, 44, -1, 7, -45, 20, 20, 3, 11, -12, 30, 1],
    ),
    (&[8, 17, 64], 1, &[], &[0]),
    (&[6, 35, 19], 0, &[2, 2], &[5, -6, 2, 2]),
];

fn gather_indices((_, _, shape, values): GatherSpec) -> anyhow::Result<Tensor> {
    Ok(Tensor::from_i64(shape.to_vec(), values.to_vec())?)
}

fn index_cases(c: &mut Cases) -> anyhow::Result<()> {
    for spec in GATHERS {
        let (shape, axis, ishape, _) = spec;
        let x = c.uniform(shape, -1.0, 1.0)?;
        let name = format!(
            "Gather/axis={axis} {} indices {}",
            dims(shape),
            dims(ishape)
        );
        c.push(
            name,
            Op::Gather { axis },
            1,
            some(vec![x, gather_indices(spec)?]),
        );
    }
    for spec in SLICES {
        let x = c.uniform(&[20, 37, 9], -1.0, 1.0)?;
        c.push(
            slice_name("Slice", spec),
            Op::Slice,
            1,
            slice_inputs(x, spec),
        );
    }
    Ok(())
}

fn product_cases(c: &mut Cases) -> anyhow::Result<()> {
    let matmuls: [(&[usize], &[usize]); 6] = [
        (&[37, 70], &[70, 45]),
        (&[3, 33, 40], &[3, 40, 29]),
        (&[4, 50, 64], &[64, 96]),
        (&[2, 4, 17, 16], &[2, 4, 16, 17]),
        (&[2, 4, 17, 17], &[2, 4, 17, 16]),
        (&[2, 1, 9, 20], &[3, 20, 7]),
    ];
    for (sa, sb) in matmuls {
        let (a, b) = (c.uniform(sa, -1.0, 1.0)?, c.uniform(sb, -1.0, 1.0)?);
        let name = format!("MatMul/{}x{}", dims(sa), dims(sb));
        c.push(name, Op::MatMul, 1, some(vec![a, b]));
    }
    let (m, k, n) = (37, 70, 45);
    let gemm = |trans_a, trans_b, alpha, beta| GemmAttrs {
        alpha,
        beta,
        trans_a,
        trans_b,
    };
    let gemms: [(GemmAttrs, Option<&[usize]>); 5] = [
        (gemm(false, false, 1.0, 1.0), Some(&[45])),
        (gemm(false, true, 0.7, 1.3), Some(&[37, 45])),
        (gemm(true, false, 1.0, 0.5), Some(&[1, 45])),
        (gemm(true, true, 1.5, -0.8), Some(&[37, 1])),
        (gemm(false, true, 1.0, 1.0), None),
    ];
    for (attrs, c_shape) in gemms {
        let GemmAttrs {
            alpha,
            beta,
            trans_a,
            trans_b,
        } = attrs;
        let sa = if trans_a { [k, m] } else { [m, k] };
        let sb = if trans_b { [n, k] } else { [k, n] };
        let a = c.uniform(&sa, -1.0, 1.0)?;
        let b = c.uniform(&sb, -1.0, 1.0)?;
        let bias = c_shape.map(|s| c.uniform(s, -1.0, 1.0)).transpose()?;
        let name = format!(
            "Gemm/transA={} transB={} alpha={alpha} beta={beta} C={}",
            trans_a as u8,
            trans_b as u8,
            c_shape.map_or("none".to_string(), dims)
        );
        c.push(name, Op::Gemm(attrs), 1, vec![Some(a), Some(b), bias]);
    }
    Ok(())
}

/// A convolution case: its label, attributes, input, weight and output shapes.
struct ConvSpec {
    label: &'static str,
    attrs: ConvAttrs,
    x: [usize; 4],
    w: [usize; 4],
    y: [usize; 4],
}

fn conv_specs() -> [ConvSpec; 3] {
    let explicit = |stride: usize| ConvAttrs {
        kernel_shape: vec![3, 3],
        strides: vec![stride, stride],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        group: 1,
        ..ConvAttrs::default()
    };
    [
        ConvSpec {
            label: "patch 8x8 stride 8",
            attrs: ConvAttrs {
                kernel_shape: vec![8, 8],
                strides: vec![8, 8],
                group: 1,
                ..ConvAttrs::default()
            },
            x: [2, 3, 32, 32],
            w: [48, 3, 8, 8],
            y: [2, 48, 4, 4],
        },
        ConvSpec {
            label: "3x3 pad 1",
            attrs: explicit(1),
            x: [2, 5, 13, 13],
            w: [7, 5, 3, 3],
            y: [2, 7, 13, 13],
        },
        ConvSpec {
            label: "3x3 pad 1 stride 2",
            attrs: explicit(2),
            x: [2, 5, 13, 13],
            w: [7, 5, 3, 3],
            y: [2, 7, 7, 7],
        },
    ]
}

fn conv_cases(c: &mut Cases) -> anyhow::Result<()> {
    for (i, spec) in conv_specs().into_iter().enumerate() {
        let x = c.uniform(&spec.x, -1.0, 1.0)?;
        let w = c.uniform(&spec.w, -0.5, 0.5)?;
        let with_bias = i != 2;
        let b = if with_bias {
            Some(c.uniform(&spec.w[..1], -1.0, 1.0)?)
        } else {
            None
        };
        let name = format!(
            "Conv/{} {}",
            spec.label,
            if with_bias { "bias" } else { "no_bias" }
        );
        c.push(name, Op::Conv(spec.attrs), 1, vec![Some(x), Some(w), b]);
    }
    Ok(())
}

/// The forward op a unary backward rule differentiates.
fn unary_forward(kind: UnaryGradKind) -> Op {
    match kind {
        UnaryGradKind::Sqrt => Op::Unary(UnaryOp::Sqrt),
        UnaryGradKind::Reciprocal => Op::Unary(UnaryOp::Reciprocal),
        UnaryGradKind::Exp => Op::Unary(UnaryOp::Exp),
        UnaryGradKind::Log => Op::Unary(UnaryOp::Log),
        UnaryGradKind::Abs => Op::Unary(UnaryOp::Abs),
        UnaryGradKind::Erf => Op::Unary(UnaryOp::Erf),
        UnaryGradKind::Tanh => Op::Unary(UnaryOp::Tanh),
        UnaryGradKind::Relu => Op::Unary(UnaryOp::Relu),
        UnaryGradKind::Sigmoid => Op::Unary(UnaryOp::Sigmoid),
        UnaryGradKind::Gelu(approximate) => Op::Gelu { approximate },
    }
}

fn one_output(mut outs: Vec<Tensor>, what: &str) -> anyhow::Result<Tensor> {
    if outs.is_empty() {
        return Err(anyhow!("{what} produced no output"));
    }
    Ok(outs.swap_remove(0))
}

fn grad_cases(c: &mut Cases) -> anyhow::Result<()> {
    let shape = [37, 61];
    for kind in UnaryGradKind::ALL {
        let forward = unary_forward(kind);
        let x = match &forward {
            Op::Unary(op) => unary_input(c, *op, &shape)?,
            _ => c.uniform(&shape, -4.0, 4.0)?,
        };
        let y = one_output(
            reference(forward, &[Some(x.clone())], 1)?,
            "the unary forward",
        )?;
        let dy = c.uniform(&shape, -1.0, 1.0)?;
        let name = format!("UnaryGrad/{kind:?}");
        c.push(name, Op::Grad(GradOp::Unary(kind)), 1, some(vec![x, y, dy]));
    }
    for axis in [-1, 1] {
        let x = c.uniform(&[5, 33, 27], -3.0, 3.0)?;
        let y = one_output(
            reference(Op::Softmax { axis }, &[Some(x)], 1)?,
            "the softmax",
        )?;
        let dy = c.uniform(&[5, 33, 27], -1.0, 1.0)?;
        let name = format!("SoftmaxGrad/axis={axis}");
        c.push(
            name,
            Op::Grad(GradOp::Softmax { axis }),
            1,
            some(vec![y, dy]),
        );
    }
    let layer_norms: [(i64, &[usize], usize); 3] =
        [(-1, &[70], 3), (-1, &[70], 1), (-2, &[17, 70], 3)];
    for (axis, norm_shape, outputs) in layer_norms {
        let x = c.uniform(&[4, 17, 70], -2.0, 3.0)?;
        let scale = c.nonzero(norm_shape, 0.5, 1.5)?;
        let dy = c.uniform(&[4, 17, 70], -1.0, 1.0)?;
        let name = format!("LayerNormalizationGrad/axis={axis} outputs={outputs}");
        let op = Op::Grad(GradOp::LayerNorm {
            axis,
            epsilon: 1e-5,
        });
        c.push(name, op, outputs, some(vec![x, scale, dy]));
    }
    for spec in GATHERS {
        let (shape, axis, ishape, _) = spec;
        let ax = if axis < 0 {
            axis + shape.len() as i64
        } else {
            axis
        } as usize;
        let mut dy_shape = shape[..ax].to_vec();
        dy_shape.extend_from_slice(ishape);
        dy_shape.extend_from_slice(&shape[ax + 1..]);
        let dy = c.uniform(&dy_shape, -1.0, 1.0)?;
        let name = format!(
            "GatherGrad/axis={axis} {} indices {}",
            dims(shape),
            dims(ishape)
        );
        let op = Op::Grad(GradOp::Gather {
            axis,
            x_shape: shape.to_vec(),
        });
        c.push(name, op, 1, some(vec![gather_indices(spec)?, dy]));
    }
    let x_shape = [20, 37, 9];
    for spec in SLICES {
        let x = c.uniform(&x_shape, -1.0, 1.0)?;
        let sliced = one_output(reference(Op::Slice, &slice_inputs(x, spec), 1)?, "Slice")?;
        let dy = c.uniform(sliced.shape(), -1.0, 1.0)?;
        let inputs = slice_inputs(dy, spec);
        let op = Op::Grad(GradOp::Slice {
            x_shape: x_shape.to_vec(),
        });
        c.push(slice_name("SliceGrad", spec), op, 1, inputs);
    }
    for spec in conv_specs() {
        let x = c.uniform(&spec.x, -1.0, 1.0)?;
        let dy = c.uniform(&spec.y, -1.0, 1.0)?;
        let name = format!("ConvWeightGrad/{}", spec.label);
        let op = Op::Grad(GradOp::ConvWeight {
            attrs: spec.attrs,
            w_shape: spec.w.to_vec(),
        });
        c.push(name, op, 1, some(vec![x, dy]));
    }
    // The last case ignores every third row (a language model's prompt and padding).
    for (n, k, ignored) in [(37, 10, false), (16, 100, false), (24, 50, true)] {
        for label_smoothing in [0.0, 0.1] {
            let logits = c.uniform(&[n, k], -3.0, 3.0)?;
            let mut labels = c.labels(n, k);
            if ignored {
                let v = labels.to_i64_vec();
                let v = v
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| if i % 3 == 1 { -100 } else { l });
                labels = Tensor::vec_i64(v.collect());
            }
            let name = format!(
                "SoftmaxCrossEntropy/[{n},{k}]{} smoothing={label_smoothing}",
                if ignored { " ignoring rows" } else { "" }
            );
            let op = Op::Grad(GradOp::SoftmaxCrossEntropy { label_smoothing });
            c.push(name, op, 1, some(vec![logits.clone(), labels.clone()]));
            let dloss = Tensor::scalar_f32(c.rng.random_range(0.5..2.0));
            let name = format!(
                "SoftmaxCrossEntropyGrad/[{n},{k}]{} smoothing={label_smoothing}",
                if ignored { " ignoring rows" } else { "" }
            );
            let op = Op::Grad(GradOp::SoftmaxCrossEntropyGrad { label_smoothing });
            c.push(name, op, 1, some(vec![logits, labels, dloss]));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// GLoRA cases.
// ---------------------------------------------------------------------------------

const GLORA_D_IN: usize = 70;
const GLORA_D_OUT: usize = 45;
/// Rank the factors are stored at; LoRA options read it and a smaller one.
const GLORA_RANK: usize = 6;
const GLORA_SMALL_RANK: usize = 3;
const GLORA_X_SHAPE: [usize; 3] = [3, 13, GLORA_D_IN];

/// The configs the GLoRA cases run under: all terms off, each option of each term
/// alone (so a wrong term shows by itself), and mixed configs in which every option
/// meets others.
fn glora_configs() -> Vec<LayerConfig> {
    let ab = [
        AbOption::Lora(GLORA_SMALL_RANK),
        AbOption::Lora(GLORA_RANK),
        AbOption::Vector,
        AbOption::Constant,
        AbOption::None,
    ];
    let cs = [
        COption::Lora(GLORA_SMALL_RANK),
        COption::Lora(GLORA_RANK),
        COption::Vector,
        COption::None,
    ];
    let de = [DeOption::Vector, DeOption::Constant, DeOption::None];
    let none = LayerConfig::NONE;
    let mut configs = vec![none];
    for &a in ab.iter().filter(|o| **o != AbOption::None) {
        configs.push(LayerConfig { a, ..none });
    }
    for &b in ab.iter().filter(|o| **o != AbOption::None) {
        configs.push(LayerConfig { b, ..none });
    }
    for &c in cs.iter().filter(|o| **o != COption::None) {
        configs.push(LayerConfig { c, ..none });
    }
    for &d in de.iter().filter(|o| **o != DeOption::None) {
        configs.push(LayerConfig { d, ..none });
    }
    for &e in de.iter().filter(|o| **o != DeOption::None) {
        configs.push(LayerConfig { e, ..none });
    }
    for i in 0..ab.len() {
        configs.push(LayerConfig {
            a: ab[i],
            b: ab[(i + 2) % ab.len()],
            c: cs[(i + 1) % cs.len()],
            d: de[i % de.len()],
            e: de[(i + 2) % de.len()],
        });
    }
    configs
}

fn layout_label(layout: WeightLayout) -> &'static str {
    match layout {
        WeightLayout::InOut => "in_out",
        WeightLayout::OutIn => "out_in",
    }
}

/// The eleven forward inputs of one GLoRA layer, adapters random and non-zero.
fn glora_inputs(c: &mut Cases, attrs: &GloraLinearAttrs) -> anyhow::Result<Vec<Option<Tensor>>> {
    let w0_shape = match attrs.layout {
        WeightLayout::InOut => [attrs.d_in, attrs.d_out],
        WeightLayout::OutIn => [attrs.d_out, attrs.d_in],
    };
    let shape = LayerShape {
        d_in: attrs.d_in,
        d_out: attrs.d_out,
        has_bias: attrs.has_bias,
    };
    let mut inputs = vec![
        Some(c.uniform(&GLORA_X_SHAPE, -1.0, 1.0)?),
        Some(c.uniform(&w0_shape, -0.5, 0.5)?),
        if attrs.has_bias {
            Some(c.uniform(&[attrs.d_out], -1.0, 1.0)?)
        } else {
            None
        },
    ];
    for s in AdapterTensors::expected_shapes(shape, attrs.rank) {
        inputs.push(Some(c.nonzero(&s, 0.05, 0.5)?));
    }
    Ok(inputs)
}

/// The forward output of a GLoRA layer on the CPU, fed to backward cases as `y`.
fn glora_reference_output(
    attrs: &GloraLinearAttrs,
    config: &LayerConfig,
    inputs: &[Option<Tensor>],
) -> anyhow::Result<Tensor> {
    let node = make_node("derived", Op::GloraLinear(attrs.clone()), inputs.len(), 1);
    let case = OpCase {
        name: "derived".into(),
        op: CaseOp::Glora {
            node,
            attrs: attrs.clone(),
            config: *config,
        },
        inputs: inputs.to_vec(),
    };
    let outs = run_case_on(&CpuBackend, &case).map_err(|e| anyhow!("GLoRA forward: {e}"))?;
    one_output(outs, "the GLoRA forward")
}

fn glora_cases(c: &mut Cases) -> anyhow::Result<()> {
    for config in glora_configs() {
        for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
            for has_bias in [true, false] {
                let attrs = GloraLinearAttrs {
                    layer: "parity".into(),
                    d_in: GLORA_D_IN,
                    d_out: GLORA_D_OUT,
                    rank: GLORA_RANK,
                    layout,
                    has_bias,
                };
                let variant = format!(
                    "{}/{}",
                    layout_label(layout),
                    if has_bias { "bias" } else { "no_bias" }
                );
                glora_forward_case(c, &attrs, &config, &variant)?;
                glora_backward_cases(c, &attrs, &config, &variant)?;
            }
        }
    }
    Ok(())
}

fn glora_forward_case(
    c: &mut Cases,
    attrs: &GloraLinearAttrs,
    config: &LayerConfig,
    variant: &str,
) -> anyhow::Result<()> {
    let inputs = glora_inputs(c, attrs)?;
    let name = format!("GloraLinear/{variant}/{config}");
    let node = make_node(
        &name,
        Op::GloraLinear(attrs.clone()),
        GLORA_LINEAR_INPUTS,
        1,
    );
    c.list.push(OpCase {
        name,
        op: CaseOp::Glora {
            node,
            attrs: attrs.clone(),
            config: *config,
        },
        inputs,
    });
    Ok(())
}

/// Backward cases without dx, with dx, and with dx and the forward's output `y`.
fn glora_backward_cases(
    c: &mut Cases,
    attrs: &GloraLinearAttrs,
    config: &LayerConfig,
    variant: &str,
) -> anyhow::Result<()> {
    for (input_grad, with_y) in [(false, false), (true, false), (true, true)] {
        let mut inputs = glora_inputs(c, attrs)?;
        let mut dy_shape = GLORA_X_SHAPE.to_vec();
        dy_shape[2] = attrs.d_out;
        let y = if with_y {
            Some(glora_reference_output(attrs, config, &inputs)?)
        } else {
            None
        };
        inputs.push(Some(c.uniform(&dy_shape, -1.0, 1.0)?));
        inputs.push(y);
        let name = format!(
            "GloraLinearGrad/{variant}/{}/{}/{config}",
            if input_grad { "dx" } else { "no_dx" },
            if with_y { "y" } else { "no_y" }
        );
        let outputs = if input_grad { 9 } else { 8 };
        let op = Op::Grad(GradOp::GloraLinear(attrs.clone()));
        let node = make_node(&name, op, GLORA_LINEAR_INPUTS + 2, outputs);
        c.list.push(OpCase {
            name,
            op: CaseOp::GloraGrad {
                node,
                attrs: attrs.clone(),
                config: *config,
            },
            inputs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn relative_error_scales_by_the_largest_reference_magnitude() {
        let want = f32t(&[3], &[0.0, -4.0, 1.0]);
        let got = f32t(&[3], &[0.015625, -4.0, 1.03125]);
        // max |a - b| = 1/32 (at the last element), max |b| = 4.
        assert_eq!(relative_error(&got, &want), Ok(0.0078125));
        let zeros = f32t(&[2], &[0.0, 0.0]);
        let e = relative_error(&f32t(&[2], &[0.0, 1e-9]), &zeros).unwrap();
        assert!((e - 1e-3).abs() < 1e-9, "{e}");
    }

    #[test]
    fn relative_error_rejects_what_cannot_be_compared() {
        let want = f32t(&[2], &[1.0, f32::NAN]);
        assert_eq!(
            relative_error(&f32t(&[2], &[1.0, f32::NAN]), &want),
            Ok(0.0)
        );
        let e = relative_error(&f32t(&[2], &[1.0, 2.0]), &want).unwrap_err();
        assert!(e.contains("element 1"), "{e}");
        let e = relative_error(&f32t(&[2], &[f32::INFINITY, 2.0]), &f32t(&[2], &[1.0, 2.0]))
            .unwrap_err();
        assert!(e.contains("element 0"), "{e}");
        let e = relative_error(&f32t(&[1, 2], &[1.0, 2.0]), &f32t(&[2], &[1.0, 2.0])).unwrap_err();
        assert!(e.contains("shape"), "{e}");
        let ints = Tensor::vec_i64(vec![1, 2, 3]);
        assert_eq!(relative_error(&ints, &ints), Ok(0.0));
        let e = relative_error(&Tensor::vec_i64(vec![1, 5, 3]), &ints).unwrap_err();
        assert!(e.contains("1 of 3") && e.contains("5 instead of 2"), "{e}");
        let e = relative_error(&f32t(&[3], &[1.0, 2.0, 3.0]), &ints).unwrap_err();
        assert!(e.contains("dtype"), "{e}");
    }

    #[test]
    fn case_names_are_unique_and_start_with_the_op() {
        let cases = op_cases(3).unwrap();
        let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        for c in &cases {
            let op = c.op.node().op.name();
            assert!(c.name.starts_with(&format!("{op}/")), "{} ({op})", c.name);
        }
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "duplicate case names");
    }

    #[test]
    fn glora_configs_cover_every_option_of_every_term() {
        let configs = glora_configs();
        let space = crate::glora::SearchSpace::new([GLORA_SMALL_RANK, GLORA_RANK]).unwrap();
        for slot in crate::glora::Slot::ALL {
            for option in space.option_names(slot) {
                assert!(
                    configs.iter().any(|c| c.option_string(slot) == option),
                    "{slot} = {option} is never run"
                );
            }
        }
    }
}
