//! DistilBERT from a Hugging Face checkpoint: BERT's post-norm encoder with half the
//! layers, no token types and no pooler, under its own module names
//! (`transformer.layer.N.attention.{q_lin,k_lin,v_lin,out_lin}`, `sa_layer_norm`,
//! `ffn.lin1`, `ffn.lin2`, `output_layer_norm`).
//!
//! Inputs `input_ids`, `attention_mask` i64 `[batch, sequence]`; output
//! `last_hidden_state` `[batch, sequence, dim]`.

use serde::Deserialize;

use super::ModelError;
use super::attention::{multi_head, padding_bias};
use super::builder::{GraphBuilder, Scope};
use super::hf_config::{
    Activation, HfConfig, d6, d12, d512, d768, d3072, default_init_range, gelu,
};
use super::weights::Init;
use super::{BuiltModel, token_input};
use crate::ir::{Op, Port};

/// DistilBERT's LayerNorm epsilon, fixed in transformers' code rather than the config.
const EPS: f32 = 1e-12;

#[derive(Clone, Debug, Deserialize)]
pub struct DistilBertConfig {
    pub vocab_size: usize,
    #[serde(default = "d768")]
    pub dim: usize,
    #[serde(default = "d6")]
    pub n_layers: usize,
    #[serde(default = "d12")]
    pub n_heads: usize,
    #[serde(default = "d3072")]
    pub hidden_dim: usize,
    #[serde(default = "gelu")]
    pub activation: String,
    #[serde(default = "d512")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
}

pub const MODEL_TYPES: [&str; 1] = ["distilbert"];
pub const PREFIXES: [&str; 1] = ["distilbert."];

pub fn build(hf: &HfConfig, b: &mut GraphBuilder<'_>) -> Result<BuiltModel, ModelError> {
    let cfg: DistilBertConfig = hf.typed()?;
    if cfg.n_heads == 0 || !cfg.dim.is_multiple_of(cfg.n_heads) {
        return Err(hf.error(
            "n_heads",
            format!("{} heads do not divide dim {}", cfg.n_heads, cfg.dim),
        ));
    }
    let act = Activation::parse(hf, "activation", &cfg.activation)?;
    let ids = b.input("input_ids", token_input());
    let mask = b.input("attention_mask", token_input());
    let mut root = b.root();
    let mut x = embeddings(&mut root.pp("embeddings"), &cfg, ids)?;
    let bias = padding_bias(&mut root.pp("extended_attention_mask"), mask);
    let mut tr = root.pp("transformer");
    for i in 0..cfg.n_layers {
        x = layer(&mut tr.pp(&format!("layer.{i}")), &cfg, act, x, bias)?;
    }
    drop(tr);
    let last = root.op_as("Identity", Op::Identity, &[x], super::LAST_HIDDEN_STATE);
    b.g.outputs.push(last);
    Ok(BuiltModel {
        max_positions: Some(cfg.max_position_embeddings),
    })
}

fn embeddings(s: &mut Scope<'_, '_>, c: &DistilBertConfig, ids: Port) -> Result<Port, ModelError> {
    let std = c.initializer_range;
    let words = s
        .pp("word_embeddings")
        .embedding(ids, c.vocab_size, c.dim, std)?;
    let table = s.pp("position_embeddings").weight(
        "weight",
        &[c.max_position_embeddings, c.dim],
        Init::Normal(std),
    )?;
    let positions = s.first_rows(table, ids);
    let x = s.add(words, positions);
    s.pp("LayerNorm").layer_norm(x, c.dim, EPS)
}

fn layer(
    s: &mut Scope<'_, '_>,
    c: &DistilBertConfig,
    act: Activation,
    x: Port,
    bias: Port,
) -> Result<Port, ModelError> {
    let (d, std) = (c.dim, c.initializer_range);
    let mut att = s.pp("attention");
    let q = att.pp("q_lin").linear(x, d, d, true, std)?;
    let k = att.pp("k_lin").linear(x, d, d, true, std)?;
    let v = att.pp("v_lin").linear(x, d, d, true, std)?;
    let ctx = multi_head(&mut att, q, k, v, c.n_heads, d / c.n_heads, Some(bias));
    let y = att.pp("out_lin").linear(ctx, d, d, true, std)?;
    drop(att);
    let y = s.add(y, x);
    let attended = s.pp("sa_layer_norm").layer_norm(y, d, EPS)?;
    let mut ffn = s.pp("ffn");
    let m = ffn
        .pp("lin1")
        .linear(attended, d, c.hidden_dim, true, std)?;
    let m = act.apply(&mut ffn, m);
    let m = ffn.pp("lin2").linear(m, c.hidden_dim, d, true, std)?;
    drop(ffn);
    let y = s.add(m, attended);
    s.pp("output_layer_norm").layer_norm(y, d, EPS)
}
