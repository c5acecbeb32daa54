//! Vision Transformers from a Hugging Face checkpoint: `vit` and `deit` (a ViT with a
//! distillation token beside the class token). Pre-norm layers
//! (`layernorm_before`, `attention.attention.{query,key,value}`,
//! `attention.output.dense`, `layernorm_after`, `intermediate.dense`,
//! `output.dense`), a final `layernorm`, and the optional tanh pooler.
//!
//! Input `pixel_values` f32 `[batch, channels, image, image]` at the checkpoint's
//! `image_size`; outputs `last_hidden_state` `[batch, tokens, hidden]` and, with a
//! pooler, `pooler_output`. [`patch_tokens`] is shared with DINOv2.

use serde::Deserialize;

use super::BuiltModel;
use super::ModelError;
use super::attention::multi_head;
use super::builder::{GraphBuilder, Scope};
use super::hf_config::{
    Activation, HfConfig, d3, d12, d768, d3072, default_init_range, default_layer_norm_eps, gelu,
    yes,
};
use super::weights::Init;
use crate::ir::{ConvAttrs, DType, Dim, Op, Port, Shape, Tensor, TensorType, UnaryOp};

#[derive(Clone, Debug, Deserialize)]
pub struct VitConfig {
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
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d224")]
    pub image_size: usize,
    #[serde(default = "d16")]
    pub patch_size: usize,
    #[serde(default = "d3")]
    pub num_channels: usize,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
}

fn d16() -> usize {
    16
}
fn d224() -> usize {
    224
}

pub const MODEL_TYPES: [&str; 2] = ["vit", "deit"];
pub const PREFIXES: [&str; 2] = ["vit.", "deit."];

/// The image input at a checkpoint's size.
pub fn pixel_input(channels: usize, image: usize) -> TensorType {
    let dims = vec![
        Dim::sym("batch"),
        Dim::Known(channels),
        Dim::Known(image),
        Dim::Known(image),
    ];
    TensorType::new(DType::F32, Shape(dims))
}

/// Checks the sizes every ViT-like config shares.
pub fn check_geometry(
    hf: &HfConfig,
    hidden: usize,
    heads: usize,
    image: usize,
    patch: usize,
) -> Result<(), ModelError> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(hf.error(
            "num_attention_heads",
            format!("{heads} heads do not divide hidden_size {hidden}"),
        ));
    }
    if patch == 0 || !image.is_multiple_of(patch) {
        return Err(hf.error(
            "patch_size",
            format!("patch size {patch} does not divide image_size {image}"),
        ));
    }
    Ok(())
}

/// The sizes of a patch embedding: `channels` of a square `image`, cut into square
/// patches of side `patch`, each projected to `hidden` features.
pub struct PatchGeometry {
    pub channels: usize,
    pub image: usize,
    pub patch: usize,
    pub hidden: usize,
}

/// `embeddings.patch_embeddings.projection` (a strided Conv), flattened to tokens;
/// the `extra` tokens (`cls_token`, `distillation_token`, each `[1, 1, hidden]`) in
/// front, expanded over the batch; `position_embeddings` added.
pub fn patch_tokens(
    s: &mut Scope<'_, '_>,
    pixels: Port,
    geometry: &PatchGeometry,
    extra: &[&str],
    std: f64,
) -> Result<Port, ModelError> {
    let &PatchGeometry {
        channels,
        image,
        patch,
        hidden,
    } = geometry;
    let mut pe = s.pp("patch_embeddings");
    let mut proj = pe.pp("projection");
    let w = proj.weight(
        "weight",
        &[hidden, channels, patch, patch],
        Init::Normal(std),
    )?;
    let bias = proj.weight("bias", &[hidden], Init::Zeros)?;
    let conv = ConvAttrs {
        kernel_shape: vec![patch, patch],
        strides: vec![patch, patch],
        group: 1,
        ..ConvAttrs::default()
    };
    let grid = proj.op("Conv", Op::Conv(conv), &[pixels, w, bias]);
    drop(pe);
    let flat = s.reshape(grid, &[0, hidden as i64, -1]);
    let patches = s.transpose(flat, &[0, 2, 1]);
    let batch = s.op(
        "Shape",
        Op::Shape {
            start: 0,
            end: Some(1),
        },
        &[pixels],
    );
    let rest = s.constant("token_shape", Tensor::vec_i64(vec![1, hidden as i64]));
    let shape = s.op("Concat", Op::Concat { axis: 0 }, &[batch, rest]);
    let mut parts = Vec::new();
    for name in extra {
        let t = s.weight(name, &[1, 1, hidden], Init::Normal(std))?;
        parts.push(s.op("Expand", Op::Expand, &[t, shape]));
    }
    parts.push(patches);
    let tokens = if parts.len() == 1 {
        patches
    } else {
        s.op("Concat", Op::Concat { axis: 1 }, &parts)
    };
    let n = (image / patch) * (image / patch) + extra.len();
    let pos = s.weight("position_embeddings", &[1, n, hidden], Init::Normal(std))?;
    Ok(s.add(tokens, pos))
}

