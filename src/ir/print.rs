//! A readable text dump of a graph, for logs, `--dump` output and test failure
//! messages: graph inputs first, then one line per node in topological order, then
//! the graph outputs. Weights are summarised by type; only tiny constants show data.

use std::fmt::{self, Write};

use super::{Graph, Node, Op, Port, Tensor, TensorData};

/// Constants with at most this many elements print their values.
const SHOWN_ELEMENTS: usize = 8;

/// The whole graph as text, one line per node.
pub fn dump(g: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "graph {} {{",
        if g.name.is_empty() { "_" } else { &g.name }
    );
    for &i in &g.inputs {
        for v in &g.node(i).outputs {
            let _ = writeln!(s, "  input %{}: {}", v.name, type_text(v.ty.as_ref()));
        }
    }
    let order = g.topo_order().unwrap_or_else(|_| g.node_ids());
    for id in order {
        let node = g.node(id);
        if matches!(node.op, Op::Input) {
            continue;
        }
        let _ = writeln!(s, "  {}", node_line(g, id, node));
    }
    for o in &g.outputs {
        let v = g.value(*o);
        let _ = writeln!(s, "  output %{}: {}", v.name, type_text(v.ty.as_ref()));
    }
    s.push_str("}\n");
    s
}

fn type_text(ty: Option<&super::TensorType>) -> String {
    ty.map_or_else(|| "?".to_string(), |t| t.to_string())
}

fn node_line(g: &Graph, id: super::NodeIndex, node: &Node) -> String {
    let outs: Vec<String> = node
        .outputs
        .iter()
        .map(|v| format!("%{}: {}", v.name, type_text(v.ty.as_ref())))
        .collect();
    let lhs = outs.join(", ");
    match &node.op {
        Op::Const(t) => format!("{lhs} = const {}", tensor_summary(t)),
        Op::Param(t) => format!("{lhs} = param {}", tensor_summary(t)),
        op => {
            let args: Vec<String> = g
                .inputs_of(id)
                .into_iter()
                .map(|p| {
                    p.map_or_else(
                        || "_".to_string(),
                        |p: Port| format!("%{}", g.value(p).name),
                    )
                })
                .collect();
            let attrs = op_attrs(op);
            let attrs = if attrs.is_empty() {
                String::new()
            } else {
                format!("[{attrs}]")
            };
            format!(
                "{lhs} = {}{attrs}({})  # {}",
                op.name(),
                args.join(", "),
                node.name
            )
        }
    }
}

/// `f32[384,1152]`, plus the values of tiny tensors.
fn tensor_summary(t: &Tensor) -> String {
    let mut s = format!("{}{}", t.dtype(), t.ir_shape());
    if t.numel() <= SHOWN_ELEMENTS {
        let vals: Vec<String> = match t.data() {
            TensorData::I64(_) | TensorData::I32(_) => {
                t.to_i64_vec().iter().map(i64::to_string).collect()
            }
            TensorData::Bool(v) => v.iter().map(bool::to_string).collect(),
            _ => t.to_f32_vec().iter().map(|x| format!("{x}")).collect(),
        };
        let _ = write!(s, " = [{}]", vals.join(", "));
    }
    s
}

