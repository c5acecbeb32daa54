//! IR [`Graph`] → ONNX model. Picks the opset (17 by default, raised to what the graph
//! needs), walks the nodes in a deterministic topological order, writes weights as
//! initializers and every compute node in the form its opset defines (`ops/`), and
//! gives graph inputs and outputs full types. [`export_file`] writes the model (and
//! an external data file for big models) under temporary names and renames them into
//! place, so a failed export never leaves a half-written file.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use super::names::NameGen;
use super::ops::{self, ExportCtx, ExportNode};
use super::pb::tensor_shape_proto::{Dimension, dimension};
use super::pb::{
    GraphProto, ModelProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
    type_proto,
};
use super::tensor::{onnx_dtype, tensor_to_proto};
use super::{ExportOptions, ExportReport, OnnxError, external};
use crate::ir::{Dim, Graph, NodeIndex, Op, Port, TensorType};

/// The opsets glora writes; LayerNormalization needs 17.
const MIN_OPSET: i64 = 17;
const MAX_OPSET: i64 = 21;

/// Builds the ONNX model of `g`, all data inline. Every graph input and output needs
/// a known type.
pub fn export_model(g: &Graph, opts: &ExportOptions) -> Result<ModelProto, OnnxError> {
    g.validate()
        .map_err(|e| OnnxError::new(format!("cannot export an invalid graph: {e}")))?;
    reject_glora_layers(g)?;
    let opset = target_opset(g, opts)?;
    let order = node_order(g)?;
    let mut names = NameGen::new(names_in(g));
    let renames = renamed_values(g, &mut names);
    let value_name = |p: Port| {
        renames
            .get(&p)
            .cloned()
            .unwrap_or_else(|| g.value(p).name.clone())
    };
    let mut cx = ExportCtx::new(opset, names);
    for id in order {
        let node = g.node(id);
        if matches!(node.op, Op::Input | Op::Const(_) | Op::Param(_)) && node.outputs.len() != 1 {
            return Err(OnnxError::new(format!(
                "node '{}' ({}) has {} outputs instead of one",
                node.name,
                node.op.name(),
                node.outputs.len()
            )));
        }
        match &node.op {
            Op::Input => {}
            Op::Const(t) | Op::Param(t) => {
                cx.initializers
                    .push(tensor_to_proto(&value_name(Port::new(id, 0)), t));
            }
            op => {
                let inputs = g.inputs_of(id);
                let view = ExportNode {
                    name: &node.name,
                    op,
                    inputs: inputs
                        .iter()
                        .map(|p| p.map(value_name).unwrap_or_default())
                        .collect(),
                    input_types: inputs
                        .iter()
                        .map(|p| p.and_then(|p| g.value_type(p)))
                        .collect(),
                    outputs: (0..node.outputs.len())
                        .map(|s| value_name(Port::new(id, s)))
                        .collect(),
                };
                ops::export_node(&mut cx, &view)?;
            }
        }
    }
    let output = graph_outputs(g, &mut cx, &value_name)?;
    let input = g
        .inputs
        .iter()
        .map(|&id| {
            let v = &g.node(id).outputs[0];
            let ty = v.ty.as_ref().ok_or_else(|| {
                OnnxError::new(format!(
                    "graph input '{}' has no known type; export needs it",
                    v.name
                ))
            })?;
            Ok(value_info(&value_name(Port::new(id, 0)), ty))
        })
        .collect::<Result<Vec<_>, OnnxError>>()?;
    let graph = GraphProto {
        node: cx.nodes,
        name: if g.name.is_empty() {
            "glora".to_string()
        } else {
            g.name.clone()
        },
        initializer: cx.initializers,
        input,
        output,
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: ir_version(opset),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        producer_name: opts.producer.clone(),
        producer_version: env!("CARGO_PKG_VERSION").to_string(),
        graph: Some(graph),
        metadata_props: opts
            .metadata
            .iter()
            .map(|(key, value)| crate::onnx::pb::StringStringEntryProto {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        ..Default::default()
    })
}

/// Exports `g` to `path`. When the initializers hold more than
/// `opts.external_data_threshold` bytes, those above 1 KiB go to `<file>.data` beside
/// it. Both files are written under temporary names and renamed into place.
pub fn export_file(
    g: &Graph,
    path: &Path,
    opts: &ExportOptions,
) -> Result<ExportReport, OnnxError> {
    write_model(g, path, opts).map_err(|e| e.within(&path.display().to_string()))
}

fn write_model(g: &Graph, path: &Path, opts: &ExportOptions) -> Result<ExportReport, OnnxError> {
    let mut model = export_model(g, opts)?;
    let opset = model.opset_import.first().map_or(MIN_OPSET, |o| o.version);
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| OnnxError::new("the path has no UTF-8 file name"))?;
    let mut staged = Staged::default();
    let mut external_data = None;
    if let Some(graph) = model.graph.as_mut() {
        let total: u64 = graph
            .initializer
            .iter()
            .map(|t| t.raw_data.len() as u64)
            .sum();
        if total > opts.external_data_threshold {
            let data_name = format!("{file_name}.data");
            let data_path = path.with_file_name(&data_name);
            let tmp = staged.add(&data_path);
            let moved = write_with(&tmp, |w| external::move_initializers(graph, &data_name, w))?;
            if moved > 0 {
                external_data = Some(data_path);
            } else {
                staged.drop_last();
            }
        }
    }
    let bytes = model.encode_to_vec();
    let tmp = staged.add(path);
    write_with(&tmp, |w| w.write_all(&bytes))?;
    staged.commit()?;
    Ok(ExportReport {
        opset,
        bytes: bytes.len() as u64,
        external_data,
    })
}

