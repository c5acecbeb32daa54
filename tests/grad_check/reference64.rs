//! An f64 reference interpreter of IR graphs, independent of the executor, for
//! gradient checks by finite differences.
//!
//! [`eval64`] takes a [`Graph`], the values of its inputs (and, optionally, replacement
//! values of `Const` or `Param` nodes, by output value name) as [`Array64`]s and the
//! GLoRA configs of its adapted layers, and returns the graph outputs computed in f64
//! with plain loops over multi-indices, following the ONNX definitions of each op. It
//! shares no code with `glora::exec`; tests compare the two in both directions.
//! Integer tensors (indices, shapes, axes) travel as f64 and are read back as
//! integers where an op needs them.

// Not every test target that includes this module calls every helper.
#![allow(dead_code)]
// Index loops mirror the formulas of the op definitions, which is the point here.
#![allow(clippy::needless_range_loop)]

use std::collections::{HashMap, HashSet};

use glora::glora::{AbOption, COption, DeOption, LayerConfig, ModelConfig};
use glora::ir::{
    AutoPad, BinaryOp, ConvAttrs, DType, GeluApprox, GemmAttrs, GloraLinearAttrs, GradOp, Graph,
    Node, NodeIndex, Op, Port, ReduceOp, Tensor, TensorData, UnaryOp, WeightLayout,
};

/// A dense row-major f64 array.
#[derive(Clone, Debug, PartialEq)]
pub struct Array64 {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Array64 {
    /// An array from its parts; the data must fill the shape exactly.
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Result<Array64, String> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(format!(
                "shape {shape:?} holds {expected} values but {} were given",
                data.len()
            ));
        }
        Ok(Array64 { shape, data })
    }

    pub fn zeros(shape: &[usize]) -> Array64 {
        Array64 {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    pub fn scalar(v: f64) -> Array64 {
        Array64 {
            shape: vec![],
            data: vec![v],
        }
    }

    /// Every element of `t` by value: floats widened, integers exactly (up to 2^53),
    /// booleans as 0 and 1.
    pub fn from_tensor(t: &Tensor) -> Array64 {
        let data: Vec<f64> = match t.data() {
            TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::F16(v) => v.iter().map(|x| f64::from(x.to_f32())).collect(),
            TensorData::BF16(v) => v.iter().map(|x| f64::from(x.to_f32())).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        };
        Array64 {
            shape: t.shape().to_vec(),
            data,
        }
    }

    /// The values rounded to f32, for feeding an executor.
    pub fn to_f32_tensor(&self) -> Result<Tensor, String> {
        Tensor::from_f32(
            self.shape.clone(),
            self.data.iter().map(|&x| x as f32).collect(),
        )
        .map_err(|e| e.to_string())
    }

    /// The values as i64 (each must be integral).
    pub fn to_i64_tensor(&self) -> Result<Tensor, String> {
        Tensor::from_i64(self.shape.clone(), ints(self, "array")?).map_err(|e| e.to_string())
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

/// Evaluates the outputs of `g`, in graph order, in f64.
///
/// `Input` nodes take `inputs[value name]`; `Const` and `Param` nodes take their own
/// tensor unless `inputs` holds an array under their output value name, which must
/// have the tensor's shape. GloraLinear layers run under `configs[layer]`. Only the
/// nodes the outputs depend on are evaluated. Errors name the node and op at fault.
pub fn eval64(
    g: &Graph,
    inputs: &HashMap<String, Array64>,
    configs: &ModelConfig,
) -> Result<Vec<Array64>, String> {
    let needed = nodes_reaching_outputs(g);
    let order = g.topo_order().map_err(|e| e.to_string())?;
    let mut values: HashMap<Port, Array64> = HashMap::new();
    for id in order {
        if !needed.contains(&id) {
            continue;
        }
        let node = g.node(id);
        let args: Vec<Option<&Array64>> = g
            .inputs_of(id)
            .into_iter()
            .map(|p| match p {
                None => Ok(None),
                Some(p) => values.get(&p).map(Some).ok_or_else(|| {
                    format!(
                        "node '{}' ({}): input '{}' was not computed",
                        node.name,
                        node.op.name(),
                        g.value(p).name
                    )
                }),
            })
            .collect::<Result<_, _>>()?;
        let outs = eval_node(node, &args, inputs, configs)
            .map_err(|e| format!("node '{}' ({}): {e}", node.name, node.op.name()))?;
        if outs.len() != node.outputs.len() {
            return Err(format!(
                "node '{}' ({}): computed {} outputs, the node declares {}",
                node.name,
                node.op.name(),
                outs.len(),
                node.outputs.len()
            ));
        }
        for (slot, out) in outs.into_iter().enumerate() {
            values.insert(Port::new(id, slot), out);
        }
    }
    g.outputs
        .iter()
        .map(|p| {
            values
                .get(p)
                .cloned()
                .ok_or_else(|| format!("graph output '{}' was not computed", g.value(*p).name))
        })
        .collect()
}

/// The nodes some graph output depends on.
fn nodes_reaching_outputs(g: &Graph) -> HashSet<NodeIndex> {
    let mut seen = HashSet::new();
    let mut stack: Vec<NodeIndex> = g.outputs.iter().map(|p| p.node).collect();
    while let Some(id) = stack.pop() {
        if !g.contains(id) || !seen.insert(id) {
            continue;
        }
        stack.extend(g.inputs_of(id).into_iter().flatten().map(|p| p.node));
    }
    seen
}

fn eval_node(
    node: &Node,
    args: &[Option<&Array64>],
    inputs: &HashMap<String, Array64>,
    configs: &ModelConfig,
) -> Result<Vec<Array64>, String> {
    let one = |r: Result<Array64, String>| r.map(|a| vec![a]);
    match &node.op {
        Op::Input => one(graph_input(node, inputs)),
        Op::Const(t) | Op::Param(t) => one(weight(node, t, inputs)),
        Op::MatMul => one(matmul(req(args, 0, "A")?, req(args, 1, "B")?)),
        Op::Gemm(attrs) => one(gemm(
            attrs,
            req(args, 0, "A")?,
            req(args, 1, "B")?,
            opt(args, 2),
        )),
        Op::Binary(op) => one(binary(*op, req(args, 0, "A")?, req(args, 1, "B")?)),
        Op::Unary(op) => one(Ok(unary(*op, req(args, 0, "X")?))),
        Op::Clip => one(clip(req(args, 0, "X")?, opt(args, 1), opt(args, 2))),
        Op::Softmax { axis } => one(softmax(req(args, 0, "X")?, *axis)),
        Op::LayerNorm { axis, epsilon } => {
            let all = layer_norm(
                req(args, 0, "X")?,
                req(args, 1, "Scale")?,
                opt(args, 2),
                *axis,
                f64::from(*epsilon),
            )?;
            Ok(all.into_iter().take(node.outputs.len()).collect())
        }
        Op::Gelu { approximate } => one(Ok(map(req(args, 0, "X")?, |x| gelu(x, *approximate)))),
        Op::Reduce {
            op,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => one(reduce(
            *op,
            req(args, 0, "data")?,
            axes.as_deref(),
            *keepdims,
            *noop_with_empty_axes,
        )),
        Op::Reshape { allowzero } => one(reshape(
            req(args, 0, "data")?,
            req(args, 1, "shape")?,
            *allowzero,
        )),
        Op::Transpose { perm } => one(transpose(req(args, 0, "data")?, perm.as_deref())),
        Op::Concat { axis } => {
            let parts: Vec<&Array64> = (0..args.len())
                .map(|s| req(args, s, "input"))
                .collect::<Result<_, _>>()?;
            one(concat(&parts, *axis))
        }
        Op::Split { axis, sizes } => split(
            req(args, 0, "input")?,
            *axis,
            sizes.as_deref(),
            node.outputs.len(),
        ),
        Op::Gather { axis } => one(gather(
            req(args, 0, "data")?,
            req(args, 1, "indices")?,
            *axis,
        )),
        Op::Slice => one(slice(
            req(args, 0, "data")?,
            req(args, 1, "starts")?,
            req(args, 2, "ends")?,
            opt(args, 3),
            opt(args, 4),
        )),
        Op::Squeeze { axes } => one(squeeze(req(args, 0, "data")?, axes.as_deref())),
        Op::Unsqueeze { axes } => one(unsqueeze(req(args, 0, "data")?, axes)),
        Op::Flatten { axis } => one(flatten(req(args, 0, "input")?, *axis)),
        Op::Shape { start, end } => one(shape_of(req(args, 0, "data")?, *start, *end)),
        Op::Cast { to } => one(Ok(cast(req(args, 0, "input")?, *to))),
        Op::Where => one(where_select(
            req(args, 0, "condition")?,
            req(args, 1, "X")?,
            req(args, 2, "Y")?,
        )),
        Op::Expand => one(expand(req(args, 0, "input")?, req(args, 1, "shape")?)),
        Op::ConstantOfShape { value } => one(constant_of_shape(req(args, 0, "input")?, value)),
        Op::Identity => one(Ok(req(args, 0, "input")?.clone())),
        Op::Range => one(range(
            req(args, 0, "start")?,
            req(args, 1, "limit")?,
            req(args, 2, "delta")?,
        )),
        Op::BatchNorm { epsilon } => one(batch_norm(
            [
                req(args, 0, "X")?,
                req(args, 1, "scale")?,
                req(args, 2, "B")?,
                req(args, 3, "input_mean")?,
                req(args, 4, "input_var")?,
            ],
            f64::from(*epsilon),
        )),
        Op::Conv(attrs) => one(conv(
            attrs,
            req(args, 0, "X")?,
            req(args, 1, "W")?,
            opt(args, 2),
        )),
        Op::GloraLinear(attrs) => {
            let config = configs
                .get(&attrs.layer)
                .ok_or_else(|| format!("no config for GLoRA layer '{}'", attrs.layer))?;
            one(glora_linear(attrs, config, args))
        }
        Op::Grad(GradOp::SoftmaxCrossEntropy { label_smoothing }) => one(softmax_cross_entropy(
            req(args, 0, "logits")?,
            req(args, 1, "labels")?,
            f64::from(*label_smoothing),
        )),
        other => Err(format!(
            "the f64 reference does not implement {}",
            other.name()
        )),
    }
}

fn req<'a>(args: &[Option<&'a Array64>], slot: usize, what: &str) -> Result<&'a Array64, String> {
    args.get(slot)
        .copied()
        .flatten()
        .ok_or_else(|| format!("required input {slot} ({what}) is missing"))
}

fn opt<'a>(args: &[Option<&'a Array64>], slot: usize) -> Option<&'a Array64> {
    args.get(slot).copied().flatten()
}