/// The attributes of an op in a compact `key=value` form.
fn op_attrs(op: &Op) -> String {
    match op {
        Op::Gemm(a) => format!(
            "alpha={}, beta={}, trans_a={}, trans_b={}",
            a.alpha, a.beta, a.trans_a, a.trans_b
        ),
        Op::Conv(a) | Op::ConvTranspose(a) => {
            let mut parts = Vec::new();
            for (k, v) in [
                ("kernel", &a.kernel_shape),
                ("strides", &a.strides),
                ("dilations", &a.dilations),
                ("pads", &a.pads),
                ("output_padding", &a.output_padding),
                ("output_shape", &a.output_shape),
            ] {
                if !v.is_empty() {
                    parts.push(format!("{k}={v:?}"));
                }
            }
            if a.group > 1 {
                parts.push(format!("group={}", a.group));
            }
            if a.auto_pad != super::AutoPad::NotSet {
                parts.push(format!("auto_pad={:?}", a.auto_pad));
            }
            parts.join(", ")
        }
        Op::Softmax { axis } | Op::Concat { axis } | Op::Gather { axis } | Op::Flatten { axis } => {
            format!("axis={axis}")
        }
        Op::LayerNorm { axis, epsilon } => format!("axis={axis}, epsilon={epsilon}"),
        Op::Gelu { approximate } => format!("approximate={approximate:?}"),
        Op::Reduce {
            axes,
            keepdims,
            noop_with_empty_axes,
            ..
        } => {
            let mut s = match axes {
                Some(a) => format!("axes={a:?}, keepdims={keepdims}"),
                None => format!("keepdims={keepdims}"),
            };
            if *noop_with_empty_axes {
                s.push_str(", noop_with_empty_axes");
            }
            s
        }
        Op::Reshape { allowzero } if *allowzero => "allowzero".into(),
        Op::Transpose { perm: Some(p) } => format!("perm={p:?}"),
        Op::Split { axis, sizes } => match sizes {
            Some(s) => format!("axis={axis}, sizes={s:?}"),
            None => format!("axis={axis}"),
        },
        Op::Squeeze { axes: Some(a) } => format!("axes={a:?}"),
        Op::Unsqueeze { axes } => format!("axes={axes:?}"),
        Op::Shape { start, end } => match end {
            Some(e) => format!("start={start}, end={e}"),
            None if *start != 0 => format!("start={start}"),
            None => String::new(),
        },
        Op::Cast { to } => format!("to={to}"),
        Op::ConstantOfShape { value } => format!("value={}", tensor_summary(value)),
        Op::BatchNorm { epsilon } => format!("epsilon={epsilon}"),
        Op::Resize(a) => {
            let mut s = format!("mode={:?}, coord={:?}", a.mode, a.coord);
            if let Some(axes) = &a.axes {
                let _ = write!(s, ", axes={axes:?}");
            }
            s
        }
        Op::GloraLinear(a) => format!(
            "layer={}, d_in={}, d_out={}, rank={}, layout={:?}, bias={}",
            a.layer, a.d_in, a.d_out, a.rank, a.layout, a.has_bias
        ),
        _ => String::new(),
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&dump(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{BinaryOp, DType, Dim, Shape, TensorType};

    #[test]
    fn dump_lists_inputs_nodes_and_outputs_in_order() {
        let mut g = Graph::new("tiny");
        let x = g.add_input(
            "x",
            TensorType::new(DType::F32, Shape(vec![Dim::sym("batch"), Dim::Known(384)])),
        );
        let w = g.add_const("blocks.0.w", Tensor::zeros(DType::F32, vec![384, 1152]));
        let two = g.add_const("two", Tensor::scalar_f32(2.0));
        let mm = g.add_op(
            "/blocks.0/MatMul",
            Op::MatMul,
            &[Some(Port::new(x, 0)), Some(Port::new(w, 0))],
            &["/mm"],
        );
        let mul = g.add_op(
            "/blocks.0/Mul",
            Op::Binary(BinaryOp::Mul),
            &[Some(Port::new(mm, 0)), Some(Port::new(two, 0))],
            &["y"],
        );
        g.outputs.push(Port::new(mul, 0));
        crate::ir::infer::infer_types(&mut g).unwrap();
        let text = dump(&g);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "graph tiny {");
        assert_eq!(lines[1], "  input %x: f32[batch,384]");
        assert!(
            text.contains("  %blocks.0.w: f32[384,1152] = const f32[384,1152]\n"),
            "{text}"
        );
        assert!(
            text.contains("  %two: f32[] = const f32[] = [2]\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  %/mm: f32[batch,1152] = MatMul(%x, %blocks.0.w)  # /blocks.0/MatMul\n"
            ),
            "{text}"
        );
        let mm_line = lines.iter().position(|l| l.contains("MatMul(")).unwrap();
        let mul_line = lines.iter().position(|l| l.contains("Mul(%/mm")).unwrap();
        assert!(mm_line < mul_line);
        assert_eq!(lines[lines.len() - 2], "  output %y: f32[batch,1152]");
        assert_eq!(g.to_string(), text);
    }
}
