//! Neural-network layers: Conv, ConvTranspose, Softmax, LayerNormalization, Gelu and
//! BatchNormalization (inference form). Softmax before opset 13 and Gelu before
//! opset 20 have no direct IR or ONNX counterpart and are rewritten into equivalent
//! small subgraphs.

use half::{bf16, f16};

use super::{ExportCtx, ExportNode, Importer, NodeCtx, Planned};
use crate::ir::{AutoPad, ConvAttrs, DType, GeluApprox, Op, Tensor, TensorData};
use crate::onnx::OnnxError;
use crate::onnx::attrs;
use crate::onnx::pb::AttributeProto;

const DEFAULT_EPSILON: f32 = 1e-5;

pub(super) fn importer(op_type: &str) -> Option<Importer> {
    let f: Importer = match op_type {
        "Conv" => |c| conv(c, false),
        "ConvTranspose" => |c| conv(c, true),
        "Softmax" => softmax,
        "LayerNormalization" => layer_norm,
        "Gelu" => gelu,
        "BatchNormalization" => batch_norm,
        _ => return None,
    };
    Some(f)
}

fn conv(c: &mut NodeCtx, transpose: bool) -> Result<Vec<Planned>, OnnxError> {
    let a = c.attrs;
    let group = match c.attr(a.int("group"))? {
        None => 1,
        Some(g) if g >= 1 => g as usize,
        Some(g) => return Err(c.err(format!("attribute 'group' must be at least 1, got {g}"))),
    };
    let auto_pad = match c.attr(a.string("auto_pad"))? {
        None | Some("NOTSET") => AutoPad::NotSet,
        Some("SAME_UPPER") => AutoPad::SameUpper,
        Some("SAME_LOWER") => AutoPad::SameLower,
        Some("VALID") => AutoPad::Valid,
        Some(other) => {
            return Err(c.err(format!("attribute 'auto_pad' has unknown value '{other}'")));
        }
    };
    let mut attrs = ConvAttrs {
        kernel_shape: c.attr(a.sizes("kernel_shape"))?.unwrap_or_default(),
        strides: c.attr(a.sizes("strides"))?.unwrap_or_default(),
        dilations: c.attr(a.sizes("dilations"))?.unwrap_or_default(),
        pads: c.attr(a.sizes("pads"))?.unwrap_or_default(),
        group,
        auto_pad,
        ..ConvAttrs::default()
    };
    if transpose {
        attrs.output_padding = c.attr(a.sizes("output_padding"))?.unwrap_or_default();
        attrs.output_shape = c.attr(a.sizes("output_shape"))?.unwrap_or_default();
        c.simple(Op::ConvTranspose(attrs), 3, 2)
    } else {
        c.simple(Op::Conv(attrs), 3, 2)
    }
}

fn softmax(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    if c.opset >= 13 {
        let axis = c.attr(c.attrs.int("axis"))?.unwrap_or(-1);
        return c.simple(Op::Softmax { axis }, 1, 1);
    }
    // Before opset 13 Softmax normalises over all axes from `axis` on at once, as if
    // the input were flattened to 2-D there: spell exactly that out.
    let axis = c.attr(c.attrs.int("axis"))?.unwrap_or(1);
    c.check_inputs(1, 1)?;
    let x = c.required(0)?;
    let y = c.checked_outputs(1, 1)?.remove(0);
    let base = c.name.clone();
    let flat = c.fresh(&format!("{base}/Flatten_output_0"));
    let soft = c.fresh(&format!("{base}/Softmax_output_0"));
    let shape = c.fresh(&format!("{base}/Shape_output_0"));
    let flatten_name = c.fresh(&format!("{base}/Flatten"));
    let shape_name = c.fresh(&format!("{base}/Shape"));
    let reshape_name = c.fresh(&format!("{base}/Reshape"));
    Ok(vec![
        c.plan(
            flatten_name,
            Op::Flatten { axis },
            vec![Some(x.clone())],
            vec![flat.clone()],
        ),
        c.plan(
            base,
            Op::Softmax { axis: 1 },
            vec![Some(flat)],
            vec![soft.clone()],
        ),
        c.plan(
            shape_name,
            Op::Shape {
                start: 0,
                end: None,
            },
            vec![Some(x)],
            vec![shape.clone()],
        ),
        // allowzero: a zero in the original shape is a real empty axis, not "copy".
        c.plan(
            reshape_name,
            Op::Reshape { allowzero: true },
            vec![Some(soft), Some(shape)],
            vec![y],
        ),
    ])
}

