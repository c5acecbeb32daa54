//! Shape and type inference for every op. Types flow forward from the graph inputs'
//! declared types and the weights' tensors, in topological order, per ONNX semantics;
//! the results are written into each node's output [`Value`](super::Value)s.
//!
//! Shapes that depend on values (Reshape, Expand, Slice, Range, ConstantOfShape,
//! Resize) read them from constant inputs or from a small symbolic evaluation of the
//! integer "shape plumbing" that PyTorch exports emit (`Shape → Gather → Unsqueeze →
//! Concat → Reshape`): every 1-D or scalar integer value carries, when it can be
//! worked out, its contents as known integers or symbolic dimensions. That lets a
//! symbolic batch size flow through a Reshape. A dimension that cannot be worked out
//! becomes a fresh symbol named after the node; provable inconsistencies are errors
//! that name the node, the op and the shapes.

use std::collections::HashMap;

use super::{
    AspectPolicy, AutoPad, BinaryOp, ConvAttrs, DType, Dim, GemmAttrs, GloraLinearAttrs, GradOp,
    Graph, GraphError, Node, NodeIndex, Op, Port, ReduceOp, ResizeAttrs, Shape, Tensor, TensorData,
    TensorType, UnaryOp, WeightLayout,
};

/// Whether input `slot` of `op` must be connected.
pub fn input_required(op: &Op, slot: usize) -> bool {
    match op {
        Op::Gemm(_) | Op::Conv(_) | Op::ConvTranspose(_) | Op::LayerNorm { .. } => slot < 2,
        Op::Clip => slot < 1,
        Op::Slice => slot < 3,
        Op::Resize(_) => slot < 1,
        Op::GloraLinear(_) => slot != 2,
        Op::Grad(g) => g.input_required(slot),
        _ => true,
    }
}

/// Fills in the type of every value from the graph inputs and weights forward.
/// Graph inputs keep their declared types; every other output is overwritten.
pub fn infer_types(g: &mut Graph) -> Result<(), GraphError> {
    let analysis = analyse(g)?;
    for (port, ty) in analysis.types {
        g.node_mut(port.node).outputs[port.slot].ty = Some(ty);
    }
    Ok(())
}

/// The output types of one node, computed from the types already recorded on its
/// producers' outputs (and the values of constant or shape-derived inputs).
pub fn infer_node(g: &Graph, id: NodeIndex) -> Result<Vec<TensorType>, GraphError> {
    let node = g.node(id);
    let producers = g.inputs_of(id);
    let mut memo = HashMap::new();
    let mut inputs = Vec::with_capacity(producers.len());
    for p in &producers {
        inputs.push(p.map(|p| InputInfo {
            ty: g.value_type(p).cloned(),
            contents: lazy_contents(g, p, &mut memo, 0),
            tensor: g.const_value(p),
        }));
    }
    infer_outputs(node, &inputs)
}

/// Integer values that shape inference proves constant although they are not
/// produced by `Const` nodes (e.g. `Gather(Shape(x), 2)` where that dim of `x` is
/// known), keyed by port. Requires nothing of the graph's recorded types.
pub fn known_int_values(g: &Graph) -> Result<HashMap<Port, Tensor>, GraphError> {
    let analysis = analyse(g)?;
    let mut out = HashMap::new();
    for (port, elems) in &analysis.contents {
        if g.node(port.node).op.is_weight() {
            continue;
        }
        let Some(ty) = analysis.types.get(port) else {
            continue;
        };
        let Some(shape) = ty.shape.to_known() else {
            continue;
        };
        let Some(ints) = elems.iter().map(SymInt::int).collect::<Option<Vec<i64>>>() else {
            continue;
        };
        if let Some(t) = int_tensor(ty.dtype, shape, ints) {
            out.insert(*port, t);
        }
    }
    Ok(out)
}

fn int_tensor(dtype: DType, shape: Vec<usize>, v: Vec<i64>) -> Option<Tensor> {
    let data = match dtype {
        DType::I64 => TensorData::I64(v),
        DType::I32 => TensorData::I32(v.into_iter().map(|x| x as i32).collect()),
        DType::Bool => TensorData::Bool(v.into_iter().map(|x| x != 0).collect()),
        _ => return None,
    };
    Tensor::new(shape, data).ok()
}

// ---------------------------------------------------------------------------
// Symbolic contents of small integer tensors

/// One element of a small integer tensor: a known value, a symbolic (non-negative)
/// dimension size, or something unknown.
#[derive(Clone, Debug, PartialEq)]
enum SymInt {
    Int(i64),
    Sym(String),
    Unknown,
}

impl SymInt {
    fn int(&self) -> Option<i64> {
        match self {
            SymInt::Int(v) => Some(*v),
            _ => None,
        }
    }

    fn from_dim(d: &Dim) -> SymInt {
        match d {
            Dim::Known(n) => SymInt::Int(*n as i64),
            Dim::Sym(s) => SymInt::Sym(s.clone()),
        }
    }
}

/// Longest integer tensor whose contents are tracked.
const MAX_TRACKED: usize = 64;

/// What inference knows about one input slot.
struct InputInfo<'a> {
    ty: Option<TensorType>,
    contents: Option<Vec<SymInt>>,
    tensor: Option<&'a Tensor>,
}

struct Analysis {
    types: HashMap<Port, TensorType>,
    contents: HashMap<Port, Vec<SymInt>>,
}

fn analyse(g: &Graph) -> Result<Analysis, GraphError> {
    let mut a = Analysis {
        types: HashMap::new(),
        contents: HashMap::new(),
    };
    for id in g.topo_order()? {
        let node = g.node(id);
        let producers = g.inputs_of(id);
        let inputs: Vec<Option<InputInfo>> = producers
            .iter()
            .map(|p| {
                p.map(|p| InputInfo {
                    ty: a.types.get(&p).cloned(),
                    contents: a.contents.get(&p).cloned(),
                    tensor: g.const_value(p),
                })
            })
            .collect();
        let types = infer_outputs(node, &inputs)?;
        let contents = output_contents(node, &inputs, &types);
        for (slot, (ty, c)) in types.into_iter().zip(contents).enumerate() {
            let port = Port::new(id, slot);
            if let Some(c) = c {
                a.contents.insert(port, c);
            }
            a.types.insert(port, ty);
        }
    }
    Ok(a)
}

/// Contents of `port`, computed on demand from recorded types (for [`infer_node`]).
fn lazy_contents(
    g: &Graph,
    port: Port,
    memo: &mut HashMap<Port, Option<Vec<SymInt>>>,
    depth: usize,
) -> Option<Vec<SymInt>> {
    if let Some(c) = memo.get(&port) {
        return c.clone();
    }
    let node = g.node(port.node);
    let ty = g.value_type(port)?;
    if !tracks_contents(ty) || depth > 256 {
        return None;
    }
    let producers = g.inputs_of(port.node);
    let needs_inputs = !matches!(
        node.op,
        Op::Shape { .. } | Op::Const(_) | Op::Input | Op::Param(_)
    );
    let inputs: Vec<Option<InputInfo>> = producers
        .iter()
        .map(|p| {
            p.map(|p| InputInfo {
                ty: g.value_type(p).cloned(),
                contents: if needs_inputs {
                    lazy_contents(g, p, memo, depth + 1)
                } else {
                    None
                },
                tensor: g.const_value(p),
            })
        })
        .collect();
    let types: Vec<TensorType> = node.outputs.iter().filter_map(|v| v.ty.clone()).collect();
    let result = if types.len() == node.outputs.len() {
        output_contents(node, &inputs, &types)
            .into_iter()
            .nth(port.slot)
            .flatten()
    } else {
        None
    };
    memo.insert(port, result.clone());
    result
}

fn tracks_contents(ty: &TensorType) -> bool {
    let small = match ty.shape.rank() {
        0 => true,
        1 => ty.shape.0[0].known().is_some_and(|n| n <= MAX_TRACKED),
        _ => false,
    };
    small && (ty.dtype.is_int() || ty.dtype == DType::Bool)
}

fn tensor_contents(t: &Tensor) -> Option<Vec<SymInt>> {
    if t.rank() > 1 || t.numel() > MAX_TRACKED || !(t.dtype().is_int() || t.dtype() == DType::Bool)
    {
        return None;
    }
    Some(t.to_i64_vec().into_iter().map(SymInt::Int).collect())
}

