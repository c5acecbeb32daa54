//! A new classification head on a chosen tensor of a backbone: pooling over tokens
//! (the class token, the mean of the tokens, or none for features that are already
//! one vector per sample) and a trainable linear layer to `num_classes` logits. Real
//! backbones end in features, not in the classes of the user's task; the trainer
//! attaches this head, the artifact stores its weights beside the adapters, and
//! export keeps it as a plain MatMul + Add.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, anyhow, bail};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::ir::infer::infer_types;
use crate::ir::{BinaryOp, DType, Graph, Op, Port, ReduceOp, Tensor};

/// Value names of the head's weight `[dim, classes]` and bias `[classes]`.
pub const HEAD_WEIGHT: &str = "glora_head.weight";
pub const HEAD_BIAS: &str = "glora_head.bias";
/// Value name of the head's output.
pub const LOGITS: &str = "glora_logits";

/// How token features become one vector per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// Token 0 of `[batch, tokens, dim]` (the class token of a ViT).
    Cls,
    /// The mean over the tokens of `[batch, tokens, dim]`.
    Mean,
    /// The features are already `[batch, dim]`.
    None,
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pool::Cls => "cls",
            Pool::Mean => "mean",
            Pool::None => "none",
        })
    }
}

impl FromStr for Pool {
    type Err = String;
    fn from_str(s: &str) -> Result<Pool, String> {
        match s {
            "cls" => Ok(Pool::Cls),
            "mean" => Ok(Pool::Mean),
            "none" => Ok(Pool::None),
            other => Err(format!(
                "unknown pooling '{other}' (expected cls, mean or none)"
            )),
        }
    }
}

/// Where a head sits and what it computes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    /// The value (a graph output or any node output) the head reads.
    pub features: String,
    pub pool: Pool,
    pub num_classes: usize,
    /// Width of the pooled features.
    pub dim: usize,
    /// For `mean` pooling: the `[batch, tokens]` input whose non-zero entries mark the
    /// tokens averaged (a text model's `attention_mask`); `None` averages them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// The name of each class, in logit order, when the data named them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// The feature value a head on `g` reads by default: its first output.
pub fn default_features(g: &Graph) -> anyhow::Result<String> {
    let p = g
        .outputs
        .first()
        .ok_or_else(|| anyhow!("the model has no outputs to attach a head to"))?;
    Ok(g.value(*p).name.clone())
}

/// The pooling that suits a feature value of this rank: `cls` for token sequences,
/// `none` for vectors.
pub fn default_pool(rank: usize) -> Pool {
    if rank == 3 { Pool::Cls } else { Pool::None }
}

/// Works out the head for `features` in `g` (types must be inferred): checks the
/// value exists and that its rank suits `pool`, and reads the feature width.
pub fn plan_head(
    g: &Graph,
    features: &str,
    pool: Pool,
    num_classes: usize,
) -> anyhow::Result<HeadSpec> {
    if num_classes < 2 {
        bail!("a classification head needs at least 2 classes, got {num_classes}");
    }
    let port = g
        .find_value(features)
        .ok_or_else(|| anyhow!("the model has no value named '{features}' for --features"))?;
    let ty = g
        .value_type(port)
        .ok_or_else(|| anyhow!("value '{features}' has no known type"))?;
    let rank = ty.shape.rank();
    let want = if pool == Pool::None { 2 } else { 3 };
    if rank != want {
        bail!(
            "value '{features}' is {ty}; --pool {pool} needs rank {want} ([batch{}, dim])",
            if want == 3 { ", tokens" } else { "" }
        );
    }
    let dim = ty.shape.dims()[rank - 1]
        .known()
        .ok_or_else(|| anyhow!("value '{features}' ({ty}) has no known feature width"))?;
    if !ty.dtype.is_float() {
        bail!("value '{features}' is {ty}; a head reads float features");
    }
    Ok(HeadSpec {
        features: features.to_string(),
        pool,
        num_classes,
        dim,
        mask: None,
        labels: Vec::new(),
    })
}

/// `spec` averaging only the tokens that `mask` (an input of `g`, `[batch, tokens]`)
/// marks; an error when `g` has no such input.
pub fn with_mask(g: &Graph, mut spec: HeadSpec, mask: &str) -> anyhow::Result<HeadSpec> {
    let is_input = g.inputs.iter().any(|&i| g.node(i).name == mask);
    if !is_input {
        bail!("the model has no input '{mask}' to mask the mean pooling with");
    }
    spec.mask = Some(mask.to_string());
    Ok(spec)
}

