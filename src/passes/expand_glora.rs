//! Expansion: rewrites every GloraLinear node, under its layer's config, as
//! standard IR ops that compute the unmerged forward on activations, the way the
//! adapter op itself computes it (glora-spec §6, compute notes):
//!
//! `y = x·W0` (MatMul, or Gemm for a `[d_out, d_in]` W0), then `y·(1+a)` for an A
//! vector or constant, `+ x·(W0⊙(Ad_r·Au_r))` for A LoRA, `+ (x·Bu_rᵀ)·Bd_rᵀ` for B
//! LoRA, `+ ReduceSum(x)·b` for a B vector or constant, and one `Add` of the bias
//! `b0 + b0⊙D + E + W0·C`. The sliced adapter values become `Const` nodes; W0 is
//! the base model's constant. The result exports as the "unmerged" ONNX model and
//! serves as an independent reference for the executor and the merge.

use anyhow::{anyhow, bail};

use crate::glora::{AbOption, AdapterTensors, COption, DeOption, LayerConfig, ModelConfig, merge};
use crate::ir::{BinaryOp, GemmAttrs, Graph, NodeIndex, Op, Port, ReduceOp, Tensor, WeightLayout};

use super::PassReport;
use super::insert_glora::transpose;
use super::reparameterize::{
    GloraNode, finish_layer, infer_new_nodes, rewrite_glora_layers, sibling_name,
};

/// Builds the nodes of one expanded layer, naming constants and values after it.
struct Emit<'g> {
    g: &'g mut Graph,
    layer: String,
    node_name: String,
    built: Vec<NodeIndex>,
}

impl Emit<'_> {
    fn constant(&mut self, what: &str, t: Tensor) -> Port {
        let name = self.g.fresh_name(&format!("{}.expand.{what}", self.layer));
        Port::new(self.g.add_const(name, t), 0)
    }

    fn op(&mut self, what: &str, op: Op, inputs: &[Option<Port>]) -> Port {
        let out = self.g.fresh_name(&format!("{}.expand.{what}", self.layer));
        let name = sibling_name(self.g, &self.node_name, op.name());
        let id = self.g.add_op(name, op, inputs, &[&out]);
        self.built.push(id);
        Port::new(id, 0)
    }

    fn add(&mut self, what: &str, a: Port, b: Port) -> Port {
        self.op(what, Op::Binary(BinaryOp::Add), &[Some(a), Some(b)])
    }

    fn mul(&mut self, what: &str, a: Port, b: Port) -> Port {
        self.op(what, Op::Binary(BinaryOp::Mul), &[Some(a), Some(b)])
    }

    /// `x·W` for a weight port in `[d_in, d_out]` (MatMul) or `[d_out, d_in]` (Gemm).
    fn product(&mut self, what: &str, x: Port, w: Port, w_layout: WeightLayout) -> Port {
        match w_layout {
            WeightLayout::InOut => self.op(what, Op::MatMul, &[Some(x), Some(w)]),
            WeightLayout::OutIn => {
                let attrs = GemmAttrs {
                    trans_b: true,
                    ..GemmAttrs::default()
                };
                self.op(what, Op::Gemm(attrs), &[Some(x), Some(w), None])
            }
        }
    }
}

fn values(t: &Tensor) -> anyhow::Result<&[f32]> {
    t.as_f32()
        .ok_or_else(|| anyhow!("adapter tensor holds {}, expected f32", t.dtype()))
}

/// `down[:, :r] · up[:r, :]` for `down` `[rows, stride]` and `up` `[stride, cols]`,
/// accumulated in f64.
fn low_rank(
    down: &[f32],
    up: &[f32],
    rows: usize,
    cols: usize,
    stride: usize,
    r: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        for j in 0..cols {
            let dot: f64 = (0..r)
                .map(|k| down[i * stride + k] as f64 * up[k * cols + j] as f64)
                .sum();
            out.push(dot as f32);
        }
    }
    out
}

/// The first `r` columns of a row-major matrix with `stride` columns.
fn leading_columns(m: &[f32], stride: usize, r: usize) -> Vec<f32> {
    m.chunks_exact(stride)
        .flat_map(|row| row[..r].iter().copied())
        .collect()
}

/// `b0 + b0⊙D + E + W0·C`, the bias terms alone, through the merge.
fn bias_terms(n: &GloraNode, config: &LayerConfig) -> anyhow::Result<Vec<f32>> {
    let bias_only = LayerConfig {
        a: AbOption::None,
        b: AbOption::None,
        ..*config
    };
    let merged = merge(
        &n.w0_out_in,
        n.b0_values.as_deref(),
        n.shape(),
        &bias_only,
        &n.adapters,
    )?;
    Ok(merged.bias)
}

