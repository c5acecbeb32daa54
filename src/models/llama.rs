//! The LLaMA family of decoders from a Hugging Face checkpoint: `llama` (and what
//! shares its layout: SmolLM, TinyLlama, Llama 3), `mistral` and `qwen2`. One file,
//! because the three differ only in which projections carry a bias (Qwen2's q/k/v,
//! LLaMA's `attention_bias` and `mlp_bias`) and in where a sliding attention window
//! applies (Mistral's `sliding_window`, Qwen2's `layer_types`); everything else is one
//! pre-norm block: RMSNorm, rotary embeddings ([`super::rotary`]), grouped-query
//! attention under a causal mask, and a SwiGLU MLP, then a final RMSNorm and the
//! language-model head (tied to the token embeddings or its own `lm_head`).
//!
//! Inputs `input_ids` and `attention_mask`, i64 `[batch, sequence]`; positions count
//! from 0 in every row, as transformers counts them when no `position_ids` are given.
//! Output `logits` f32 `[batch, sequence, vocab]`.

use serde::Deserialize;

use super::builder::{GraphBuilder, Scope};
use super::hf_config::{Activation, HfConfig, default_init_range};
use super::rotary::Rope;
use super::weights::Init;
use super::{BuiltModel, ModelError, token_input};
use crate::ir::{BinaryOp, DType, Dim, Op, Port, Shape, Tensor, TensorType, UnaryOp};

/// The `model_type`s this file builds.
pub const MODEL_TYPES: [&str; 3] = ["llama", "mistral", "qwen2"];

/// Causal-LM checkpoints store the decoder under `model.` and the head as `lm_head`;
/// names are asked for in that full form, so no prefix is tried.
pub const PREFIXES: [&str; 0] = [];

/// Output name of a decoder, as transformers names it.
pub const LOGITS: &str = "logits";

/// The `config.json` keys of the three families; absent keys take the family's
/// transformers default in [`Plan::new`].
#[derive(Clone, Debug, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    #[serde(default = "silu")]
    pub hidden_act: String,
    pub max_position_embeddings: Option<usize>,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    /// Mistral's window; `null` turns it off. Absent means the family default.
    #[serde(default, deserialize_with = "present")]
    pub sliding_window: Option<Option<usize>>,
    #[serde(default)]
    pub use_sliding_window: bool,
    pub max_window_layers: Option<usize>,
    pub layer_types: Option<Vec<String>>,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
}

/// Tells an absent key (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<usize>>, D::Error> {
    Option::<usize>::deserialize(d).map(Some)
}

fn silu() -> String {
    "silu".into()
}

fn default_rms_eps() -> f64 {
    1e-6
}

/// Which projections of a block carry a bias.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Biases {
    qkv: bool,
    o: bool,
    mlp: bool,
}

/// A configuration checked and resolved to what the graph needs.
struct Plan {
    cfg: LlamaConfig,
    act: Activation,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    positions: usize,
    eps: f32,
    biases: Biases,
    rope: Rope,
    windows: Windows,
}