fn output_contents(
    node: &Node,
    inputs: &[Option<InputInfo>],
    types: &[TensorType],
) -> Vec<Option<Vec<SymInt>>> {
    let mut out: Vec<Option<Vec<SymInt>>> = vec![None; types.len()];
    if types.len() != 1 || !tracks_contents(&types[0]) {
        return out;
    }
    let c = |slot: usize| {
        inputs
            .get(slot)
            .and_then(|i| i.as_ref())
            .and_then(|i| i.contents.as_deref())
    };
    let ty_of = |slot: usize| {
        inputs
            .get(slot)
            .and_then(|i| i.as_ref())
            .and_then(|i| i.ty.as_ref())
    };
    let expected = match types[0].shape.rank() {
        0 => 1,
        _ => types[0].shape.0[0].known().unwrap_or(usize::MAX),
    };
    let result = match &node.op {
        Op::Const(t) => tensor_contents(t),
        Op::Shape { start, end } => ty_of(0).map(|t| {
            let (s, e) = shape_range(t.shape.rank(), *start, *end);
            t.shape.0[s..e].iter().map(SymInt::from_dim).collect()
        }),
        Op::Identity
        | Op::Reshape { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Flatten { .. } => c(0).map(<[SymInt]>::to_vec),
        Op::Cast { to } => match (c(0), ty_of(0)) {
            (Some(v), Some(src)) if src.dtype.is_int() || src.dtype == DType::Bool => Some(
                v.iter()
                    .map(|e| match (e, to) {
                        (SymInt::Int(x), DType::Bool) => SymInt::Int((*x != 0) as i64),
                        (SymInt::Sym(_), DType::Bool) => SymInt::Unknown,
                        _ => e.clone(),
                    })
                    .collect(),
            ),
            _ => None,
        },
        Op::Gather { .. } => match (c(0), c(1)) {
            (Some(data), Some(idx)) => Some(
                idx.iter()
                    .map(|i| match i {
                        SymInt::Int(i) => {
                            let i = if *i < 0 { *i + data.len() as i64 } else { *i };
                            usize::try_from(i)
                                .ok()
                                .and_then(|i| data.get(i).cloned())
                                .unwrap_or(SymInt::Unknown)
                        }
                        _ => SymInt::Unknown,
                    })
                    .collect(),
            ),
            _ => None,
        },
        // Parts of unknown value but known length still place the known parts.
        Op::Concat { .. } => (0..inputs.len())
            .map(
                |slot| match (c(slot), ty_of(slot).map(|t| t.shape.0.as_slice())) {
                    (Some(v), _) => Some(v.to_vec()),
                    (None, Some([Dim::Known(n)])) if *n <= MAX_TRACKED => {
                        Some(vec![SymInt::Unknown; *n])
                    }
                    _ => None,
                },
            )
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.concat()),
        Op::Slice => slice_contents(inputs),
        Op::Binary(b) => match (c(0), c(1)) {
            (Some(x), Some(y)) => {
                zip_broadcast(x, y).map(|pairs| pairs.map(|(x, y)| binary_sym(*b, x, y)).collect())
            }
            _ => None,
        },
        Op::Where => match (c(0), c(1), c(2)) {
            (Some(k), Some(x), Some(y)) => zip_broadcast(x, y)
                .map(|p| p.map(|(x, y)| (x.clone(), y.clone())).collect::<Vec<_>>())
                .and_then(|xy| {
                    zip_broadcast(k, &xy)
                        .map(|p| p.map(|(k, (x, y))| select_sym(k, x, y)).collect())
                }),
            _ => None,
        },
        Op::ConstantOfShape { value } => {
            let fill = tensor_contents(value).and_then(|v| v.into_iter().next());
            fill.map(|f| vec![f; if expected == usize::MAX { 0 } else { expected }])
        }
        Op::Range => match (c(0), c(1), c(2)) {
            (Some([SymInt::Int(s)]), Some([SymInt::Int(l)]), Some([SymInt::Int(d)]))
                if *d != 0 && range_len(*s, *l, *d) <= MAX_TRACKED =>
            {
                let n = range_len(*s, *l, *d) as i64;
                Some((0..n).map(|i| SymInt::Int(s + i * d)).collect())
            }
            _ => None,
        },
        Op::Expand => match c(0) {
            Some([one]) if expected != usize::MAX => Some(vec![one.clone(); expected]),
            Some(v) if v.len() == expected => Some(v.to_vec()),
            _ => None,
        },
        _ => None,
    };
    out[0] = result.filter(|v| v.len() == expected);
    out
}

/// Pairs of elements under broadcasting of two 1-D (or scalar) contents.
fn zip_broadcast<'x, 'y, X, Y>(
    x: &'x [X],
    y: &'y [Y],
) -> Option<impl Iterator<Item = (&'x X, &'y Y)>> {
    let n = x.len().max(y.len());
    if (x.len() != n && x.len() != 1) || (y.len() != n && y.len() != 1) {
        return None;
    }
    Some((0..n).map(move |i| (&x[i.min(x.len() - 1)], &y[i.min(y.len() - 1)])))
}

fn binary_sym(op: BinaryOp, x: &SymInt, y: &SymInt) -> SymInt {
    use SymInt::{Int, Sym, Unknown};
    match (op, x, y) {
        (BinaryOp::Add, Int(a), Int(b)) => a.checked_add(*b).map_or(Unknown, Int),
        (BinaryOp::Sub, Int(a), Int(b)) => a.checked_sub(*b).map_or(Unknown, Int),
        (BinaryOp::Mul, Int(a), Int(b)) => a.checked_mul(*b).map_or(Unknown, Int),
        (BinaryOp::Div, Int(a), Int(b)) if *b != 0 => a.checked_div(*b).map_or(Unknown, Int),
        (BinaryOp::Equal, Int(a), Int(b)) => Int((a == b) as i64),
        (BinaryOp::Add | BinaryOp::Sub, s @ Sym(_), Int(0)) => s.clone(),
        (BinaryOp::Add, Int(0), s @ Sym(_)) => s.clone(),
        (BinaryOp::Mul | BinaryOp::Div, s @ Sym(_), Int(1)) => s.clone(),
        (BinaryOp::Mul, Int(1), s @ Sym(_)) => s.clone(),
        (BinaryOp::Mul, Int(0), _) | (BinaryOp::Mul, _, Int(0)) => Int(0),
        (BinaryOp::Sub, Sym(a), Sym(b)) if a == b => Int(0),
        (BinaryOp::Div, Sym(a), Sym(b)) if a == b => Int(1),
        (BinaryOp::Equal, Sym(a), Sym(b)) if a == b => Int(1),
        // A symbolic size is never negative.
        (BinaryOp::Equal, Sym(_), Int(v)) | (BinaryOp::Equal, Int(v), Sym(_)) if *v < 0 => Int(0),
        _ => Unknown,
    }
}

fn select_sym(cond: &SymInt, x: &SymInt, y: &SymInt) -> SymInt {
    match cond {
        SymInt::Int(0) => y.clone(),
        SymInt::Int(_) => x.clone(),
        _ if x == y => x.clone(),
        _ => SymInt::Unknown,
    }
}

fn slice_contents(inputs: &[Option<InputInfo>]) -> Option<Vec<SymInt>> {
    let c = |slot: usize| {
        inputs
            .get(slot)
            .and_then(|i| i.as_ref())
            .and_then(|i| i.contents.as_deref())
    };
    let data = c(0)?;
    let starts = c(1)?;
    let ends = c(2)?;
    if starts.len() != 1 || ends.len() != 1 {
        return None;
    }
    if let Some(axes) = c(3)
        && !matches!(axes, [SymInt::Int(0)] | [SymInt::Int(-1)])
    {
        return None;
    }
    let step = match c(4) {
        Some([SymInt::Int(s)]) => *s,
        Some(_) => return None,
        None => 1,
    };
    let (SymInt::Int(s), SymInt::Int(e)) = (&starts[0], &ends[0]) else {
        return None;
    };
    let r = slice_range(data.len() as i64, *s, *e, step)?;
    Some(r.into_iter().map(|i| data[i].clone()).collect())
}

/// Indices selected by an ONNX Slice of one axis of size `d`.
fn slice_range(d: i64, start: i64, end: i64, step: i64) -> Option<Vec<usize>> {
    if step == 0 {
        return None;
    }
    let (s, e) = slice_bounds(d, start, end, step);
    let mut v = Vec::new();
    let mut i = s;
    while (step > 0 && i < e) || (step < 0 && i > e) {
        v.push(usize::try_from(i).ok()?);
        match i.checked_add(step) {
            Some(next) => i = next,
            None => break,
        }
    }
    Some(v)
}

fn slice_bounds(d: i64, start: i64, end: i64, step: i64) -> (i64, i64) {
    let adj = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    if d == 0 {
        return (0, 0);
    }
    if step > 0 {
        (adj(start).clamp(0, d), adj(end).clamp(0, d))
    } else {
        (adj(start).clamp(0, d - 1), adj(end).clamp(-1, d - 1))
    }
}

fn slice_len(d: i64, start: i64, end: i64, step: i64) -> usize {
    let (s, e) = slice_bounds(d, start, end, step);
    let span = if step > 0 { e - s } else { s - e };
    ceil_steps(span as i128, step as i128)
}

/// `max(ceil(span / |step|), 0)` without overflow.
fn ceil_steps(span: i128, step: i128) -> usize {
    let step = step.abs();
    if span <= 0 || step == 0 {
        return 0;
    }
    usize::try_from((span + step - 1) / step).unwrap_or(usize::MAX)
}

fn range_len(start: i64, limit: i64, delta: i64) -> usize {
    let span = limit as i128 - start as i128;
    if (span > 0) != (delta > 0) {
        return 0;
    }
    ceil_steps(span.abs(), delta as i128)
}

fn shape_range(rank: usize, start: i64, end: Option<i64>) -> (usize, usize) {
    let r = rank as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let s = clampi(start);
    let e = end.map_or(rank, clampi);
    (s, e.max(s))
}

// ---------------------------------------------------------------------------
// Per-op type rules

/// Builds errors and fresh symbols for one node.
struct Cx<'a> {
    node: &'a Node,
    inputs: &'a [Option<InputInfo<'a>>],
}

impl<'a> Cx<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> GraphError {
        GraphError::Node {
            node: self.node.name.clone(),
            msg: format!("{}: {msg}", self.node.op.name()),
        }
    }

    fn fresh(&self, slot: usize, i: usize) -> Dim {
        if self.node.outputs.len() > 1 {
            Dim::Sym(format!("{}_o{slot}_d{i}", self.node.name))
        } else {
            Dim::Sym(format!("{}_d{i}", self.node.name))
        }
    }

    fn info(&self, slot: usize) -> Option<&'a InputInfo<'a>> {
        self.inputs.get(slot).and_then(|i| i.as_ref())
    }

    fn connected(&self, slot: usize) -> bool {
        self.info(slot).is_some()
    }

    fn ty(&self, slot: usize) -> Result<&'a TensorType, GraphError> {
        match self.info(slot) {
            Some(i) => {
                i.ty.as_ref()
                    .ok_or_else(|| self.err(format!("input {slot} has no type yet")))
            }
            None => Err(self.err(format!("input {slot} is not connected"))),
        }
    }

    fn opt_ty(&self, slot: usize) -> Result<Option<&'a TensorType>, GraphError> {
        if self.connected(slot) {
            self.ty(slot).map(Some)
        } else {
            Ok(None)
        }
    }

    fn contents(&self, slot: usize) -> Option<&'a [SymInt]> {
        self.info(slot).and_then(|i| i.contents.as_deref())
    }

    fn tensor(&self, slot: usize) -> Option<&'a Tensor> {
        self.info(slot).and_then(|i| i.tensor)
    }

    fn axis(&self, axis: i64, rank: usize) -> Result<usize, GraphError> {
        let r = rank as i64;
        if axis < -r || axis >= r {
            return Err(self.err(format!("axis {axis} is out of range for rank {rank}")));
        }
        Ok(if axis < 0 {
            (axis + r) as usize
        } else {
            axis as usize
        })
    }

    fn require_int(&self, slot: usize, what: &str) -> Result<(), GraphError> {
        let t = self.ty(slot)?;
        if !t.dtype.is_int() {
            return Err(self.err(format!(
                "{what} (input {slot}) must be an integer tensor, got {t}"
            )));
        }
        Ok(())
    }

    fn require_float(&self, slot: usize) -> Result<&'a TensorType, GraphError> {
        let t = self.ty(slot)?;
        if !t.dtype.is_float() {
            return Err(self.err(format!("input {slot} must be a float tensor, got {t}")));
        }
        Ok(t)
    }

    fn same_dtype(&self, a: usize, b: usize) -> Result<DType, GraphError> {
        let (ta, tb) = (self.ty(a)?, self.ty(b)?);
        if ta.dtype != tb.dtype {
            return Err(self.err(format!("input types differ: {ta} and {tb}")));
        }
        Ok(ta.dtype)
    }

    /// The elements of a 1-D integer input (a shape, axes, starts, …): its tracked
    /// contents, or unknowns of its static length.
    fn int_list(&self, slot: usize) -> Result<Vec<SymInt>, GraphError> {
        self.require_int(slot, "shape/index input")?;
        if let Some(c) = self.contents(slot) {
            return Ok(c.to_vec());
        }
        if let Some(t) = self.tensor(slot) {
            return Ok(t.to_i64_vec().into_iter().map(SymInt::Int).collect());
        }
        let t = self.ty(slot)?;
        match t.shape.0.as_slice() {
            [] => Ok(vec![SymInt::Unknown]),
            [Dim::Known(n)] => Ok(vec![SymInt::Unknown; *n]),
            _ => Err(self.err(format!(
                "input {slot} must be a 1-D tensor of known length, got {t}; its length decides the output rank"
            ))),
        }
    }

    /// All-known integers of a 1-D input, if they are known.
    fn known_ints(&self, slot: usize) -> Result<Option<Vec<i64>>, GraphError> {
        Ok(self.int_list(slot)?.iter().map(SymInt::int).collect())
    }
}

