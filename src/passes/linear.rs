//! Finds the linear layers of a graph, the places where GLoRA adapters go: a MatMul
//! by a constant 2-D weight (optionally followed by an Add of a constant bias), or a
//! Gemm with a constant B (and optional constant C). Each layer gets a readable,
//! unique name taken from its initializers (`encoder.layer.3.attention.query`).

use std::collections::HashSet;

use crate::ir::{BinaryOp, Graph, NodeIndex, Op, Port, Tensor};

use super::pattern::{other_operand, sole_consumer};

/// How the weight enters the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearKind {
    /// `y = x · W (+ b)`, W `[d_in, d_out]`.
    MatMul,
    /// `y = x · W (+ c)` with W `[d_in, d_out]`, or `x · Wᵀ` with W `[d_out, d_in]`
    /// when `trans_b`.
    Gemm { trans_b: bool },
}

/// One linear layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearLayer {
    pub name: String,
    /// The MatMul or Gemm node.
    pub matmul: NodeIndex,
    /// The `Const` node holding the weight.
    pub weight: NodeIndex,
    /// The `Const` node holding the bias, if any.
    pub bias: Option<NodeIndex>,
    /// The Add node applying the bias; `None` for Gemm (bias is C) or without bias.
    pub bias_add: Option<NodeIndex>,
    pub d_in: usize,
    pub d_out: usize,
    pub kind: LinearKind,
}

/// Every linear layer, in topological order; layers that do not depend on each
/// other (query, key, value) keep the order of their nodes in the graph, which is the
/// order of the source model file.
pub fn find_linear_layers(g: &Graph) -> Vec<LinearLayer> {
    let order = g.stable_topo_order().unwrap_or_default();
    let mut used = HashSet::new();
    let mut layers = Vec::new();
    for id in order {
        let found = match &g.node(id).op {
            Op::MatMul => matmul_layer(g, id),
            Op::Gemm(a) if a.alpha == 1.0 && !a.trans_a => gemm_layer(g, id, a.trans_b, a.beta),
            _ => None,
        };
        if let Some(mut layer) = found {
            layer.name = unique(&mut used, layer_name(g, &layer));
            layers.push(layer);
        }
    }
    layers
}

/// The `Const` node at input `slot` of `id` and its tensor, when it is a float 2-D
/// matrix.
fn const_matrix(g: &Graph, id: NodeIndex, slot: usize) -> Option<(NodeIndex, &Tensor)> {
    let p = g.input(id, slot)?;
    let t = g.const_value(p)?;
    (t.rank() == 2 && t.dtype().is_float()).then_some((p.node, t))
}

/// The `Const` node at `port` when it holds a float vector of length `d_out`.
fn const_bias(g: &Graph, port: Port, d_out: usize) -> Option<NodeIndex> {
    let t = g.const_value(port)?;
    (t.rank() == 1 && t.shape()[0] == d_out && t.dtype().is_float()).then_some(port.node)
}

fn matmul_layer(g: &Graph, id: NodeIndex) -> Option<LinearLayer> {
    let (weight, w) = const_matrix(g, id, 1)?;
    let (d_in, d_out) = (w.shape()[0], w.shape()[1]);
    let out = Port::new(id, 0);
    let bias = sole_consumer(g, out).and_then(|(add, _)| {
        if g.node(add).op != Op::Binary(BinaryOp::Add) {
            return None;
        }
        let b = const_bias(g, other_operand(g, add, out)?, d_out)?;
        Some((add, b))
    });
    Some(LinearLayer {
        name: String::new(),
        matmul: id,
        weight,
        bias: bias.map(|(_, b)| b),
        bias_add: bias.map(|(a, _)| a),
        d_in,
        d_out,
        kind: LinearKind::MatMul,
    })
}