fn output_name(node: &Node) -> Result<&str, String> {
    node.outputs
        .first()
        .map(|v| v.name.as_str())
        .ok_or_else(|| "the node has no output value".to_string())
}

fn graph_input(node: &Node, inputs: &HashMap<String, Array64>) -> Result<Array64, String> {
    let name = output_name(node)?;
    inputs
        .get(name)
        .cloned()
        .ok_or_else(|| format!("graph input '{name}' was not given"))
}

fn weight(node: &Node, t: &Tensor, inputs: &HashMap<String, Array64>) -> Result<Array64, String> {
    let name = output_name(node)?;
    match inputs.get(name) {
        None => Ok(Array64::from_tensor(t)),
        Some(a) if a.shape.as_slice() == t.shape() && a.len() == t.numel() => Ok(a.clone()),
        Some(a) => Err(format!(
            "replacement for weight '{name}' has shape {:?}, the weight {:?}",
            a.shape,
            t.shape()
        )),
    }
}

// ---------------------------------------------------------------- indexing helpers

/// The multi-index of flat position `flat` in a row-major array of `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for axis in (0..shape.len()).rev() {
        idx[axis] = flat % shape[axis];
        flat /= shape[axis];
    }
    idx
}

/// The flat position of multi-index `idx` in a row-major array of `shape`.
fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    let mut flat = 0;
    for axis in 0..shape.len() {
        flat = flat * shape[axis] + idx[axis];
    }
    flat
}