fn infer_outputs(node: &Node, inputs: &[Option<InputInfo>]) -> Result<Vec<TensorType>, GraphError> {
    let cx = Cx { node, inputs };
    let n_out = node.outputs.len();
    let single = |ty: TensorType| -> Result<Vec<TensorType>, GraphError> {
        if n_out != 1 {
            return Err(cx.err(format!("has {n_out} outputs where 1 is expected")));
        }
        Ok(vec![ty])
    };
    match &node.op {
        Op::Input => match node.outputs.first().and_then(|v| v.ty.clone()) {
            Some(t) if n_out == 1 => Ok(vec![t]),
            _ => Err(cx.err("graph input has no declared type")),
        },
        Op::Const(t) | Op::Param(t) => single(TensorType::new(t.dtype(), t.ir_shape())),
        Op::MatMul => single(matmul(&cx)?),
        Op::Gemm(a) => single(gemm(&cx, a)?),
        Op::Conv(a) => single(conv(&cx, a, false)?),
        Op::ConvTranspose(a) => single(conv(&cx, a, true)?),
        Op::Binary(b) => single(binary(&cx, *b)?),
        Op::Unary(u) => single(unary(&cx, *u)?),
        Op::Clip | Op::Identity => single(cx.ty(0)?.clone()),
        Op::Softmax { axis } => {
            let t = cx.require_float(0)?;
            cx.axis(*axis, t.shape.rank())?;
            single(t.clone())
        }
        Op::Gelu { .. } => single(cx.require_float(0)?.clone()),
        Op::LayerNorm { axis, .. } => layer_norm(&cx, *axis),
        Op::BatchNorm { .. } => {
            let t = cx.require_float(0)?;
            if t.shape.rank() < 2 {
                return Err(cx.err(format!("input must have rank ≥ 2, got {t}")));
            }
            single(t.clone())
        }
        Op::Reduce {
            op,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => single(reduce(
            &cx,
            *op,
            axes.as_deref(),
            *keepdims,
            *noop_with_empty_axes,
        )?),
        Op::Reshape { allowzero } => single(reshape(&cx, *allowzero)?),
        Op::Transpose { perm } => single(transpose(&cx, perm.as_deref())?),
        Op::Concat { axis } => single(concat(&cx, *axis)?),
        Op::Split { axis, sizes } => split(&cx, *axis, sizes.as_deref()),
        Op::Gather { axis } => single(gather(&cx, *axis)?),
        Op::Slice => single(slice(&cx)?),
        Op::Squeeze { axes } => single(squeeze(&cx, axes.as_deref())?),
        Op::Unsqueeze { axes } => single(unsqueeze(&cx, axes)?),
        Op::Flatten { axis } => single(flatten(&cx, *axis)?),
        Op::Shape { start, end } => {
            let t = cx.ty(0)?;
            let (s, e) = shape_range(t.shape.rank(), *start, *end);
            single(TensorType::new(DType::I64, Shape::known(&[e - s])))
        }
        Op::Cast { to } => single(TensorType::new(*to, cx.ty(0)?.shape.clone())),
        Op::Where => single(where_(&cx)?),
        Op::Expand => single(expand(&cx)?),
        Op::ConstantOfShape { value } => {
            let dims = dims_from_list(&cx, 0, &cx.int_list(0)?)?;
            single(TensorType::new(value.dtype(), Shape(dims)))
        }
        Op::Range => single(range(&cx)?),
        Op::Resize(a) => single(resize(&cx, a)?),
        Op::GloraLinear(a) => single(glora_linear(&cx, a)?),
        Op::Grad(g) => grad_op(&cx, g, n_out),
    }
}

/// Output types of the training-only operations: gradients take the element type of
/// the incoming gradient and the shape of what they differentiate.
fn grad_op(cx: &Cx, g: &GradOp, n_out: usize) -> Result<Vec<TensorType>, GraphError> {
    let expect = |n: usize| -> Result<(), GraphError> {
        if n_out != n {
            return Err(cx.err(format!("has {n_out} outputs where {n} are expected")));
        }
        Ok(())
    };
    let shaped = |slot: usize, dims: &[usize]| -> Result<TensorType, GraphError> {
        Ok(TensorType::new(
            cx.require_float(slot)?.dtype,
            Shape::known(dims),
        ))
    };
    match g {
        GradOp::Unary(_) => {
            expect(1)?;
            Ok(vec![cx.require_float(2)?.clone()])
        }
        GradOp::Softmax { .. } => {
            expect(1)?;
            Ok(vec![cx.require_float(1)?.clone()])
        }
        GradOp::LayerNorm { .. } => {
            expect(3)?;
            let x = cx.require_float(0)?.clone();
            let scale = cx.require_float(1)?.clone();
            Ok(vec![x, scale.clone(), scale])
        }
        GradOp::Gather { x_shape, .. } => {
            expect(1)?;
            Ok(vec![shaped(1, x_shape)?])
        }
        GradOp::Slice { x_shape } => {
            expect(1)?;
            Ok(vec![shaped(0, x_shape)?])
        }
        GradOp::ConvWeight { w_shape, .. } => {
            expect(1)?;
            Ok(vec![shaped(1, w_shape)?])
        }
        GradOp::SoftmaxCrossEntropy { .. } => {
            expect(1)?;
            let logits = cx.require_float(0)?;
            if logits.shape.rank() != 2 {
                return Err(cx.err(format!("logits must be [N, K], got {logits}")));
            }
            Ok(vec![TensorType::new(logits.dtype, Shape::known(&[]))])
        }
        GradOp::SoftmaxCrossEntropyGrad { .. } => {
            expect(1)?;
            Ok(vec![cx.require_float(0)?.clone()])
        }
        GradOp::GloraLinear(a) => {
            if n_out != 8 && n_out != 9 {
                return Err(cx.err(format!("has {n_out} outputs where 8 or 9 are expected")));
            }
            let dtype = cx.require_float(11)?.dtype;
            let mut out: Vec<TensorType> = glora_input_shapes(a)[2..]
                .iter()
                .map(|(_, _, dims)| TensorType::new(dtype, Shape::known(dims)))
                .collect();
            if n_out == 9 {
                out.push(cx.require_float(0)?.clone());
            }
            Ok(out)
        }
    }
}

/// The shapes a GLoRA layer's weight inputs must have, by slot (x excluded).
fn glora_input_shapes(a: &GloraLinearAttrs) -> [(usize, &'static str, Vec<usize>); 10] {
    let (d_in, d_out, r) = (a.d_in, a.d_out, a.rank);
    let w0 = match a.layout {
        WeightLayout::InOut => vec![d_in, d_out],
        WeightLayout::OutIn => vec![d_out, d_in],
    };
    [
        (1, "W0", w0),
        (2, "b0", vec![d_out]),
        (3, "Ad", vec![d_out, r]),
        (4, "Au", vec![r, d_in]),
        (5, "Bd", vec![d_out, r]),
        (6, "Bu", vec![r, d_in]),
        (7, "Cd", vec![d_in, r]),
        (8, "Cu", vec![r, 1]),
        (9, "D", vec![d_out]),
        (10, "E", vec![d_out]),
    ]
}

/// `x` `[..., d_in]` → `[..., d_out]`; every weight input must have its exact shape
/// and x's element type, and b0 must be present exactly when the layer has a bias.
fn glora_linear(cx: &Cx, a: &GloraLinearAttrs) -> Result<TensorType, GraphError> {
    let x = cx.require_float(0)?;
    let Some(last) = x.shape.0.last() else {
        return Err(cx.err(format!("x must have rank ≥ 1, got {x}")));
    };
    if conflict(last, &Dim::Known(a.d_in)) {
        return Err(cx.err(format!(
            "layer '{}': x {x} does not end in d_in = {}",
            a.layer, a.d_in
        )));
    }
    if cx.connected(2) != a.has_bias {
        return Err(cx.err(format!(
            "layer '{}' is declared with has_bias = {} but b0 is {}",
            a.layer,
            a.has_bias,
            if a.has_bias { "missing" } else { "connected" }
        )));
    }
    for (slot, what, expected) in glora_input_shapes(a) {
        let Some(t) = cx.opt_ty(slot)? else { continue };
        if t.dtype != x.dtype || t.shape != Shape::known(&expected) {
            return Err(cx.err(format!(
                "layer '{}': {what} (input {slot}) should be {}{}, got {t}",
                a.layer,
                x.dtype,
                Shape::known(&expected)
            )));
        }
    }
    let mut out = x.shape.0.clone();
    if let Some(d) = out.last_mut() {
        *d = Dim::Known(a.d_out);
    }
    Ok(TensorType::new(x.dtype, Shape(out)))
}

/// Dimensions from the elements of a shape tensor (ConstantOfShape, Expand).
fn dims_from_list(cx: &Cx, slot: usize, list: &[SymInt]) -> Result<Vec<Dim>, GraphError> {
    list.iter()
        .enumerate()
        .map(|(i, e)| match e {
            SymInt::Int(v) if *v >= 0 => Ok(Dim::Known(*v as usize)),
            SymInt::Int(v) => {
                Err(cx.err(format!("shape input {slot} holds the negative size {v}")))
            }
            SymInt::Sym(s) => Ok(Dim::Sym(s.clone())),
            SymInt::Unknown => Ok(cx.fresh(0, i)),
        })
        .collect()
}

/// Whether two dims are both known and different.
fn conflict(a: &Dim, b: &Dim) -> bool {
    matches!((a, b), (Dim::Known(x), Dim::Known(y)) if x != y)
}

/// Broadcasts two dims; `None` when they provably conflict.
fn broadcast_dim(a: &Dim, b: &Dim) -> Option<Dim> {
    match (a, b) {
        (Dim::Known(1), x) | (x, Dim::Known(1)) => Some(x.clone()),
        (Dim::Known(x), Dim::Known(y)) => (x == y).then_some(Dim::Known(*x)),
        (Dim::Known(n), Dim::Sym(_)) | (Dim::Sym(_), Dim::Known(n)) => Some(Dim::Known(*n)),
        // Two different symbols are assumed equal; keep the first.
        (Dim::Sym(s), Dim::Sym(_)) => Some(Dim::Sym(s.clone())),
    }
}

fn broadcast_shapes(cx: &Cx, shapes: &[&Shape]) -> Result<Shape, GraphError> {
    let rank = shapes.iter().map(|s| s.rank()).max().unwrap_or(0);
    let mut out = vec![Dim::Known(1); rank];
    for s in shapes {
        let off = rank - s.rank();
        for (i, d) in s.0.iter().enumerate() {
            out[off + i] = broadcast_dim(&out[off + i], d).ok_or_else(|| {
                let list: Vec<String> = shapes.iter().map(|s| s.to_string()).collect();
                cx.err(format!("shapes {} do not broadcast", list.join(" and ")))
            })?;
        }
    }
    Ok(Shape(out))
}

fn binary(cx: &Cx, op: BinaryOp) -> Result<TensorType, GraphError> {
    let (a, b) = (cx.ty(0)?, cx.ty(1)?);
    let dtype = match op {
        BinaryOp::Pow => a.dtype,
        BinaryOp::Equal => {
            cx.same_dtype(0, 1)?;
            DType::Bool
        }
        _ => {
            let d = cx.same_dtype(0, 1)?;
            if d == DType::Bool {
                return Err(cx.err(format!("arithmetic on bool tensors {a} and {b}")));
            }
            d
        }
    };
    Ok(TensorType::new(
        dtype,
        broadcast_shapes(cx, &[&a.shape, &b.shape])?,
    ))
}

fn unary(cx: &Cx, op: UnaryOp) -> Result<TensorType, GraphError> {
    let t = match op {
        UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu => cx.ty(0)?,
        _ => cx.require_float(0)?,
    };
    Ok(t.clone())
}

fn matmul(cx: &Cx) -> Result<TensorType, GraphError> {
    let (a, b) = (cx.ty(0)?, cx.ty(1)?);
    let dtype = cx.same_dtype(0, 1)?;
    if a.shape.rank() == 0 || b.shape.rank() == 0 {
        return Err(cx.err(format!("operands must have rank ≥ 1, got {a} and {b}")));
    }
    let mut ad = a.shape.0.clone();
    let mut bd = b.shape.0.clone();
    let a_vec = ad.len() == 1;
    let b_vec = bd.len() == 1;
    if a_vec {
        ad.insert(0, Dim::Known(1));
    }
    if b_vec {
        bd.push(Dim::Known(1));
    }
    let (k1, k2) = (&ad[ad.len() - 1], &bd[bd.len() - 2]);
    if conflict(k1, k2) {
        return Err(cx.err(format!("inner dimensions differ: {a} × {b}")));
    }
    let m = ad[ad.len() - 2].clone();
    let n = bd[bd.len() - 1].clone();
    let batch = broadcast_shapes(
        cx,
        &[
            &Shape(ad[..ad.len() - 2].to_vec()),
            &Shape(bd[..bd.len() - 2].to_vec()),
        ],
    )
    .map_err(|_| cx.err(format!("batch dimensions do not broadcast: {a} × {b}")))?;
    let mut out = batch.0;
    if !a_vec {
        out.push(m);
    }
    if !b_vec {
        out.push(n);
    }
    Ok(TensorType::new(dtype, Shape(out)))
}

fn gemm(cx: &Cx, at: &GemmAttrs) -> Result<TensorType, GraphError> {
    let (a, b) = (cx.ty(0)?, cx.ty(1)?);
    let dtype = cx.same_dtype(0, 1)?;
    if a.shape.rank() != 2 || b.shape.rank() != 2 {
        return Err(cx.err(format!("A and B must be 2-D, got {a} and {b}")));
    }
    let (m, ka) = if at.trans_a {
        (&a.shape.0[1], &a.shape.0[0])
    } else {
        (&a.shape.0[0], &a.shape.0[1])
    };
    let (kb, n) = if at.trans_b {
        (&b.shape.0[1], &b.shape.0[0])
    } else {
        (&b.shape.0[0], &b.shape.0[1])
    };
    if conflict(ka, kb) {
        return Err(cx.err(format!(
            "inner dimensions differ: A {a} (trans_a={}) × B {b} (trans_b={})",
            at.trans_a, at.trans_b
        )));
    }
    let out = Shape(vec![m.clone(), n.clone()]);
    if let Some(c) = cx.opt_ty(2)? {
        let bc = broadcast_shapes(cx, &[&out, &c.shape])?;
        if bc.rank() != 2 || conflict(&bc.0[0], &out.0[0]) || conflict(&bc.0[1], &out.0[1]) {
            return Err(cx.err(format!("C {c} does not broadcast to {out}")));
        }
    }
    Ok(TensorType::new(dtype, out))
}

fn attr_or(v: &[usize], i: usize, default: usize) -> usize {
    v.get(i).copied().unwrap_or(default)
}

fn conv(cx: &Cx, at: &ConvAttrs, transposed: bool) -> Result<TensorType, GraphError> {
    let x = cx.require_float(0)?;
    let w = cx.ty(1)?;
    cx.same_dtype(0, 1)?;
    let rank = x.shape.rank();
    if rank < 3 || w.shape.rank() != rank {
        return Err(cx.err(format!(
            "input {x} and weight {w} must have the same rank ≥ 3"
        )));
    }
    let k = rank - 2;
    let group = at.group.max(1);
    let kernel: Vec<Dim> = if at.kernel_shape.is_empty() {
        w.shape.0[2..].to_vec()
    } else if at.kernel_shape.len() == k {
        at.kernel_shape.iter().map(|&d| Dim::Known(d)).collect()
    } else {
        return Err(cx.err(format!(
            "kernel_shape {:?} does not fit input {x}",
            at.kernel_shape
        )));
    };
    if !at.pads.is_empty() && at.pads.len() != 2 * k {
        return Err(cx.err(format!(
            "pads {:?} need {} entries for input {x}",
            at.pads,
            2 * k
        )));
    }
    let c_in = &x.shape.0[1];
    let out_ch = if transposed {
        if conflict(c_in, &w.shape.0[0]) {
            return Err(cx.err(format!(
                "input {x} has {c_in} channels but weight {w} expects {}",
                w.shape.0[0]
            )));
        }
        match &w.shape.0[1] {
            Dim::Known(m) => Dim::Known(m.saturating_mul(group)),
            d => d.clone(),
        }
    } else {
        if let (Dim::Known(c), Dim::Known(wc)) = (c_in, &w.shape.0[1])
            && *c != wc.saturating_mul(group)
        {
            return Err(cx.err(format!(
                "input {x} has {c} channels but weight {w} with group {group} expects {}",
                wc.saturating_mul(group)
            )));
        }
        w.shape.0[0].clone()
    };
    if let Some(b) = cx.opt_ty(2)?
        && (b.shape.rank() != 1 || conflict(&b.shape.0[0], &out_ch))
    {
        return Err(cx.err(format!("bias {b} does not match {out_ch} output channels")));
    }
    let mut dims = vec![x.shape.0[0].clone(), out_ch];
    for (i, kd) in kernel.iter().enumerate() {
        let stride = attr_or(&at.strides, i, 1).max(1);
        let dil = attr_or(&at.dilations, i, 1).max(1);
        let (pb, pe) = match at.auto_pad {
            AutoPad::NotSet => (attr_or(&at.pads, i, 0), attr_or(&at.pads, i + k, 0)),
            _ => (0, 0),
        };
        let d = match (&x.shape.0[2 + i], kd) {
            (Dim::Known(n), Dim::Known(kk)) => {
                let span = dil.saturating_mul(kk.saturating_sub(1)).saturating_add(1);
                let size = if transposed {
                    if let Some(&o) = at
                        .output_shape
                        .get(at.output_shape.len().saturating_sub(k) + i)
                    {
                        Some(o)
                    } else if matches!(at.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) {
                        Some(n.saturating_mul(stride))
                    } else {
                        let full = stride
                            .saturating_mul(n.saturating_sub(1))
                            .saturating_add(attr_or(&at.output_padding, i, 0))
                            .saturating_add(span);
                        full.checked_sub(pb + pe)
                    }
                } else if matches!(at.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) {
                    Some(n.div_ceil(stride))
                } else {
                    n.saturating_add(pb)
                        .saturating_add(pe)
                        .checked_sub(span)
                        .map(|v| v / stride + 1)
                };
                match size {
                    Some(s) => Dim::Known(s),
                    None => {
                        return Err(cx.err(format!(
                            "kernel {kd} (dilation {dil}) does not fit spatial size {n} with pads {pb}+{pe}"
                        )));
                    }
                }
            }
            _ => cx.fresh(0, 2 + i),
        };
        dims.push(d);
    }
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

fn layer_norm(cx: &Cx, axis: i64) -> Result<Vec<TensorType>, GraphError> {
    let x = cx.require_float(0)?;
    let rank = x.shape.rank();
    let a = cx.axis(axis, rank)?;
    let normalized = Shape(x.shape.0[a..].to_vec());
    for slot in [1, 2] {
        if let Some(p) = cx.opt_ty(slot)? {
            let bc = broadcast_shapes(cx, &[&normalized, &p.shape]).map_err(|_| {
                cx.err(format!(
                    "input {slot} {p} does not fit the normalized shape {normalized}"
                ))
            })?;
            if bc.rank() != normalized.rank() {
                return Err(cx.err(format!(
                    "input {slot} {p} has more axes than the normalized shape {normalized}"
                )));
            }
        }
    }
    let n = cx.node.outputs.len();
    if !(1..=3).contains(&n) {
        return Err(cx.err(format!("has {n} outputs, expected 1 to 3")));
    }
    let mut stat = x.shape.0.clone();
    for d in &mut stat[a..] {
        *d = Dim::Known(1);
    }
    let mut out = vec![x.clone()];
    for _ in 1..n {
        out.push(TensorType::new(DType::F32, Shape(stat.clone())));
    }
    Ok(out)
}

fn reduce(
    cx: &Cx,
    op: ReduceOp,
    axes: Option<&[i64]>,
    keepdims: bool,
    noop: bool,
) -> Result<TensorType, GraphError> {
    let x = cx.ty(0)?;
    if op == ReduceOp::Mean && !x.dtype.is_float() {
        return Err(cx.err(format!("ReduceMean needs a float input, got {x}")));
    }
    let rank = x.shape.rank();
    let axes: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|&v| cx.axis(v, rank))
            .collect::<Result<_, _>>()?,
        _ if noop => return Ok(x.clone()),
        _ => (0..rank).collect(),
    };
    let mut dims = Vec::new();
    for (i, d) in x.shape.0.iter().enumerate() {
        if axes.contains(&i) {
            if keepdims {
                dims.push(Dim::Known(1));
            }
        } else {
            dims.push(d.clone());
        }
    }
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

/// A product of dims as a known factor times a multiset of symbols.
struct SymProduct {
    known: u128,
    syms: Vec<String>,
}

impl SymProduct {
    fn of<'d>(dims: impl IntoIterator<Item = &'d Dim>) -> SymProduct {
        let mut p = SymProduct {
            known: 1,
            syms: Vec::new(),
        };
        for d in dims {
            match d {
                Dim::Known(n) => p.known = p.known.saturating_mul(*n as u128),
                Dim::Sym(s) => p.syms.push(s.clone()),
            }
        }
        p.syms.sort();
        p
    }

    /// `self / other` as a single dim, when it is one.
    fn div(&self, other: &SymProduct) -> Option<Dim> {
        let mut rest = self.syms.clone();
        for s in &other.syms {
            let i = rest.iter().position(|r| r == s)?;
            rest.remove(i);
        }
        if other.known == 0 || !self.known.is_multiple_of(other.known) {
            return None;
        }
        let q = self.known / other.known;
        match rest.as_slice() {
            [] => usize::try_from(q).ok().map(Dim::Known),
            [s] if q == 1 => Some(Dim::Sym(s.clone())),
            _ => None,
        }
    }

    /// As a single dim if it is one.
    fn as_dim(&self) -> Option<Dim> {
        match self.syms.as_slice() {
            [] => usize::try_from(self.known).ok().map(Dim::Known),
            [s] if self.known == 1 => Some(Dim::Sym(s.clone())),
            _ => None,
        }
    }
}

fn reshape(cx: &Cx, allowzero: bool) -> Result<TensorType, GraphError> {
    let x = cx.ty(0)?;
    let spec = cx.int_list(1)?;
    let mut dims: Vec<Option<Dim>> = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, e) in spec.iter().enumerate() {
        let d = match e {
            SymInt::Int(0) if !allowzero => Some(x.shape.0.get(i).cloned().ok_or_else(|| {
                cx.err(format!(
                    "shape entry {i} copies a dimension that input {x} lacks"
                ))
            })?),
            SymInt::Int(-1) => {
                if infer_at.replace(i).is_some() {
                    return Err(cx.err(format!("shape {} has more than one -1", fmt_list(&spec))));
                }
                None
            }
            SymInt::Int(v) if *v < 0 => {
                return Err(cx.err(format!("shape {} holds {v}", fmt_list(&spec))));
            }
            SymInt::Int(v) => Some(Dim::Known(*v as usize)),
            SymInt::Sym(s) => Some(Dim::Sym(s.clone())),
            SymInt::Unknown => Some(cx.fresh(0, i)),
        };
        dims.push(d);
    }
    let total = SymProduct::of(&x.shape.0);
    let given = SymProduct::of(dims.iter().flatten());
    if let Some(i) = infer_at {
        let d = total.div(&given);
        if d.is_none() && total.syms.is_empty() && given.syms.is_empty() {
            return Err(cx.err(format!(
                "cannot reshape {x} to {}: {} elements do not divide into {}",
                fmt_list(&spec),
                total.known,
                given.known
            )));
        }
        dims[i] = Some(d.unwrap_or_else(|| cx.fresh(0, i)));
    } else if total.syms == given.syms && total.known != given.known {
        return Err(cx.err(format!(
            "cannot reshape {x} to {}: element counts differ",
            fmt_list(&spec)
        )));
    }
    Ok(TensorType::new(
        x.dtype,
        Shape(dims.into_iter().flatten().collect()),
    ))
}