fn layer_norm(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let axis = c.attr(c.attrs.int("axis"))?.unwrap_or(-1);
    let epsilon = c.attr(c.attrs.float("epsilon"))?.unwrap_or(DEFAULT_EPSILON);
    c.check_inputs(2, 3)?;
    let inputs = c.slots(3, 2)?;
    let outputs = c.checked_outputs(1, 3)?;
    Ok(vec![c.plan(
        c.name.clone(),
        Op::LayerNorm { axis, epsilon },
        inputs,
        outputs,
    )])
}

fn gelu(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    let approximate = match c.attr(c.attrs.string("approximate"))? {
        None | Some("none") => GeluApprox::None,
        Some("tanh") => GeluApprox::Tanh,
        Some(other) => {
            return Err(c.err(format!(
                "attribute 'approximate' has unknown value '{other}'"
            )));
        }
    };
    c.simple(Op::Gelu { approximate }, 1, 1)
}

fn batch_norm(c: &mut NodeCtx) -> Result<Vec<Planned>, OnnxError> {
    if c.attr(c.attrs.flag("training_mode"))? == Some(true) {
        return Err(c.err(
            "training_mode=1 is not supported; glora imports BatchNormalization for inference only",
        ));
    }
    let epsilon = c.attr(c.attrs.float("epsilon"))?.unwrap_or(DEFAULT_EPSILON);
    c.check_inputs(5, 5)?;
    let inputs = c.slots(5, 5)?;
    let outputs = c.outputs(false);
    if outputs.len() != 1 {
        return Err(c.err(format!(
            "has {} outputs; the running statistics outputs exist only in training, which glora does not support",
            outputs.len()
        )));
    }
    Ok(vec![c.plan(
        c.name.clone(),
        Op::BatchNorm { epsilon },
        inputs,
        outputs,
    )])
}

pub(super) fn export(cx: &mut ExportCtx, n: &ExportNode) -> Result<(), OnnxError> {
    let attribute = match n.op {
        Op::Conv(a) => conv_attrs(a, false),
        Op::ConvTranspose(a) => conv_attrs(a, true),
        Op::Softmax { axis } => non_default_int("axis", *axis, -1),
        Op::LayerNorm { axis, epsilon } => {
            let mut v = non_default_int("axis", *axis, -1);
            v.extend(non_default_epsilon(*epsilon));
            v
        }
        Op::BatchNorm { epsilon } => non_default_epsilon(*epsilon),
        Op::Gelu { approximate } if cx.opset >= 20 => match approximate {
            GeluApprox::None => vec![],
            GeluApprox::Tanh => vec![attrs::string("approximate", "tanh")],
        },
        Op::Gelu { approximate } => return gelu_decomposed(cx, n, *approximate),
        _ => return Err(n.err("is not a neural-network layer op")),
    };
    cx.emit_as_is(n, attribute);
    Ok(())
}

fn non_default_int(name: &str, v: i64, default: i64) -> Vec<AttributeProto> {
    if v == default {
        vec![]
    } else {
        vec![attrs::int(name, v)]
    }
}

fn non_default_epsilon(eps: f32) -> Vec<AttributeProto> {
    if eps == DEFAULT_EPSILON {
        vec![]
    } else {
        vec![attrs::float("epsilon", eps)]
    }
}

