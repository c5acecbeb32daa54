//! GLoRA insertion: replaces linear layers found by
//! [`find_linear_layers`](super::find_linear_layers) with one `GloraLinear` node
//! each, and reads or writes the adapter tensors of the layers of an adapted graph.
//!
//! A layer (`MatMul` by a constant weight with an optional bias `Add`, or a `Gemm`)
//! becomes `GloraLinear(x, W0, b0?, Ad, Au, Bd, Bu, Cd, Cu, D, E)`: W0 and b0 stay the
//! base model's `Const` nodes, the eight adapter tensors are new `Param` nodes named
//! `<layer>.Ad` … `<layer>.E`, initialised by [`AdapterTensors::init`]. The layer's
//! output keeps its value name, so the rest of the graph is untouched. The
//! reparameterisation and expansion passes turn the nodes back into plain ops.

use anyhow::{Context, anyhow, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use regex::Regex;

use crate::glora::{AdapterTensors, LayerShape, tensor_names};
use crate::ir::{
    DType, GLORA_LINEAR_INPUTS, GloraLinearAttrs, Graph, NodeIndex, Op, Port, Tensor, TensorType,
    WeightLayout,
};

use super::linear::{LinearKind, LinearLayer};
use super::pattern::replace_subgraph;

/// Input slot of W0, b0 and the first adapter tensor (Ad) of a GloraLinear node.
pub(crate) const W0_SLOT: usize = 1;
pub(crate) const B0_SLOT: usize = 2;
pub(crate) const ADAPTER_SLOT: usize = 3;

/// One adapted layer of a graph.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptedLayer {
    pub name: String,
    /// The GloraLinear node.
    pub node: NodeIndex,
    pub shape: LayerShape,
    pub layout: WeightLayout,
}

/// A comma-separated list of plain module names (`query,value`, as PEFT's
/// `target_modules` list is written) matches a layer whose name is one of them or
/// ends with `.` and one of them; anything else is a regular expression searched
/// anywhere in the name.
fn compile_regex(flag: &str, pattern: &str) -> anyhow::Result<Regex> {
    let plain = |e: &str| {
        !e.is_empty()
            && e.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    let entries: Vec<&str> = pattern.split(',').map(str::trim).collect();
    let source = if entries.len() > 1 && entries.iter().all(|e| plain(e)) {
        let names: Vec<String> = entries.iter().map(|e| regex::escape(e)).collect();
        format!("(?:^|\\.)(?:{})$", names.join("|"))
    } else {
        pattern.to_string()
    };
    Regex::new(&source).with_context(|| format!("invalid {flag} regular expression {pattern:?}"))
}

/// The layers whose names match `targets` (all when `None`) and do not match
/// `exclude`. A pattern is a list of module names (`query,value`) or a regular
/// expression searched anywhere in the name (anchor it with `^…$` for a full match).
/// Selecting no layer at all is an error.
pub fn select_layers(
    layers: Vec<LinearLayer>,
    targets: Option<&str>,
    exclude: Option<&str>,
) -> anyhow::Result<Vec<LinearLayer>> {
    let targets = targets.map(|t| compile_regex("--targets", t)).transpose()?;
    let exclude = exclude.map(|e| compile_regex("--exclude", e)).transpose()?;
    let total = layers.len();
    let chosen: Vec<LinearLayer> = layers
        .into_iter()
        .filter(|l| targets.as_ref().is_none_or(|t| t.is_match(&l.name)))
        .filter(|l| exclude.as_ref().is_none_or(|e| !e.is_match(&l.name)))
        .collect();
    if chosen.is_empty() {
        bail!(
            "no linear layer is selected (of {total}) by --targets {} and --exclude {}",
            targets.map_or("(all)".to_string(), |t| format!("{:?}", t.as_str())),
            exclude.map_or("(none)".to_string(), |e| format!("{:?}", e.as_str())),
        );
    }
    Ok(chosen)
}

/// The f32 weight of a layer as W0 in the layout the GloraLinear node reads, with
/// the node that holds it. A Gemm without `transB` gets a transposed copy so that
/// it can be written back as a Gemm.
fn weight_input(g: &mut Graph, layer: &LinearLayer) -> anyhow::Result<(NodeIndex, WeightLayout)> {
    let w = g
        .node(layer.weight)
        .op
        .weight()
        .ok_or_else(|| anyhow!("layer '{}': the weight is not a constant", layer.name))?;
    if w.dtype() != DType::F32 {
        bail!(
            "layer '{}': the weight is {}; GLoRA layers need f32 weights",
            layer.name,
            w.dtype()
        );
    }
    match layer.kind {
        LinearKind::MatMul => Ok((layer.weight, WeightLayout::InOut)),
        LinearKind::Gemm { trans_b: true } => Ok((layer.weight, WeightLayout::OutIn)),
        LinearKind::Gemm { trans_b: false } => {
            let values = w.as_f32().unwrap_or_default();
            let t = Tensor::from_f32(
                vec![layer.d_out, layer.d_in],
                transpose(values, layer.d_in, layer.d_out),
            )?;
            let base = format!("{}_transposed", g.value(Port::new(layer.weight, 0)).name);
            let name = g.fresh_name(&base);
            Ok((g.add_const(name, t), WeightLayout::OutIn))
        }
    }
}

/// A row-major `rows × cols` matrix transposed.
pub(crate) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|j| (0..rows).map(move |i| m[i * cols + j]))
        .collect()
}

