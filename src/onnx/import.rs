//! ONNX model → IR [`Graph`], in explicit phases: decode the protobuf, check the
//! opset, read the constants (initializers and `Constant` nodes), add the graph
//! inputs, translate every node (`ops/`), wire value names into edges, set the graph
//! outputs, drop constants nothing reads, validate and infer types. Every error is one
//! line that starts with the file name and names the node and tensor at fault.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use prost::Message;

use super::OnnxError;
use super::names::NameGen;
use super::ops::{self, NodeCtx, Planned};
use super::pb::tensor_shape_proto::dimension::Value as DimValue;
use super::pb::type_proto::Value as TypeValue;
use super::pb::{GraphProto, ModelProto, NodeProto, TypeProto, ValueInfoProto};
use super::tensor::{dtype_from_onnx, tensor_from_proto};
use crate::ir::{Dim, Graph, Node, Op, Port, Shape, Tensor, TensorType, Value};

/// The default-domain opsets glora reads.
const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// Reads and imports an ONNX model file; external data is looked up beside it.
pub fn import_file(path: &Path) -> Result<Graph, OnnxError> {
    let source = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| OnnxError::new(format!("{source}: cannot read the file: {e}")))?;
    import_bytes(&bytes, path.parent(), &source)
}

/// The `metadata_props` of the ONNX model at `path`, in file order.
pub fn read_metadata(path: &Path) -> Result<Vec<(String, String)>, OnnxError> {
    let source = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| OnnxError::new(format!("{source}: cannot read the file: {e}")))?;
    let model = <crate::onnx::pb::ModelProto as prost::Message>::decode(bytes.as_slice())
        .map_err(|e| OnnxError::new(format!("{source}: not an ONNX model: {e}")))?;
    Ok(model
        .metadata_props
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect())
}

/// Imports a serialised ONNX model. `base_dir` is where its external data files are
/// (`None`: the model has none); `source` names the model in error messages.
pub fn import_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    source: &str,
) -> Result<Graph, OnnxError> {
    import_model(bytes, base_dir).map_err(|e| e.within(source))
}

fn import_model(bytes: &[u8], base_dir: Option<&Path>) -> Result<Graph, OnnxError> {
    let model = decode(bytes)?;
    let opset = default_opset(&model)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::new("not a valid ONNX model: it has no graph"))?;
    if let Some(s) = graph.sparse_initializer.first() {
        let name = s.values.as_ref().map_or("", |v| v.name.as_str());
        return Err(OnnxError::new(format!(
            "sparse initializer '{name}' is not supported"
        )));
    }
    let mut names = NameGen::new(names_in(graph));
    let consts = constant_values(graph, base_dir)?;
    let mut b = Builder::new(&graph.name);
    let initializers = add_initializers(&mut b, graph, &consts)?;
    add_inputs(&mut b, graph, &initializers, &mut names)?;
    let planned = translate_nodes(graph, opset, &consts, &mut names)?;
    wire(&mut b, planned)?;
    set_outputs(&mut b, graph)?;
    let mut g = b.g;
    remove_unread_constants(&mut g);
    // Structure first: inference walks the graph and needs it acyclic and complete.
    g.validate()
        .map_err(|e| OnnxError::new(format!("the imported graph is invalid: {e}")))?;
    crate::ir::infer::infer_types(&mut g)
        .map_err(|e| OnnxError::new(format!("type inference: {e}")))?;
    fill_declared_types(&mut g, graph, &mut names);
    Ok(g)
}

fn decode(bytes: &[u8]) -> Result<ModelProto, OnnxError> {
    if bytes.is_empty() {
        return Err(OnnxError::new("not a valid ONNX model: the file is empty"));
    }
    ModelProto::decode(bytes).map_err(|e| {
        OnnxError::new(format!(
            "not a valid ONNX model (truncated or corrupt): {e}"
        ))
    })
}

fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