fn fmt_list(v: &[SymInt]) -> String {
    let parts: Vec<String> = v
        .iter()
        .map(|e| match e {
            SymInt::Int(x) => x.to_string(),
            SymInt::Sym(s) => s.clone(),
            SymInt::Unknown => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(","))
}

fn transpose(cx: &Cx, perm: Option<&[usize]>) -> Result<TensorType, GraphError> {
    let x = cx.ty(0)?;
    let rank = x.shape.rank();
    let perm: Vec<usize> = match perm {
        Some(p) => p.to_vec(),
        None => (0..rank).rev().collect(),
    };
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(cx.err(format!(
            "perm {perm:?} is not a permutation of the axes of {x}"
        )));
    }
    Ok(TensorType::new(
        x.dtype,
        Shape(perm.iter().map(|&p| x.shape.0[p].clone()).collect()),
    ))
}

fn concat(cx: &Cx, axis: i64) -> Result<TensorType, GraphError> {
    let n = cx.node.num_inputs;
    if n == 0 {
        return Err(cx.err("has no inputs"));
    }
    let first = cx.ty(0)?;
    let rank = first.shape.rank();
    let a = cx.axis(axis, rank)?;
    let mut dims = first.shape.0.clone();
    let mut along = vec![first.shape.0[a].clone()];
    for slot in 1..n {
        let t = cx.ty(slot)?;
        if t.dtype != first.dtype {
            return Err(cx.err(format!("input types differ: {first} and {t}")));
        }
        if t.shape.rank() != rank {
            return Err(cx.err(format!("input ranks differ: {first} and {t}")));
        }
        for (i, d) in t.shape.0.iter().enumerate() {
            if i == a {
                along.push(d.clone());
                continue;
            }
            dims[i] = match (&dims[i], d) {
                (Dim::Known(x), Dim::Known(y)) if x != y => {
                    return Err(cx.err(format!(
                        "dimension {i} differs between inputs {first} and {t}"
                    )));
                }
                (Dim::Sym(_), Dim::Known(y)) => Dim::Known(*y),
                (cur, _) => cur.clone(),
            };
        }
    }
    dims[a] = SymProduct::sum(&along).unwrap_or_else(|| cx.fresh(0, a));
    Ok(TensorType::new(first.dtype, Shape(dims)))
}