impl Plan {
    fn new(hf: &HfConfig) -> Result<Plan, ModelError> {
        let cfg: LlamaConfig = hf.typed()?;
        let family = hf.model_type.as_str();
        let heads = cfg.num_attention_heads;
        if heads == 0 {
            return Err(hf.error("num_attention_heads", "must be at least 1"));
        }
        let kv_heads = cfg.num_key_value_heads.unwrap_or(heads);
        if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(hf.error(
                "num_key_value_heads",
                format!("{kv_heads} key/value heads do not divide {heads} attention heads"),
            ));
        }
        let head_dim = match cfg.head_dim {
            Some(d) => d,
            None if cfg.hidden_size.is_multiple_of(heads) => cfg.hidden_size / heads,
            None => {
                return Err(hf.error(
                    "num_attention_heads",
                    format!(
                        "{heads} heads do not divide hidden_size {} and no head_dim is given",
                        cfg.hidden_size
                    ),
                ));
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(hf.error(
                "head_dim",
                format!("{head_dim} must be even for rotary embeddings"),
            ));
        }
        for (key, v) in [
            ("vocab_size", cfg.vocab_size),
            ("hidden_size", cfg.hidden_size),
            ("intermediate_size", cfg.intermediate_size),
        ] {
            if v == 0 {
                return Err(hf.error(key, "must be at least 1"));
            }
        }
        let positions = cfg.max_position_embeddings.unwrap_or(match family {
            "mistral" => 4096 * 32,
            "qwen2" => 32768,
            _ => 2048,
        });
        if positions == 0 {
            return Err(hf.error("max_position_embeddings", "must be at least 1"));
        }
        let act = Activation::parse(hf, "hidden_act", &cfg.hidden_act)?;
        let biases = match family {
            "qwen2" => Biases {
                qkv: true,
                o: false,
                mlp: false,
            },
            "mistral" => Biases {
                qkv: false,
                o: false,
                mlp: false,
            },
            _ => Biases {
                qkv: cfg.attention_bias,
                o: cfg.attention_bias,
                mlp: cfg.mlp_bias,
            },
        };
        let windows = layer_windows(hf, &cfg)?;
        let rope = Rope::from_config(hf, 10000.0, positions)?;
        Ok(Plan {
            act,
            heads,
            kv_heads,
            head_dim,
            positions,
            eps: cfg.rms_norm_eps as f32,
            biases,
            rope,
            windows,
            cfg,
        })
    }
}

/// Which layers attend within a sliding window, and how wide it is.
#[derive(Clone, Debug, PartialEq)]
enum Windows {
    /// Every layer the same: Mistral's `sliding_window` (or none: LLaMA).
    All(Option<usize>),
    /// Qwen2 without `layer_types`: the layers from `from` on, when
    /// `use_sliding_window`.
    From { from: usize, window: usize },
    /// Qwen2's `layer_types`, one entry per layer.
    PerLayer(Vec<Option<usize>>),
}

impl Windows {
    /// The window of layer `i`, `None` for full attention.
    fn of(&self, i: usize) -> Option<usize> {
        match self {
            Windows::All(w) => *w,
            Windows::From { from, window } => (i >= *from).then_some(*window),
            Windows::PerLayer(v) => v[i],
        }
    }
}

/// The attention windows: Mistral's `sliding_window` on every layer; Qwen2's on the
/// layers `layer_types` marks `sliding_attention` (by default those from
/// `max_window_layers` on, when `use_sliding_window`); none for LLaMA. Nothing here
/// is sized by `num_hidden_layers`, which the weights have yet to vouch for.
fn layer_windows(hf: &HfConfig, cfg: &LlamaConfig) -> Result<Windows, ModelError> {
    let window = |default: Option<usize>| -> Result<Option<usize>, ModelError> {
        let w = cfg.sliding_window.unwrap_or(default);
        if w == Some(0) {
            return Err(hf.error("sliding_window", "must be at least 1 (or null)"));
        }
        Ok(w)
    };
    let needed = || -> Result<usize, ModelError> {
        window(Some(4096))?
            .ok_or_else(|| hf.error("sliding_window", "sliding layers need a window"))
    };
    match hf.model_type.as_str() {
        "mistral" => Ok(Windows::All(window(Some(4096))?)),
        "qwen2" => match &cfg.layer_types {
            Some(types) => {
                let n = cfg.num_hidden_layers;
                if types.len() != n {
                    return Err(hf.error(
                        "layer_types",
                        format!("{} entries for {n} layers", types.len()),
                    ));
                }
                let per = types
                    .iter()
                    .map(|t| match t.as_str() {
                        "full_attention" => Ok(None),
                        "sliding_attention" => needed().map(Some),
                        other => Err(hf.error(
                            "layer_types",
                            format!(
                                "{other:?} is not supported (full_attention, sliding_attention)"
                            ),
                        )),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Windows::PerLayer(per))
            }
            None if cfg.use_sliding_window => Ok(Windows::From {
                from: cfg.max_window_layers.unwrap_or(28),
                window: needed()?,
            }),
            None => Ok(Windows::All(None)),
        },
        _ => Ok(Windows::All(None)),
    }
}

/// The sizes of a decoder, as a runtime needs them.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderDims {
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub max_positions: usize,
}