/// Adds a `Param` node named `name` holding `t`.
fn add_param(g: &mut Graph, name: &str, t: Tensor) -> anyhow::Result<NodeIndex> {
    if g.find_value(name).is_some() || g.find_node(name).is_some() {
        bail!("cannot add adapter tensor '{name}': the graph already has a value of that name");
    }
    Ok(g.add_param(name, t))
}

fn insert_layer(
    g: &mut Graph,
    layer: &LinearLayer,
    max_rank: usize,
    rng: &mut StdRng,
) -> anyhow::Result<AdaptedLayer> {
    let ctx = || format!("adapting layer '{}'", layer.name);
    for id in [
        Some(layer.matmul),
        Some(layer.weight),
        layer.bias,
        layer.bias_add,
    ]
    .into_iter()
    .flatten()
    {
        if !g.contains(id) {
            bail!("layer '{}' is no longer in the graph", layer.name);
        }
    }
    let x = g
        .input(layer.matmul, 0)
        .ok_or_else(|| anyhow!("layer '{}': the product has no input", layer.name))?;
    let shape = LayerShape {
        d_in: layer.d_in,
        d_out: layer.d_out,
        has_bias: layer.bias.is_some(),
    };
    let tensors = AdapterTensors::init(shape, max_rank, rng).with_context(ctx)?;
    let (w0, layout) = weight_input(g, layer).with_context(ctx)?;
    let mut inputs: Vec<Option<Port>> = vec![
        Some(x),
        Some(Port::new(w0, 0)),
        layer.bias.map(|b| Port::new(b, 0)),
    ];
    for (name, t) in tensor_names(&layer.name).iter().zip(tensors.into_tensors()) {
        inputs.push(Some(Port::new(add_param(g, name, t)?, 0)));
    }
    debug_assert_eq!(inputs.len(), GLORA_LINEAR_INPUTS);
    let node_name = g.node(layer.matmul).name.clone();
    let temp = g.fresh_name(&format!("{}.glora_out", layer.name));
    let attrs = GloraLinearAttrs {
        layer: layer.name.clone(),
        d_in: layer.d_in,
        d_out: layer.d_out,
        rank: max_rank,
        layout,
        has_bias: shape.has_bias,
    };
    let temp_node = g.fresh_name(&node_name);
    let id = g.add_op(temp_node, Op::GloraLinear(attrs), &inputs, &[temp.as_str()]);
    let old_out = Port::new(layer.bias_add.unwrap_or(layer.matmul), 0);
    let matched: Vec<NodeIndex> = [Some(layer.matmul), layer.bias_add]
        .into_iter()
        .flatten()
        .collect();
    replace_subgraph(g, old_out, Port::new(id, 0), &matched);
    g.node_mut(id).name = node_name;
    // A weight replaced by its transposed copy is dead unless something else reads it.
    if w0 != layer.weight && g.use_count(Port::new(layer.weight, 0)) == 0 {
        g.remove_node(layer.weight);
    }
    Ok(AdaptedLayer {
        name: layer.name.clone(),
        node: id,
        shape,
        layout,
    })
}