impl SymProduct {
    /// The sum of dims as one dim, when it is one (all known, or one symbol plus zeros).
    fn sum(dims: &[Dim]) -> Option<Dim> {
        let mut known = 0usize;
        let mut sym = None;
        for d in dims {
            match d {
                Dim::Known(n) => known = known.saturating_add(*n),
                Dim::Sym(s) if sym.is_none() => sym = Some(s.clone()),
                Dim::Sym(_) => return None,
            }
        }
        match sym {
            None => Some(Dim::Known(known)),
            Some(s) if known == 0 => Some(Dim::Sym(s)),
            Some(_) => None,
        }
    }
}

fn split(cx: &Cx, axis: i64, sizes: Option<&[usize]>) -> Result<Vec<TensorType>, GraphError> {
    let x = cx.ty(0)?;
    let a = cx.axis(axis, x.shape.rank())?;
    let n = cx.node.outputs.len();
    if n == 0 {
        return Err(cx.err("has no outputs"));
    }
    let d = &x.shape.0[a];
    let pieces: Vec<Dim> = match (sizes, d) {
        (Some(s), _) if s.len() != n => {
            return Err(cx.err(format!("{} split sizes for {n} outputs", s.len())));
        }
        (Some(s), Dim::Known(total)) if s.iter().sum::<usize>() != *total => {
            return Err(cx.err(format!(
                "split sizes {s:?} do not add up to dimension {a} of {x}"
            )));
        }
        (Some(s), _) => s.iter().map(|&v| Dim::Known(v)).collect(),
        (None, Dim::Known(total)) => {
            let each = total.div_ceil(n);
            (0..n)
                .map(|i| Dim::Known(each.min(total.saturating_sub(each.saturating_mul(i)))))
                .collect()
        }
        (None, Dim::Sym(_)) if n == 1 => vec![d.clone()],
        (None, Dim::Sym(_)) => (0..n).map(|i| cx.fresh(i, a)).collect(),
    };
    Ok(pieces
        .into_iter()
        .map(|p| {
            let mut dims = x.shape.0.clone();
            dims[a] = p;
            TensorType::new(x.dtype, Shape(dims))
        })
        .collect())
}

