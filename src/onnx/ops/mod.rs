//! How each operation is spelled in ONNX, in both directions, one file per op family.
//!
//! Import: the importer hands every ONNX node to the family that knows its op type as
//! a [`NodeCtx`]; the family returns [`Planned`] IR nodes whose inputs are still value
//! names (wiring them into edges is the importer's next phase). Attributes are
//! normalised here, including the ones that moved between opsets.
//!
//! Export: the exporter hands every IR node to its family as an [`ExportNode`]; the
//! family appends the ONNX nodes (and any constants they need) to an [`ExportCtx`],
//! in the form the target opset defines.

mod math;
mod nn;
mod reduce;
mod resize;
mod shape;

use std::collections::HashMap;
use std::fmt::Display;

use super::OnnxError;
use super::attrs::Attrs;
use super::names::NameGen;
use super::pb::{AttributeProto, NodeProto, TensorProto};
use super::tensor::tensor_to_proto;
use crate::ir::{Op, Tensor, TensorType};

pub(crate) use shape::constant_value;

/// Translates one ONNX node into IR nodes.
pub(crate) type Importer = fn(&mut NodeCtx) -> Result<Vec<Planned>, OnnxError>;

/// The importer for a default-domain op type, if glora supports it.
pub(crate) fn importer(op_type: &str) -> Option<Importer> {
    math::importer(op_type)
        .or_else(|| nn::importer(op_type))
        .or_else(|| reduce::importer(op_type))
        .or_else(|| shape::importer(op_type))
        .or_else(|| resize::importer(op_type))
}

/// The lowest opset at which `op`, with its attributes, can be written.
pub(crate) fn required_opset(op: &Op) -> i64 {
    match op {
        Op::Resize(a) => resize::required_opset(a),
        _ => 0,
    }
}

/// Appends the ONNX form of one IR compute node to `cx`.
pub(crate) fn export_node(cx: &mut ExportCtx, n: &ExportNode) -> Result<(), OnnxError> {
    match n.op {
        Op::Input | Op::Const(_) | Op::Param(_) => Err(n.err("is not a compute node")),
        Op::MatMul
        | Op::Gemm(_)
        | Op::Binary(_)
        | Op::Unary(_)
        | Op::Clip
        | Op::Where
        | Op::Identity
        | Op::Cast { .. } => math::export(cx, n),
        Op::Conv(_)
        | Op::ConvTranspose(_)
        | Op::Softmax { .. }
        | Op::LayerNorm { .. }
        | Op::Gelu { .. }
        | Op::BatchNorm { .. } => nn::export(cx, n),
        Op::Reduce { .. } => reduce::export(cx, n),
        Op::Resize(_) => resize::export(cx, n),
        Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Gather { .. }
        | Op::Slice
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Flatten { .. }
        | Op::Shape { .. }
        | Op::Expand
        | Op::ConstantOfShape { .. }
        | Op::Range => shape::export(cx, n),
        Op::GloraLinear(_) => Err(n.err(GLORA_NOT_EXPORTABLE)),
        Op::Grad(_) => Err(n.err("is a training-only operation: export the forward graph")),
    }
}

/// Why a graph with adapters cannot be written as ONNX as it stands.
pub(crate) const GLORA_NOT_EXPORTABLE: &str =
    "is a GLoRA layer: reparameterise or expand it before export";

/// An IR node produced by import, with inputs still given by value name (`None` for
/// an empty optional slot).
#[derive(Debug)]
pub(crate) struct Planned {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<Option<String>>,
    pub outputs: Vec<String>,
    /// How errors name the ONNX node this came from.
    pub label: String,
}

/// One ONNX node being imported, with what its translation may consult.
pub(crate) struct NodeCtx<'a> {
    pub node: &'a NodeProto,
    pub opset: i64,
    pub attrs: Attrs<'a>,
    /// The IR name of the (main) node.
    pub name: String,
    label: String,
    consts: &'a HashMap<String, Tensor>,
    names: &'a mut NameGen,
}

