//! Reverse-mode differentiation as a graph pass. Given a graph whose types are
//! inferred with every dimension known (the trainer fixes the batch size first) and a
//! scalar loss value, [`autodiff`] appends the backward computation to the same graph
//! and returns, for every `Param` node, the value that holds its gradient.
//!
//! Gradients flow only towards trainable parameters: a value gets a backward rule only
//! when it depends on a `Param` and the loss depends on it, so frozen subgraphs (the
//! patch embedding of a backbone whose adapters sit further up) get no backward nodes.
//! Each forward op has one vector-Jacobian rule that emits ordinary IR ops where they
//! are cheap (matrix products through views, reductions, reshapes) and fused
//! [`GradOp`]s where one kernel beats a chain of ops (softmax, LayerNorm, elementwise
//! derivatives, scatter-backs, the GLoRA layer, the cross-entropy). Contributions to a
//! value read by several consumers are summed before its producer's rule runs.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, anyhow, bail};

use crate::ir::infer::infer_types;
use crate::ir::{
    BinaryOp, ConvAttrs, DType, GemmAttrs, GradOp, Graph, Node, NodeIndex, Op, Port, ReduceOp,
    Tensor, UnaryGradKind, UnaryOp,
};

/// The gradient of one trainable parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamGrad {
    /// The `Param` node.
    pub param: NodeIndex,
    /// The parameter's value name (its tensor name in checkpoints).
    pub name: String,
    /// The value holding d(loss)/d(param), of the parameter's shape.
    pub grad: Port,
}

/// Appends the backward of the scalar `loss` to `g` and returns the gradient of every
/// `Param` node, in node order. Types must be inferred with known shapes; they are
/// inferred again for the new nodes before returning. A parameter the loss does not
/// depend on gets an all-zero gradient.
pub fn autodiff(g: &mut Graph, loss: Port) -> anyhow::Result<Vec<ParamGrad>> {
    infer_types(g).context("type inference before differentiation")?;
    let loss_ty = known_type(g, loss)?;
    if !loss_ty.1.is_empty() && loss_ty.1.iter().product::<usize>() != 1 {
        bail!(
            "the loss '{}' must be a scalar, got shape {:?}",
            g.value(loss).name,
            loss_ty.1
        );
    }
    let order = g.stable_topo_order()?;
    let active = active_nodes(g, &order, loss);
    let mut b = Backward {
        g,
        grads: HashMap::new(),
        counter: 0,
    };
    let one = b.constant("seed", Tensor::from_f32(loss_ty.1.clone(), vec![1.0])?);
    b.grads.insert(loss, vec![one]);
    for &id in order.iter().rev() {
        if !active.contains(&id) || b.g.node(id).op.is_weight() {
            continue;
        }
        let node = b.g.node(id).clone();
        let mut dys = Vec::with_capacity(node.outputs.len());
        for slot in 0..node.outputs.len() {
            dys.push(b.take_grad(Port::new(id, slot))?);
        }
        if dys.iter().all(Option::is_none) {
            continue;
        }
        let wanted: Vec<bool> = (0..node.num_inputs)
            .map(|s| b.g.input(id, s).is_some_and(|p| active.contains(&p.node)))
            .collect();
        let input_grads = b
            .rule(id, &node, &dys, &wanted)
            .with_context(|| format!("differentiating node '{}' ({})", node.name, node.op))?;
        for (slot, dx) in input_grads.into_iter().enumerate() {
            if let (Some(dx), true) = (dx, wanted.get(slot).copied().unwrap_or(false)) {
                let p =
                    b.g.input(id, slot)
                        .ok_or_else(|| anyhow!("internal: slot {slot}"))?;
                b.grads.entry(p).or_default().push(dx);
            }
        }
    }
    let mut out = Vec::new();
    for &id in &order {
        if !matches!(b.g.node(id).op, Op::Param(_)) {
            continue;
        }
        let port = Port::new(id, 0);
        let grad = match b.take_grad(port)? {
            Some(p) => p,
            None => {
                let (dtype, shape) = known_type(b.g, port)?;
                b.constant("zero_grad", Tensor::zeros(dtype, shape))
            }
        };
        out.push(ParamGrad {
            param: id,
            name: b.g.value(port).name.clone(),
            grad,
        });
    }
    infer_types(g).context("type inference of the backward graph")?;
    Ok(out)
}