/// The numpy broadcast of several shapes.
fn broadcast_shapes(shapes: &[&[usize]]) -> Result<Vec<usize>, String> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1; rank];
    for s in shapes {
        let offset = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[offset + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {shapes:?} do not broadcast"));
            }
        }
    }
    Ok(out)
}

/// The flat position in an array of `in_shape` that broadcasts to output multi-index
/// `out_idx` (axes aligned on the right, size-1 axes repeated).
fn broadcast_source(out_idx: &[usize], in_shape: &[usize]) -> usize {
    let offset = out_idx.len() - in_shape.len();
    let idx: Vec<usize> = (0..in_shape.len())
        .map(|i| {
            if in_shape[i] == 1 {
                0
            } else {
                out_idx[offset + i]
            }
        })
        .collect();
    ravel(&idx, in_shape)
}

/// `axis` in `[-rank, rank)` as an index.
fn axis_index(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// Every value of `a` as an integer; fails on fractions and non-finite values.
fn ints(a: &Array64, what: &str) -> Result<Vec<i64>, String> {
    a.data
        .iter()
        .map(|&v| {
            if v.is_finite() && v.fract() == 0.0 {
                Ok(v as i64)
            } else {
                Err(format!("{what} holds {v}, which is not an integer"))
            }
        })
        .collect()
}

fn map(a: &Array64, f: impl Fn(f64) -> f64) -> Array64 {
    Array64 {
        shape: a.shape.clone(),
        data: a.data.iter().map(|&x| f(x)).collect(),
    }
}

/// `f` applied elementwise to the broadcast of `parts`.
fn broadcast_map(parts: &[&Array64], f: impl Fn(&[f64]) -> f64) -> Result<Array64, String> {
    let shapes: Vec<&[usize]> = parts.iter().map(|a| a.shape.as_slice()).collect();
    let shape = broadcast_shapes(&shapes)?;
    let n: usize = shape.iter().product();
    let mut data = Vec::with_capacity(n);
    let mut operands = vec![0.0; parts.len()];
    for flat in 0..n {
        let idx = unravel(flat, &shape);
        for (k, a) in parts.iter().enumerate() {
            operands[k] = a.data[broadcast_source(&idx, &a.shape)];
        }
        data.push(f(&operands));
    }
    Ok(Array64 { shape, data })
}

// ---------------------------------------------------------------- products

/// numpy matmul: a 1-D `a` is a row, a 1-D `b` a column, and both promoted axes are
/// dropped from the result; leading axes broadcast.
fn matmul(a: &Array64, b: &Array64) -> Result<Array64, String> {
    if a.rank() == 0 || b.rank() == 0 {
        return Err("MatMul operands must have rank at least 1".into());
    }
    let a_shape = if a.rank() == 1 {
        vec![1, a.shape[0]]
    } else {
        a.shape.clone()
    };
    let b_shape = if b.rank() == 1 {
        vec![b.shape[0], 1]
    } else {
        b.shape.clone()
    };
    let (ra, rb) = (a_shape.len(), b_shape.len());
    let (m, k) = (a_shape[ra - 2], a_shape[ra - 1]);
    let (k2, n) = (b_shape[rb - 2], b_shape[rb - 1]);
    if k != k2 {
        return Err(format!(
            "inner dimensions differ: {:?} · {:?}",
            a.shape, b.shape
        ));
    }
    let a_batch = &a_shape[..ra - 2];
    let b_batch = &b_shape[..rb - 2];
    let batch = broadcast_shapes(&[a_batch, b_batch])?;
    let batch_count: usize = batch.iter().product();
    let mut data = Vec::with_capacity(batch_count * m * n);
    for bi in 0..batch_count {
        let idx = unravel(bi, &batch);
        let a_off = broadcast_source(&idx, a_batch) * m * k;
        let b_off = broadcast_source(&idx, b_batch) * k * n;
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0;
                for p in 0..k {
                    acc += a.data[a_off + i * k + p] * b.data[b_off + p * n + j];
                }
                data.push(acc);
            }
        }
    }
    let mut shape = batch;
    if a.rank() > 1 {
        shape.push(m);
    }
    if b.rank() > 1 {
        shape.push(n);
    }
    Array64::new(shape, data)
}

fn gemm(
    attrs: &GemmAttrs,
    a: &Array64,
    b: &Array64,
    c: Option<&Array64>,
) -> Result<Array64, String> {
    if a.rank() != 2 || b.rank() != 2 {
        return Err(format!(
            "Gemm needs 2-D A and B, got {:?} and {:?}",
            a.shape, b.shape
        ));
    }
    let (m, k) = if attrs.trans_a {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let (k2, n) = if attrs.trans_b {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if k != k2 {
        return Err(format!(
            "inner dimensions differ: {:?} · {:?} (transA {}, transB {})",
            a.shape, b.shape, attrs.trans_a, attrs.trans_b
        ));
    }
    let a_at = |i: usize, p: usize| {
        if attrs.trans_a {
            a.data[p * m + i]
        } else {
            a.data[i * k + p]
        }
    };
    let b_at = |p: usize, j: usize| {
        if attrs.trans_b {
            b.data[j * k + p]
        } else {
            b.data[p * n + j]
        }
    };
    let out_shape = [m, n];
    if let Some(c) = c
        && broadcast_shapes(&[&c.shape, &out_shape])? != out_shape
    {
        return Err(format!("C {:?} does not broadcast to [{m}, {n}]", c.shape));
    }
    let (alpha, beta) = (f64::from(attrs.alpha), f64::from(attrs.beta));
    let mut data = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0;
            for p in 0..k {
                acc += a_at(i, p) * b_at(p, j);
            }
            let mut y = alpha * acc;
            if let Some(c) = c {
                y += beta * c.data[broadcast_source(&[i, j], &c.shape)];
            }
            data.push(y);
        }
    }
    Array64::new(out_shape.to_vec(), data)
}

// ---------------------------------------------------------------- elementwise

fn binary(op: BinaryOp, a: &Array64, b: &Array64) -> Result<Array64, String> {
    broadcast_map(&[a, b], |v| {
        let (x, y) = (v[0], v[1]);
        match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Pow => x.powf(y),
            BinaryOp::Equal => {
                if x == y {
                    1.0
                } else {
                    0.0
                }
            }
        }
    })
}