impl<'a> NodeCtx<'a> {
    pub fn new(
        node: &'a NodeProto,
        name: String,
        label: String,
        opset: i64,
        consts: &'a HashMap<String, Tensor>,
        names: &'a mut NameGen,
    ) -> NodeCtx<'a> {
        NodeCtx {
            node,
            opset,
            attrs: Attrs(&node.attribute),
            name,
            label,
            consts,
            names,
        }
    }

    pub fn op_type(&self) -> &'a str {
        &self.node.op_type
    }

    pub fn err(&self, msg: impl Display) -> OnnxError {
        OnnxError::new(format!("{}: {msg}", self.label))
    }

    /// Attribute reader results with the node named in the error.
    pub fn attr<T>(&self, r: Result<T, String>) -> Result<T, OnnxError> {
        r.map_err(|m| self.err(m))
    }

    /// Number of inputs, not counting trailing empty names (absent optional inputs).
    pub fn input_count(&self) -> usize {
        self.node
            .input
            .iter()
            .rposition(|s| !s.is_empty())
            .map_or(0, |i| i + 1)
    }

    pub fn check_inputs(&self, min: usize, max: usize) -> Result<(), OnnxError> {
        let n = self.input_count();
        if n < min || n > max {
            let want = if min == max {
                format!("{min}")
            } else if max == usize::MAX {
                format!("at least {min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(self.err(format!("expects {want} inputs, got {n}")));
        }
        Ok(())
    }

    /// Input `i` by value name; `None` when absent or empty.
    pub fn input(&self, i: usize) -> Option<String> {
        self.node.input.get(i).filter(|s| !s.is_empty()).cloned()
    }

    pub fn required(&self, i: usize) -> Result<String, OnnxError> {
        self.input(i)
            .ok_or_else(|| self.err(format!("input {i} is required but not given")))
    }

    /// The first `n` inputs as IR slots, of which the first `required` must be given.
    pub fn slots(&self, n: usize, required: usize) -> Result<Vec<Option<String>>, OnnxError> {
        (0..n)
            .map(|i| {
                if i < required {
                    self.required(i).map(Some)
                } else {
                    Ok(self.input(i))
                }
            })
            .collect()
    }

    /// The value of input `i` when it is a constant (an initializer or a `Constant`
    /// node); `None` when the input is absent. An input that is not constant is an
    /// error: `what` says what glora needs it for.
    pub fn const_input(&self, i: usize, what: &str) -> Result<Option<&'a Tensor>, OnnxError> {
        let Some(name) = self.input(i) else {
            return Ok(None);
        };
        self.consts.get(&name).map(Some).ok_or_else(|| {
            self.err(format!(
                "input '{name}' ({what}) must be a constant (an initializer or a Constant node)"
            ))
        })
    }

    /// The constant value named `name` (a `Constant` node's output).
    pub fn const_value_of(&self, name: &str) -> Result<Tensor, OnnxError> {
        self.consts
            .get(name)
            .cloned()
            .ok_or_else(|| self.err(format!("value '{name}' has no constant value")))
    }

    /// A constant integer input, such as axes or split sizes.
    pub fn const_ints(&self, i: usize, what: &str) -> Result<Option<Vec<i64>>, OnnxError> {
        match self.const_input(i, what)? {
            None => Ok(None),
            Some(t) if t.dtype().is_int() && t.rank() <= 1 => Ok(Some(t.to_i64_vec())),
            Some(t) => Err(self.err(format!(
                "input '{}' ({what}) must be a 1-D integer tensor, not {}{:?}",
                self.node.input[i],
                t.dtype(),
                t.shape()
            ))),
        }
    }

    /// Output names. Trailing empty names (outputs not wanted) are dropped unless
    /// `keep_all`, where the number of outputs carries meaning; an empty name before a
    /// used output gets a fresh one.
    pub fn outputs(&mut self, keep_all: bool) -> Vec<String> {
        let n = if keep_all {
            self.node.output.len()
        } else {
            self.node
                .output
                .iter()
                .rposition(|s| !s.is_empty())
                .map_or(0, |i| i + 1)
        };
        (0..n)
            .map(|i| match self.node.output[i].as_str() {
                "" => self.names.fresh(&format!("{}_output_{i}", self.name)),
                s => s.to_string(),
            })
            .collect()
    }

    /// Output names, of which there must be between `min` and `max`.
    pub fn checked_outputs(&mut self, min: usize, max: usize) -> Result<Vec<String>, OnnxError> {
        let out = self.outputs(false);
        if out.len() < min || out.len() > max {
            let want = if min == max {
                format!("{min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(self.err(format!("expects {want} outputs, got {}", out.len())));
        }
        Ok(out)
    }

    pub fn fresh(&mut self, base: &str) -> String {
        self.names.fresh(base)
    }

    pub fn plan(
        &self,
        name: String,
        op: Op,
        inputs: Vec<Option<String>>,
        outputs: Vec<String>,
    ) -> Planned {
        Planned {
            name,
            op,
            inputs,
            outputs,
            label: self.label.clone(),
        }
    }

    /// The common case: one IR node with `slots` input slots (the first `required` of
    /// them must be given) and one output.
    pub fn simple(
        &mut self,
        op: Op,
        slots: usize,
        required: usize,
    ) -> Result<Vec<Planned>, OnnxError> {
        self.check_inputs(required, slots)?;
        let inputs = self.slots(slots, required)?;
        let outputs = self.checked_outputs(1, 1)?;
        Ok(vec![self.plan(self.name.clone(), op, inputs, outputs)])
    }
}

/// One IR compute node as export sees it: value names instead of edges.
pub(crate) struct ExportNode<'a> {
    pub name: &'a str,
    pub op: &'a Op,
    /// One name per input slot; empty for an empty optional slot.
    pub inputs: Vec<String>,
    pub input_types: Vec<Option<&'a TensorType>>,
    pub outputs: Vec<String>,
}

impl ExportNode<'_> {
    pub fn err(&self, msg: impl Display) -> OnnxError {
        OnnxError::new(format!("node '{}' ({}): {msg}", self.name, self.op.name()))
    }

    /// The name of input 0, the data input of every op that asks for it.
    pub fn data_input(&self) -> Result<String, OnnxError> {
        self.inputs
            .first()
            .filter(|s| !s.is_empty())
            .cloned()
            .ok_or_else(|| self.err("input 0 is not connected"))
    }

    /// The type of input `i`, which this op's export needs.
    pub fn input_type(&self, i: usize) -> Result<&TensorType, OnnxError> {
        self.input_types.get(i).copied().flatten().ok_or_else(|| {
            let name = self.inputs.get(i).map_or("", String::as_str);
            self.err(format!(
                "the type of input '{name}' is unknown; export needs it"
            ))
        })
    }
}

