//! LayerNorm fusion. PyTorch exports `nn.LayerNorm` at opsets below 17 as
//!
//! ```text
//! m = ReduceMean(x, axes)      d = Sub(x, m)         v = ReduceMean(Pow(d, 2), axes)
//! y = Div(d, Sqrt(Add(v, eps)))   [Mul(y, gamma)]   [Add(·, beta)]
//! ```
//!
//! with `axes` the trailing axes. This pass replaces each such chain by one
//! `Op::LayerNorm` whose scale and bias are the constant gamma and beta. It fuses only
//! when every intermediate value has no other reader and eps, gamma and beta are
//! constants.

use crate::ir::{BinaryOp, Graph, NodeIndex, Op, Port, ReduceOp, Tensor, TensorType, UnaryOp};

use super::PassReport;
use super::pattern::{
    fused_name, is_binary, is_unary, operands, other_operand, replace_subgraph, scalar_const,
    sole_consumer,
};

/// Fuses every decomposed LayerNorm into one `LayerNorm` node.
pub fn fuse_layer_norm(g: &mut Graph) -> anyhow::Result<PassReport> {
    let anchors: Vec<NodeIndex> = g
        .topo_order()?
        .into_iter()
        .filter(|&id| {
            matches!(
                g.node(id).op,
                Op::Reduce {
                    op: ReduceOp::Mean,
                    ..
                }
            )
        })
        .collect();
    let mut changed = 0;
    for id in anchors {
        if !g.contains(id) {
            continue;
        }
        if let Some(m) = match_layer_norm(g, id) {
            apply(g, m);
            changed += 1;
        }
    }
    g.validate()?;
    Ok(PassReport {
        pass: "fuse_layer_norm",
        changed,
    })
}

/// A matched decomposition.
struct LayerNormMatch {
    x: Port,
    /// Number of trailing axes normalised.
    axes: usize,
    epsilon: f32,
    scale: ParamSource,
    bias: Option<ParamSource>,
    /// The value the fused node replaces.
    out: Port,
    nodes: Vec<NodeIndex>,
}

/// Where the fused node's scale or bias comes from.
enum ParamSource {
    Existing(Port),
    New { name: String, tensor: Tensor },
}

/// The reduced axes when `op` is a keepdims ReduceMean over trailing axes of a
/// value of rank `rank` (if known).
fn trailing_mean_axes(op: &Op, rank: Option<usize>) -> Option<Vec<i64>> {
    let Op::Reduce {
        op: ReduceOp::Mean,
        axes: Some(axes),
        keepdims: true,
        ..
    } = op
    else {
        return None;
    };
    if axes.is_empty() {
        return None;
    }
    // Normalise to negative positions so that both spellings compare equal.
    let mut neg: Vec<i64> = axes
        .iter()
        .map(|&a| {
            if a >= 0 {
                rank.map(|r| a - r as i64)
            } else {
                Some(a)
            }
        })
        .collect::<Option<_>>()?;
    neg.sort_unstable();
    let k = neg.len() as i64;
    let expected: Vec<i64> = (-k..0).collect();
    (neg == expected && rank.is_none_or(|r| k <= r as i64)).then_some(neg)
}