fn unary(op: UnaryOp, a: &Array64) -> Array64 {
    map(a, |x| match op {
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Reciprocal => 1.0 / x,
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Erf => erf(x),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Relu => {
            if x > 0.0 {
                x
            } else {
                0.0
            }
        }
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
    })
}

fn scalar_bound(a: Option<&Array64>, what: &str) -> Result<Option<f64>, String> {
    match a {
        None => Ok(None),
        Some(a) if a.len() == 1 => Ok(Some(a.data[0])),
        Some(a) => Err(format!("{what} must be a scalar, got shape {:?}", a.shape)),
    }
}

fn clip(x: &Array64, min: Option<&Array64>, max: Option<&Array64>) -> Result<Array64, String> {
    let lo = scalar_bound(min, "min")?.unwrap_or(f64::NEG_INFINITY);
    let hi = scalar_bound(max, "max")?.unwrap_or(f64::INFINITY);
    Ok(map(x, |v| {
        let v = if v < lo { lo } else { v };
        if v > hi { hi } else { v }
    }))
}

/// The error function to about 1e-15: the series
/// `erf(x) = 2/√π · e^{-x²} · Σ_n 2^n x^{2n+1} / (1·3·…·(2n+1))`, whose terms are all
/// positive (no cancellation), for |x| < 3; beyond, `1 − erfc(x)` with erfc from its
/// continued fraction, which converges fast there.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return -erf(-x);
    }
    if x < 3.0 {
        let x2 = x * x;
        let mut term = x;
        let mut sum = x;
        let mut n = 0.0;
        while term > sum * 1e-17 {
            n += 1.0;
            term *= 2.0 * x2 / (2.0 * n + 1.0);
            sum += term;
        }
        return 2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum;
    }
    1.0 - erfc_continued_fraction(x)
}

/// `erfc(x) = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …)))))` for
/// x ≥ 3, evaluated from the tail with a fixed depth that is ample at x = 3.
fn erfc_continued_fraction(x: f64) -> f64 {
    let mut tail = x;
    for k in (1..=200).rev() {
        tail = x + (k as f64 / 2.0) / tail;
    }
    (-x * x).exp() / std::f64::consts::PI.sqrt() / tail
}

fn gelu(x: f64, approx: GeluApprox) -> f64 {
    match approx {
        GeluApprox::None => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        GeluApprox::Tanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
    }
}

fn where_select(cond: &Array64, a: &Array64, b: &Array64) -> Result<Array64, String> {
    broadcast_map(&[cond, a, b], |v| if v[0] != 0.0 { v[1] } else { v[2] })
}

fn expand(x: &Array64, shape: &Array64) -> Result<Array64, String> {
    let target = dims(shape, "shape")?;
    let shape = broadcast_shapes(&[&x.shape, &target])?;
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|flat| x.data[broadcast_source(&unravel(flat, &shape), &x.shape)])
        .collect();
    Array64::new(shape, data)
}

/// Non-negative integers read as sizes.
fn dims(a: &Array64, what: &str) -> Result<Vec<usize>, String> {
    ints(a, what)?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| format!("{what} holds the negative size {d}")))
        .collect()
}

fn cast(x: &Array64, to: DType) -> Array64 {
    match to {
        DType::F32 | DType::F16 | DType::BF16 => x.clone(),
        DType::I64 | DType::I32 => map(x, f64::trunc),
        DType::Bool => map(x, |v| if v != 0.0 { 1.0 } else { 0.0 }),
    }
}

// ---------------------------------------------------------------- normalisations

/// `x` viewed as `[outer, n, inner]` around `axis`.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

fn softmax(x: &Array64, axis: i64) -> Result<Array64, String> {
    let ax = axis_index(axis, x.rank())?;
    let (outer, n, inner) = split_at_axis(&x.shape, ax);
    let mut y = x.clone();
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let max = (0..n)
                .map(|k| x.data[at(k)])
                .fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..n).map(|k| (x.data[at(k)] - max).exp()).sum();
            for k in 0..n {
                y.data[at(k)] = (x.data[at(k)] - max).exp() / sum;
            }
        }
    }
    Ok(y)
}

/// LayerNormalization over axes `axis..rank`: `y`, `mean`, `inv_std_dev`.
fn layer_norm(
    x: &Array64,
    scale: &Array64,
    bias: Option<&Array64>,
    axis: i64,
    epsilon: f64,
) -> Result<Vec<Array64>, String> {
    let ax = axis_index(axis, x.rank())?;
    let outer: usize = x.shape[..ax].iter().product();
    let inner: usize = x.shape[ax..].iter().product();
    for p in std::iter::once(scale).chain(bias) {
        if broadcast_shapes(&[&x.shape, &p.shape])? != x.shape {
            return Err(format!(
                "scale/bias {:?} do not broadcast to {:?}",
                p.shape, x.shape
            ));
        }
    }
    let mut stats_shape = x.shape[..ax].to_vec();
    stats_shape.resize(x.rank(), 1);
    let mut y = x.clone();
    let mut means = Array64::zeros(&stats_shape);
    let mut inv_stds = Array64::zeros(&stats_shape);
    for o in 0..outer {
        let row = &x.data[o * inner..(o + 1) * inner];
        let mean = row.iter().sum::<f64>() / inner as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / inner as f64;
        let inv_std = 1.0 / (var + epsilon).sqrt();
        means.data[o] = mean;
        inv_stds.data[o] = inv_std;
        for j in 0..inner {
            let flat = o * inner + j;
            let idx = unravel(flat, &x.shape);
            let mut v =
                (x.data[flat] - mean) * inv_std * scale.data[broadcast_source(&idx, &scale.shape)];
            if let Some(b) = bias {
                v += b.data[broadcast_source(&idx, &b.shape)];
            }
            y.data[flat] = v;
        }
    }
    Ok(vec![y, means, inv_stds])
}