/// Fresh head weights: a weight with entries from N(0, 0.02²) truncated at two
/// deviations (drawn by the seeded `rng`) and a zero bias.
pub fn init_head(spec: &HeadSpec, seed: u64) -> anyhow::Result<(Tensor, Tensor)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = spec.dim * spec.num_classes;
    let w: Vec<f32> = (0..n)
        .map(|_| {
            // Irwin–Hall sum of uniforms, close to a unit normal, clamped at ±2.
            let s: f32 = (0..12).map(|_| rng.random_range(0.0f32..1.0)).sum::<f32>() - 6.0;
            0.02 * s.clamp(-2.0, 2.0)
        })
        .collect();
    Ok((
        Tensor::from_f32(vec![spec.dim, spec.num_classes], w)?,
        Tensor::from_f32(vec![spec.num_classes], vec![0.0; spec.num_classes])?,
    ))
}

/// Adds the head to `g` with the given weights (as `Param` nodes) and makes its
/// logits the graph's only output. Returns the logits port.
pub fn attach_head(
    g: &mut Graph,
    spec: &HeadSpec,
    weight: Tensor,
    bias: Tensor,
) -> anyhow::Result<Port> {
    if weight.shape() != [spec.dim, spec.num_classes] || bias.shape() != [spec.num_classes] {
        bail!(
            "head weights are {:?} and {:?}, expected [{}, {}] and [{}]",
            weight.shape(),
            bias.shape(),
            spec.dim,
            spec.num_classes,
            spec.num_classes
        );
    }
    for name in [HEAD_WEIGHT, HEAD_BIAS, LOGITS] {
        if g.find_value(name).is_some() {
            bail!("the model already has a value named '{name}'");
        }
    }
    let features = g
        .find_value(&spec.features)
        .ok_or_else(|| anyhow!("the model has no value named '{}'", spec.features))?;
    let pooled = match spec.pool {
        Pool::None => features,
        Pool::Cls => {
            let idx = Port::new(
                g.add_const("glora_head.cls_index", Tensor::scalar_i64(0)),
                0,
            );
            let id = g.add_op(
                "glora_head.pool",
                Op::Gather { axis: 1 },
                &[Some(features), Some(idx)],
                &["glora_head.pooled"],
            );
            Port::new(id, 0)
        }
        Pool::Mean => match &spec.mask {
            None => {
                let id = g.add_op(
                    "glora_head.pool",
                    Op::Reduce {
                        op: ReduceOp::Mean,
                        axes: Some(vec![1]),
                        keepdims: false,
                        noop_with_empty_axes: false,
                    },
                    &[Some(features)],
                    &["glora_head.pooled"],
                );
                Port::new(id, 0)
            }
            Some(mask) => masked_mean(g, features, mask)?,
        },
    };
    let w = Port::new(g.add_param(HEAD_WEIGHT, weight), 0);
    let b = Port::new(g.add_param(HEAD_BIAS, bias), 0);
    let mm = g.add_op(
        "glora_head.matmul",
        Op::MatMul,
        &[Some(pooled), Some(w)],
        &["glora_head.product"],
    );
    let add = g.add_op(
        "glora_head.bias_add",
        Op::Binary(BinaryOp::Add),
        &[Some(Port::new(mm, 0)), Some(b)],
        &[LOGITS],
    );
    let logits = Port::new(add, 0);
    g.outputs = vec![logits];
    infer_types(g).context("type inference after attaching the head")?;
    Ok(logits)
}

/// `Σ_t x[b,t,:]·m[b,t] / max(Σ_t m[b,t], 1)`: the mean of the tokens the mask input
/// marks, as sentence-transformers pools a text encoder.
fn masked_mean(g: &mut Graph, x: Port, mask: &str) -> anyhow::Result<Port> {
    let m = g
        .inputs
        .iter()
        .find(|&&i| g.node(i).name == mask)
        .map(|&i| Port::new(i, 0))
        .ok_or_else(|| anyhow!("the model has no input '{mask}' to mask the mean pooling with"))?;
    let one = Port::new(g.add_const("glora_head.one", Tensor::scalar_f32(1.0)), 0);
    let mut op = |name: &str, op: Op, inputs: &[Port]| {
        let inputs: Vec<Option<Port>> = inputs.iter().copied().map(Some).collect();
        let node = format!("glora_head.{name}");
        Port::new(g.add_op(node.clone(), op, &inputs, &[node.as_str()]), 0)
    };
    let sum = |axes: Vec<i64>| Op::Reduce {
        op: ReduceOp::Sum,
        axes: Some(axes),
        keepdims: false,
        noop_with_empty_axes: false,
    };
    let m = op("mask_f32", Op::Cast { to: DType::F32 }, &[m]);
    let m = op("mask_col", Op::Unsqueeze { axes: vec![2] }, &[m]);
    let picked = op("masked", Op::Binary(BinaryOp::Mul), &[x, m]);
    let total = op("masked_sum", sum(vec![1]), &[picked]);
    let count = op("mask_count", sum(vec![1]), &[m]);
    // A lower bound of 1 keeps a row of padding alone finite.
    let count = op("mask_count_at_least_1", Op::Clip, &[count, one]);
    Ok(op("pooled", Op::Binary(BinaryOp::Div), &[total, count]))
}