/// Replaces each of `layers` by a GloraLinear node whose adapter tensors are stored
/// at rank `max_rank` and initialised from one generator seeded with `seed`, layer
/// after layer in the given order. Returns the adapted layers in that order.
pub fn insert_glora(
    g: &mut Graph,
    layers: &[LinearLayer],
    max_rank: usize,
    seed: u64,
) -> anyhow::Result<Vec<AdaptedLayer>> {
    check_insertable(g, layers)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let adapted = layers
        .iter()
        .map(|layer| insert_layer(g, layer, max_rank, &mut rng))
        .collect::<anyhow::Result<Vec<_>>>()?;
    g.validate().context("graph check after GLoRA insertion")?;
    Ok(adapted)
}

/// Refuses, before anything changes, layers that cannot all be adapted: repeated
/// names, names whose adapter tensors would clash with existing values, and
/// weights that are not f32.
fn check_insertable(g: &Graph, layers: &[LinearLayer]) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    for layer in layers {
        if !seen.insert(layer.name.as_str()) {
            bail!("layer '{}' is listed twice", layer.name);
        }
        for name in tensor_names(&layer.name) {
            if g.find_value(&name).is_some() {
                bail!(
                    "layer '{}': the graph already has a value named '{name}'",
                    layer.name
                );
            }
        }
        if !g.contains(layer.weight) {
            bail!("layer '{}' is no longer in the graph", layer.name);
        }
        if let Some(w) = g.node(layer.weight).op.weight()
            && w.dtype() != DType::F32
        {
            bail!(
                "layer '{}': the weight is {}; GLoRA layers need f32 weights",
                layer.name,
                w.dtype()
            );
        }
    }
    Ok(())
}

/// The attributes of the GloraLinear node of `layer`.
pub(crate) fn find_layer(g: &Graph, layer: &str) -> anyhow::Result<(NodeIndex, GloraLinearAttrs)> {
    g.node_ids()
        .into_iter()
        .find_map(|id| match &g.node(id).op {
            Op::GloraLinear(a) if a.layer == layer => Some((id, a.clone())),
            _ => None,
        })
        .ok_or_else(|| anyhow!("the graph has no GLoRA layer named '{layer}'"))
}

/// The adapted layers of a graph, in a deterministic topological order.
pub fn glora_layers(g: &Graph) -> Vec<AdaptedLayer> {
    g.stable_topo_order()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|id| match &g.node(id).op {
            Op::GloraLinear(a) => Some(AdaptedLayer {
                name: a.layer.clone(),
                node: id,
                shape: LayerShape {
                    d_in: a.d_in,
                    d_out: a.d_out,
                    has_bias: a.has_bias,
                },
                layout: a.layout,
            }),
            _ => None,
        })
        .collect()
}

/// The weight tensor feeding input `slot` of `node`.
pub(crate) fn weight_at(g: &Graph, node: NodeIndex, slot: usize) -> anyhow::Result<&Tensor> {
    let n = g.node(node);
    let p = g
        .input(node, slot)
        .ok_or_else(|| anyhow!("node '{}': input {slot} is not connected", n.name))?;
    g.node(p.node).op.weight().ok_or_else(|| {
        anyhow!(
            "node '{}': input {slot} ('{}') is not a constant or parameter",
            n.name,
            g.value(p).name
        )
    })
}

