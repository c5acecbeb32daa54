//! DINOv2 from a Hugging Face checkpoint: a pre-norm ViT (`norm1`, `norm2`) whose
//! attention and MLP branches are scaled by LayerScale (`layer_scale{1,2}.lambda1`),
//! with a GELU MLP (`mlp.fc1`, `mlp.fc2`) or a SwiGLU one (`mlp.weights_in`,
//! `mlp.weights_out`), a final `layernorm`, and no pooler: `pooler_output` is the
//! normalised class token, as transformers returns it.
//!
//! Input `pixel_values` f32 `[batch, channels, image, image]` at the checkpoint's
//! `image_size` (position embeddings are not interpolated to other sizes); outputs
//! `last_hidden_state` and `pooler_output`.

use serde::Deserialize;

use super::BuiltModel;
use super::ModelError;
use super::builder::{GraphBuilder, Scope};
use super::hf_config::{Activation, HfConfig, d3, d12, d768, default_init_range, gelu, yes};
use super::hf_vit::{PatchGeometry, attention, check_geometry, patch_tokens, pixel_input};
use super::weights::Init;
use crate::ir::{Op, Port, Tensor};

#[derive(Clone, Debug, Deserialize)]
pub struct Dinov2Config {
    #[serde(default = "d768")]
    pub hidden_size: usize,
    #[serde(default = "d12")]
    pub num_hidden_layers: usize,
    #[serde(default = "d12")]
    pub num_attention_heads: usize,
    #[serde(default = "d4")]
    pub mlp_ratio: f64,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d224")]
    pub image_size: usize,
    #[serde(default = "d14")]
    pub patch_size: usize,
    #[serde(default = "d3")]
    pub num_channels: usize,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    #[serde(default = "one")]
    pub layerscale_value: f64,
    #[serde(default)]
    pub use_swiglu_ffn: bool,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
}

fn d4() -> f64 {
    4.0
}
fn d14() -> usize {
    14
}
fn d224() -> usize {
    224
}
fn eps() -> f64 {
    1e-6
}
fn one() -> f64 {
    1.0
}

pub const MODEL_TYPES: [&str; 1] = ["dinov2"];
pub const PREFIXES: [&str; 1] = ["dinov2."];

impl Dinov2Config {
    /// Width of the MLP: `hidden · mlp_ratio`, or for SwiGLU two thirds of it
    /// rounded up to a multiple of 8, as transformers sizes it.
    fn mlp_width(&self) -> usize {
        let plain = (self.hidden_size as f64 * self.mlp_ratio) as usize;
        if self.use_swiglu_ffn {
            (plain * 2 / 3).div_ceil(8) * 8
        } else {
            plain
        }
    }
}

pub fn build(hf: &HfConfig, b: &mut GraphBuilder<'_>) -> Result<BuiltModel, ModelError> {
    let c: Dinov2Config = hf.typed()?;
    check_geometry(
        hf,
        c.hidden_size,
        c.num_attention_heads,
        c.image_size,
        c.patch_size,
    )?;
    let act = Activation::parse(hf, "hidden_act", &c.hidden_act)?;
    let pixels = b.input("pixel_values", pixel_input(c.num_channels, c.image_size));
    let (h, std, eps) = (c.hidden_size, c.initializer_range, c.layer_norm_eps as f32);
    let mut root = b.root();
    let geometry = PatchGeometry {
        channels: c.num_channels,
        image: c.image_size,
        patch: c.patch_size,
        hidden: h,
    };
    let mut x = patch_tokens(
        &mut root.pp("embeddings"),
        pixels,
        &geometry,
        &["cls_token"],
        std,
    )?;
    let mut enc = root.pp("encoder");
    for i in 0..c.num_hidden_layers {
        x = layer(&mut enc.pp(&format!("layer.{i}")), &c, act, x)?;
    }
    drop(enc);
    let x = root.pp("layernorm").layer_norm(x, h, eps)?;
    let last = root.op_as("Identity", Op::Identity, &[x], super::LAST_HIDDEN_STATE);
    let first = root.pick(last, 1, 0);
    let pooled = root.op_as("Identity", Op::Identity, &[first], super::POOLER_OUTPUT);
    b.g.outputs.extend([last, pooled]);
    Ok(BuiltModel {
        max_positions: None,
    })
}

fn layer_scale(s: &mut Scope<'_, '_>, c: &Dinov2Config, x: Port) -> Result<Port, ModelError> {
    let lambda = s.weight(
        "lambda1",
        &[c.hidden_size],
        Init::Fill(c.layerscale_value as f32),
    )?;
    Ok(s.mul(x, lambda))
}

fn layer(
    s: &mut Scope<'_, '_>,
    c: &Dinov2Config,
    act: Activation,
    x: Port,
) -> Result<Port, ModelError> {
    let (h, std, eps) = (c.hidden_size, c.initializer_range, c.layer_norm_eps as f32);
    let normed = s.pp("norm1").layer_norm(x, h, eps)?;
    let y = attention(
        &mut s.pp("attention"),
        normed,
        h,
        c.num_attention_heads,
        c.qkv_bias,
        std,
    )?;
    let y = layer_scale(&mut s.pp("layer_scale1"), c, y)?;
    let x = s.add(y, x);
    let normed = s.pp("norm2").layer_norm(x, h, eps)?;
    let width = c.mlp_width();
    let mut mlp = s.pp("mlp");
    let y = if c.use_swiglu_ffn {
        let both = mlp
            .pp("weights_in")
            .linear(normed, h, 2 * width, true, std)?;
        let half = |m: &mut Scope<'_, '_>, from: i64, to: i64| {
            let starts = m.constant("starts", Tensor::vec_i64(vec![from]));
            let ends = m.constant("ends", Tensor::vec_i64(vec![to]));
            let axes = m.constant("axes", Tensor::vec_i64(vec![-1]));
            m.op("Slice", Op::Slice, &[both, starts, ends, axes])
        };
        let gate = half(&mut mlp, 0, width as i64);
        let up = half(&mut mlp, width as i64, 2 * width as i64);
        let gate = Activation::Silu.apply(&mut mlp, gate);
        let m = mlp.mul(gate, up);
        mlp.pp("weights_out").linear(m, width, h, true, std)?
    } else {
        let m = mlp.pp("fc1").linear(normed, h, width, true, std)?;
        let m = act.apply(&mut mlp, m);
        mlp.pp("fc2").linear(m, width, h, true, std)?
    };
    drop(mlp);
    let y = layer_scale(&mut s.pp("layer_scale2"), c, y)?;
    Ok(s.add(y, x))
}