/// Nodes on a path from a `Param` to the loss whose outputs carry gradients.
fn active_nodes(g: &Graph, order: &[NodeIndex], loss: Port) -> HashSet<NodeIndex> {
    let mut depends: HashSet<NodeIndex> = HashSet::new();
    for &id in order {
        let node = g.node(id);
        let fed = g
            .inputs_of(id)
            .iter()
            .flatten()
            .any(|p| depends.contains(&p.node));
        if matches!(node.op, Op::Param(_)) || (fed && differentiable(node)) {
            depends.insert(id);
        }
    }
    let mut reaches: HashSet<NodeIndex> = HashSet::new();
    reaches.insert(loss.node);
    for &id in order.iter().rev() {
        if !reaches.contains(&id) {
            continue;
        }
        for p in g.inputs_of(id).into_iter().flatten() {
            reaches.insert(p.node);
        }
    }
    depends.intersection(&reaches).copied().collect()
}

/// Whether gradients pass through the node's outputs at all.
fn differentiable(node: &Node) -> bool {
    let float_out = node
        .outputs
        .iter()
        .all(|v| v.ty.as_ref().is_none_or(|t| t.dtype.is_float()));
    float_out
        && !matches!(
            node.op,
            Op::Shape { .. }
                | Op::ConstantOfShape { .. }
                | Op::Range
                | Op::Binary(BinaryOp::Equal)
                | Op::Input
                | Op::Const(_)
        )
}

fn known_type(g: &Graph, p: Port) -> anyhow::Result<(DType, Vec<usize>)> {
    let v = g.value(p);
    let ty =
        v.ty.as_ref()
            .ok_or_else(|| anyhow!("value '{}' has no inferred type", v.name))?;
    let dims = ty.shape.to_known().ok_or_else(|| {
        anyhow!(
            "value '{}' has shape {}; differentiation needs every dimension known (fix the batch size first)",
            v.name,
            ty.shape
        )
    })?;
    Ok((ty.dtype, dims))
}

/// The backward graph under construction.
struct Backward<'g> {
    g: &'g mut Graph,
    /// Gradient contributions to each forward value, summed when first read.
    grads: HashMap<Port, Vec<Port>>,
    counter: usize,
}