/// Only what differs from ONNX's defaults, so that an import reads back the same
/// `ConvAttrs`.
fn conv_attrs(a: &ConvAttrs, transpose: bool) -> Vec<AttributeProto> {
    let mut v = Vec::new();
    let lists: [(&str, &Vec<usize>); 4] = [
        ("kernel_shape", &a.kernel_shape),
        ("strides", &a.strides),
        ("dilations", &a.dilations),
        ("pads", &a.pads),
    ];
    for (name, list) in lists {
        if !list.is_empty() {
            v.push(attrs::sizes(name, list));
        }
    }
    if a.group > 1 {
        v.push(attrs::int("group", a.group as i64));
    }
    let auto_pad = match a.auto_pad {
        AutoPad::NotSet => None,
        AutoPad::SameUpper => Some("SAME_UPPER"),
        AutoPad::SameLower => Some("SAME_LOWER"),
        AutoPad::Valid => Some("VALID"),
    };
    if let Some(p) = auto_pad {
        v.push(attrs::string("auto_pad", p));
    }
    if transpose {
        if !a.output_padding.is_empty() {
            v.push(attrs::sizes("output_padding", &a.output_padding));
        }
        if !a.output_shape.is_empty() {
            v.push(attrs::sizes("output_shape", &a.output_shape));
        }
    }
    v
}

/// A scalar of a float `dtype`, for the constants of a decomposition.
fn float_scalar(dtype: DType, v: f32) -> Option<Tensor> {
    let data = match dtype {
        DType::F32 => TensorData::F32(vec![v]),
        DType::F16 => TensorData::F16(vec![f16::from_f32(v)]),
        DType::BF16 => TensorData::BF16(vec![bf16::from_f32(v)]),
        _ => return None,
    };
    Tensor::new(vec![], data).ok()
}

/// Writes Gelu for opsets that lack it: `0.5·x·(1 + erf(x/√2))`, or with the tanh
/// approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
fn gelu_decomposed(
    cx: &mut ExportCtx,
    n: &ExportNode,
    approximate: GeluApprox,
) -> Result<(), OnnxError> {
    let dtype = n.input_type(0)?.dtype;
    let constant = |cx: &mut ExportCtx, what: &str, v: f32| {
        float_scalar(dtype, v)
            .map(|t| cx.constant(&format!("{}/{what}", n.name), &t))
            .ok_or_else(|| {
                n.err(format!(
                    "input '{}' is {dtype}, not a float type",
                    n.inputs[0]
                ))
            })
    };
    let x = n.data_input()?;
    let y = n
        .outputs
        .first()
        .cloned()
        .ok_or_else(|| n.err("has no output"))?;
    let mut chain = Chain { cx, base: n.name };
    let inner = match approximate {
        GeluApprox::None => {
            let sqrt2 = constant(chain.cx, "sqrt2", std::f32::consts::SQRT_2)?;
            let scaled = chain.step("Div", &[&x, &sqrt2]);
            chain.step("Erf", &[&scaled])
        }
        GeluApprox::Tanh => {
            let coeff = constant(chain.cx, "coeff", 0.044715)?;
            let sqrt_2_over_pi = constant(
                chain.cx,
                "sqrt_2_over_pi",
                (2.0 / std::f32::consts::PI).sqrt(),
            )?;
            let square = chain.step("Mul", &[&x, &x]);
            let cube = chain.step("Mul", &[&square, &x]);
            let scaled_cube = chain.step("Mul", &[&cube, &coeff]);
            let sum = chain.step("Add", &[&x, &scaled_cube]);
            let arg = chain.step("Mul", &[&sum, &sqrt_2_over_pi]);
            chain.step("Tanh", &[&arg])
        }
    };
    let one = constant(chain.cx, "one", 1.0)?;
    let half = constant(chain.cx, "half", 0.5)?;
    let one_plus = chain.step("Add", &[&inner, &one]);
    let times_x = chain.step("Mul", &[&x, &one_plus]);
    let node_name = chain.cx.fresh(&format!("{}/Mul", n.name));
    chain
        .cx
        .emit("Mul", &node_name, vec![times_x, half], vec![y], vec![]);
    Ok(())
}

/// Emits the nodes of a decomposition one after another, naming nodes and values
/// after the op they replace.
struct Chain<'a, 'b> {
    cx: &'a mut ExportCtx,
    base: &'b str,
}

impl Chain<'_, '_> {
    fn step(&mut self, op_type: &str, inputs: &[&str]) -> String {
        let name = self.cx.fresh(&format!("{}/{op_type}", self.base));
        let out = self.cx.fresh(&format!("{name}_output_0"));
        self.cx.emit(
            op_type,
            &name,
            inputs.iter().map(|s| s.to_string()).collect(),
            vec![out.clone()],
            vec![],
        );
        out
    }
}