/// The ONNX graph being written: nodes, initializers and the names in use.
pub(crate) struct ExportCtx {
    pub opset: i64,
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    names: NameGen,
    /// Constants that decompositions added, by content, so that equal ones are shared.
    shared_constants: HashMap<(i32, Vec<usize>, Vec<u8>), String>,
}

impl ExportCtx {
    pub fn new(opset: i64, names: NameGen) -> ExportCtx {
        ExportCtx {
            opset,
            nodes: Vec::new(),
            initializers: Vec::new(),
            names,
            shared_constants: HashMap::new(),
        }
    }

    pub fn fresh(&mut self, base: &str) -> String {
        self.names.fresh(base)
    }

    /// Appends an ONNX node; trailing empty input names are dropped.
    pub fn emit(
        &mut self,
        op_type: &str,
        name: &str,
        mut inputs: Vec<String>,
        outputs: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) {
        while inputs.last().is_some_and(String::is_empty) {
            inputs.pop();
        }
        self.nodes.push(NodeProto {
            input: inputs,
            output: outputs,
            name: name.to_string(),
            op_type: op_type.to_string(),
            attribute,
            ..Default::default()
        });
    }

    /// Emits `n` as the ONNX op of the same name with its own inputs and outputs.
    pub fn emit_as_is(&mut self, n: &ExportNode, attribute: Vec<AttributeProto>) {
        self.emit(
            n.op.name(),
            n.name,
            n.inputs.clone(),
            n.outputs.clone(),
            attribute,
        );
    }

    /// Adds `t` as an initializer named after `base` and returns its name; a constant
    /// with the same type, shape and bytes added before is reused.
    pub fn constant(&mut self, base: &str, t: &Tensor) -> String {
        let proto = tensor_to_proto("", t);
        let key = (proto.data_type, t.shape().to_vec(), proto.raw_data.clone());
        if let Some(name) = self.shared_constants.get(&key) {
            return name.clone();
        }
        let name = self.names.fresh(base);
        self.initializers.push(TensorProto {
            name: name.clone(),
            ..proto
        });
        self.shared_constants.insert(key, name.clone());
        name
    }

    /// A 1-D i64 constant (axes, sizes) that is an input of one node.
    pub fn ints_input(&mut self, base: &str, v: &[i64]) -> String {
        self.constant(base, &Tensor::vec_i64(v.to_vec()))
    }
}
