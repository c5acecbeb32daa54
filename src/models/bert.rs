//! The BERT family from a Hugging Face checkpoint: `bert` and the RoBERTa variants
//! (`roberta`, `xlm-roberta`, `camembert`), which differ only in how position ids
//! are made (RoBERTa counts real tokens from `pad_token_id + 1`) and in having one
//! token type. Post-norm encoder layers (`attention.self.{query,key,value}`,
//! `attention.output.dense` + LayerNorm, `intermediate.dense`, `output.dense` +
//! LayerNorm) and the optional tanh pooler on the first token.
//!
//! Inputs `input_ids`, `attention_mask` (and `token_type_ids` where the model has
//! two or more token types), i64 `[batch, sequence]`; outputs `last_hidden_state`
//! `[batch, sequence, hidden]` and, with a pooler, `pooler_output` `[batch, hidden]`.

use serde::Deserialize;

use super::ModelError;
use super::attention::{multi_head, padding_bias};
use super::builder::{GraphBuilder, Scope};
use super::hf_config::{
    Activation, HfConfig, d2, d12, d512, d768, d3072, default_init_range, default_layer_norm_eps,
    gelu,
};
use super::{BuiltModel, token_input};
use crate::ir::{BinaryOp, DType, Op, Port, Tensor, UnaryOp};

/// The `config.json` keys this family reads, with transformers' defaults.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    #[serde(default = "d768")]
    pub hidden_size: usize,
    #[serde(default = "d12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d12")]
    pub num_attention_heads: usize,
    #[serde(default = "d3072")]
    pub intermediate_size: usize,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    #[serde(default = "d512")]
    pub max_position_embeddings: usize,
    #[serde(default = "d2")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    pub pad_token_id: Option<i64>,
    pub position_embedding_type: Option<String>,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
}

/// The `model_type`s this file builds.
pub const MODEL_TYPES: [&str; 4] = ["bert", "roberta", "xlm-roberta", "camembert"];

/// Prefixes under which task models (`BertForSequenceClassification`, …) store the
/// base model's weights.
pub const PREFIXES: [&str; 2] = ["bert.", "roberta."];

struct Plan {
    cfg: BertConfig,
    act: Activation,
    roberta: bool,
    head_dim: usize,
    eps: f32,
}

/// Checks a configuration and builds the encoder from `b`'s weights.
pub fn build(hf: &HfConfig, b: &mut GraphBuilder<'_>) -> Result<BuiltModel, ModelError> {
    let cfg: BertConfig = hf.typed()?;
    let roberta = hf.model_type != "bert";
    if let Some(t) = cfg.position_embedding_type.as_deref()
        && t != "absolute"
    {
        return Err(hf.error(
            "position_embedding_type",
            format!("{t:?} is not supported (only \"absolute\")"),
        ));
    }
    if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
        return Err(hf.error(
            "num_attention_heads",
            format!(
                "{} heads do not divide hidden_size {}",
                cfg.num_attention_heads, cfg.hidden_size
            ),
        ));
    }
    if cfg.type_vocab_size == 0 {
        return Err(hf.error("type_vocab_size", "must be at least 1"));
    }
    let act = Activation::parse(hf, "hidden_act", &cfg.hidden_act)?;
    let plan = Plan {
        head_dim: cfg.hidden_size / cfg.num_attention_heads,
        eps: cfg.layer_norm_eps as f32,
        cfg,
        act,
        roberta,
    };
    let ids = b.input("input_ids", token_input());
    let mask = b.input("attention_mask", token_input());
    let types = (plan.cfg.type_vocab_size > 1).then(|| b.input("token_type_ids", token_input()));
    let has_pooler = b.has("pooler.dense.weight");
    let mut root = b.root();
    let mut x = embeddings(&mut root.pp("embeddings"), &plan, ids, types)?;
    let bias = padding_bias(&mut root.pp("extended_attention_mask"), mask);
    let mut enc = root.pp("encoder");
    for i in 0..plan.cfg.num_hidden_layers {
        x = layer(&mut enc.pp(&format!("layer.{i}")), &plan, x, bias)?;
    }
    drop(enc);
    let h = plan.cfg.hidden_size;
    let last = root.op_as("Identity", Op::Identity, &[x], super::LAST_HIDDEN_STATE);
    let mut outputs = vec![last];
    if has_pooler {
        let mut p = root.pp("pooler");
        let first = p.pick(last, 1, 0);
        let y = p
            .pp("dense")
            .linear(first, h, h, true, plan.cfg.initializer_range)?;
        outputs.push(p.op_as("Tanh", Op::Unary(UnaryOp::Tanh), &[y], super::POOLER_OUTPUT));
    }
    b.g.outputs.extend(outputs);
    Ok(BuiltModel {
        max_positions: Some(if roberta {
            plan.cfg
                .max_position_embeddings
                .saturating_sub(plan.cfg.pad_token_id.unwrap_or(1).max(0) as usize + 1)
        } else {
            plan.cfg.max_position_embeddings
        }),
    })
}