impl Backward<'_> {
    fn name(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("∇{}/{hint}", self.counter)
    }

    fn op(&mut self, hint: &str, op: Op, inputs: &[Option<Port>]) -> Port {
        Port::new(self.op_n(hint, op, inputs, 1), 0)
    }

    fn op_n(&mut self, hint: &str, op: Op, inputs: &[Option<Port>], outputs: usize) -> NodeIndex {
        let name = self.name(hint);
        let outs: Vec<String> = (0..outputs).map(|i| format!("{name}:{i}")).collect();
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        self.g.add_op(name, op, inputs, &refs)
    }

    fn constant(&mut self, hint: &str, t: Tensor) -> Port {
        let name = self.name(hint);
        Port::new(self.g.add_const(name, t), 0)
    }

    fn ints(&mut self, hint: &str, v: &[i64]) -> Port {
        self.constant(hint, Tensor::vec_i64(v.to_vec()))
    }

    fn shape(&self, p: Port) -> anyhow::Result<Vec<usize>> {
        Ok(known_type(self.g, p)?.1)
    }

    /// The summed gradient of `p`, or None when nothing flows into it.
    fn take_grad(&mut self, p: Port) -> anyhow::Result<Option<Port>> {
        let Some(parts) = self.grads.remove(&p) else {
            return Ok(None);
        };
        let mut it = parts.into_iter();
        let Some(mut acc) = it.next() else {
            return Ok(None);
        };
        for part in it {
            acc = self.op("sum", Op::Binary(BinaryOp::Add), &[Some(acc), Some(part)]);
        }
        Ok(Some(acc))
    }

    fn binary(&mut self, op: BinaryOp, a: Port, b: Port) -> Port {
        self.op("bin", Op::Binary(op), &[Some(a), Some(b)])
    }

    fn reshape(&mut self, x: Port, shape: &[usize]) -> Port {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let s = self.ints("shape", &dims);
        self.op(
            "reshape",
            Op::Reshape { allowzero: false },
            &[Some(x), Some(s)],
        )
    }

    fn transpose(&mut self, x: Port, perm: Vec<usize>) -> Port {
        self.op("transpose", Op::Transpose { perm: Some(perm) }, &[Some(x)])
    }

    /// Swaps the last two axes of a rank-`rank` value.
    fn swap_last(&mut self, x: Port, rank: usize) -> Port {
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(rank - 2, rank - 1);
        self.transpose(x, perm)
    }

    fn unary_grad(&mut self, kind: UnaryGradKind, x: Port, y: Port, dy: Port) -> Port {
        self.op(
            "unary_grad",
            Op::Grad(GradOp::Unary(kind)),
            &[Some(x), Some(y), Some(dy)],
        )
    }

    /// Sums a broadcast gradient `dy` (shape `from`) back to shape `to` (numpy rules).
    fn reduce_to(&mut self, dy: Port, from: &[usize], to: &[usize]) -> anyhow::Result<Port> {
        if from == to {
            return Ok(dy);
        }
        if to.len() > from.len() {
            bail!("internal: cannot reduce {from:?} to {to:?}");
        }
        let lead = from.len() - to.len();
        let axes: Vec<i64> = (0..from.len())
            .filter(|&i| i < lead || (to[i - lead] == 1 && from[i] != 1))
            .map(|i| i as i64)
            .collect();
        let summed = if axes.is_empty() {
            dy
        } else {
            self.op(
                "sum_to",
                Op::Reduce {
                    op: ReduceOp::Sum,
                    axes: Some(axes),
                    keepdims: true,
                    noop_with_empty_axes: false,
                },
                &[Some(dy)],
            )
        };
        Ok(self.reshape(summed, to))
    }

    /// Input gradients of `node` given the gradients of its outputs; `wanted[i]` says
    /// whether input slot i needs one.
    fn rule(
        &mut self,
        id: NodeIndex,
        node: &Node,
        dys: &[Option<Port>],
        wanted: &[bool],
    ) -> anyhow::Result<Vec<Option<Port>>> {
        let input = |g: &Graph, slot: usize| -> anyhow::Result<Port> {
            g.input(id, slot)
                .ok_or_else(|| anyhow!("input slot {slot} is not connected"))
        };
        let want = |s: usize| wanted.get(s).copied().unwrap_or(false);
        let out = Port::new(id, 0);
        let dy = match &node.op {
            Op::Split { .. } | Op::LayerNorm { .. } | Op::Grad(_) => None,
            _ => Some(dys[0].ok_or_else(|| anyhow!("no gradient for output 0"))?),
        };
        let dy0 = || dy.ok_or_else(|| anyhow!("internal: missing output gradient"));
        let n = node.num_inputs;
        let mut res: Vec<Option<Port>> = vec![None; n];
        match &node.op {
            Op::Identity => res[0] = Some(dy0()?),
            Op::Binary(op) => {
                let (a, b) = (input(self.g, 0)?, input(self.g, 1)?);
                let (sa, sb, so) = (self.shape(a)?, self.shape(b)?, self.shape(out)?);
                let dy = dy0()?;
                match op {
                    BinaryOp::Add | BinaryOp::Sub => {
                        if want(0) {
                            res[0] = Some(self.reduce_to(dy, &so, &sa)?);
                        }
                        if want(1) {
                            let r = self.reduce_to(dy, &so, &sb)?;
                            res[1] = Some(if *op == BinaryOp::Sub {
                                self.op("neg", Op::Unary(UnaryOp::Neg), &[Some(r)])
                            } else {
                                r
                            });
                        }
                    }
                    BinaryOp::Mul => {
                        if want(0) {
                            let t = self.binary(BinaryOp::Mul, dy, b);
                            res[0] = Some(self.reduce_to(t, &so, &sa)?);
                        }
                        if want(1) {
                            let t = self.binary(BinaryOp::Mul, dy, a);
                            res[1] = Some(self.reduce_to(t, &so, &sb)?);
                        }
                    }
                    BinaryOp::Div => {
                        let t = self.binary(BinaryOp::Div, dy, b);
                        if want(0) {
                            res[0] = Some(self.reduce_to(t, &so, &sa)?);
                        }
                        if want(1) {
                            // d(a/b)/db = −(a/b)/b, read from the output.
                            let t = self.binary(BinaryOp::Mul, t, out);
                            let t = self.op("neg", Op::Unary(UnaryOp::Neg), &[Some(t)]);
                            res[1] = Some(self.reduce_to(t, &so, &sb)?);
                        }
                    }
                    BinaryOp::Pow => {
                        if want(0) {
                            let dtype = known_type(self.g, b)?.0;
                            let one = self.constant("one", scalar(dtype, 1.0)?);
                            let bm1 = self.binary(BinaryOp::Sub, b, one);
                            let p = self.binary(BinaryOp::Pow, a, bm1);
                            let p = self.binary(BinaryOp::Mul, p, b);
                            let t = self.binary(BinaryOp::Mul, p, dy);
                            res[0] = Some(self.reduce_to(t, &so, &sa)?);
                        }
                        if want(1) {
                            let ln = self.op("log", Op::Unary(UnaryOp::Log), &[Some(a)]);
                            let t = self.binary(BinaryOp::Mul, out, ln);
                            let t = self.binary(BinaryOp::Mul, t, dy);
                            res[1] = Some(self.reduce_to(t, &so, &sb)?);
                        }
                    }
                    BinaryOp::Equal => {}
                }
            }
            Op::Unary(u) => {
                let x = input(self.g, 0)?;
                let dy = dy0()?;
                let kind = match u {
                    UnaryOp::Neg => {
                        res[0] = Some(self.op("neg", Op::Unary(UnaryOp::Neg), &[Some(dy)]));
                        return Ok(res);
                    }
                    UnaryOp::Sqrt => UnaryGradKind::Sqrt,
                    UnaryOp::Reciprocal => UnaryGradKind::Reciprocal,
                    UnaryOp::Abs => UnaryGradKind::Abs,
                    UnaryOp::Exp => UnaryGradKind::Exp,
                    UnaryOp::Log => UnaryGradKind::Log,
                    UnaryOp::Erf => UnaryGradKind::Erf,
                    UnaryOp::Tanh => UnaryGradKind::Tanh,
                    UnaryOp::Relu => UnaryGradKind::Relu,
                    UnaryOp::Sigmoid => UnaryGradKind::Sigmoid,
                    // sin′ = cos and cos′ = −sin: the other op of the pair, so no
                    // kernel of their own.
                    UnaryOp::Sin | UnaryOp::Cos => {
                        let other = if *u == UnaryOp::Sin {
                            UnaryOp::Cos
                        } else {
                            UnaryOp::Sin
                        };
                        let d = self.op("trig", Op::Unary(other), &[Some(x)]);
                        let mut g = self.binary(BinaryOp::Mul, dy, d);
                        if *u == UnaryOp::Cos {
                            g = self.op("neg", Op::Unary(UnaryOp::Neg), &[Some(g)]);
                        }
                        res[0] = Some(g);
                        return Ok(res);
                    }
                };
                res[0] = Some(self.unary_grad(kind, x, out, dy));
            }
            Op::Gelu { approximate } => {
                let x = input(self.g, 0)?;
                res[0] = Some(self.unary_grad(UnaryGradKind::Gelu(*approximate), x, out, dy0()?));
            }
            Op::Softmax { axis } => {
                res[0] = Some(self.op(
                    "softmax_grad",
                    Op::Grad(GradOp::Softmax { axis: *axis }),
                    &[Some(out), Some(dy0()?)],
                ));
            }
            Op::LayerNorm { axis, epsilon } => {
                if dys.iter().skip(1).any(Option::is_some) {
                    bail!(
                        "gradients through the mean and inverse-deviation outputs are not supported"
                    );
                }
                let Some(dy) = dys[0] else {
                    return Ok(res);
                };
                let (x, scale) = (input(self.g, 0)?, input(self.g, 1)?);
                let ln = self.op_n(
                    "layer_norm_grad",
                    Op::Grad(GradOp::LayerNorm {
                        axis: *axis,
                        epsilon: *epsilon,
                    }),
                    &[Some(x), Some(scale), Some(dy)],
                    3,
                );
                res[0] = Some(Port::new(ln, 0));
                res[1] = Some(Port::new(ln, 1));
                if n > 2 && self.g.input(id, 2).is_some() {
                    res[2] = Some(Port::new(ln, 2));
                }
            }
            Op::MatMul => self.matmul_rule(id, dy0()?, wanted, &mut res)?,
            Op::Gemm(attrs) => self.gemm_rule(id, attrs, dy0()?, wanted, &mut res)?,
            Op::Conv(attrs) => self.conv_rule(id, attrs, dy0()?, wanted, &mut res)?,
            Op::Reduce {
                op,
                axes,
                keepdims,
                noop_with_empty_axes,
            } => {
                let x = input(self.g, 0)?;
                let sx = self.shape(x)?;
                let rank = sx.len();
                let axes: Vec<usize> = match axes {
                    Some(a) if !a.is_empty() => a
                        .iter()
                        .map(|&a| normalise_axis(a, rank))
                        .collect::<anyhow::Result<_>>()?,
                    Some(_) if *noop_with_empty_axes => Vec::new(),
                    _ => (0..rank).collect(),
                };
                let kept: Vec<usize> = sx
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
                    .collect();
                let mut g = dy0()?;
                if !*keepdims {
                    g = self.reshape(g, &kept);
                }
                match op {
                    ReduceOp::Sum => {}
                    ReduceOp::Mean => {
                        let count: usize = axes.iter().map(|&a| sx[a]).product();
                        let dtype = known_type(self.g, x)?.0;
                        let inv = self.constant("inv_count", scalar(dtype, 1.0 / count as f64)?);
                        g = self.binary(BinaryOp::Mul, g, inv);
                    }
                    ReduceOp::Max => bail!("ReduceMax has no gradient rule"),
                }
                let dims: Vec<i64> = sx.iter().map(|&d| d as i64).collect();
                let s = self.ints("shape", &dims);
                res[0] = Some(self.op("expand", Op::Expand, &[Some(g), Some(s)]));
            }
            Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
                let sx = self.shape(input(self.g, 0)?)?;
                res[0] = Some(self.reshape(dy0()?, &sx));
            }
            Op::Transpose { perm } => {
                let rank = self.shape(out)?.len();
                let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..rank).rev().collect());
                let mut inv = vec![0; rank];
                for (i, &p) in perm.iter().enumerate() {
                    inv[p] = i;
                }
                res[0] = Some(self.transpose(dy0()?, inv));
            }
            Op::Concat { axis } => {
                let rank = self.shape(out)?.len();
                let ax = normalise_axis(*axis, rank)?;
                let dy = dy0()?;
                let mut offset = 0usize;
                for (slot, r) in res.iter_mut().enumerate() {
                    let size = self.shape(input(self.g, slot)?)?[ax];
                    if want(slot) {
                        let st = self.ints("starts", &[offset as i64]);
                        let en = self.ints("ends", &[(offset + size) as i64]);
                        let ax_c = self.ints("axes", &[ax as i64]);
                        *r = Some(self.op(
                            "concat_grad",
                            Op::Slice,
                            &[Some(dy), Some(st), Some(en), Some(ax_c)],
                        ));
                    }
                    offset += size;
                }
            }
            Op::Split { axis, .. } => {
                let rank = self.shape(out)?.len();
                let mut parts = Vec::with_capacity(dys.len());
                for (slot, d) in dys.iter().enumerate() {
                    parts.push(Some(match d {
                        Some(p) => *p,
                        None => {
                            let (dtype, shape) = known_type(self.g, Port::new(id, slot))?;
                            self.constant("zeros", Tensor::zeros(dtype, shape))
                        }
                    }));
                }
                let ax = normalise_axis(*axis, rank)? as i64;
                let name = self.name("split_grad");
                let node = self.g.add_op(
                    name.clone(),
                    Op::Concat { axis: ax },
                    &parts,
                    &[name.as_str()],
                );
                res[0] = Some(Port::new(node, 0));
            }
            Op::Gather { axis } => {
                let sx = self.shape(input(self.g, 0)?)?;
                let idx = input(self.g, 1)?;
                res[0] = Some(self.op(
                    "gather_grad",
                    Op::Grad(GradOp::Gather {
                        axis: *axis,
                        x_shape: sx,
                    }),
                    &[Some(idx), Some(dy0()?)],
                ));
            }
            Op::Slice => {
                let sx = self.shape(input(self.g, 0)?)?;
                let mut ins = vec![Some(dy0()?)];
                for slot in 1..5 {
                    ins.push(if slot < n {
                        self.g.input(id, slot)
                    } else {
                        None
                    });
                }
                res[0] = Some(self.op("slice_grad", Op::Grad(GradOp::Slice { x_shape: sx }), &ins));
            }
            Op::Expand => {
                let sx = self.shape(input(self.g, 0)?)?;
                let so = self.shape(out)?;
                res[0] = Some(self.reduce_to(dy0()?, &so, &sx)?);
            }
            Op::Where => {
                let cond = input(self.g, 0)?;
                let so = self.shape(out)?;
                let dy = dy0()?;
                let dtype = known_type(self.g, out)?.0;
                for slot in [1, 2] {
                    if !want(slot) {
                        continue;
                    }
                    let zero = self.constant("zero", scalar(dtype, 0.0)?);
                    let (t, f) = if slot == 1 { (dy, zero) } else { (zero, dy) };
                    let sel = self.op("where_grad", Op::Where, &[Some(cond), Some(t), Some(f)]);
                    let sx = self.shape(input(self.g, slot)?)?;
                    res[slot] = Some(self.reduce_to(sel, &so, &sx)?);
                }
            }
            Op::Cast { .. } => {
                let dtype = known_type(self.g, input(self.g, 0)?)?.0;
                res[0] = Some(self.op("cast_grad", Op::Cast { to: dtype }, &[Some(dy0()?)]));
            }
            Op::GloraLinear(attrs) => {
                if want(1) || want(2) {
                    bail!(
                        "the base weights of GLoRA layer '{}' are trainable; a GLoRA layer trains its adapters only",
                        attrs.layer
                    );
                }
                let mut ins: Vec<Option<Port>> = (0..crate::ir::GLORA_LINEAR_INPUTS)
                    .map(|s| self.g.input(id, s))
                    .collect();
                ins.push(Some(dy0()?));
                ins.push(Some(out));
                let outputs = if want(0) { 9 } else { 8 };
                let gl = self.op_n(
                    "glora_grad",
                    Op::Grad(GradOp::GloraLinear(attrs.clone())),
                    &ins,
                    outputs,
                );
                for k in 0..8 {
                    res[3 + k] = Some(Port::new(gl, k));
                }
                if want(0) {
                    res[0] = Some(Port::new(gl, 8));
                }
            }
            Op::Grad(GradOp::SoftmaxCrossEntropy { label_smoothing }) => {
                let Some(dl) = dys[0] else {
                    return Ok(res);
                };
                let (logits, labels) = (input(self.g, 0)?, input(self.g, 1)?);
                res[0] = Some(self.op(
                    "cross_entropy_grad",
                    Op::Grad(GradOp::SoftmaxCrossEntropyGrad {
                        label_smoothing: *label_smoothing,
                    }),
                    &[Some(logits), Some(labels), Some(dl)],
                ));
            }
            other => bail!("no gradient rule for {other}"),
        }
        Ok(res)
    }

    fn matmul_rule(
        &mut self,
        id: NodeIndex,
        dy: Port,
        wanted: &[bool],
        res: &mut [Option<Port>],
    ) -> anyhow::Result<()> {
        let (a, b) = (
            self.g
                .input(id, 0)
                .ok_or_else(|| anyhow!("A is not connected"))?,
            self.g
                .input(id, 1)
                .ok_or_else(|| anyhow!("B is not connected"))?,
        );
        let (sa, sb, so) = (
            self.shape(a)?,
            self.shape(b)?,
            self.shape(Port::new(id, 0))?,
        );
        if sa.len() < 2 || sb.len() < 2 {
            bail!("gradients of MatMul with a 1-D operand are not supported");
        }
        if wanted[0] {
            let bt = self.swap_last(b, sb.len());
            let p = self.op("matmul_grad_a", Op::MatMul, &[Some(dy), Some(bt)]);
            let mut sp = so.clone();
            let k = sa[sa.len() - 1];
            *sp.last_mut()
                .ok_or_else(|| anyhow!("internal: empty shape"))? = k;
            res[0] = Some(self.reduce_to(p, &sp, &sa)?);
        }
        if wanted[1] {
            let (k, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
            if sb.len() == 2 {
                // A weight shared by every row: fold the batch into one tall product.
                let rows: usize = so[..so.len() - 1].iter().product();
                let a2 = self.reshape(a, &[rows, k]);
                let d2 = self.reshape(dy, &[rows, n]);
                let at = self.transpose(a2, vec![1, 0]);
                res[1] = Some(self.op("matmul_grad_b", Op::MatMul, &[Some(at), Some(d2)]));
            } else {
                let at = self.swap_last(a, sa.len());
                let p = self.op("matmul_grad_b", Op::MatMul, &[Some(at), Some(dy)]);
                let mut sp = so.clone();
                let r = sp.len();
                sp[r - 2] = k;
                sp[r - 1] = n;
                res[1] = Some(self.reduce_to(p, &sp, &sb)?);
            }
        }
        Ok(())
    }

    fn gemm_rule(
        &mut self,
        id: NodeIndex,
        attrs: &GemmAttrs,
        dy: Port,
        wanted: &[bool],
        res: &mut [Option<Port>],
    ) -> anyhow::Result<()> {
        let a = self
            .g
            .input(id, 0)
            .ok_or_else(|| anyhow!("A is not connected"))?;
        let b = self
            .g
            .input(id, 1)
            .ok_or_else(|| anyhow!("B is not connected"))?;
        let gemm = |trans_a: bool, trans_b: bool| {
            Op::Gemm(GemmAttrs {
                alpha: attrs.alpha,
                beta: 0.0,
                trans_a,
                trans_b,
            })
        };
        if wanted[0] {
            res[0] = Some(if attrs.trans_a {
                self.op(
                    "gemm_grad_a",
                    gemm(attrs.trans_b, true),
                    &[Some(b), Some(dy)],
                )
            } else {
                self.op(
                    "gemm_grad_a",
                    gemm(false, !attrs.trans_b),
                    &[Some(dy), Some(b)],
                )
            });
        }
        if wanted[1] {
            res[1] = Some(if attrs.trans_b {
                self.op(
                    "gemm_grad_b",
                    gemm(true, attrs.trans_a),
                    &[Some(dy), Some(a)],
                )
            } else {
                self.op(
                    "gemm_grad_b",
                    gemm(!attrs.trans_a, false),
                    &[Some(a), Some(dy)],
                )
            });
        }
        if wanted.get(2).copied().unwrap_or(false) {
            let c = self
                .g
                .input(id, 2)
                .ok_or_else(|| anyhow!("C is not connected"))?;
            let (sc, so) = (self.shape(c)?, self.shape(Port::new(id, 0))?);
            let mut g = self.reduce_to(dy, &so, &sc)?;
            if attrs.beta != 1.0 {
                let dtype = known_type(self.g, c)?.0;
                let beta = self.constant("beta", scalar(dtype, attrs.beta as f64)?);
                g = self.binary(BinaryOp::Mul, g, beta);
            }
            res[2] = Some(g);
        }
        Ok(())
    }

    fn conv_rule(
        &mut self,
        id: NodeIndex,
        attrs: &ConvAttrs,
        dy: Port,
        wanted: &[bool],
        res: &mut [Option<Port>],
    ) -> anyhow::Result<()> {
        let x = self
            .g
            .input(id, 0)
            .ok_or_else(|| anyhow!("X is not connected"))?;
        let w = self
            .g
            .input(id, 1)
            .ok_or_else(|| anyhow!("W is not connected"))?;
        let (sx, sw, so) = (
            self.shape(x)?,
            self.shape(w)?,
            self.shape(Port::new(id, 0))?,
        );
        let spatial = sx.len() - 2;
        let mut resolved = attrs.clone();
        resolved.kernel_shape = sw[2..].to_vec();
        if resolved.strides.is_empty() {
            resolved.strides = vec![1; spatial];
        }
        if resolved.dilations.is_empty() {
            resolved.dilations = vec![1; spatial];
        }
        if resolved.pads.is_empty() {
            resolved.pads = vec![0; 2 * spatial];
        }
        if resolved.group == 0 {
            resolved.group = 1;
        }
        if wanted[0] {
            if attrs.auto_pad != crate::ir::AutoPad::NotSet {
                bail!("the input gradient of a Conv with auto_pad is not supported");
            }
            let mut t = resolved.clone();
            t.output_padding = (0..spatial)
                .map(|i| {
                    let reach = resolved.strides[i] * (so[2 + i] - 1)
                        + (resolved.kernel_shape[i] - 1) * resolved.dilations[i]
                        + 1;
                    (sx[2 + i] + resolved.pads[i] + resolved.pads[spatial + i])
                        .saturating_sub(reach)
                })
                .collect();
            res[0] = Some(self.op("conv_grad_x", Op::ConvTranspose(t), &[Some(dy), Some(w)]));
        }
        if wanted[1] {
            res[1] = Some(self.op(
                "conv_grad_w",
                Op::Grad(GradOp::ConvWeight {
                    attrs: resolved,
                    w_shape: sw,
                }),
                &[Some(x), Some(dy)],
            ));
        }
        if wanted.get(2).copied().unwrap_or(false) {
            let axes: Vec<i64> = std::iter::once(0)
                .chain((2..so.len()).map(|a| a as i64))
                .collect();
            res[2] = Some(self.op(
                "conv_grad_b",
                Op::Reduce {
                    op: ReduceOp::Sum,
                    axes: Some(axes),
                    keepdims: false,
                    noop_with_empty_axes: false,
                },
                &[Some(dy)],
            ));
        }
        Ok(())
    }
}