fn match_layer_norm(g: &Graph, mean1: NodeIndex) -> Option<LayerNormMatch> {
    let x = g.input(mean1, 0)?;
    let x_ty = g.value_type(x)?.clone();
    if !x_ty.dtype.is_float() {
        return None;
    }
    let rank = x_ty.shape.rank();
    let axes = trailing_mean_axes(&g.node(mean1).op, Some(rank))?;
    let k = axes.len();
    let trailing: Vec<usize> = x_ty.shape.0[rank - k..]
        .iter()
        .map(|d| d.known())
        .collect::<Option<_>>()?;

    let m1_out = Port::new(mean1, 0);
    let (sub, _) = sole_consumer(g, m1_out)?;
    if !is_binary(g, sub, BinaryOp::Sub) || operands(g, sub)? != (x, m1_out) {
        return None;
    }
    let d = Port::new(sub, 0);
    if g.outputs.contains(&d) {
        return None;
    }
    let readers = g.consumers(d);
    let [(r1, s1), (r2, s2)] = readers.as_slice() else {
        return None;
    };
    if *s1 != 0 || *s2 != 0 {
        return None;
    }
    let (pow, div) = if is_binary(g, *r1, BinaryOp::Pow) {
        (*r1, *r2)
    } else {
        (*r2, *r1)
    };
    if !is_binary(g, pow, BinaryOp::Pow) || !is_binary(g, div, BinaryOp::Div) {
        return None;
    }
    if !scalar_const(g, g.input(pow, 1)?).is_some_and(|e| e == 2.0) {
        return None;
    }
    let (mean2, _) = sole_consumer(g, Port::new(pow, 0))?;
    if trailing_mean_axes(&g.node(mean2).op, Some(rank))? != axes {
        return None;
    }
    let (add_eps, _) = sole_consumer(g, Port::new(mean2, 0))?;
    if !is_binary(g, add_eps, BinaryOp::Add) {
        return None;
    }
    let epsilon = scalar_const(g, other_operand(g, add_eps, Port::new(mean2, 0))?)?;
    let (sqrt, _) = sole_consumer(g, Port::new(add_eps, 0))?;
    if !is_unary(g, sqrt, UnaryOp::Sqrt) {
        return None;
    }
    if sole_consumer(g, Port::new(sqrt, 0))? != (div, 1) {
        return None;
    }
    let mut nodes = vec![mean1, sub, pow, mean2, add_eps, sqrt, div];
    let mut out = Port::new(div, 0);

    let mut scale = None;
    if let Some((mul, _)) = sole_consumer(g, out)
        && let Some(src) = affine_param(g, mul, BinaryOp::Mul, out, &trailing, &x_ty)
    {
        scale = Some(src);
        nodes.push(mul);
        out = Port::new(mul, 0);
    }
    let mut bias = None;
    if let Some((add, _)) = sole_consumer(g, out)
        && let Some(src) = affine_param(g, add, BinaryOp::Add, out, &trailing, &x_ty)
    {
        bias = Some(src);
        nodes.push(add);
        out = Port::new(add, 0);
    }
    let scale = match scale {
        Some(s) => s,
        None => ParamSource::New {
            name: format!("{}_scale", g.node(mean1).name),
            tensor: Tensor::from_f32(trailing.clone(), vec![1.0; trailing.iter().product()])
                .ok()?,
        },
    };
    Some(LayerNormMatch {
        x,
        axes: k,
        epsilon: epsilon as f32,
        scale,
        bias,
        out,
        nodes,
    })
}

/// When `id` is `op(from, c)` (either order) with a constant `c` that acts only on
/// the normalised axes, where the fused node's scale or bias comes from.
fn affine_param(
    g: &Graph,
    id: NodeIndex,
    op: BinaryOp,
    from: Port,
    trailing: &[usize],
    x_ty: &TensorType,
) -> Option<ParamSource> {
    if !is_binary(g, id, op) {
        return None;
    }
    let port = other_operand(g, id, from)?;
    let c = g.const_value(port)?;
    if c.dtype() != x_ty.dtype {
        return None;
    }
    let t = normalized_param(c, trailing)?;
    Some(if t.shape() == c.shape() {
        ParamSource::Existing(port)
    } else {
        ParamSource::New {
            name: g.value(port).name.clone(),
            tensor: t,
        }
    })
}

/// `t` as a tensor of exactly the normalised shape, when it broadcasts onto those
/// axes alone (leading size-1 axes dropped, a single value repeated).
fn normalized_param(t: &Tensor, trailing: &[usize]) -> Option<Tensor> {
    let strip = |s: &[usize]| -> Vec<usize> { s.iter().copied().skip_while(|&d| d == 1).collect() };
    if t.rank() <= trailing.len() && strip(t.shape()) == strip(trailing) {
        return t.reshaped(trailing.to_vec()).ok();
    }
    if t.numel() == 1 && t.rank() <= trailing.len() {
        let v = t.to_f32_vec().first().copied()?;
        return Tensor::from_f32(trailing.to_vec(), vec![v; trailing.iter().product()]).ok();
    }
    None
}