/// Word + position (+ token type) embeddings, then LayerNorm.
fn embeddings(
    s: &mut Scope<'_, '_>,
    p: &Plan,
    ids: Port,
    types: Option<Port>,
) -> Result<Port, ModelError> {
    let (h, std) = (p.cfg.hidden_size, p.cfg.initializer_range);
    let words = s
        .pp("word_embeddings")
        .embedding(ids, p.cfg.vocab_size, h, std)?;
    let positions = if p.roberta {
        roberta_positions(s, p, ids)?
    } else {
        let table = s.pp("position_embeddings").weight(
            "weight",
            &[p.cfg.max_position_embeddings, h],
            super::weights::Init::Normal(std),
        )?;
        s.first_rows(table, ids)
    };
    let mut x = s.add(words, positions);
    let mut tt = s.pp("token_type_embeddings");
    let type_emb = match types {
        Some(t) => tt.embedding(t, p.cfg.type_vocab_size, h, std)?,
        // A single token type: every token adds its row 0.
        None => {
            let table = tt.weight(
                "weight",
                &[p.cfg.type_vocab_size, h],
                super::weights::Init::Normal(std),
            )?;
            tt.pick(table, 0, 0)
        }
    };
    x = s.add(x, type_emb);
    s.pp("LayerNorm").layer_norm(x, h, p.eps)
}

/// RoBERTa's position embeddings: position `pad + k` for the k-th real token of a
/// row (counting from 1) and `pad` for padding, looked up in the table. The running
/// count is a product with a lower-triangular matrix of ones, sliced to the sequence
/// length, so that the graph stays exportable without CumSum.
fn roberta_positions(s: &mut Scope<'_, '_>, p: &Plan, ids: Port) -> Result<Port, ModelError> {
    let (n, h) = (p.cfg.max_position_embeddings, p.cfg.hidden_size);
    let pad = p.cfg.pad_token_id.unwrap_or(1);
    // The table first: its stored shape vouches for `n` before n² entries are made.
    let table = s.pp("position_embeddings").weight(
        "weight",
        &[n, h],
        super::weights::Init::Normal(p.cfg.initializer_range),
    )?;
    let cells = n
        .checked_mul(n)
        .ok_or_else(|| ModelError::Config(format!("max_position_embeddings {n} is too large")))?;
    let mut e = s.pp("position_ids");
    let pad_t = e.constant("pad", Tensor::scalar_i64(pad));
    let is_pad = e.binary(BinaryOp::Equal, ids, pad_t);
    let zero = e.constant("zero", Tensor::scalar_f32(0.0));
    let one = e.constant("one", Tensor::scalar_f32(1.0));
    let real = e.op("Where", Op::Where, &[is_pad, zero, one]);
    // tri[j][i] = 1 for i ≤ j: row j of tri · real counts the real tokens up to j.
    let mut tri = vec![0.0f32; cells];
    for j in 0..n {
        for v in &mut tri[j * n..=j * n + j] {
            *v = 1.0;
        }
    }
    let tri = e.constant(
        "running_count",
        Tensor::from_f32(vec![n, n], tri).map_err(|source| ModelError::Tensor {
            name: "position_ids.running_count".into(),
            source,
        })?,
    );
    let len = e.op(
        "Shape",
        Op::Shape {
            start: 1,
            end: Some(2),
        },
        &[ids],
    );
    let ends = e.op("Concat", Op::Concat { axis: 0 }, &[len, len]);
    let starts = e.constant("starts", Tensor::vec_i64(vec![0, 0]));
    let axes = e.constant("axes", Tensor::vec_i64(vec![0, 1]));
    let tri = e.op("Slice", Op::Slice, &[tri, starts, ends, axes]);
    let col = e.unsqueeze(real, &[2]);
    // The constant is the left operand, so the product is not taken for a linear layer.
    let count = e.op("MatMul", Op::MatMul, &[tri, col]);
    let count = e.op(
        "Squeeze",
        Op::Squeeze {
            axes: Some(vec![2]),
        },
        &[count],
    );
    let count = e.mul(count, real);
    let count = e.cast(count, DType::I64);
    let pos = e.add(count, pad_t);
    drop(e);
    Ok(s.pp("position_embeddings")
        .op("Gather", Op::Gather { axis: 0 }, &[table, pos]))
}

fn layer(s: &mut Scope<'_, '_>, p: &Plan, x: Port, bias: Port) -> Result<Port, ModelError> {
    let (h, std) = (p.cfg.hidden_size, p.cfg.initializer_range);
    let mut att = s.pp("attention");
    let ctx = {
        let mut sa = att.pp("self");
        let q = sa.pp("query").linear(x, h, h, true, std)?;
        let k = sa.pp("key").linear(x, h, h, true, std)?;
        let v = sa.pp("value").linear(x, h, h, true, std)?;
        multi_head(
            &mut sa,
            q,
            k,
            v,
            p.cfg.num_attention_heads,
            p.head_dim,
            Some(bias),
        )
    };
    let mut out = att.pp("output");
    let y = out.pp("dense").linear(ctx, h, h, true, std)?;
    let y = out.add(y, x);
    let attended = out.pp("LayerNorm").layer_norm(y, h, p.eps)?;
    drop(att);
    let mut inter = s.pp("intermediate");
    let m = inter
        .pp("dense")
        .linear(attended, h, p.cfg.intermediate_size, true, std)?;
    let m = p.act.apply(&mut inter, m);
    drop(inter);
    let mut out = s.pp("output");
    let y = out
        .pp("dense")
        .linear(m, p.cfg.intermediate_size, h, true, std)?;
    let y = out.add(y, attended);
    out.pp("LayerNorm").layer_norm(y, h, p.eps)
}