/// Inference batch normalisation over axis 1.
fn batch_norm(parts: [&Array64; 5], epsilon: f64) -> Result<Array64, String> {
    let [x, scale, bias, mean, var] = parts;
    if x.rank() < 2 {
        return Err(format!("X must have rank at least 2, got {:?}", x.shape));
    }
    let c = x.shape[1];
    for p in [scale, bias, mean, var] {
        if p.len() != c {
            return Err(format!(
                "per-channel input of shape {:?} for {c} channels",
                p.shape
            ));
        }
    }
    let mut y = x.clone();
    for flat in 0..x.len() {
        let ch = unravel(flat, &x.shape)[1];
        y.data[flat] = (x.data[flat] - mean.data[ch]) / (var.data[ch] + epsilon).sqrt()
            * scale.data[ch]
            + bias.data[ch];
    }
    Ok(y)
}

// ---------------------------------------------------------------- reductions

fn reduce(
    op: ReduceOp,
    x: &Array64,
    axes: Option<&[i64]>,
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> Result<Array64, String> {
    let reduced: Vec<bool> = match axes {
        None | Some([]) if noop_with_empty_axes => return Ok(x.clone()),
        None | Some([]) => vec![true; x.rank()],
        Some(list) => {
            let mut r = vec![false; x.rank()];
            for &a in list {
                let i = axis_index(a, x.rank())?;
                if std::mem::replace(&mut r[i], true) {
                    return Err(format!("axis {a} is listed twice"));
                }
            }
            r
        }
    };
    let kept_shape: Vec<usize> = x
        .shape
        .iter()
        .zip(&reduced)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let count: usize = x
        .shape
        .iter()
        .zip(&reduced)
        .filter(|(_, r)| **r)
        .map(|(d, _)| d)
        .product();
    let start = match op {
        ReduceOp::Max => f64::NEG_INFINITY,
        ReduceOp::Mean | ReduceOp::Sum => 0.0,
    };
    let mut acc = Array64 {
        shape: kept_shape.clone(),
        data: vec![start; kept_shape.iter().product()],
    };
    for flat in 0..x.len() {
        let mut idx = unravel(flat, &x.shape);
        for (i, r) in idx.iter_mut().zip(&reduced) {
            if *r {
                *i = 0;
            }
        }
        let slot = &mut acc.data[ravel(&idx, &kept_shape)];
        let v = x.data[flat];
        *slot = match op {
            ReduceOp::Max => slot.max(v),
            ReduceOp::Mean | ReduceOp::Sum => *slot + v,
        };
    }
    if op == ReduceOp::Mean {
        acc.data.iter_mut().for_each(|v| *v /= count as f64);
    }
    if !keepdims {
        acc.shape = x
            .shape
            .iter()
            .zip(&reduced)
            .filter(|(_, r)| !**r)
            .map(|(d, _)| *d)
            .collect();
    }
    Ok(acc)
}

fn softmax_cross_entropy(
    logits: &Array64,
    labels: &Array64,
    smoothing: f64,
) -> Result<Array64, String> {
    if logits.rank() != 2 {
        return Err(format!("logits must be [N, K], got {:?}", logits.shape));
    }
    let (rows, classes) = (logits.shape[0], logits.shape[1]);
    let labels = ints(labels, "labels")?;
    if labels.len() != rows {
        return Err(format!("{} labels for {rows} rows", labels.len()));
    }
    let mut total = 0.0;
    for (r, &label) in labels.iter().enumerate() {
        if label < 0 || label as usize >= classes {
            return Err(format!("label {label} of row {r} is outside 0..{classes}"));
        }
        let row = &logits.data[r * classes..(r + 1) * classes];
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_sum = max + row.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
        for (k, &z) in row.iter().enumerate() {
            let onehot = if k as i64 == label { 1.0 } else { 0.0 };
            let target = (1.0 - smoothing) * onehot + smoothing / classes as f64;
            total -= target * (z - log_sum);
        }
    }
    Ok(Array64::scalar(total / rows as f64))
}

// ---------------------------------------------------------------- shape ops

fn reshape(x: &Array64, shape: &Array64, allowzero: bool) -> Result<Array64, String> {
    let spec = ints(shape, "shape")?;
    let mut out = Vec::with_capacity(spec.len());
    let mut inferred = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if inferred.is_some() => return Err("shape has more than one -1".into()),
            -1 => {
                inferred = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *x.shape
                    .get(i)
                    .ok_or_else(|| format!("shape entry {i} copies a missing input dim"))?,
            ),
            d if d >= 0 => out.push(d as usize),
            d => return Err(format!("shape holds {d}")),
        }
    }
    if let Some(i) = inferred {
        let known: usize = out.iter().product();
        if known == 0 || !x.len().is_multiple_of(known) {
            return Err(format!("cannot infer -1 of {spec:?} for {:?}", x.shape));
        }
        out[i] = x.len() / known;
    }
    if out.iter().product::<usize>() != x.len() {
        return Err(format!("cannot reshape {:?} to {spec:?}", x.shape));
    }
    Array64::new(out, x.data.clone())
}

fn transpose(x: &Array64, perm: Option<&[usize]>) -> Result<Array64, String> {
    let perm: Vec<usize> = match perm {
        Some(p) => p.to_vec(),
        None => (0..x.rank()).rev().collect(),
    };
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if sorted != (0..x.rank()).collect::<Vec<_>>() {
        return Err(format!(
            "perm {perm:?} is not a permutation of rank {}",
            x.rank()
        ));
    }
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let mut data = Vec::with_capacity(x.len());
    for flat in 0..x.len() {
        let out_idx = unravel(flat, &shape);
        let mut in_idx = vec![0; x.rank()];
        for (o, &p) in perm.iter().enumerate() {
            in_idx[p] = out_idx[o];
        }
        data.push(x.data[ravel(&in_idx, &x.shape)]);
    }
    Array64::new(shape, data)
}