fn gemm_layer(g: &Graph, id: NodeIndex, trans_b: bool, beta: f32) -> Option<LinearLayer> {
    let (weight, w) = const_matrix(g, id, 1)?;
    let (d_in, d_out) = if trans_b {
        (w.shape()[1], w.shape()[0])
    } else {
        (w.shape()[0], w.shape()[1])
    };
    let bias = match g.input(id, 2) {
        None => None,
        // A C that is not a plain bias vector makes this something other than a layer.
        Some(c) if beta == 1.0 => Some(const_bias(g, c, d_out)?),
        Some(_) => return None,
    };
    Some(LinearLayer {
        name: String::new(),
        matmul: id,
        weight,
        bias,
        bias_add: None,
        d_in,
        d_out,
        kind: LinearKind::Gemm { trans_b },
    })
}

/// An initializer name a person would recognise, with `suffix` stripped.
fn readable(name: &str, suffix: &str) -> Option<String> {
    let generated = name.is_empty()
        || name.starts_with("onnx::")
        || name.starts_with('/')
        || name.chars().all(|c| c.is_ascii_digit() || c == '_');
    if generated {
        return None;
    }
    let stem = name.strip_suffix(suffix).unwrap_or(name);
    (!stem.is_empty()).then(|| stem.to_string())
}

/// `/blocks.0/qkv/MatMul` → `blocks.0.qkv`.
fn scope_name(node: &str) -> String {
    let trimmed = node.trim_start_matches('/');
    let scope = match trimmed.rfind('/') {
        Some(i) => &trimmed[..i],
        None => trimmed,
    };
    let s = scope.replace('/', ".");
    if s.is_empty() { node.to_string() } else { s }
}

fn layer_name(g: &Graph, layer: &LinearLayer) -> String {
    let value_name = |id: NodeIndex| {
        g.node(id)
            .outputs
            .first()
            .map(|v| v.name.clone())
            .unwrap_or_default()
    };
    readable(&value_name(layer.weight), ".weight")
        .or_else(|| layer.bias.and_then(|b| readable(&value_name(b), ".bias")))
        .unwrap_or_else(|| scope_name(&g.node(layer.matmul).name))
}