/// Creates `path` and fills it through a buffered writer, synced to disk.
fn write_with<T>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<T>,
) -> Result<T, OnnxError> {
    let io = || -> std::io::Result<T> {
        let mut w = BufWriter::new(File::create(path)?);
        let r = fill(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(r)
    };
    io().map_err(|e| OnnxError::new(format!("cannot write '{}': {e}", path.display())))
}

/// Files written under temporary names, renamed into place by `commit`; whatever is
/// left uncommitted is removed when this is dropped.
#[derive(Default)]
struct Staged {
    files: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    /// Registers `target` and returns the temporary path to write it to.
    fn add(&mut self, target: &Path) -> PathBuf {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = target.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        self.files.push((tmp.clone(), target.to_path_buf()));
        tmp
    }

    fn drop_last(&mut self) {
        if let Some((tmp, _)) = self.files.pop() {
            let _ = std::fs::remove_file(tmp);
        }
    }

    /// Renames in order of registration: the data file lands before the model that
    /// refers to it.
    fn commit(&mut self) -> Result<(), OnnxError> {
        while !self.files.is_empty() {
            let (tmp, target) = &self.files[0];
            std::fs::rename(tmp, target).map_err(|e| {
                OnnxError::new(format!(
                    "cannot move '{}' into place: {e}",
                    target.display()
                ))
            })?;
            self.files.remove(0);
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.files {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// ONNX has no GLoRA op: adapted layers must be folded or expanded first.
fn reject_glora_layers(g: &Graph) -> Result<(), OnnxError> {
    let order = node_order(g)?;
    match order
        .iter()
        .map(|&id| g.node(id))
        .find(|n| matches!(n.op, Op::GloraLinear(_)))
    {
        Some(n) => Err(OnnxError::new(format!(
            "node '{}' {}",
            n.name,
            super::ops::GLORA_NOT_EXPORTABLE
        ))),
        None => Ok(()),
    }
}

fn target_opset(g: &Graph, opts: &ExportOptions) -> Result<i64, OnnxError> {
    let asked = opts.opset.unwrap_or(MIN_OPSET);
    if asked > MAX_OPSET {
        return Err(OnnxError::new(format!(
            "opset {asked} cannot be written (glora writes opsets {MIN_OPSET} to {MAX_OPSET})"
        )));
    }
    let needed = g
        .node_ids()
        .into_iter()
        .map(|id| ops::required_opset(&g.node(id).op))
        .max()
        .unwrap_or(0);
    Ok(asked.max(MIN_OPSET).max(needed))
}

/// The IR version that goes with an opset (from the ONNX versioning table).
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19 | 20 => 9,
        _ => 10,
    }
}

/// A topological order with ties broken by node index, so that one graph always
/// gives the same bytes.
fn node_order(g: &Graph) -> Result<Vec<NodeIndex>, OnnxError> {
    g.stable_topo_order()
        .map_err(|_| OnnxError::new("cannot export a graph with a cycle"))
}

fn names_in(g: &Graph) -> impl Iterator<Item = &str> {
    g.petgraph().node_weights().flat_map(|n| {
        std::iter::once(n.name.as_str()).chain(n.outputs.iter().map(|v| v.name.as_str()))
    })
}

/// Values written under another name than their IR one: empty names (ONNX reads an
/// empty name as "absent") and weights that are graph outputs, whose initializer
/// takes a fresh name so that the output, written by an Identity, keeps the
/// value's name.
fn renamed_values(g: &Graph, names: &mut NameGen) -> HashMap<Port, String> {
    let mut renames = HashMap::new();
    for id in g.node_ids() {
        let node = g.node(id);
        for (slot, v) in node.outputs.iter().enumerate() {
            if v.name.is_empty() {
                renames.insert(
                    Port::new(id, slot),
                    names.fresh(&format!("{}_output_{slot}", node.name)),
                );
            }
        }
    }
    for &p in &g.outputs {
        if g.node(p.node).op.is_weight() && !renames.contains_key(&p) {
            let base = format!("{}_value", g.value(p).name);
            renames.insert(p, names.fresh(&base));
        }
    }
    renames
}

/// Graph outputs with full types. ONNX wants each output produced by a node, under
/// its own name: outputs that are graph inputs, weights or repeats of an earlier
/// output are written through an Identity.
fn graph_outputs(
    g: &Graph,
    cx: &mut ExportCtx,
    value_name: &impl Fn(Port) -> String,
) -> Result<Vec<ValueInfoProto>, OnnxError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(g.outputs.len());
    for &port in &g.outputs {
        let v = g.value(port);
        let ty = v.ty.as_ref().ok_or_else(|| {
            OnnxError::new(format!(
                "graph output '{}' has no known type; export needs it",
                v.name
            ))
        })?;
        let first = seen.insert(port);
        let op = &g.node(port.node).op;
        let name = if first && !op.is_weight() && !matches!(op, Op::Input) {
            value_name(port)
        } else {
            let target = if first && op.is_weight() {
                v.name.clone()
            } else {
                cx.fresh(&format!("{}_output", v.name))
            };
            let node_name = cx.fresh(&format!("{target}/Identity"));
            cx.emit(
                "Identity",
                &node_name,
                vec![value_name(port)],
                vec![target.clone()],
                vec![],
            );
            target
        };
        out.push(value_info(&name, ty));
    }
    Ok(out)
}

fn value_info(name: &str, ty: &TensorType) -> ValueInfoProto {
    let dim = ty
        .shape
        .dims()
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Known(n) => dimension::Value::DimValue(*n as i64),
                Dim::Sym(s) => dimension::Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: onnx_dtype(ty.dtype),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
