//! Reparameterisation: folds every GloraLinear node, under its layer's chosen
//! config, back into the plain linear pattern it replaced, with merged constants
//! `W' = W0 + W0⊙A + B` and `b' = b0 + b0⊙D + E + W0·C` (glora-spec §6, original W0
//! in the prompt term) computed by [`crate::glora::merge`].
//!
//! A layer stored `[d_in, d_out]` becomes `MatMul(x, W')` plus an `Add` of its bias;
//! one stored `[d_out, d_in]` becomes `Gemm(x, W', b', transB=1)`. W' keeps the
//! original layout, and a constant read only by this layer is overwritten in place,
//! so the graph keeps the base model's op histogram and weight names. A layer
//! without a bias gains one only when its config reads E or C. The adapter `Param`
//! nodes are removed. The result is what the merged ONNX export writes.

use anyhow::{Context, anyhow, bail};

use crate::glora::{
    AdapterTensors, COption, DeOption, LayerConfig, LayerShape, ModelConfig, merge,
};
use crate::ir::infer::infer_node;
use crate::ir::{
    BinaryOp, GemmAttrs, GloraLinearAttrs, Graph, NodeIndex, Op, Port, Tensor, WeightLayout,
};

use super::PassReport;
use super::insert_glora::{B0_SLOT, W0_SLOT, glora_layers, node_adapters, transpose, weight_at};
use super::pattern::replace_subgraph;

/// What a pass needs from one GloraLinear node.
pub(crate) struct GloraNode {
    pub id: NodeIndex,
    pub attrs: GloraLinearAttrs,
    pub x: Port,
    pub w0: Port,
    pub b0: Option<Port>,
    /// W0 in the PyTorch layout `[d_out, d_in]`, row-major.
    pub w0_out_in: Vec<f32>,
    pub b0_values: Option<Vec<f32>>,
    pub adapters: AdapterTensors,
    /// The node's name, which the rewritten ops are named after.
    pub name: String,
}

impl GloraNode {
    pub fn shape(&self) -> LayerShape {
        LayerShape {
            d_in: self.attrs.d_in,
            d_out: self.attrs.d_out,
            has_bias: self.attrs.has_bias,
        }
    }
}

fn f32_values(t: &Tensor, what: &str, layer: &str) -> anyhow::Result<Vec<f32>> {
    t.as_f32()
        .map(<[f32]>::to_vec)
        .ok_or_else(|| anyhow!("layer '{layer}': {what} is {}, expected f32", t.dtype()))
}

pub(crate) fn read_glora_node(g: &Graph, id: NodeIndex) -> anyhow::Result<GloraNode> {
    let node = g.node(id);
    let Op::GloraLinear(attrs) = &node.op else {
        bail!("node '{}' is not a GLoRA layer", node.name);
    };
    let attrs = attrs.clone();
    let layer = attrs.layer.as_str();
    let x = g
        .input(id, 0)
        .ok_or_else(|| anyhow!("node '{}': input x is not connected", node.name))?;
    let w0 = g
        .input(id, W0_SLOT)
        .ok_or_else(|| anyhow!("node '{}': W0 is not connected", node.name))?;
    let w0_t = weight_at(g, id, W0_SLOT)?;
    let w0_values = f32_values(w0_t, "W0", layer)?;
    if w0_values.len() != attrs.d_in * attrs.d_out {
        bail!(
            "layer '{layer}': W0 has shape {:?}, expected {}×{}",
            w0_t.shape(),
            attrs.d_in,
            attrs.d_out
        );
    }
    let w0_out_in = match attrs.layout {
        WeightLayout::OutIn => w0_values,
        WeightLayout::InOut => transpose(&w0_values, attrs.d_in, attrs.d_out),
    };
    let b0 = g.input(id, B0_SLOT);
    let b0_values = match b0 {
        Some(_) => Some(f32_values(weight_at(g, id, B0_SLOT)?, "b0", layer)?),
        None => None,
    };
    let adapters = node_adapters(g, id, &attrs)?;
    Ok(GloraNode {
        id,
        x,
        w0,
        b0,
        w0_out_in,
        b0_values,
        adapters,
        name: node.name.clone(),
        attrs,
    })
}

/// Writes `t` into the constant at `port` when `reader` is its only reader (keeping
/// its name), or into a new constant named after it otherwise.
fn write_const(g: &mut Graph, port: Port, reader: NodeIndex, t: Tensor) -> Port {
    let sole = g.outputs.iter().all(|&o| o != port)
        && g.consumers(port).iter().all(|&(c, _)| c == reader)
        && matches!(g.node(port.node).op, Op::Const(_));
    if sole {
        g.node_mut(port.node).op = Op::Const(t);
        return port;
    }
    let name = g.fresh_name(&g.value(port).name.clone());
    Port::new(g.add_const(name, t), 0)
}

/// Fills in the output types of freshly built nodes, in the order they were built.
pub(crate) fn infer_new_nodes(g: &mut Graph, nodes: &[NodeIndex]) -> anyhow::Result<()> {
    for &id in nodes {
        let types = infer_node(g, id)?;
        for (v, ty) in g.node_mut(id).outputs.iter_mut().zip(types) {
            v.ty = Some(ty);
        }
    }
    Ok(())
}

/// Points the readers of the GloraLinear output at `new_out` (which takes over its
/// name), removes the node and whatever only it read: adapter tensors and
/// constants that were replaced.
pub(crate) fn finish_layer(g: &mut Graph, n: &GloraNode, new_out: Port) {
    let inputs: Vec<NodeIndex> = g
        .inputs_of(n.id)
        .into_iter()
        .flatten()
        .map(|p| p.node)
        .collect();
    replace_subgraph(g, Port::new(n.id, 0), new_out, &[n.id]);
    for id in inputs {
        let unused =
            g.contains(id) && g.node(id).op.is_weight() && g.use_count(Port::new(id, 0)) == 0;
        if unused {
            g.remove_node(id);
        }
    }
}