fn unique(used: &mut HashSet<String>, base: String) -> String {
    let mut name = base.clone();
    let mut i = 1;
    while !used.insert(name.clone()) {
        name = format!("{base}_{i}");
        i += 1;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DType, Dim, GemmAttrs, Shape, TensorType};

    fn p(id: NodeIndex) -> Option<Port> {
        Some(Port::new(id, 0))
    }

    fn x_input(g: &mut Graph, d: usize) -> NodeIndex {
        g.add_input(
            "x",
            TensorType::new(
                DType::F32,
                Shape(vec![Dim::sym("b"), Dim::Known(7), Dim::Known(d)]),
            ),
        )
    }

    #[test]
    fn matmul_with_bias_in_either_order_and_generated_weight_names() {
        let mut g = Graph::new("t");
        let x = x_input(&mut g, 4);
        let w = g.add_const("onnx::MatMul_12", Tensor::zeros(DType::F32, vec![4, 6]));
        let b = g.add_const("enc.layer.0.query.bias", Tensor::zeros(DType::F32, vec![6]));
        let mm = g.add_op(
            "/enc/layer.0/query/MatMul",
            Op::MatMul,
            &[p(x), p(w)],
            &["q_mm"],
        );
        let add = g.add_op(
            "/enc/layer.0/query/Add",
            Op::Binary(BinaryOp::Add),
            &[p(b), p(mm)],
            &["q"],
        );
        let w2 = g.add_const("fc.weight", Tensor::zeros(DType::F32, vec![6, 3]));
        let mm2 = g.add_op("/fc/MatMul", Op::MatMul, &[p(add), p(w2)], &["fc"]);
        g.outputs.push(Port::new(mm2, 0));
        let layers = find_linear_layers(&g);
        assert_eq!(layers.len(), 2);
        assert_eq!(
            layers[0],
            LinearLayer {
                name: "enc.layer.0.query".into(),
                matmul: mm,
                weight: w,
                bias: Some(b),
                bias_add: Some(add),
                d_in: 4,
                d_out: 6,
                kind: LinearKind::MatMul,
            }
        );
        assert_eq!(layers[1].name, "fc");
        assert_eq!(
            (layers[1].d_in, layers[1].d_out, layers[1].bias),
            (6, 3, None)
        );
    }

    #[test]
    fn activation_products_and_wrong_bias_sizes_are_not_layers() {
        let mut g = Graph::new("t");
        let x = x_input(&mut g, 4);
        let y = g.add_input("y", TensorType::new(DType::F32, Shape::known(&[4, 4])));
        let act = g.add_op("act", Op::MatMul, &[p(x), p(y)], &["a"]);
        let w = g.add_const("onnx::MatMul_1", Tensor::zeros(DType::F32, vec![4, 5]));
        let mm = g.add_op("/blk/proj/MatMul", Op::MatMul, &[p(act), p(w)], &["m"]);
        let b = g.add_const("wrong.bias", Tensor::zeros(DType::F32, vec![4]));
        let add = g.add_op("add", Op::Binary(BinaryOp::Add), &[p(mm), p(b)], &["o"]);
        // The weight as the first operand is not this pattern either.
        let w3 = g.add_const("left.weight", Tensor::zeros(DType::F32, vec![3, 7]));
        let left = g.add_op("left", Op::MatMul, &[p(w3), p(add)], &["l"]);
        g.outputs.push(Port::new(left, 0));
        let layers = find_linear_layers(&g);
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].matmul, mm);
        assert_eq!(layers[0].bias, None);
        assert_eq!(layers[0].name, "blk.proj");
    }

    #[test]
    fn gemm_head_with_transposed_weight_and_unique_names() {
        let mut g = Graph::new("t");
        let x = g.add_input(
            "x",
            TensorType::new(DType::F32, Shape(vec![Dim::sym("b"), Dim::Known(8)])),
        );
        let w = g.add_const("head.weight", Tensor::zeros(DType::F32, vec![10, 8]));
        let c = g.add_const("head.bias", Tensor::zeros(DType::F32, vec![10]));
        let attrs = GemmAttrs {
            trans_b: true,
            ..GemmAttrs::default()
        };
        let gm = g.add_op(
            "/head/Gemm",
            Op::Gemm(attrs),
            &[p(x), p(w), p(c)],
            &["logits"],
        );
        // A second use of the same weight gets a distinct name.
        let gm2 = g.add_op(
            "/head2/Gemm",
            Op::Gemm(attrs),
            &[p(x), p(w), None],
            &["logits2"],
        );
        let scaled = GemmAttrs {
            alpha: 2.0,
            ..attrs
        };
        g.add_op(
            "/scaled/Gemm",
            Op::Gemm(scaled),
            &[p(x), p(w), None],
            &["logits3"],
        );
        g.outputs = vec![Port::new(gm, 0), Port::new(gm2, 0)];
        let mut layers = find_linear_layers(&g);
        layers.sort_by_key(|l| l.matmul);
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0].kind, LinearKind::Gemm { trans_b: true });
        assert_eq!((layers[0].d_in, layers[0].d_out), (8, 10));
        assert_eq!((layers[0].bias, layers[0].bias_add), (Some(c), None));
        let mut names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["head", "head_1"]);
    }

    #[test]
    fn independent_layers_keep_graph_order() {
        let mut g = Graph::new("t");
        let x = x_input(&mut g, 4);
        let mut mms = Vec::new();
        for name in ["key", "value", "query"] {
            let w = g.add_const(
                format!("{name}.weight"),
                Tensor::zeros(DType::F32, vec![4, 4]),
            );
            mms.push(g.add_op(
                format!("/{name}/MatMul"),
                Op::MatMul,
                &[p(x), p(w)],
                &[name],
            ));
        }
        let s = g.add_op(
            "s",
            Op::Binary(BinaryOp::Add),
            &[p(mms[2]), p(mms[0])],
            &["s"],
        );
        let t = g.add_op("t", Op::Binary(BinaryOp::Add), &[p(s), p(mms[1])], &["t"]);
        g.outputs.push(Port::new(t, 0));
        let names: Vec<String> = find_linear_layers(&g).into_iter().map(|l| l.name).collect();
        assert_eq!(names, vec!["key", "value", "query"]);
    }
}