fn normalise_axis(axis: i64, rank: usize) -> anyhow::Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        bail!("axis {axis} is out of range for rank {rank}");
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

fn scalar(dtype: DType, v: f64) -> anyhow::Result<Tensor> {
    let t = Tensor::scalar_f32(v as f32);
    if dtype == DType::F32 {
        Ok(t)
    } else {
        bail!("gradients are computed in f32 only, this value is {dtype}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Dim, TensorType};

    fn weight(g: &mut Graph, name: &str, trainable: bool, shape: &[usize]) -> Port {
        let t = Tensor::from_f32(shape.to_vec(), vec![0.5; shape.iter().product()]).unwrap();
        let id = if trainable {
            g.add_param(name, t)
        } else {
            g.add_const(name, t)
        };
        Port::new(id, 0)
    }

    /// x → MatMul(W0 frozen) → Relu → MatMul(W1 trainable) → ReduceSum.
    fn two_layers() -> (Graph, Port) {
        let mut g = Graph::new("two");
        let x = g.add_input(
            "x",
            TensorType::new(
                DType::F32,
                crate::ir::Shape(vec![Dim::Known(2), Dim::Known(3)]),
            ),
        );
        let w0 = weight(&mut g, "w0", false, &[3, 4]);
        let w1 = weight(&mut g, "w1", true, &[4, 2]);
        let h = g.add_op("h", Op::MatMul, &[Some(Port::new(x, 0)), Some(w0)], &["h"]);
        let r = g.add_op(
            "r",
            Op::Unary(UnaryOp::Relu),
            &[Some(Port::new(h, 0))],
            &["r"],
        );
        let y = g.add_op("y", Op::MatMul, &[Some(Port::new(r, 0)), Some(w1)], &["y"]);
        let s = g.add_op(
            "s",
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: None,
                keepdims: false,
                noop_with_empty_axes: false,
            },
            &[Some(Port::new(y, 0))],
            &["s"],
        );
        g.outputs = vec![Port::new(s, 0)];
        (g, Port::new(s, 0))
    }

    #[test]
    fn frozen_layers_get_no_backward_nodes() {
        let (mut g, loss) = two_layers();
        let before = g.op_histogram();
        let grads = autodiff(&mut g, loss).unwrap();
        assert_eq!(grads.len(), 1);
        assert_eq!(grads[0].name, "w1");
        let after = g.op_histogram();
        // One product for dW1 = rᵀ·dy; none for dx of either layer, no Relu rule.
        assert_eq!(after["MatMul"], before["MatMul"] + 1);
        assert!(!after.contains_key("UnaryGrad"), "{after:?}");
        g.validate().unwrap();
    }

    #[test]
    fn gradient_of_a_two_layer_network_by_hand() {
        let (mut g, loss) = two_layers();
        let grads = autodiff(&mut g, loss).unwrap();
        g.outputs = vec![grads[0].grad];
        let x = Tensor::from_f32(vec![2, 3], vec![1.0, -1.0, 2.0, 0.0, 1.0, -4.0]).unwrap();
        let out = crate::exec::run_cpu(&g, &[("x".into(), x)]).unwrap();
        // h = x·W0 = 0.5·rowsum(x) per column: rows 1.0 and −1.5; Relu → 1.0 and 0.
        // dW1[k, j] = Σ_rows r[row, k] = 1.0 for every entry.
        assert_eq!(out[0].shape(), &[4, 2]);
        assert_eq!(out[0].to_f32_vec(), vec![1.0; 8]);
    }
}