fn concat(parts: &[&Array64], axis: i64) -> Result<Array64, String> {
    let first = parts.first().ok_or("Concat has no inputs")?;
    let ax = axis_index(axis, first.rank())?;
    let mut shape = first.shape.clone();
    shape[ax] = 0;
    for p in parts {
        let same_elsewhere = p.rank() == first.rank()
            && (0..p.rank()).all(|i| i == ax || p.shape[i] == first.shape[i]);
        if !same_elsewhere {
            return Err(format!(
                "{:?} and {:?} differ off axis {ax}",
                first.shape, p.shape
            ));
        }
        shape[ax] += p.shape[ax];
    }
    let mut out = Array64::zeros(&shape);
    let mut offset = 0;
    for p in parts {
        for flat in 0..p.len() {
            let mut idx = unravel(flat, &p.shape);
            idx[ax] += offset;
            out.data[ravel(&idx, &shape)] = p.data[flat];
        }
        offset += p.shape[ax];
    }
    Ok(out)
}

/// Pieces of `x` along `axis` from offset `start`, `len` long.
fn take_along(x: &Array64, ax: usize, start: usize, len: usize) -> Array64 {
    let mut shape = x.shape.clone();
    shape[ax] = len;
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|flat| {
            let mut idx = unravel(flat, &shape);
            idx[ax] += start;
            x.data[ravel(&idx, &x.shape)]
        })
        .collect();
    Array64 { shape, data }
}

fn split(
    x: &Array64,
    axis: i64,
    sizes: Option<&[usize]>,
    outputs: usize,
) -> Result<Vec<Array64>, String> {
    let ax = axis_index(axis, x.rank())?;
    let d = x.shape[ax];
    let sizes: Vec<usize> = match sizes {
        Some(s) => s.to_vec(),
        None if outputs == 0 => return Err("Split has no outputs".into()),
        None => {
            // Equal pieces of ceil(d / outputs); the last one takes what is left.
            let chunk = d.div_ceil(outputs);
            let mut left = d;
            (0..outputs)
                .map(|_| {
                    let piece = chunk.min(left);
                    left -= piece;
                    piece
                })
                .collect()
        }
    };
    if sizes.len() != outputs || sizes.iter().sum::<usize>() != d {
        return Err(format!(
            "sizes {sizes:?} do not split {d} into {outputs} pieces"
        ));
    }
    let mut start = 0;
    Ok(sizes
        .iter()
        .map(|&len| {
            let piece = take_along(x, ax, start, len);
            start += len;
            piece
        })
        .collect())
}

fn gather(x: &Array64, indices: &Array64, axis: i64) -> Result<Array64, String> {
    let ax = axis_index(axis, x.rank())?;
    let d = x.shape[ax] as i64;
    let picks: Vec<usize> = ints(indices, "indices")?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + d } else { i };
            if (0..d).contains(&j) {
                Ok(j as usize)
            } else {
                Err(format!("index {i} is out of range for size {d}"))
            }
        })
        .collect::<Result<_, _>>()?;
    let mut shape = x.shape[..ax].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&x.shape[ax + 1..]);
    let n: usize = shape.iter().product();
    let ir = indices.rank();
    let data = (0..n)
        .map(|flat| {
            let out_idx = unravel(flat, &shape);
            let pick = picks[ravel(&out_idx[ax..ax + ir], &indices.shape)];
            let mut in_idx = out_idx[..ax].to_vec();
            in_idx.push(pick);
            in_idx.extend_from_slice(&out_idx[ax + ir..]);
            x.data[ravel(&in_idx, &x.shape)]
        })
        .collect();
    Array64::new(shape, data)
}

/// ONNX Slice: per listed axis, start and end are made non-negative by adding the
/// dim, then clamped to `[0, dim]` for positive steps and `[-1, dim-1]` for negative
/// ones (start to `[0, dim-1]`); the count is `ceil((end - start) / step)`, at least 0.
fn slice(
    x: &Array64,
    starts: &Array64,
    ends: &Array64,
    axes: Option<&Array64>,
    steps: Option<&Array64>,
) -> Result<Array64, String> {
    let starts = ints(starts, "starts")?;
    let ends = ints(ends, "ends")?;
    let axes: Vec<i64> = match axes {
        Some(a) => ints(a, "axes")?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps: Vec<i64> = match steps {
        Some(s) => ints(s, "steps")?,
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps differ in length".into());
    }
    let rank = x.rank();
    let mut first: Vec<i64> = vec![0; rank];
    let mut step: Vec<i64> = vec![1; rank];
    let mut shape = x.shape.clone();
    let mut seen = vec![false; rank];
    for k in 0..starts.len() {
        let ax = axis_index(axes[k], rank)?;
        if std::mem::replace(&mut seen[ax], true) {
            return Err(format!("axis {} is sliced twice", axes[k]));
        }
        let s = steps[k];
        if s == 0 {
            return Err("a step is 0".into());
        }
        let d = x.shape[ax] as i64;
        let wrap = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (b, e) = if s > 0 {
            (wrap(starts[k]).clamp(0, d), wrap(ends[k]).clamp(0, d))
        } else {
            (
                wrap(starts[k]).clamp(0, d - 1),
                wrap(ends[k]).clamp(-1, d - 1),
            )
        };
        let count = if s > 0 {
            (e - b + s - 1).div_euclid(s)
        } else {
            (b - e + (-s) - 1).div_euclid(-s)
        };
        shape[ax] = count.max(0) as usize;
        first[ax] = b;
        step[ax] = s;
    }
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|flat| {
            let out_idx = unravel(flat, &shape);
            let in_idx: Vec<usize> = (0..rank)
                .map(|a| (first[a] + out_idx[a] as i64 * step[a]) as usize)
                .collect();
            x.data[ravel(&in_idx, &x.shape)]
        })
        .collect();
    Array64::new(shape, data)
}

fn squeeze(x: &Array64, axes: Option<&[i64]>) -> Result<Array64, String> {
    let drop: Vec<bool> = match axes {
        None => x.shape.iter().map(|&d| d == 1).collect(),
        Some(list) => {
            let mut drop = vec![false; x.rank()];
            for &a in list {
                let i = axis_index(a, x.rank())?;
                if x.shape[i] != 1 {
                    return Err(format!("axis {a} has size {}, not 1", x.shape[i]));
                }
                drop[i] = true;
            }
            drop
        }
    };
    let shape = x
        .shape
        .iter()
        .zip(&drop)
        .filter(|(_, d)| !**d)
        .map(|(s, _)| *s)
        .collect();
    Array64::new(shape, x.data.clone())
}