fn layer_shape(a: &GloraLinearAttrs) -> LayerShape {
    LayerShape {
        d_in: a.d_in,
        d_out: a.d_out,
        has_bias: a.has_bias,
    }
}

/// The adapter tensors of the GloraLinear node `node`.
pub(crate) fn node_adapters(
    g: &Graph,
    node: NodeIndex,
    a: &GloraLinearAttrs,
) -> anyhow::Result<AdapterTensors> {
    let mut tensors = Vec::with_capacity(8);
    for slot in ADAPTER_SLOT..ADAPTER_SLOT + 8 {
        tensors.push(weight_at(g, node, slot)?.clone());
    }
    let tensors: [Tensor; 8] = tensors
        .try_into()
        .map_err(|_| anyhow!("layer '{}': expected eight adapter tensors", a.layer))?;
    Ok(AdapterTensors::from_tensors(
        &a.layer,
        layer_shape(a),
        a.rank,
        tensors,
    )?)
}

/// The current adapter tensors of `layer`.
pub fn adapter_tensors(g: &Graph, layer: &str) -> anyhow::Result<AdapterTensors> {
    let (id, a) = find_layer(g, layer)?;
    node_adapters(g, id, &a)
}

/// Replaces the adapter tensors of `layer`; they must fit its shape and stored rank.
pub fn set_adapter_tensors(g: &mut Graph, layer: &str, t: &AdapterTensors) -> anyhow::Result<()> {
    let (id, a) = find_layer(g, layer)?;
    if (t.d_in(), t.d_out(), t.rank()) != (a.d_in, a.d_out, a.rank) {
        bail!(
            "layer '{layer}' is {}→{} at rank {}, but the tensors are {}→{} at rank {}",
            a.d_in,
            a.d_out,
            a.rank,
            t.d_in(),
            t.d_out(),
            t.rank()
        );
    }
    for (i, tensor) in t.tensors().into_iter().enumerate() {
        let slot = ADAPTER_SLOT + i;
        let p = g
            .input(id, slot)
            .ok_or_else(|| anyhow!("layer '{layer}': adapter input {slot} is not connected"))?;
        let node = g.node_mut(p.node);
        if !matches!(node.op, Op::Param(_)) {
            bail!(
                "layer '{layer}': adapter input {slot} ('{}') is not a parameter",
                node.name
            );
        }
        node.op = Op::Param(tensor.clone());
        node.outputs[0].ty = Some(TensorType::new(tensor.dtype(), tensor.ir_shape()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::compile_regex;

    #[test]
    fn module_name_lists_match_as_peft_target_modules_and_others_are_regexes() {
        let list = compile_regex("--targets", "query, value").unwrap();
        for (name, hit) in [
            ("encoder.layer.0.attention.self.query", true),
            ("encoder.layer.11.attention.self.value", true),
            ("query", true),
            ("encoder.layer.0.attention.self.key", false),
            // A suffix of the last component is not the module's name.
            ("encoder.layer.0.attention.self.subquery", false),
            ("encoder.layer.0.attention.self.query.extra", false),
        ] {
            assert_eq!(list.is_match(name), hit, "{name}");
        }
        let dotted = compile_regex("--targets", "self.query,output.dense").unwrap();
        assert!(dotted.is_match("encoder.layer.0.attention.output.dense"));
        assert!(!dotted.is_match("encoder.layer.0.attention.self.key"));
        // One name alone stays a regular expression searched in the name.
        let one = compile_regex("--targets", "attn").unwrap();
        assert!(one.is_match("blocks.0.attn.qkv"));
        let re = compile_regex("--targets", r"layer\.[0-1]\.").unwrap();
        assert!(re.is_match("encoder.layer.1.output.dense"));
        assert!(!re.is_match("encoder.layer.2.output.dense"));
        assert!(compile_regex("--targets", "(").is_err());
    }
}