/// Checks a decoder's configuration and reports its sizes.
pub fn decoder_dims(hf: &HfConfig) -> Result<DecoderDims, ModelError> {
    let p = Plan::new(hf)?;
    Ok(DecoderDims {
        layers: p.cfg.num_hidden_layers,
        heads: p.heads,
        kv_heads: p.kv_heads,
        head_dim: p.head_dim,
        hidden: p.cfg.hidden_size,
        vocab: p.cfg.vocab_size,
        max_positions: p.positions,
    })
}

/// Which graph a decoder is built as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecoderForm {
    /// `input_ids`, `attention_mask` → `logits`: one pass over whole sequences, for
    /// training and evaluation.
    #[default]
    Full,
    /// The merged decoder with a KV cache that optimum, onnxruntime-genai and
    /// transformers.js run: also `position_ids` and `past_key_values.N.key|value`
    /// `[batch, kv_heads, past_sequence, head_dim]` in, `present.N.key|value` out; the
    /// mask covers past and new tokens. An empty past (length 0) is the prefill.
    Cached,
}

/// Name of layer `i`'s past keys or values input (`part` is `key` or `value`).
pub fn past_name(i: usize, part: &str) -> String {
    format!("past_key_values.{i}.{part}")
}

/// Name of layer `i`'s present keys or values output.
pub fn present_name(i: usize, part: &str) -> String {
    format!("present.{i}.{part}")
}

/// Checks a configuration and builds the decoder from `b`'s weights.
pub fn build(hf: &HfConfig, b: &mut GraphBuilder<'_>) -> Result<BuiltModel, ModelError> {
    build_form(hf, b, DecoderForm::Full)
}