pub fn build(hf: &HfConfig, b: &mut GraphBuilder<'_>) -> Result<BuiltModel, ModelError> {
    let c: VitConfig = hf.typed()?;
    check_geometry(
        hf,
        c.hidden_size,
        c.num_attention_heads,
        c.image_size,
        c.patch_size,
    )?;
    let act = Activation::parse(hf, "hidden_act", &c.hidden_act)?;
    let extra: &[&str] = if hf.model_type == "deit" {
        &["cls_token", "distillation_token"]
    } else {
        &["cls_token"]
    };
    let pixels = b.input("pixel_values", pixel_input(c.num_channels, c.image_size));
    let has_pooler = b.has("pooler.dense.weight");
    let (h, std, eps) = (c.hidden_size, c.initializer_range, c.layer_norm_eps as f32);
    let mut root = b.root();
    let geometry = PatchGeometry {
        channels: c.num_channels,
        image: c.image_size,
        patch: c.patch_size,
        hidden: h,
    };
    let mut x = patch_tokens(&mut root.pp("embeddings"), pixels, &geometry, extra, std)?;
    let mut enc = root.pp("encoder");
    for i in 0..c.num_hidden_layers {
        x = layer(&mut enc.pp(&format!("layer.{i}")), &c, act, x)?;
    }
    drop(enc);
    let x = root.pp("layernorm").layer_norm(x, h, eps)?;
    let last = root.op_as("Identity", Op::Identity, &[x], super::LAST_HIDDEN_STATE);
    b.g.outputs.push(last);
    let mut root = b.root();
    if has_pooler {
        let mut p = root.pp("pooler");
        let first = p.pick(last, 1, 0);
        let y = p.pp("dense").linear(first, h, h, true, std)?;
        let pooled = p.op_as("Tanh", Op::Unary(UnaryOp::Tanh), &[y], super::POOLER_OUTPUT);
        b.g.outputs.push(pooled);
    }
    Ok(BuiltModel {
        max_positions: None,
    })
}

/// `attention.{query,key,value}` and `attention.output.dense` of a ViT-like layer
/// (scope `attention`) on the normalised tokens `x` `[batch, tokens, hidden]`.
pub fn attention(
    s: &mut Scope<'_, '_>,
    x: Port,
    hidden: usize,
    heads: usize,
    qkv_bias: bool,
    std: f64,
) -> Result<Port, ModelError> {
    let ctx = {
        let mut sa = s.pp("attention");
        let q = sa.pp("query").linear(x, hidden, hidden, qkv_bias, std)?;
        let k = sa.pp("key").linear(x, hidden, hidden, qkv_bias, std)?;
        let v = sa.pp("value").linear(x, hidden, hidden, qkv_bias, std)?;
        multi_head(&mut sa, q, k, v, heads, hidden / heads, None)
    };
    s.pp("output")
        .pp("dense")
        .linear(ctx, hidden, hidden, true, std)
}

fn layer(
    s: &mut Scope<'_, '_>,
    c: &VitConfig,
    act: Activation,
    x: Port,
) -> Result<Port, ModelError> {
    let (h, std, eps) = (c.hidden_size, c.initializer_range, c.layer_norm_eps as f32);
    let normed = s.pp("layernorm_before").layer_norm(x, h, eps)?;
    let y = attention(
        &mut s.pp("attention"),
        normed,
        h,
        c.num_attention_heads,
        c.qkv_bias,
        std,
    )?;
    let x = s.add(y, x);
    let normed = s.pp("layernorm_after").layer_norm(x, h, eps)?;
    let mut inter = s.pp("intermediate");
    let m = inter
        .pp("dense")
        .linear(normed, h, c.intermediate_size, true, std)?;
    let m = act.apply(&mut inter, m);
    drop(inter);
    let y = s
        .pp("output")
        .pp("dense")
        .linear(m, c.intermediate_size, h, true, std)?;
    Ok(s.add(y, x))
}