fn expand_layer(g: &mut Graph, n: &GloraNode, config: &LayerConfig) -> anyhow::Result<()> {
    let (d_in, d_out) = (n.attrs.d_in, n.attrs.d_out);
    let t: &AdapterTensors = &n.adapters;
    let stride = t.rank();
    if let Some((slot, r)) = config.lora_ranks().find(|&(_, r)| r > stride) {
        bail!("option {slot} reads rank {r}, but the adapter is stored at rank {stride}");
    }
    let x_rank = g.value_type(n.x).map(|ty| ty.shape.rank());
    // Gemm needs a 2-D x; otherwise W0 is read as a [d_in, d_out] MatMul operand.
    let layout = match n.attrs.layout {
        WeightLayout::OutIn if x_rank.is_none_or(|r| r == 2) => WeightLayout::OutIn,
        _ => WeightLayout::InOut,
    };
    let w0_for = |out_in: &[f32]| -> anyhow::Result<Tensor> {
        Ok(match layout {
            WeightLayout::OutIn => Tensor::from_f32(vec![d_out, d_in], out_in.to_vec())?,
            WeightLayout::InOut => {
                Tensor::from_f32(vec![d_in, d_out], transpose(out_in, d_out, d_in))?
            }
        })
    };
    let bias = bias_terms(n, config)?;
    let mut e = Emit {
        g,
        layer: n.attrs.layer.clone(),
        node_name: n.name.clone(),
        built: Vec::new(),
    };
    let w0 = if layout == n.attrs.layout {
        n.w0
    } else {
        e.constant("W0", w0_for(&n.w0_out_in)?)
    };
    let mut y = e.product("base", n.x, w0, layout);

    let ad = values(t.ad())?;
    match config.a {
        AbOption::Vector => {
            let scale: Vec<f32> = (0..d_out).map(|i| 1.0 + ad[i * stride]).collect();
            let c = e.constant("A_scale", Tensor::from_f32(vec![d_out], scale)?);
            y = e.mul("A", y, c);
        }
        AbOption::Constant => {
            let c = e.constant("A_scale", Tensor::scalar_f32(1.0 + ad[0]));
            y = e.mul("A", y, c);
        }
        AbOption::Lora(r) => {
            let m = low_rank(ad, values(t.au())?, d_out, d_in, stride, r);
            let masked: Vec<f32> = n.w0_out_in.iter().zip(&m).map(|(w, a)| w * a).collect();
            let c = e.constant("W0_A", w0_for(&masked)?);
            let term = e.product("A_term", n.x, c, layout);
            y = e.add("A", y, term);
        }
        AbOption::None => {}
    }

    let bd = values(t.bd())?;
    match config.b {
        AbOption::Lora(r) => {
            let bu = values(t.bu())?;
            let bu_t = transpose(&bu[..r * d_in], r, d_in);
            let bd_t = transpose(&leading_columns(bd, stride, r), d_out, r);
            let up = e.constant("Bu_T", Tensor::from_f32(vec![d_in, r], bu_t)?);
            let down = e.constant("Bd_T", Tensor::from_f32(vec![r, d_out], bd_t)?);
            let hidden = e.op("B_hidden", Op::MatMul, &[Some(n.x), Some(up)]);
            let term = e.op("B_term", Op::MatMul, &[Some(hidden), Some(down)]);
            y = e.add("B", y, term);
        }
        AbOption::Vector | AbOption::Constant => {
            let sum_op = Op::Reduce {
                op: ReduceOp::Sum,
                axes: Some(vec![-1]),
                keepdims: true,
                noop_with_empty_axes: false,
            };
            let sum = e.op("x_sum", sum_op, &[Some(n.x)]);
            let b = if config.b == AbOption::Vector {
                let col: Vec<f32> = (0..d_out).map(|i| bd[i * stride]).collect();
                Tensor::from_f32(vec![d_out], col)?
            } else {
                Tensor::scalar_f32(bd[0])
            };
            let c = e.constant("B_vector", b);
            let term = e.mul("B_term", sum, c);
            y = e.add("B", y, term);
        }
        AbOption::None => {}
    }

    let has_bias = n.attrs.has_bias || config.e != DeOption::None || config.c != COption::None;
    if has_bias {
        let c = e.constant("bias", Tensor::from_f32(vec![d_out], bias)?);
        y = e.add("bias_add", y, c);
    }
    let built = std::mem::take(&mut e.built);
    infer_new_nodes(g, &built)?;
    finish_layer(g, n, y);
    Ok(())
}

/// Rewrites every GloraLinear node as standard ops computing its unmerged forward
/// under `configs`, which must name every adapted layer.
pub fn expand_glora(g: &mut Graph, configs: &ModelConfig) -> anyhow::Result<PassReport> {
    rewrite_glora_layers(g, configs, "expand_glora", |g, n, config| {
        expand_layer(g, n, config)
    })
}