/// [`build`] as the chosen form.
pub fn build_form(
    hf: &HfConfig,
    b: &mut GraphBuilder<'_>,
    form: DecoderForm,
) -> Result<BuiltModel, ModelError> {
    let p = Plan::new(hf)?;
    let cached = form == DecoderForm::Cached;
    let ids = b.input("input_ids", token_input());
    let mask = b.input(
        "attention_mask",
        if cached {
            TensorType::new(
                DType::I64,
                Shape(vec![Dim::sym("batch"), Dim::sym("total_sequence")]),
            )
        } else {
            token_input()
        },
    );
    let position_ids = cached.then(|| b.input("position_ids", token_input()));
    let past: Vec<(Port, Port)> = if cached {
        let ty = TensorType::new(
            DType::F32,
            Shape(vec![
                Dim::sym("batch"),
                Dim::Known(p.kv_heads),
                Dim::sym("past_sequence"),
                Dim::Known(p.head_dim),
            ]),
        );
        (0..p.cfg.num_hidden_layers)
            .map(|i| {
                (
                    b.input(&past_name(i, "key"), ty.clone()),
                    b.input(&past_name(i, "value"), ty.clone()),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let (h, std) = (p.cfg.hidden_size, p.cfg.initializer_range);
    let mut root = b.root();
    let embed = root.pp("model").pp("embed_tokens").weight_tensor(
        "weight",
        &[p.cfg.vocab_size, h],
        Init::Normal(std),
    )?;
    let mut model = root.pp("model");
    let table = model
        .pp("embed_tokens")
        .weight_node("weight", embed.clone());
    let mut x = model
        .pp("embed_tokens")
        .op("Gather", Op::Gather { axis: 0 }, &[table, ids]);
    // Queries are the new tokens, keys the past and new ones; with a cache the new
    // tokens' indices start after the past's length.
    let mut pm = model.pp("rotary_emb");
    let new_len = length(&mut pm, ids, 1);
    let queries = range(&mut pm, new_len);
    let (query_index, key_index, rope) = match (position_ids, past.first()) {
        (Some(pos), Some(&(past_key, _))) => {
            let past_len = length(&mut pm, past_key, 2);
            let total = length(&mut pm, mask, 1);
            let q = pm.add(queries, past_len);
            let k = range(&mut pm, total);
            (q, k, rope_rows(&mut pm, &p, pos, true)?)
        }
        _ => (queries, queries, rope_rows(&mut pm, &p, queries, false)?),
    };
    drop(pm);
    // One bias per distinct window, made when the first layer needs it.
    let mut biases = std::collections::BTreeMap::new();
    let mut presents = Vec::new();
    for i in 0..p.cfg.num_hidden_layers {
        let w = p.windows.of(i);
        let bias = *biases.entry(w).or_insert_with(|| {
            let scope = if w.is_some() {
                "sliding_window_mask"
            } else {
                "causal_mask"
            };
            causal_bias(&mut model.pp(scope), query_index, key_index, mask, w)
        });
        let cache = past.get(i).map(|&(k, v)| LayerCache { layer: i, k, v });
        let (y, present) = block(
            &mut model.pp(&format!("layers.{i}")),
            &p,
            x,
            &rope,
            bias,
            cache,
        )?;
        x = y;
        presents.extend(present);
    }
    let x = model.pp("norm").rms_norm(x, h, p.eps)?;
    drop(model);
    let mut head = root.pp("lm_head");
    // A tied head is the embedding table, as transformers ties it, whether or not
    // the checkpoint also stored a copy.
    let logits = if p.cfg.tie_word_embeddings {
        head.linear_of(x, &embed, false)?
    } else {
        head.linear(x, h, p.cfg.vocab_size, false, std)?
    };
    let logits = root.op_as("Identity", Op::Identity, &[logits], LOGITS);
    b.g.outputs.push(logits);
    b.g.outputs.extend(presents);
    Ok(BuiltModel {
        max_positions: Some(p.positions),
    })
}

/// Axis `axis` of `x` as an i64 scalar, at run time.
fn length(s: &mut Scope<'_, '_>, x: Port, axis: i64) -> Port {
    let len = s.op(
        "Shape",
        Op::Shape {
            start: axis,
            end: Some(axis + 1),
        },
        &[x],
    );
    s.op(
        "Squeeze",
        Op::Squeeze {
            axes: Some(vec![0]),
        },
        &[len],
    )
}

/// `0..len` (i64 `[len]`).
fn range(s: &mut Scope<'_, '_>, len: Port) -> Port {
    let zero = s.constant("start", Tensor::scalar_i64(0));
    let one = s.constant("delta", Tensor::scalar_i64(1));
    s.op("Range", Op::Range, &[zero, len, one])
}

/// The cosine and signed-sine rows of the positions, `[sequence, head_dim]`,
/// broadcast over batch and heads.
struct RopeRows {
    cos: Port,
    sin: Port,
}

/// `cos(p·θ)` and `sin(p·θ)` with `rotate_half`'s sign folded in (see
/// [`Rope::signs`]), computed at run time as transformers computes them: the f32
/// angle `p·θ_i` of each position and inverse frequency, its two halves alike. No
/// table is sized by `max_position_embeddings`, so a model runs at any length.
/// `pos` is `[sequence]`, or `[batch, sequence]` when `per_row` (`position_ids`),
/// whose rows then get a heads axis to broadcast over.
fn rope_rows(
    s: &mut Scope<'_, '_>,
    p: &Plan,
    pos: Port,
    per_row: bool,
) -> Result<RopeRows, ModelError> {
    let d = p.head_dim;
    let tensor = |name: String, values: Vec<f32>| {
        Tensor::from_f32(vec![values.len()], values)
            .map_err(|source| ModelError::Tensor { name, source })
    };
    let inv = tensor(s.name("inv_freq"), p.rope.inv_freq(d))?;
    let inv = s.constant("inv_freq", inv);
    let pos = s.cast(pos, DType::F32);
    let pos = s.unsqueeze(pos, &[-1]);
    let half = s.mul(pos, inv);
    let angles = s.op("Concat", Op::Concat { axis: -1 }, &[half, half]);
    let cos = s.unary(UnaryOp::Cos, angles);
    let sin = s.unary(UnaryOp::Sin, angles);
    let signs = tensor(s.name("rotate_half_signs"), Rope::signs(d))?;
    let signs = s.constant("rotate_half_signs", signs);
    let sin = s.mul(sin, signs);
    if per_row {
        let cos = s.unsqueeze(cos, &[1]);
        let sin = s.unsqueeze(sin, &[1]);
        return Ok(RopeRows { cos, sin });
    }
    Ok(RopeRows { cos, sin })
}

/// The additive attention bias `[batch, 1, queries, keys]`: 0 where the query of
/// index `i` may see the key of index `j` (`j ≤ i`, within `window` when there is
/// one, and `j` a real token), the lowest f32 elsewhere. The terms are multiplied as 0/1 masks before
/// the one scaling, so a row with nothing to see stays finite (uniform weights over
/// padding, as transformers' eager attention gives) instead of turning into NaN.
fn causal_bias(
    s: &mut Scope<'_, '_>,
    queries: Port,
    keys: Port,
    mask: Port,
    window: Option<usize>,
) -> Port {
    let q = s.cast(queries, DType::F32);
    let q = s.unsqueeze(q, &[1]);
    let k = s.cast(keys, DType::F32);
    let k = s.unsqueeze(k, &[0]);
    // i − j, then 0/1 steps by clipping integers to [0, 1].
    let back = s.binary(BinaryOp::Sub, q, k);
    let zero = s.constant("zero", Tensor::scalar_f32(0.0));
    let one = s.constant("one", Tensor::scalar_f32(1.0));
    let shifted = s.add(back, one);
    let mut seen = s.op("Clip", Op::Clip, &[shifted, zero, one]);
    if let Some(w) = window {
        // j > i − w ⇔ w − (i − j) ≥ 1.
        let w = s.constant("window", Tensor::scalar_f32(w as f32));
        let left = s.binary(BinaryOp::Sub, w, back);
        let inside = s.op("Clip", Op::Clip, &[left, zero, one]);
        seen = s.mul(seen, inside);
    }
    let real = s.cast(mask, DType::F32);
    let real = s.unsqueeze(real, &[1, 2]);
    let seen = s.mul(seen, real);
    let hidden = s.binary(BinaryOp::Sub, one, seen);
    let lowest = s.constant("lowest", Tensor::scalar_f32(f32::MIN));
    s.mul(hidden, lowest)
}

/// A layer's past keys and values, `[batch, kv_heads, past, head_dim]`.
#[derive(Clone, Copy)]
struct LayerCache {
    layer: usize,
    k: Port,
    v: Port,
}

/// One pre-norm decoder block; with a cache, also its present keys and values.
fn block(
    s: &mut Scope<'_, '_>,
    p: &Plan,
    x: Port,
    rope: &RopeRows,
    bias: Port,
    cache: Option<LayerCache>,
) -> Result<(Port, Vec<Port>), ModelError> {
    let h = p.cfg.hidden_size;
    let normed = s.pp("input_layernorm").rms_norm(x, h, p.eps)?;
    let (attended, present) = attention(&mut s.pp("self_attn"), p, normed, rope, bias, cache)?;
    let x = s.add(x, attended);
    let normed = s.pp("post_attention_layernorm").rms_norm(x, h, p.eps)?;
    let m = mlp(&mut s.pp("mlp"), p, normed)?;
    Ok((s.add(x, m), present))
}

/// Grouped-query attention with rotary embeddings on queries and keys.
fn attention(
    s: &mut Scope<'_, '_>,
    p: &Plan,
    x: Port,
    rope: &RopeRows,
    bias: Port,
    cache: Option<LayerCache>,
) -> Result<(Port, Vec<Port>), ModelError> {
    let (h, d, std) = (p.cfg.hidden_size, p.head_dim, p.cfg.initializer_range);
    let (qw, kvw) = (p.heads * d, p.kv_heads * d);
    let q = s.pp("q_proj").linear(x, h, qw, p.biases.qkv, std)?;
    let k = s.pp("k_proj").linear(x, h, kvw, p.biases.qkv, std)?;
    let v = s.pp("v_proj").linear(x, h, kvw, p.biases.qkv, std)?;
    let q = split_heads(s, q, p.heads, d);
    let k = split_heads(s, k, p.kv_heads, d);
    let v = split_heads(s, v, p.kv_heads, d);
    let q = rotate(s, q, rope, d);
    let mut k = rotate(s, k, rope, d);
    let mut v = v;
    let mut present = Vec::new();
    if let Some(c) = cache {
        k = s.op_as(
            "Concat",
            Op::Concat { axis: 2 },
            &[c.k, k],
            &present_name(c.layer, "key"),
        );
        v = s.op_as(
            "Concat",
            Op::Concat { axis: 2 },
            &[c.v, v],
            &present_name(c.layer, "value"),
        );
        present = vec![k, v];
    }
    let groups = p.heads / p.kv_heads;
    let k = repeat_kv(s, k, groups, p.heads, d);
    let v = repeat_kv(s, v, groups, p.heads, d);
    let kt = s.transpose(k, &[0, 1, 3, 2]);
    let scores = s.op("MatMul", Op::MatMul, &[q, kt]);
    let scale = s.constant("scaling", Tensor::scalar_f32((d as f32).powf(-0.5)));
    let scores = s.mul(scores, scale);
    let scores = s.add(scores, bias);
    let weights = s.op("Softmax", Op::Softmax { axis: -1 }, &[scores]);
    let mixed = s.op("MatMul", Op::MatMul, &[weights, v]);
    let merged = s.transpose(mixed, &[0, 2, 1, 3]);
    let merged = s.reshape(merged, &[0, 0, qw as i64]);
    let y = s.pp("o_proj").linear(merged, qw, h, p.biases.o, std)?;
    Ok((y, present))
}

/// `[batch, seq, heads·d]` → `[batch, heads, seq, d]`.
fn split_heads(s: &mut Scope<'_, '_>, x: Port, heads: usize, d: usize) -> Port {
    let x = s.reshape(x, &[0, 0, heads as i64, d as i64]);
    s.transpose(x, &[0, 2, 1, 3])
}

/// `x·cos + swap_halves(x)·sin_signed`, which is `x·cos + rotate_half(x)·sin`.
fn rotate(s: &mut Scope<'_, '_>, x: Port, rope: &RopeRows, d: usize) -> Port {
    let half = (d / 2) as i64;
    let axes = s.constant("axes", Tensor::vec_i64(vec![-1]));
    let zero = s.constant("start", Tensor::vec_i64(vec![0]));
    let mid = s.constant("half", Tensor::vec_i64(vec![half]));
    let end = s.constant("end", Tensor::vec_i64(vec![i64::MAX]));
    let first = s.op("Slice", Op::Slice, &[x, zero, mid, axes]);
    let second = s.op("Slice", Op::Slice, &[x, mid, end, axes]);
    let swapped = s.op("Concat", Op::Concat { axis: -1 }, &[second, first]);
    let a = s.mul(x, rope.cos);
    let b = s.mul(swapped, rope.sin);
    s.add(a, b)
}

/// Each of the `[batch, kv_heads, seq, d]` key/value heads repeated for the `groups`
/// query heads that share it: `[batch, kv_heads·groups, seq, d]`, head `g·groups + r`
/// from key/value head `g`, as transformers' `repeat_kv` orders them.
fn repeat_kv(s: &mut Scope<'_, '_>, x: Port, groups: usize, heads: usize, d: usize) -> Port {
    if groups == 1 {
        return x;
    }
    let x = s.unsqueeze(x, &[2]);
    let reps = s.constant("repeats", Tensor::vec_i64(vec![1, 1, groups as i64, 1, 1]));
    let x = s.op("Expand", Op::Expand, &[x, reps]);
    s.reshape(x, &[0, heads as i64, -1, d as i64])
}

/// `down(act(gate(x)) · up(x))`.
fn mlp(s: &mut Scope<'_, '_>, p: &Plan, x: Port) -> Result<Port, ModelError> {
    let (h, m, std) = (
        p.cfg.hidden_size,
        p.cfg.intermediate_size,
        p.cfg.initializer_range,
    );
    let gate = s.pp("gate_proj").linear(x, h, m, p.biases.mlp, std)?;
    let up = s.pp("up_proj").linear(x, h, m, p.biases.mlp, std)?;
    let gate = p.act.apply(s, gate);
    let y = s.mul(gate, up);
    s.pp("down_proj").linear(y, m, h, p.biases.mlp, std)
}

#[cfg(test)]
mod tests {
    use super::super::build_random;
    use super::*;

    fn error(extra: &str) -> String {
        let text = format!(
            r#"{{"model_type": "qwen2", "vocab_size": 11, "hidden_size": 8,
                "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 6,
                "max_position_embeddings": 8{extra}}}"#
        );
        let cfg = HfConfig {
            path: "config.json".into(),
            json: serde_json::from_str(&text).unwrap(),
            model_type: "qwen2".into(),
        };
        build_random(&cfg, 1).unwrap_err().to_string()
    }

    #[test]
    fn bad_decoder_configs_name_the_key() {
        let e = error(r#", "num_key_value_heads": 3"#);
        assert!(e.contains("num_key_value_heads") && e.contains("3"), "{e}");
        let e = error(r#", "head_dim": 5"#);
        assert!(e.contains("head_dim") && e.contains("even"), "{e}");
        let e = error(r#", "layer_types": ["full_attention"]"#);
        assert!(e.contains("layer_types") && e.contains("1 entries"), "{e}");
        let e = error(r#", "layer_types": ["full_attention", "chunked_attention"]"#);
        assert!(e.contains("chunked_attention"), "{e}");
        let e =
            error(r#", "use_sliding_window": true, "max_window_layers": 0, "sliding_window": 0"#);
        assert!(e.contains("sliding_window"), "{e}");
        let e = error(r#", "hidden_act": "mish""#);
        assert!(e.contains("hidden_act") && e.contains("mish"), "{e}");
    }

    /// A config without the family's optional keys builds with transformers'
    /// defaults: as many key/value heads as heads, Qwen2's q/k/v biases.
    #[test]
    fn defaults_fill_absent_keys() {
        let text = r#"{"model_type": "qwen2", "vocab_size": 11, "hidden_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 6,
            "max_position_embeddings": 8}"#;
        let cfg = HfConfig {
            path: "config.json".into(),
            json: serde_json::from_str(text).unwrap(),
            model_type: "qwen2".into(),
        };
        let m = build_random(&cfg, 1).unwrap();
        let layers = crate::passes::find_linear_layers(&m.graph);
        let k = layers
            .iter()
            .find(|l| l.name == "model.layers.0.self_attn.k_proj")
            .unwrap();
        assert_eq!((k.d_in, k.d_out, k.bias.is_some()), (8, 8, true));
        let o = layers
            .iter()
            .find(|l| l.name == "model.layers.0.self_attn.o_proj")
            .unwrap();
        assert!(o.bias.is_none());
    }
}