fn unsqueeze(x: &Array64, axes: &[i64]) -> Result<Array64, String> {
    let out_rank = x.rank() + axes.len();
    let mut inserted = vec![false; out_rank];
    for &a in axes {
        let i = axis_index(a, out_rank)?;
        if std::mem::replace(&mut inserted[i], true) {
            return Err(format!("axis {a} is listed twice"));
        }
    }
    let mut rest = x.shape.iter();
    let shape = inserted
        .iter()
        .map(|&ins| if ins { Some(1) } else { rest.next().copied() })
        .collect::<Option<Vec<usize>>>()
        .ok_or("axes do not fit the rank")?;
    Array64::new(shape, x.data.clone())
}

fn flatten(x: &Array64, axis: i64) -> Result<Array64, String> {
    let r = x.rank() as i64;
    if axis < -r || axis > r {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let ax = if axis < 0 { axis + r } else { axis } as usize;
    let rows = x.shape[..ax].iter().product();
    let cols = x.shape[ax..].iter().product();
    Array64::new(vec![rows, cols], x.data.clone())
}

fn shape_of(x: &Array64, start: i64, end: Option<i64>) -> Result<Array64, String> {
    let r = x.rank() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (b, e) = (clamp(start), clamp(end.unwrap_or(r)));
    let dims: Vec<f64> = x.shape[b..e.max(b)].iter().map(|&d| d as f64).collect();
    Array64::new(vec![dims.len()], dims)
}

fn constant_of_shape(shape: &Array64, value: &Tensor) -> Result<Array64, String> {
    let shape = dims(shape, "shape")?;
    let v = Array64::from_tensor(value);
    let fill = *v.data.first().ok_or("the fill value is empty")?;
    Ok(Array64 {
        data: vec![fill; shape.iter().product()],
        shape,
    })
}

fn range(start: &Array64, limit: &Array64, delta: &Array64) -> Result<Array64, String> {
    let one = |a: &Array64, what: &str| {
        scalar_bound(Some(a), what)?.ok_or_else(|| format!("{what} is missing"))
    };
    let (s, l, d) = (
        one(start, "start")?,
        one(limit, "limit")?,
        one(delta, "delta")?,
    );
    if d == 0.0 {
        return Err("delta is 0".into());
    }
    let n = ((l - s) / d).ceil().max(0.0) as usize;
    let data: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
    Array64::new(vec![n], data)
}

// ---------------------------------------------------------------- convolution

fn per_axis(v: &[usize], n: usize, default: usize, what: &str) -> Result<Vec<usize>, String> {
    match v.len() {
        0 => Ok(vec![default; n]),
        l if l == n => Ok(v.to_vec()),
        l => Err(format!("{what} has {l} entries for {n} spatial axes")),
    }
}

/// Convolution (cross-correlation, as ONNX defines it) of `x` `[N, C, D…]` with `w`
/// `[M, C/group, K…]`, summing directly over every kernel tap.
fn conv(
    attrs: &ConvAttrs,
    x: &Array64,
    w: &Array64,
    b: Option<&Array64>,
) -> Result<Array64, String> {
    if x.rank() < 3 || w.rank() != x.rank() {
        return Err(format!("X {:?} and W {:?} do not fit", x.shape, w.shape));
    }
    let sp = x.rank() - 2;
    let (batch, channels) = (x.shape[0], x.shape[1]);
    let (filters, per_group_in) = (w.shape[0], w.shape[1]);
    let group = attrs.group.max(1);
    if channels != per_group_in * group || filters % group != 0 {
        return Err(format!(
            "X {:?}, W {:?} and group {group} do not fit",
            x.shape, w.shape
        ));
    }
    let kernel = w.shape[2..].to_vec();
    if !attrs.kernel_shape.is_empty() && attrs.kernel_shape != kernel {
        return Err(format!(
            "kernel_shape {:?} differs from W's {kernel:?}",
            attrs.kernel_shape
        ));
    }
    let strides = per_axis(&attrs.strides, sp, 1, "strides")?;
    let dilations = per_axis(&attrs.dilations, sp, 1, "dilations")?;
    let input = &x.shape[2..];
    let mut pad_begin = vec![0usize; sp];
    let mut out = vec![0usize; sp];
    for i in 0..sp {
        let span = dilations[i] * (kernel[i] - 1) + 1;
        let (pb, pe) = match attrs.auto_pad {
            AutoPad::NotSet => {
                let pads = per_axis(&attrs.pads, 2 * sp, 0, "pads")?;
                (pads[i], pads[sp + i])
            }
            AutoPad::Valid => (0, 0),
            AutoPad::SameUpper | AutoPad::SameLower => {
                let target = input[i].div_ceil(strides[i]);
                let total = ((target - 1) * strides[i] + span).saturating_sub(input[i]);
                let small = total / 2;
                if attrs.auto_pad == AutoPad::SameUpper {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            }
        };
        let padded = input[i] + pb + pe;
        if padded < span {
            return Err(format!("the kernel does not fit spatial axis {i}"));
        }
        out[i] = (padded - span) / strides[i] + 1;
        pad_begin[i] = pb;
    }
    if let Some(b) = b
        && b.len() != filters
    {
        return Err(format!("B has {} values for {filters} filters", b.len()));
    }
    let filters_per_group = filters / group;
    let mut shape = vec![batch, filters];
    shape.extend_from_slice(&out);
    let out_spatial: usize = out.iter().product();
    let taps: usize = kernel.iter().product();
    let mut y = Array64::zeros(&shape);
    for n in 0..batch {
        for m in 0..filters {
            let g = m / filters_per_group;
            for o in 0..out_spatial {
                let o_idx = unravel(o, &out);
                let mut acc = b.map_or(0.0, |b| b.data[m]);
                for c in 0..per_group_in {
                    let ch = g * per_group_in + c;
                    for t in 0..taps {
                        let k_idx = unravel(t, &kernel);
                        let mut x_idx = vec![n, ch];
                        let mut inside = true;
                        for i in 0..sp {
                            let pos = (o_idx[i] * strides[i] + k_idx[i] * dilations[i]) as i64
                                - pad_begin[i] as i64;
                            if pos < 0 || pos >= input[i] as i64 {
                                inside = false;
                                break;
                            }
                            x_idx.push(pos as usize);
                        }
                        if !inside {
                            continue;
                        }
                        let mut w_idx = vec![m, c];
                        w_idx.extend_from_slice(&k_idx);
                        acc += x.data[ravel(&x_idx, &x.shape)] * w.data[ravel(&w_idx, &w.shape)];
                    }
                }
                let mut y_idx = vec![n, m];
                y_idx.extend_from_slice(&o_idx);
                y.data[ravel(&y_idx, &shape)] = acc;
            }
        }
    }
    Ok(y)
}

// ---------------------------------------------------------------- GLoRA

fn expect_shape(a: &Array64, expected: &[usize], what: &str) -> Result<(), String> {
    if a.shape != expected {
        return Err(format!(
            "{what} has shape {:?}, expected {expected:?}",
            a.shape
        ));
    }
    Ok(())
}

/// The materialised value of an A or B option at `[i, j]` under the weight-sharing
/// convention: LoRA r reads `down[:, :r]·up[:r, :]`, a vector `down[i, 0]`, a constant
/// `down[0, 0]`.
fn weight_term(
    option: AbOption,
    down: &Array64,
    up: &Array64,
    stored: usize,
    d_in: usize,
    i: usize,
    j: usize,
) -> f64 {
    match option {
        AbOption::Lora(r) => (0..r)
            .map(|k| down.data[i * stored + k] * up.data[k * d_in + j])
            .sum(),
        AbOption::Vector => down.data[i * stored],
        AbOption::Constant => down.data[0],
        AbOption::None => 0.0,
    }
}

fn bias_term(option: DeOption, v: &Array64, i: usize) -> f64 {
    match option {
        DeOption::Vector => v.data[i],
        DeOption::Constant => v.data[0],
        DeOption::None => 0.0,
    }
}

/// `y = x·W'ᵀ + b'` with `W' = W0 + W0⊙A + B` and `b' = b0 + b0⊙D + E + W0·C`, every
/// term materialised in full from the shared factors.
fn glora_linear(
    attrs: &GloraLinearAttrs,
    config: &LayerConfig,
    args: &[Option<&Array64>],
) -> Result<Array64, String> {
    let (d_in, d_out, stored) = (attrs.d_in, attrs.d_out, attrs.rank);
    let x = req(args, 0, "x")?;
    let w0 = req(args, 1, "W0")?;
    let b0 = opt(args, 2);
    let names = ["Ad", "Au", "Bd", "Bu", "Cd", "Cu", "D", "E"];
    let shapes: [Vec<usize>; 8] = [
        vec![d_out, stored],
        vec![stored, d_in],
        vec![d_out, stored],
        vec![stored, d_in],
        vec![d_in, stored],
        vec![stored, 1],
        vec![d_out],
        vec![d_out],
    ];
    let adapter = |k: usize| -> Result<&Array64, String> {
        let a = req(args, 3 + k, names[k])?;
        expect_shape(a, &shapes[k], names[k])?;
        Ok(a)
    };
    let (ad, au, bd, bu) = (adapter(0)?, adapter(1)?, adapter(2)?, adapter(3)?);
    let (cd, cu, d, e) = (adapter(4)?, adapter(5)?, adapter(6)?, adapter(7)?);
    let w0_shape = match attrs.layout {
        WeightLayout::OutIn => [d_out, d_in],
        WeightLayout::InOut => [d_in, d_out],
    };
    expect_shape(w0, &w0_shape, "W0")?;
    if b0.is_some() != attrs.has_bias {
        return Err(format!(
            "has_bias is {} but b0 is {}",
            attrs.has_bias,
            if b0.is_some() { "connected" } else { "absent" }
        ));
    }
    if let Some(b0) = b0 {
        expect_shape(b0, &[d_out], "b0")?;
    }
    if x.shape.last() != Some(&d_in) {
        return Err(format!("x {:?} does not end in d_in = {d_in}", x.shape));
    }
    if let Some((slot, r)) = config.lora_ranks().find(|&(_, r)| r > stored) {
        return Err(format!(
            "option {slot} reads rank {r} above the stored rank {stored}"
        ));
    }
    let w0_at = |i: usize, j: usize| match attrs.layout {
        WeightLayout::OutIn => w0.data[i * d_in + j],
        WeightLayout::InOut => w0.data[j * d_out + i],
    };
    let c: Vec<f64> = (0..d_in)
        .map(|j| match config.c {
            COption::Lora(r) => (0..r).map(|k| cd.data[j * stored + k] * cu.data[k]).sum(),
            COption::Vector => cd.data[j * stored],
            COption::None => 0.0,
        })
        .collect();
    let mut w = vec![0.0; d_out * d_in];
    let mut bias = vec![0.0; d_out];
    for i in 0..d_out {
        for j in 0..d_in {
            let a = weight_term(config.a, ad, au, stored, d_in, i, j);
            let b = weight_term(config.b, bd, bu, stored, d_in, i, j);
            w[i * d_in + j] = w0_at(i, j) + w0_at(i, j) * a + b;
        }
        if let Some(b0) = b0 {
            bias[i] = b0.data[i] + b0.data[i] * bias_term(config.d, d, i);
        }
        bias[i] += bias_term(config.e, e, i);
        bias[i] += (0..d_in).map(|j| w0_at(i, j) * c[j]).sum::<f64>();
    }
    let rows = x.len() / d_in;
    let mut shape = x.shape.clone();
    if let Some(last) = shape.last_mut() {
        *last = d_out;
    }
    let mut data = Vec::with_capacity(rows * d_out);
    for r in 0..rows {
        for i in 0..d_out {
            let dot: f64 = (0..d_in)
                .map(|j| x.data[r * d_in + j] * w[i * d_in + j])
                .sum();
            data.push(dot + bias[i]);
        }
    }
    Array64::new(shape, data)
}