fn default_opset(m: &ModelProto) -> Result<i64, OnnxError> {
    let v = m
        .opset_import
        .iter()
        .find(|o| is_default_domain(&o.domain))
        .map(|o| o.version)
        .ok_or_else(|| {
            OnnxError::new("the model declares no default-domain opset (opset_import)")
        })?;
    if !OPSETS.contains(&v) {
        return Err(OnnxError::new(format!(
            "default-domain opset {v} is not supported (glora reads opsets {} to {})",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    Ok(v)
}

/// Every name the model uses, so that names made up during import are new.
fn names_in(graph: &GraphProto) -> impl Iterator<Item = &str> {
    let nodes = graph.node.iter().flat_map(|n| {
        std::iter::once(n.name.as_str())
            .chain(n.input.iter().map(String::as_str))
            .chain(n.output.iter().map(String::as_str))
    });
    let infos = graph
        .input
        .iter()
        .chain(&graph.output)
        .chain(&graph.value_info)
        .map(|v| v.name.as_str());
    nodes
        .chain(infos)
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
}

/// The values of all initializers and `Constant` nodes, by value name. Node
/// translation looks up the constant inputs it needs (axes, split sizes) here.
fn constant_values(
    graph: &GraphProto,
    base_dir: Option<&Path>,
) -> Result<HashMap<String, Tensor>, OnnxError> {
    let mut consts = HashMap::new();
    for t in &graph.initializer {
        if t.name.is_empty() {
            return Err(OnnxError::new("an initializer has no name"));
        }
        consts.insert(t.name.clone(), tensor_from_proto(t, base_dir)?);
    }
    for (i, node) in graph.node.iter().enumerate() {
        if node.op_type != "Constant" || !is_default_domain(&node.domain) {
            continue;
        }
        let value = ops::constant_value(node, base_dir)
            .map_err(|m| OnnxError::new(format!("{}: {m}", label(node, i))))?;
        if let Some(out) = node.output.first().filter(|o| !o.is_empty()) {
            consts.insert(out.clone(), value);
        }
    }
    Ok(consts)
}

/// How an error names a node: by its name, or by its position when it has none.
fn who(node: &NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("node #{index}")
    } else {
        format!("node '{}'", node.name)
    }
}

fn label(node: &NodeProto, index: usize) -> String {
    format!("{} ({})", who(node, index), node.op_type)
}

/// The graph under construction and which port produces each value name.
struct Builder {
    g: Graph,
    producers: HashMap<String, Port>,
}

impl Builder {
    fn new(name: &str) -> Builder {
        Builder {
            g: Graph::new(name),
            producers: HashMap::new(),
        }
    }

    /// Records that `port` produces `name`; `by` names the producer in the error when
    /// something produced it already.
    fn define(&mut self, name: &str, port: Port, by: &str) -> Result<(), OnnxError> {
        if let Some(prev) = self.producers.insert(name.to_string(), port) {
            let prev_name = &self.g.node(prev.node).name;
            return Err(OnnxError::new(format!(
                "{by}: value '{name}' is also produced by '{prev_name}'; every value needs exactly one producer"
            )));
        }
        Ok(())
    }
}

/// Initializers become `Const` nodes named after their value. Returns their names.
fn add_initializers(
    b: &mut Builder,
    graph: &GraphProto,
    consts: &HashMap<String, Tensor>,
) -> Result<HashSet<String>, OnnxError> {
    let mut names = HashSet::new();
    for t in &graph.initializer {
        let value = consts
            .get(&t.name)
            .cloned()
            .ok_or_else(|| OnnxError::new(format!("initializer '{}' has no value", t.name)))?;
        let id = b.g.add_const(t.name.clone(), value);
        b.define(
            &t.name,
            Port::new(id, 0),
            &format!("initializer '{}'", t.name),
        )?;
        names.insert(t.name.clone());
    }
    Ok(names)
}

/// Graph inputs become `Input` nodes. Inputs that are also initializers (how models
/// before IR 4 declared weights) stay constants.
fn add_inputs(
    b: &mut Builder,
    graph: &GraphProto,
    initializers: &HashSet<String>,
    names: &mut NameGen,
) -> Result<(), OnnxError> {
    for vi in &graph.input {
        if initializers.contains(&vi.name) {
            continue;
        }
        if vi.name.is_empty() {
            return Err(OnnxError::new("a graph input has no name"));
        }
        let ty = tensor_type(vi, names)
            .map_err(|m| OnnxError::new(format!("graph input '{}': {m}", vi.name)))?;
        let id = b.g.add_input(vi.name.clone(), ty);
        b.define(
            &vi.name,
            Port::new(id, 0),
            &format!("graph input '{}'", vi.name),
        )?;
    }
    Ok(())
}

/// The IR type of a declared value. Dims without a value or name get a fresh symbol.
fn tensor_type(vi: &ValueInfoProto, names: &mut NameGen) -> Result<TensorType, String> {
    let TypeProto {
        value: Some(TypeValue::TensorType(t)),
        ..
    } = vi.r#type.as_ref().ok_or("has no type")?
    else {
        return Err("is not a tensor".to_string());
    };
    let dtype = dtype_from_onnx(t.elem_type)?;
    let shape = t
        .shape
        .as_ref()
        .ok_or("has no shape; glora needs at least its rank")?;
    let dims = shape
        .dim
        .iter()
        .enumerate()
        .map(|(i, d)| match &d.value {
            Some(DimValue::DimValue(v)) if *v >= 0 => Dim::Known(*v as usize),
            Some(DimValue::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
            _ => Dim::Sym(names.fresh(&format!("{}_dim{i}", vi.name))),
        })
        .collect();
    Ok(TensorType::new(dtype, Shape(dims)))
}

fn translate_nodes(
    graph: &GraphProto,
    opset: i64,
    consts: &HashMap<String, Tensor>,
    names: &mut NameGen,
) -> Result<Vec<Planned>, OnnxError> {
    let mut planned = Vec::new();
    let mut node_names = HashSet::new();
    for (i, node) in graph.node.iter().enumerate() {
        let importer = is_default_domain(&node.domain)
            .then(|| ops::importer(&node.op_type))
            .flatten()
            .ok_or_else(|| unsupported(node, i))?;
        let name = if node.name.is_empty() {
            names.numbered(&node.op_type)
        } else if !node_names.insert(node.name.clone()) {
            names.fresh(&node.name)
        } else {
            node.name.clone()
        };
        node_names.insert(name.clone());
        let mut ctx = NodeCtx::new(node, name, label(node, i), opset, consts, names);
        planned.extend(importer(&mut ctx)?);
    }
    Ok(planned)
}

fn unsupported(node: &NodeProto, index: usize) -> OnnxError {
    let domain = if is_default_domain(&node.domain) {
        String::new()
    } else {
        format!(" of domain '{}'", node.domain)
    };
    OnnxError::new(format!(
        "{} uses op '{}'{domain}, which glora does not support",
        who(node, index),
        node.op_type
    ))
}

/// Adds the planned nodes, then connects each input slot to the producer of its
/// value name. Nodes are added before any edge, so node order in the file does not
/// matter here (a cycle is caught by validation).
fn wire(b: &mut Builder, planned: Vec<Planned>) -> Result<(), OnnxError> {
    let mut added = Vec::with_capacity(planned.len());
    for p in planned {
        let outputs = p
            .outputs
            .iter()
            .map(|name| match &p.op {
                Op::Const(t) => {
                    Value::typed(name.clone(), TensorType::new(t.dtype(), t.ir_shape()))
                }
                _ => Value::new(name.clone()),
            })
            .collect();
        let id =
            b.g.add_node(Node::new(p.name.clone(), p.op, p.inputs.len(), outputs));
        for (slot, name) in p.outputs.iter().enumerate() {
            b.define(name, Port::new(id, slot), &p.label)?;
        }
        added.push((id, p.inputs, p.label));
    }
    for (id, inputs, label) in added {
        for (slot, name) in inputs.iter().enumerate() {
            let Some(name) = name else { continue };
            let port = b.producers.get(name).copied().ok_or_else(|| {
                OnnxError::new(format!(
                    "{label}: input '{name}' is not produced by any node, initializer or graph input"
                ))
            })?;
            b.g.connect(port, id, slot);
        }
    }
    Ok(())
}

fn set_outputs(b: &mut Builder, graph: &GraphProto) -> Result<(), OnnxError> {
    for vi in &graph.output {
        if vi.name.is_empty() {
            return Err(OnnxError::new("a graph output has no name"));
        }
        let port = b.producers.get(&vi.name).copied().ok_or_else(|| {
            OnnxError::new(format!(
                "graph output '{}' is not produced by any node, initializer or graph input",
                vi.name
            ))
        })?;
        b.g.outputs.push(port);
    }
    Ok(())
}

/// Constants read by no node, such as the axes that became attributes of the nodes
/// that used them.
fn remove_unread_constants(g: &mut Graph) {
    for id in g.node_ids() {
        if matches!(g.node(id).op, Op::Const(_)) && g.use_count(Port::new(id, 0)) == 0 {
            g.remove_node(id);
        }
    }
}

/// Types the model declares (graph outputs, `value_info`) for values whose type
/// inference left open.
fn fill_declared_types(g: &mut Graph, graph: &GraphProto, names: &mut NameGen) {
    let declared: HashMap<&str, &ValueInfoProto> = graph
        .value_info
        .iter()
        .chain(&graph.output)
        .map(|v| (v.name.as_str(), v))
        .collect();
    for id in g.node_ids() {
        for slot in 0..g.node(id).outputs.len() {
            let v = &g.node(id).outputs[slot];
            if v.ty.is_some() {
                continue;
            }
            let Some(vi) = declared.get(v.name.as_str()) else {
                continue;
            };
            if let Ok(ty) = tensor_type(vi, names) {
                g.node_mut(id).outputs[slot].ty = Some(ty);
            }
        }
    }
}