/// A fresh node name next to `base` (`/blk/fc/MatMul` → `/blk/fc/Add`).
pub(crate) fn sibling_name(g: &Graph, base: &str, op: &str) -> String {
    let candidate = match base.rfind('/') {
        Some(i) => format!("{}/{op}", &base[..i]),
        None => format!("{base}_{op}"),
    };
    g.fresh_name(&candidate)
}

/// Whether the merged layer carries a bias: the base had one, or E or C adds one.
pub(crate) fn merged_has_bias(has_bias: bool, config: &LayerConfig) -> bool {
    has_bias || config.e != DeOption::None || config.c != COption::None
}

fn x_rank(g: &Graph, x: Port) -> Option<usize> {
    g.value_type(x).map(|t| t.shape.rank())
}

fn reparameterize_layer(g: &mut Graph, n: &GloraNode, config: &LayerConfig) -> anyhow::Result<()> {
    let layer = n.attrs.layer.as_str();
    let (d_in, d_out) = (n.attrs.d_in, n.attrs.d_out);
    let merged = merge(
        &n.w0_out_in,
        n.b0_values.as_deref(),
        n.shape(),
        config,
        &n.adapters,
    )
    .with_context(|| format!("merging layer '{layer}'"))?;
    // A Gemm needs a 2-D x; any other x is written as the MatMul pattern.
    let as_gemm = n.attrs.layout == WeightLayout::OutIn && x_rank(g, n.x).is_none_or(|r| r == 2);
    let weight = if as_gemm {
        Tensor::from_f32(vec![d_out, d_in], merged.weight)?
    } else {
        Tensor::from_f32(vec![d_in, d_out], transpose(&merged.weight, d_out, d_in))?
    };
    let w_port = if as_gemm || n.attrs.layout == WeightLayout::InOut {
        write_const(g, n.w0, n.id, weight)
    } else {
        let name = g.fresh_name(&format!("{}_merged", g.value(n.w0).name));
        Port::new(g.add_const(name, weight), 0)
    };
    let bias = merged_has_bias(n.attrs.has_bias, config)
        .then(|| Tensor::from_f32(vec![d_out], merged.bias))
        .transpose()?;
    let b_port = bias.map(|t| match n.b0 {
        Some(p) => write_const(g, p, n.id, t),
        None => {
            let name = g.fresh_name(&format!("{layer}.bias"));
            Port::new(g.add_const(name, t), 0)
        }
    });
    let out_name = g.value(Port::new(n.id, 0)).name.clone();
    let mut built = Vec::new();
    let final_port = if as_gemm {
        let attrs = GemmAttrs {
            trans_b: true,
            ..GemmAttrs::default()
        };
        let temp = g.fresh_name(&format!("{out_name}_merged"));
        let name = sibling_name(g, &n.name, "Gemm");
        let id = g.add_op(
            name,
            Op::Gemm(attrs),
            &[Some(n.x), Some(w_port), b_port],
            &[&temp],
        );
        built.push(id);
        Port::new(id, 0)
    } else {
        let mm_out = g.fresh_name(&format!("{out_name}_matmul"));
        let name = sibling_name(g, &n.name, "MatMul");
        let mm = g.add_op(name, Op::MatMul, &[Some(n.x), Some(w_port)], &[&mm_out]);
        built.push(mm);
        match b_port {
            Some(b) => {
                let temp = g.fresh_name(&format!("{out_name}_merged"));
                let name = sibling_name(g, &n.name, "Add");
                let add = g.add_op(
                    name,
                    Op::Binary(BinaryOp::Add),
                    &[Some(Port::new(mm, 0)), Some(b)],
                    &[&temp],
                );
                built.push(add);
                Port::new(add, 0)
            }
            None => Port::new(mm, 0),
        }
    };
    infer_new_nodes(g, &built).with_context(|| format!("layer '{layer}'"))?;
    finish_layer(g, n, final_port);
    Ok(())
}

/// Folds every GloraLinear node into plain weights under `configs`, which must
/// name every adapted layer.
pub fn reparameterize(g: &mut Graph, configs: &ModelConfig) -> anyhow::Result<PassReport> {
    rewrite_glora_layers(g, configs, "reparameterize", |g, n, config| {
        reparameterize_layer(g, n, config)
    })
}

/// Rewrites every GloraLinear node with `rewrite` under its config, checking first
/// that `configs` names every adapted layer so that a bad config changes nothing.
pub(crate) fn rewrite_glora_layers(
    g: &mut Graph,
    configs: &ModelConfig,
    pass: &'static str,
    mut rewrite: impl FnMut(&mut Graph, &GloraNode, &LayerConfig) -> anyhow::Result<()>,
) -> anyhow::Result<PassReport> {
    let layers = glora_layers(g);
    let mut chosen = Vec::with_capacity(layers.len());
    for l in &layers {
        let config = configs
            .get(&l.name)
            .ok_or_else(|| anyhow!("the config has no entry for GLoRA layer '{}'", l.name))?;
        chosen.push((l, config));
    }
    for (l, config) in chosen {
        let n = read_glora_node(g, l.node)?;
        rewrite(g, &n, config).with_context(|| format!("{pass}: layer '{}'", l.name))?;
    }
    g.validate()
        .with_context(|| format!("graph check after {pass}"))?;
    Ok(PassReport {
        pass,
        changed: layers.len(),
    })
}