fn materialise(g: &mut Graph, src: ParamSource) -> Port {
    match src {
        ParamSource::Existing(p) => p,
        ParamSource::New { name, tensor } => {
            let name = g.fresh_name(&name);
            Port::new(g.add_const(name, tensor), 0)
        }
    }
}

fn apply(g: &mut Graph, m: LayerNormMatch) {
    let name = fused_name(g, &g.node(m.nodes[0]).name, "LayerNormalization");
    let scale = materialise(g, m.scale);
    let bias = m.bias.map(|b| materialise(g, b));
    let tmp = g.fresh_name(&format!("{name}_output_0"));
    let op = Op::LayerNorm {
        axis: -(m.axes as i64),
        epsilon: m.epsilon,
    };
    let ln = g.add_op(name, op, &[Some(m.x), Some(scale), bias], &[tmp.as_str()]);
    replace_subgraph(g, m.out, Port::new(ln, 0), &m.nodes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DType, Dim, Shape, infer::infer_types};

    fn p(id: NodeIndex) -> Option<Port> {
        Some(Port::new(id, 0))
    }

    fn mean(g: &mut Graph, name: &str, x: NodeIndex, axes: Vec<i64>) -> NodeIndex {
        let op = Op::Reduce {
            op: ReduceOp::Mean,
            axes: Some(axes),
            keepdims: true,
            noop_with_empty_axes: false,
        };
        g.add_op(name, op, &[p(x)], &[&format!("{name}_out")])
    }

    /// The DINOv2 form: gamma on the right of Mul, beta on the right of Add.
    fn decomposed(
        g: &mut Graph,
        x: NodeIndex,
        gamma: Option<Tensor>,
        beta: Option<Tensor>,
    ) -> NodeIndex {
        let m = mean(g, "/ln/ReduceMean", x, vec![-1]);
        let d = g.add_op(
            "/ln/Sub",
            Op::Binary(BinaryOp::Sub),
            &[p(x), p(m)],
            &["/ln/Sub_out"],
        );
        let two = g.add_const("/ln/two", Tensor::scalar_f32(2.0));
        let pw = g.add_op(
            "/ln/Pow",
            Op::Binary(BinaryOp::Pow),
            &[p(d), p(two)],
            &["/ln/Pow_out"],
        );
        let v = mean(g, "/ln/ReduceMean_1", pw, vec![-1]);
        let eps = g.add_const("/ln/eps", Tensor::scalar_f32(1e-6));
        let a = g.add_op(
            "/ln/Add",
            Op::Binary(BinaryOp::Add),
            &[p(v), p(eps)],
            &["/ln/Add_out"],
        );
        let s = g.add_op(
            "/ln/Sqrt",
            Op::Unary(UnaryOp::Sqrt),
            &[p(a)],
            &["/ln/Sqrt_out"],
        );
        let mut last = g.add_op(
            "/ln/Div",
            Op::Binary(BinaryOp::Div),
            &[p(d), p(s)],
            &["/ln/Div_out"],
        );
        if let Some(gm) = gamma {
            let c = g.add_const("norm.weight", gm);
            last = g.add_op(
                "/ln/Mul",
                Op::Binary(BinaryOp::Mul),
                &[p(last), p(c)],
                &["/ln/Mul_out"],
            );
        }
        if let Some(bt) = beta {
            let c = g.add_const("norm.bias", bt);
            last = g.add_op(
                "/ln/Add_1",
                Op::Binary(BinaryOp::Add),
                &[p(c), p(last)],
                &["/ln/Add_1_out"],
            );
        }
        last
    }

    fn input(g: &mut Graph) -> NodeIndex {
        g.add_input(
            "x",
            TensorType::new(
                DType::F32,
                Shape(vec![Dim::sym("b"), Dim::Known(5), Dim::Known(4)]),
            ),
        )
    }

    #[test]
    fn fuses_the_pytorch_decomposition() {
        let mut g = Graph::new("t");
        let x = input(&mut g);
        let gamma = Tensor::from_f32(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let beta = Tensor::from_f32(vec![4], vec![0.5, 0.0, -0.5, 1.0]).unwrap();
        let out = decomposed(&mut g, x, Some(gamma.clone()), Some(beta.clone()));
        g.outputs.push(Port::new(out, 0));
        infer_types(&mut g).unwrap();
        let r = fuse_layer_norm(&mut g).unwrap();
        assert_eq!(r.changed, 1);
        let h = g.op_histogram();
        assert_eq!(
            h.into_iter().collect::<Vec<_>>(),
            vec![("LayerNormalization".to_string(), 1)]
        );
        let ln = g.outputs[0].node;
        assert_eq!(
            g.node(ln).op,
            Op::LayerNorm {
                axis: -1,
                epsilon: 1e-6
            }
        );
        assert_eq!(g.node(ln).name, "/ln/LayerNormalization");
        assert_eq!(g.value(g.outputs[0]).name, "/ln/Add_1_out");
        assert_eq!(g.input(ln, 0), Some(Port::new(x, 0)));
        assert_eq!(g.const_input(ln, 1), Some(&gamma));
        assert_eq!(g.const_input(ln, 2), Some(&beta));
        infer_types(&mut g).unwrap();
    }

    #[test]
    fn without_affine_gets_unit_scale_and_no_bias() {
        let mut g = Graph::new("t");
        let x = input(&mut g);
        let out = decomposed(&mut g, x, None, None);
        g.outputs.push(Port::new(out, 0));
        infer_types(&mut g).unwrap();
        assert_eq!(fuse_layer_norm(&mut g).unwrap().changed, 1);
        let ln = g.outputs[0].node;
        assert_eq!(
            g.const_input(ln, 1).and_then(|t| t.as_f32()),
            Some(&[1.0f32; 4][..])
        );
        assert_eq!(g.input(ln, 2), None);
    }

    #[test]
    fn leaves_shared_intermediates_and_non_trailing_axes_alone() {
        // The centred value also feeds a graph output: fusing would lose it.
        let mut g = Graph::new("t");
        let x = input(&mut g);
        let out = decomposed(&mut g, x, None, None);
        let sub = g.find_node("/ln/Sub").unwrap();
        g.outputs = vec![Port::new(out, 0), Port::new(sub, 0)];
        infer_types(&mut g).unwrap();
        assert_eq!(fuse_layer_norm(&mut g).unwrap().changed, 0);

        // Mean over axis 1 of a rank-3 value is not a LayerNorm over trailing axes.
        let mut g = Graph::new("t");
        let x = input(&mut g);
        let out = decomposed(&mut g, x, None, None);
        for n in ["/ln/ReduceMean", "/ln/ReduceMean_1"] {
            let id = g.find_node(n).unwrap();
            if let Op::Reduce { axes, .. } = &mut g.node_mut(id).op {
                *axes = Some(vec![1]);
            }
        }
        g.outputs.push(Port::new(out, 0));
        infer_types(&mut g).unwrap();
        assert_eq!(fuse_layer_norm(&mut g).unwrap().changed, 0);
    }

    #[test]
    fn gamma_that_spans_other_axes_is_not_fused_into_the_scale() {
        let mut g = Graph::new("t");
        let x = input(&mut g);
        let gamma = Tensor::from_f32(vec![5, 1], vec![1.0; 5]).unwrap();
        let out = decomposed(&mut g, x, Some(gamma), None);
        g.outputs.push(Port::new(out, 0));
        infer_types(&mut g).unwrap();
        assert_eq!(fuse_layer_norm(&mut g).unwrap().changed, 1);
        // The Mul stays outside the fused node.
        assert_eq!(g.op_histogram().get("Mul"), Some(&1));
        assert_eq!(g.op_histogram().get("LayerNormalization"), Some(&1));
    }
}