fn gather(cx: &Cx, axis: i64) -> Result<TensorType, GraphError> {
    let x = cx.ty(0)?;
    cx.require_int(1, "indices")?;
    let idx = cx.ty(1)?;
    let rank = x.shape.rank();
    let a = cx.axis(axis, rank)?;
    if let (Dim::Known(n), Some(vals)) = (&x.shape.0[a], cx.known_ints(1).ok().flatten()) {
        let n = *n as i64;
        if let Some(bad) = vals.iter().find(|&&v| v < -n || v >= n) {
            return Err(cx.err(format!(
                "index {bad} is out of range for dimension {a} of {x}"
            )));
        }
    }
    let mut dims = x.shape.0[..a].to_vec();
    dims.extend(idx.shape.0.iter().cloned());
    dims.extend(x.shape.0[a + 1..].iter().cloned());
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

fn slice(cx: &Cx) -> Result<TensorType, GraphError> {
    let x = cx.ty(0)?;
    let rank = x.shape.rank();
    let starts = cx.int_list(1)?;
    let ends = cx.int_list(2)?;
    if starts.len() != ends.len() {
        return Err(cx.err(format!("{} starts but {} ends", starts.len(), ends.len())));
    }
    let axes: Option<Vec<usize>> = if cx.connected(3) {
        match cx.known_ints(3)? {
            Some(a) => Some(
                a.iter()
                    .map(|&v| cx.axis(v, rank))
                    .collect::<Result<_, _>>()?,
            ),
            None => None,
        }
    } else {
        Some((0..starts.len()).collect())
    };
    let steps = if cx.connected(4) {
        cx.int_list(4)?
    } else {
        vec![SymInt::Int(1); starts.len()]
    };
    if steps.len() != starts.len() {
        return Err(cx.err(format!("{} steps for {} starts", steps.len(), starts.len())));
    }
    let mut dims = x.shape.0.clone();
    let Some(axes) = axes else {
        // Unknown axes: every dimension may change.
        return Ok(TensorType::new(
            x.dtype,
            Shape((0..rank).map(|i| cx.fresh(0, i)).collect()),
        ));
    };
    if axes.len() != starts.len() {
        return Err(cx.err(format!("{} axes for {} starts", axes.len(), starts.len())));
    }
    for (j, &ax) in axes.iter().enumerate() {
        if steps[j] == SymInt::Int(0) {
            return Err(cx.err("a step is 0"));
        }
        dims[ax] = slice_dim(&x.shape.0[ax], &starts[j], &ends[j], &steps[j])
            .unwrap_or_else(|| cx.fresh(0, ax));
    }
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

/// Size of one sliced axis, when it can be worked out.
fn slice_dim(d: &Dim, start: &SymInt, end: &SymInt, step: &SymInt) -> Option<Dim> {
    const TO_END: i64 = i64::MAX / 2;
    match (d, start, end, step) {
        (Dim::Known(n), SymInt::Int(s), SymInt::Int(e), SymInt::Int(st)) => {
            Some(Dim::Known(slice_len(*n as i64, *s, *e, *st)))
        }
        (Dim::Sym(_), SymInt::Int(0), SymInt::Int(e), SymInt::Int(1)) if *e >= TO_END => {
            Some(d.clone())
        }
        // Taking the first `s` entries: assumed to stay within the axis.
        (_, SymInt::Int(0), SymInt::Sym(s), SymInt::Int(1)) => Some(Dim::Sym(s.clone())),
        _ => None,
    }
}

fn squeeze(cx: &Cx, axes: Option<&[i64]>) -> Result<TensorType, GraphError> {
    let x = cx.ty(0)?;
    let rank = x.shape.rank();
    let remove: Vec<usize> = match axes {
        Some(a) => {
            let v: Vec<usize> = a
                .iter()
                .map(|&v| cx.axis(v, rank))
                .collect::<Result<_, _>>()?;
            for &i in &v {
                if let Dim::Known(n) = x.shape.0[i]
                    && n != 1
                {
                    return Err(cx.err(format!("axis {i} of {x} has size {n}, not 1")));
                }
            }
            v
        }
        None => (0..rank)
            .filter(|&i| x.shape.0[i] == Dim::Known(1))
            .collect(),
    };
    let dims = x
        .shape
        .0
        .iter()
        .enumerate()
        .filter(|(i, _)| !remove.contains(i))
        .map(|(_, d)| d.clone());
    Ok(TensorType::new(x.dtype, Shape(dims.collect())))
}

fn unsqueeze(cx: &Cx, axes: &[i64]) -> Result<TensorType, GraphError> {
    let x = cx.ty(0)?;
    let out_rank = x.shape.rank() + axes.len();
    let mut at: Vec<usize> = axes
        .iter()
        .map(|&v| cx.axis(v, out_rank))
        .collect::<Result<_, _>>()?;
    at.sort_unstable();
    if at.windows(2).any(|w| w[0] == w[1]) {
        return Err(cx.err(format!("axes {axes:?} repeat")));
    }
    let mut src = x.shape.0.iter();
    let dims = (0..out_rank)
        .map(|i| {
            if at.contains(&i) {
                Some(Dim::Known(1))
            } else {
                src.next().cloned()
            }
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| cx.err(format!("axes {axes:?} do not fit input {x}")))?;
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

fn flatten(cx: &Cx, axis: i64) -> Result<TensorType, GraphError> {
    let x = cx.ty(0)?;
    let rank = x.shape.rank();
    let r = rank as i64;
    if axis < -r || axis > r {
        return Err(cx.err(format!("axis {axis} is out of range for rank {rank}")));
    }
    let a = if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    };
    let outer = SymProduct::of(&x.shape.0[..a])
        .as_dim()
        .unwrap_or_else(|| cx.fresh(0, 0));
    let inner = SymProduct::of(&x.shape.0[a..])
        .as_dim()
        .unwrap_or_else(|| cx.fresh(0, 1));
    Ok(TensorType::new(x.dtype, Shape(vec![outer, inner])))
}

fn where_(cx: &Cx) -> Result<TensorType, GraphError> {
    let c = cx.ty(0)?;
    if c.dtype != DType::Bool {
        return Err(cx.err(format!("condition must be bool, got {c}")));
    }
    let dtype = cx.same_dtype(1, 2)?;
    let (a, b) = (cx.ty(1)?, cx.ty(2)?);
    Ok(TensorType::new(
        dtype,
        broadcast_shapes(cx, &[&c.shape, &a.shape, &b.shape])?,
    ))
}

fn expand(cx: &Cx) -> Result<TensorType, GraphError> {
    let x = cx.ty(0)?;
    let list = cx.int_list(1)?;
    let target = Shape(dims_from_list(cx, 1, &list)?);
    let rank = x.shape.rank().max(target.rank());
    let mut dims = Vec::with_capacity(rank);
    for i in 0..rank {
        let xd = (i + x.shape.rank())
            .checked_sub(rank)
            .map(|j| &x.shape.0[j]);
        let td = (i + target.rank()).checked_sub(rank).map(|j| &target.0[j]);
        let d = match (xd, td) {
            (Some(a), None) => a.clone(),
            (None, Some(b)) => b.clone(),
            (Some(a), Some(b)) => {
                // A fresh symbol for an unknown target entry may well be 1: keep x's dim.
                let unknown_target =
                    matches!(list.get(i + target.rank() - rank), Some(SymInt::Unknown));
                if unknown_target && *a != Dim::Known(1) {
                    a.clone()
                } else {
                    broadcast_dim(a, b).ok_or_else(|| {
                        cx.err(format!("input {x} cannot be expanded to {target}"))
                    })?
                }
            }
            (None, None) => Dim::Known(1),
        };
        dims.push(d);
    }
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

fn range(cx: &Cx) -> Result<TensorType, GraphError> {
    let dtype = cx.same_dtype(0, 1)?;
    cx.same_dtype(1, 2)?;
    for slot in 0..3 {
        let t = cx.ty(slot)?;
        if t.shape.numel() != Some(1) {
            return Err(cx.err(format!("input {slot} must be a scalar, got {t}")));
        }
    }
    let scalar = |slot: usize| -> Option<f64> {
        if let Some([SymInt::Int(v)]) = cx.contents(slot) {
            return Some(*v as f64);
        }
        cx.tensor(slot)
            .and_then(|t| t.to_f64_vec().first().copied())
    };
    let len = match (scalar(0), scalar(1), scalar(2)) {
        (Some(_), Some(_), Some(0.0)) => return Err(cx.err("delta is 0")),
        (Some(s), Some(l), Some(d)) => Dim::Known(((l - s) / d).ceil().max(0.0) as usize),
        _ => match (cx.contents(0), cx.contents(1), cx.contents(2)) {
            (Some([SymInt::Int(0)]), Some([SymInt::Sym(s)]), Some([SymInt::Int(1)])) => {
                Dim::Sym(s.clone())
            }
            _ => cx.fresh(0, 0),
        },
    };
    Ok(TensorType::new(dtype, Shape(vec![len])))
}

fn resize(cx: &Cx, at: &ResizeAttrs) -> Result<TensorType, GraphError> {
    let x = cx.ty(0)?;
    let rank = x.shape.rank();
    let axes: Vec<usize> = match &at.axes {
        Some(a) => a
            .iter()
            .map(|&v| cx.axis(v, rank))
            .collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    let mut dims = x.shape.0.clone();
    let sizes_given = cx.connected(3) && cx.ty(3)?.shape.numel() != Some(0);
    if sizes_given {
        let sizes = cx.int_list(3)?;
        if sizes.len() != axes.len() {
            return Err(cx.err(format!(
                "{} sizes for {} axes of {x}",
                sizes.len(),
                axes.len()
            )));
        }
        let ints: Option<Vec<i64>> = sizes.iter().map(SymInt::int).collect();
        let ins: Option<Vec<usize>> = axes.iter().map(|&a| x.shape.0[a].known()).collect();
        if at.aspect != AspectPolicy::Stretch {
            for &a in &axes {
                dims[a] = cx.fresh(0, a);
            }
            if let (Some(s), Some(ins)) = (ints, ins) {
                let ratios = s.iter().zip(&ins).map(|(&o, &i)| o as f64 / i as f64);
                let scale = if at.aspect == AspectPolicy::NotLarger {
                    ratios.fold(f64::INFINITY, f64::min)
                } else {
                    ratios.fold(0.0, f64::max)
                };
                for (&a, &i) in axes.iter().zip(&ins) {
                    dims[a] = Dim::Known((scale * i as f64).round() as usize);
                }
            }
        } else {
            for (j, &a) in axes.iter().enumerate() {
                dims[a] = match &sizes[j] {
                    SymInt::Int(v) if *v >= 0 => Dim::Known(*v as usize),
                    SymInt::Int(v) => return Err(cx.err(format!("negative output size {v}"))),
                    SymInt::Sym(s) => Dim::Sym(s.clone()),
                    SymInt::Unknown => cx.fresh(0, a),
                };
            }
        }
    } else if cx.connected(2) {
        let scales = cx.tensor(2).map(|t| t.to_f64_vec());
        match scales {
            Some(s) if s.len() == axes.len() => {
                for (&a, &sc) in axes.iter().zip(&s) {
                    dims[a] = match &x.shape.0[a] {
                        Dim::Known(n) => Dim::Known((*n as f64 * sc).floor() as usize),
                        d if sc == 1.0 => d.clone(),
                        _ => cx.fresh(0, a),
                    };
                }
            }
            Some(s) => {
                return Err(cx.err(format!("{} scales for {} axes of {x}", s.len(), axes.len())));
            }
            None => {
                for &a in &axes {
                    dims[a] = cx.fresh(0, a);
                }
            }
        }
    } else {
        return Err(cx.err("needs scales or sizes"));
    }
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Graph, Port};

    fn f32_ty(dims: &[Dim]) -> TensorType {
        TensorType::new(DType::F32, Shape(dims.to_vec()))
    }

    fn sym(s: &str) -> Dim {
        Dim::sym(s)
    }

    fn k(n: usize) -> Dim {
        Dim::Known(n)
    }

    fn out_ty(g: &Graph, id: NodeIndex) -> TensorType {
        g.value_type(Port::new(id, 0)).cloned().expect("typed")
    }

    fn p(id: NodeIndex) -> Option<Port> {
        Some(Port::new(id, 0))
    }

    #[test]
    fn broadcasting_keeps_symbols_and_rejects_conflicts() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_ty(&[sym("batch"), k(197), k(384)]));
        let b = g.add_const("b", Tensor::zeros(DType::F32, vec![384]));
        let one = g.add_input("one", f32_ty(&[k(1), k(1), k(384)]));
        let add = g.add_op("add", Op::Binary(BinaryOp::Add), &[p(x), p(b)], &["y"]);
        let add2 = g.add_op("add2", Op::Binary(BinaryOp::Add), &[p(one), p(x)], &["z"]);
        infer_types(&mut g).unwrap();
        assert_eq!(out_ty(&g, add), f32_ty(&[sym("batch"), k(197), k(384)]));
        assert_eq!(out_ty(&g, add2), f32_ty(&[sym("batch"), k(197), k(384)]));

        let bad = g.add_const("bad", Tensor::zeros(DType::F32, vec![383]));
        g.add_op("add3", Op::Binary(BinaryOp::Add), &[p(x), p(bad)], &["w"]);
        let e = infer_types(&mut g).unwrap_err().to_string();
        assert!(
            e.contains("add3") && e.contains("384") && e.contains("383"),
            "{e}"
        );
    }

    #[test]
    fn add_of_f32_and_i64_is_an_error() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_ty(&[k(2)]));
        let i = g.add_const("i", Tensor::vec_i64(vec![1, 2]));
        g.add_op("mix", Op::Binary(BinaryOp::Add), &[p(x), p(i)], &["y"]);
        let e = infer_types(&mut g).unwrap_err().to_string();
        assert!(
            e.contains("mix") && e.contains("f32") && e.contains("i64"),
            "{e}"
        );
    }

    #[test]
    fn matmul_shapes_and_inner_dim_errors() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_ty(&[sym("b"), k(6), k(197), k(64)]));
        let y = g.add_input("y", f32_ty(&[sym("b"), k(6), k(64), k(197)]));
        let w = g.add_const("w", Tensor::zeros(DType::F32, vec![64, 32]));
        let v = g.add_const("v", Tensor::zeros(DType::F32, vec![64]));
        let mm = g.add_op("mm", Op::MatMul, &[p(x), p(y)], &["a"]);
        let mw = g.add_op("mw", Op::MatMul, &[p(x), p(w)], &["c"]);
        let mv = g.add_op("mv", Op::MatMul, &[p(x), p(v)], &["d"]);
        infer_types(&mut g).unwrap();
        assert_eq!(out_ty(&g, mm), f32_ty(&[sym("b"), k(6), k(197), k(197)]));
        assert_eq!(out_ty(&g, mw), f32_ty(&[sym("b"), k(6), k(197), k(32)]));
        assert_eq!(out_ty(&g, mv), f32_ty(&[sym("b"), k(6), k(197)]));
        g.add_op("bad", Op::MatMul, &[p(x), p(x)], &["e"]);
        let e = infer_types(&mut g).unwrap_err().to_string();
        assert!(e.contains("bad") && e.contains("inner"), "{e}");
    }

    /// The PyTorch head-split plumbing: Shape → Gather → Unsqueeze → Concat → Reshape.
    #[test]
    fn symbolic_shape_plumbing_reaches_reshape() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_ty(&[sym("batch_size"), k(197), k(384)]));
        let sh = g.add_op(
            "shape",
            Op::Shape {
                start: 0,
                end: None,
            },
            &[p(x)],
            &["s"],
        );
        let i0 = g.add_const("i0", Tensor::scalar_i64(0));
        let i1 = g.add_const("i1", Tensor::scalar_i64(1));
        let g0 = g.add_op("g0", Op::Gather { axis: 0 }, &[p(sh), p(i0)], &["g0"]);
        let g1 = g.add_op("g1", Op::Gather { axis: 0 }, &[p(sh), p(i1)], &["g1"]);
        let u0 = g.add_op("u0", Op::Unsqueeze { axes: vec![0] }, &[p(g0)], &["u0"]);
        let u1 = g.add_op("u1", Op::Unsqueeze { axes: vec![0] }, &[p(g1)], &["u1"]);
        let c6 = g.add_const("c6", Tensor::vec_i64(vec![6]));
        let c64 = g.add_const("c64", Tensor::vec_i64(vec![64]));
        let cat = g.add_op(
            "cat",
            Op::Concat { axis: 0 },
            &[p(u0), p(u1), p(c6), p(c64)],
            &["cat"],
        );
        let r = g.add_op(
            "r",
            Op::Reshape { allowzero: false },
            &[p(x), p(cat)],
            &["r"],
        );
        infer_types(&mut g).unwrap();
        assert_eq!(
            out_ty(&g, cat),
            TensorType::new(DType::I64, Shape::known(&[4]))
        );
        assert_eq!(
            out_ty(&g, r),
            f32_ty(&[sym("batch_size"), k(197), k(6), k(64)])
        );
        assert_eq!(
            infer_node(&g, r).unwrap(),
            vec![f32_ty(&[sym("batch_size"), k(197), k(6), k(64)])]
        );
        let known = known_int_values(&g).unwrap();
        assert_eq!(
            known.get(&Port::new(g1, 0)).and_then(|t| t.as_i64()),
            Some(&[197][..])
        );
        assert!(!known.contains_key(&Port::new(g0, 0)));
    }

    #[test]
    fn reshape_infers_minus_one_and_copies_zero() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_ty(&[sym("n"), k(384), k(16), k(16)]));
        let s1 = g.add_const("s1", Tensor::vec_i64(vec![0, 384, -1]));
        let r1 = g.add_op(
            "r1",
            Op::Reshape { allowzero: false },
            &[p(x), p(s1)],
            &["r1"],
        );
        let s2 = g.add_const("s2", Tensor::vec_i64(vec![-1, 256]));
        let r2 = g.add_op(
            "r2",
            Op::Reshape { allowzero: false },
            &[p(x), p(s2)],
            &["r2"],
        );
        infer_types(&mut g).unwrap();
        assert_eq!(out_ty(&g, r1), f32_ty(&[sym("n"), k(384), k(256)]));
        assert_eq!(out_ty(&g, r2).shape.rank(), 2);
        assert_eq!(out_ty(&g, r2).shape.0[1], k(256));
        // 384·256 per n cannot become a multiple of 1000
        let mut h = Graph::new("t");
        let y = h.add_input("y", f32_ty(&[k(2), k(3)]));
        let s = h.add_const("s", Tensor::vec_i64(vec![-1, 4]));
        h.add_op(
            "bad",
            Op::Reshape { allowzero: false },
            &[p(y), p(s)],
            &["o"],
        );
        let e = infer_types(&mut h).unwrap_err().to_string();
        assert!(e.contains("bad") && e.contains("Reshape"), "{e}");
    }

    #[test]
    fn unknown_dims_get_fresh_symbols_named_after_the_node() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_ty(&[k(4), k(8)]));
        let shp = g.add_input("shp", TensorType::new(DType::I64, Shape::known(&[3])));
        let r = g.add_op(
            "resh",
            Op::Reshape { allowzero: false },
            &[p(x), p(shp)],
            &["o"],
        );
        infer_types(&mut g).unwrap();
        assert_eq!(
            out_ty(&g, r),
            f32_ty(&[sym("resh_d0"), sym("resh_d1"), sym("resh_d2")])
        );
    }

    #[test]
    fn concat_split_slice_and_gather() {
        let mut g = Graph::new("t");
        let a = g.add_input("a", f32_ty(&[sym("b"), k(1), k(384)]));
        let c = g.add_input("c", f32_ty(&[sym("b"), k(196), k(384)]));
        let cat = g.add_op("cat", Op::Concat { axis: 1 }, &[p(a), p(c)], &["cat"]);
        let sp = g.add_op(
            "sp",
            Op::Split {
                axis: -1,
                sizes: None,
            },
            &[p(cat)],
            &["s0", "s1", "s2"],
        );
        let st = g.add_const("st", Tensor::vec_i64(vec![1]));
        let en = g.add_const("en", Tensor::vec_i64(vec![i64::MAX]));
        let ax = g.add_const("ax", Tensor::vec_i64(vec![1]));
        let sl = g.add_op(
            "sl",
            Op::Slice,
            &[p(cat), p(st), p(en), p(ax), None],
            &["sl"],
        );
        let idx = g.add_const("idx", Tensor::scalar_i64(0));
        let ga = g.add_op("ga", Op::Gather { axis: 1 }, &[p(cat), p(idx)], &["ga"]);
        infer_types(&mut g).unwrap();
        assert_eq!(out_ty(&g, cat), f32_ty(&[sym("b"), k(197), k(384)]));
        for s in 0..3 {
            assert_eq!(
                g.value_type(Port::new(sp, s)).unwrap(),
                &f32_ty(&[sym("b"), k(197), k(128)])
            );
        }
        assert_eq!(out_ty(&g, sl), f32_ty(&[sym("b"), k(196), k(384)]));
        assert_eq!(out_ty(&g, ga), f32_ty(&[sym("b"), k(384)]));

        let bad = g.add_input("bad", f32_ty(&[sym("b"), k(1), k(383)]));
        g.add_op("cat2", Op::Concat { axis: 1 }, &[p(a), p(bad)], &["cat2"]);
        let e = infer_types(&mut g).unwrap_err().to_string();
        assert!(e.contains("cat2"), "{e}");
    }

    #[test]
    fn gather_indices_and_where_condition_dtypes() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_ty(&[k(4)]));
        let fi = g.add_const("fi", Tensor::scalar_f32(1.0));
        g.add_op("ga", Op::Gather { axis: 0 }, &[p(x), p(fi)], &["o"]);
        let e = infer_types(&mut g).unwrap_err().to_string();
        assert!(e.contains("ga") && e.contains("integer"), "{e}");

        let mut h = Graph::new("t");
        let x = h.add_input("x", f32_ty(&[k(4)]));
        h.add_op("w", Op::Where, &[p(x), p(x), p(x)], &["o"]);
        let e = infer_types(&mut h).unwrap_err().to_string();
        assert!(e.contains("'w'") && e.contains("bool"), "{e}");
    }

    #[test]
    fn axis_out_of_range_is_an_error() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_ty(&[k(2), k(3)]));
        g.add_op("sm", Op::Softmax { axis: 2 }, &[p(x)], &["o"]);
        let e = infer_types(&mut g).unwrap_err().to_string();
        assert!(e.contains("sm") && e.contains("axis"), "{e}");
    }

    #[test]
    fn conv_and_conv_transpose_spatial_sizes() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_ty(&[sym("b"), k(3), k(224), k(224)]));
        let w = g.add_const("w", Tensor::zeros(DType::F32, vec![384, 3, 14, 14]));
        let attrs = ConvAttrs {
            strides: vec![14, 14],
            group: 1,
            ..ConvAttrs::default()
        };
        let cv = g.add_op("cv", Op::Conv(attrs), &[p(x), p(w), None], &["c"]);
        let wt = g.add_const("wt", Tensor::zeros(DType::F32, vec![384, 256, 4, 4]));
        let tattrs = ConvAttrs {
            strides: vec![2, 2],
            pads: vec![1, 1, 1, 1],
            group: 1,
            ..ConvAttrs::default()
        };
        let ct = g.add_op(
            "ct",
            Op::ConvTranspose(tattrs),
            &[p(cv), p(wt), None],
            &["t"],
        );
        infer_types(&mut g).unwrap();
        assert_eq!(out_ty(&g, cv), f32_ty(&[sym("b"), k(384), k(16), k(16)]));
        // 2·(16−1) + 4 − 2 = 32
        assert_eq!(out_ty(&g, ct), f32_ty(&[sym("b"), k(256), k(32), k(32)]));
    }

    #[test]
    fn expand_through_constant_of_shape_where_plumbing() {
        // Expand(cls[1,1,384], Where(Equal(s, -1), ConstantOfShape(1), s)) with s = [batch,-1,-1]
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_ty(&[sym("batch"), k(3), k(224), k(224)]));
        let sh = g.add_op(
            "sh",
            Op::Shape {
                start: 0,
                end: Some(1),
            },
            &[p(x)],
            &["sh"],
        );
        let m1 = g.add_const("m1", Tensor::vec_i64(vec![-1, -1]));
        let s = g.add_op("s", Op::Concat { axis: 0 }, &[p(sh), p(m1)], &["s"]);
        let shs = g.add_op(
            "shs",
            Op::Shape {
                start: 0,
                end: None,
            },
            &[p(s)],
            &["shs"],
        );
        let cos = g.add_op(
            "cos",
            Op::ConstantOfShape {
                value: Tensor::vec_i64(vec![1]),
            },
            &[p(shs)],
            &["cos"],
        );
        let neg = g.add_const("neg", Tensor::scalar_i64(-1));
        let mul = g.add_op(
            "mul",
            Op::Binary(BinaryOp::Mul),
            &[p(cos), p(neg)],
            &["mul"],
        );
        let eq = g.add_op("eq", Op::Binary(BinaryOp::Equal), &[p(s), p(mul)], &["eq"]);
        let wh = g.add_op("wh", Op::Where, &[p(eq), p(cos), p(s)], &["wh"]);
        let cls = g.add_const("cls", Tensor::zeros(DType::F32, vec![1, 1, 384]));
        let ex = g.add_op("ex", Op::Expand, &[p(cls), p(wh)], &["ex"]);
        infer_types(&mut g).unwrap();
        assert_eq!(out_ty(&g, ex), f32_ty(&[sym("batch"), k(1), k(384)]));
    }

    #[test]
    fn resize_by_sizes_from_shape_arithmetic() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_ty(&[k(1), k(384), k(37), k(37)]));
        let img = g.add_input("img", f32_ty(&[sym("b"), k(3), k(224), k(224)]));
        let sh = g.add_op(
            "sh",
            Op::Shape {
                start: 2,
                end: None,
            },
            &[p(img)],
            &["sh"],
        );
        let f = g.add_const("f", Tensor::scalar_i64(14));
        let dv = g.add_op("dv", Op::Binary(BinaryOp::Div), &[p(sh), p(f)], &["dv"]);
        let sx = g.add_op(
            "sx",
            Op::Shape {
                start: 0,
                end: Some(2),
            },
            &[p(x)],
            &["sx"],
        );
        let sizes = g.add_op("sizes", Op::Concat { axis: 0 }, &[p(sx), p(dv)], &["sizes"]);
        let rs = g.add_op(
            "rs",
            Op::Resize(ResizeAttrs::default()),
            &[p(x), None, None, p(sizes)],
            &["rs"],
        );
        infer_types(&mut g).unwrap();
        assert_eq!(out_ty(&g, rs), f32_ty(&[k(1), k(384), k(16), k(16)]));
    }

    #[test]
    fn slice_to_a_symbolic_end_and_range() {
        let mut g = Graph::new("t");
        let ids = g.add_input(
            "ids",
            TensorType::new(DType::I64, Shape(vec![sym("batch"), sym("seq")])),
        );
        let pos = g.add_const("pos", Tensor::zeros(DType::I64, vec![1, 512]));
        let sh = g.add_op(
            "sh",
            Op::Shape {
                start: 1,
                end: Some(2),
            },
            &[p(ids)],
            &["sh"],
        );
        let z = g.add_const("z", Tensor::vec_i64(vec![0]));
        let one = g.add_const("one", Tensor::vec_i64(vec![1]));
        let sl = g.add_op(
            "sl",
            Op::Slice,
            &[p(pos), p(z), p(sh), p(one), p(one)],
            &["sl"],
        );
        let sq = g.add_op(
            "sq",
            Op::Squeeze {
                axes: Some(vec![0]),
            },
            &[p(sh)],
            &["sq"],
        );
        let s0 = g.add_const("s0", Tensor::scalar_i64(0));
        let d1 = g.add_const("d1", Tensor::scalar_i64(1));
        let rg = g.add_op("rg", Op::Range, &[p(s0), p(sq), p(d1)], &["rg"]);
        infer_types(&mut g).unwrap();
        assert_eq!(
            out_ty(&g, sl),
            TensorType::new(DType::I64, Shape(vec![k(1), sym("seq")]))
        );
        assert_eq!(
            out_ty(&g, rg),
            TensorType::new(DType::I64, Shape(vec![sym("seq")]))
        );
    }

    #[test]
    fn layer_norm_reduce_and_optional_inputs() {
        let mut g = Graph::new("t");
        let x = g.add_input("x", f32_ty(&[sym("b"), k(197), k(384)]));
        let s = g.add_const("s", Tensor::zeros(DType::F32, vec![384]));
        let ln = g.add_op(
            "ln",
            Op::LayerNorm {
                axis: -1,
                epsilon: 1e-6,
            },
            &[p(x), p(s), None],
            &["y", "mean"],
        );
        let rd = g.add_op(
            "rd",
            Op::Reduce {
                op: ReduceOp::Mean,
                axes: Some(vec![-1]),
                keepdims: true,
                noop_with_empty_axes: false,
            },
            &[p(x)],
            &["r"],
        );
        infer_types(&mut g).unwrap();
        g.validate().unwrap();
        assert_eq!(out_ty(&g, ln), f32_ty(&[sym("b"), k(197), k(384)]));
        assert_eq!(
            g.value_type(Port::new(ln, 1)).unwrap(),
            &f32_ty(&[sym("b"), k(197), k(1)])
        );
        assert_eq!(out_ty(&g, rd), f32_ty(&[sym("b"), k(197), k(1)]));
        assert!(!input_required(
            &Op::LayerNorm {
                axis: -1,
                epsilon: 0.0
            },
            2
        ));
        assert!(input_required(
            &Op::LayerNorm {
                axis: -1,
                epsilon: 0.0
            },
            1
        ));
        assert!(!input_required(&Op::Slice, 3));
        assert!(input_required(&Op::Slice, 2));
        assert!(!input_required(&Op::Resize(ResizeAttrs::default()), 1));
    }

    #[test]
    fn slice_and_range_lengths_follow_onnx_clamping() {
        // x[1:1000] of 10, x[-3:] of 10, x[8:1:-3] of 10 (8, 5, 2), x[::-1] of 0
        assert_eq!(slice_len(10, 1, 1000, 1), 9);
        assert_eq!(slice_len(10, -3, i64::MAX, 1), 3);
        assert_eq!(slice_len(10, 8, 1, -3), 3);
        assert_eq!(slice_len(0, -1, i64::MIN, -1), 0);
        assert_eq!(slice_len(10, 0, 10, i64::MIN), 0);
        assert_eq!(slice_range(10, 8, 1, -3), Some(vec![8, 5, 2]));
        // range(3, 10, 3) = 3, 6, 9; range(10, 4, -2) = 10, 8, 6; range(0, 5, -1) is empty
        assert_eq!(range_len(3, 10, 3), 3);
        assert_eq!(range_len(10, 4, -2), 3);
        assert_eq!(range_len(0, 5, -1), 0);
        assert_eq!(range_len(i64::MIN, i64::MAX, 1), usize::MAX);
    }
}