/// Gives the head's nodes and values deployment names (`head.weight`, `logits`, …,
/// made unique against the rest of the model), so that an exported model can be
/// adapted again with a new head of its own.
pub fn rename_head_for_export(g: &mut Graph) {
    for id in g.node_ids() {
        let node = g.node(id);
        if !node.name.starts_with("glora_head.") && node.name != LOGITS {
            continue;
        }
        let node_name = g.fresh_name(node.name.trim_start_matches("glora_"));
        let value_names: Vec<String> = node
            .outputs
            .iter()
            .map(|v| g.fresh_name(v.name.trim_start_matches("glora_")))
            .collect();
        let node = g.node_mut(id);
        node.name = node_name;
        for (v, n) in node.outputs.iter_mut().zip(value_names) {
            v.name = n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DType, Dim, Shape, TensorType};

    fn tokens() -> Graph {
        let mut g = Graph::new("backbone");
        let x = g.add_input(
            "tokens",
            TensorType::new(
                DType::F32,
                Shape(vec![Dim::sym("batch"), Dim::Known(3), Dim::Known(2)]),
            ),
        );
        g.outputs = vec![Port::new(x, 0)];
        infer_types(&mut g).unwrap();
        g
    }

    #[test]
    fn cls_and_mean_heads_by_hand() {
        let x = Tensor::from_f32(vec![1, 3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let w = Tensor::from_f32(vec![2, 2], vec![1.0, 0.0, 0.0, 2.0]).unwrap();
        let b = Tensor::from_f32(vec![2], vec![0.5, -0.5]).unwrap();
        for (pool, want) in [(Pool::Cls, [1.5, 3.5]), (Pool::Mean, [3.5, 7.5])] {
            let mut g = tokens();
            let spec = plan_head(&g, "tokens", pool, 2).unwrap();
            assert_eq!(spec.dim, 2);
            attach_head(&mut g, &spec, w.clone(), b.clone()).unwrap();
            let out = crate::exec::run_cpu(&g, &[("tokens".into(), x.clone())]).unwrap();
            assert_eq!(out[0].shape(), &[1, 2]);
            assert_eq!(out[0].to_f32_vec(), want.to_vec(), "{pool}");
            rename_head_for_export(&mut g);
            assert!(g.find_value("head.weight").is_some() && g.find_value("logits").is_some());
            assert!(g.find_value(HEAD_WEIGHT).is_none());
            // A second head on the renamed model does not clash.
            let spec = plan_head(&g, "tokens", pool, 2).unwrap();
            attach_head(&mut g, &spec, w.clone(), b.clone()).unwrap();
        }
    }

    #[test]
    fn masked_mean_averages_only_marked_tokens_by_hand() {
        let mut g = tokens();
        g.add_input(
            "attention_mask",
            TensorType::new(DType::I64, Shape(vec![Dim::sym("batch"), Dim::Known(3)])),
        );
        let spec = plan_head(&g, "tokens", Pool::Mean, 2).unwrap();
        let spec = with_mask(&g, spec, "attention_mask").unwrap();
        assert!(with_mask(&g, spec.clone(), "nope").is_err());
        let w = Tensor::from_f32(vec![2, 2], vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let b = Tensor::from_f32(vec![2], vec![0.0, 0.0]).unwrap();
        attach_head(&mut g, &spec, w, b).unwrap();
        // Row 0 keeps tokens 0 and 1: (1+3)/2, (2+4)/2. Row 1 is all padding: 0.
        let x = Tensor::from_f32(
            vec![2, 3, 2],
            vec![
                1.0, 2.0, 3.0, 4.0, 50.0, 60.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0,
            ],
        )
        .unwrap();
        let m = Tensor::from_i64(vec![2, 3], vec![1, 1, 0, 0, 0, 0]).unwrap();
        let out = crate::exec::run_cpu(&g, &[("tokens".into(), x), ("attention_mask".into(), m)])
            .unwrap();
        assert_eq!(out[0].to_f32_vec(), [2.0, 3.0, 0.0, 0.0]);
    }

    #[test]
    fn bad_features_are_named() {
        let g = tokens();
        let e = plan_head(&g, "nope", Pool::Cls, 3).unwrap_err();
        assert!(e.to_string().contains("'nope'"), "{e}");
        let e = plan_head(&g, "tokens", Pool::None, 3).unwrap_err();
        assert!(e.to_string().contains("rank 2"), "{e}");
        let e = plan_head(&g, "tokens", Pool::Cls, 1).unwrap_err();
        assert!(e.to_string().contains("2 classes"), "{e}");
        assert_eq!(default_pool(3), Pool::Cls);
        assert_eq!("mean".parse::<Pool>().unwrap(), Pool::Mean);
    }
}
