//! `glora model vit -o vit.onnx`: writes a Vision Transformer with random weights as
//! ONNX, built directly in the IR — a model to pre-train with `glora train --mode
//! full`, and the shape our benchmarks compare with PyTorch on.

use std::path::PathBuf;
use std::process::ExitCode;

use super::common;
use crate::models::{VitConfig, build_vit};

#[derive(Debug, clap::Subcommand)]
pub enum Model {
    /// A ViT: patch embedding, pre-norm blocks, final LayerNorm; outputs `features`
    /// [batch, tokens, dim] and, with classes, `logits` from the class token.
    Vit(VitArgs),
}

#[derive(Debug, clap::Args)]
pub struct VitArgs {
    /// Starting shape: tiny-digits (8×8 grey, dim 64, depth 4), vit-s or vit-b
    /// (224×224 RGB, patch 16).
    #[arg(long, default_value = "tiny-digits")]
    pub preset: String,
    /// Side of the square input image, in pixels (default: the preset's).
    #[arg(long, value_name = "PIXELS")]
    pub image: Option<usize>,
    /// Input channels (default: the preset's, 1 for tiny-digits, 3 for vit-s and vit-b).
    #[arg(long)]
    pub channels: Option<usize>,
    /// Side of a square patch, in pixels; divides --image (default: the preset's).
    #[arg(long, value_name = "PIXELS")]
    pub patch: Option<usize>,
    /// Token width, features per token (default: the preset's).
    #[arg(long)]
    pub dim: Option<usize>,
    /// Transformer blocks (default: the preset's).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Attention heads; divide --dim (default: the preset's).
    #[arg(long)]
    pub heads: Option<usize>,
    /// Hidden width of each block's MLP (default: the preset's).
    #[arg(long)]
    pub mlp: Option<usize>,
    /// Classes of a built-in head, 0 for features only (default: the preset's, 10 for
    /// tiny-digits, 100 for vit-s and vit-b).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The ONNX file to write.
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(m: Model) -> anyhow::Result<ExitCode> {
    let Model::Vit(a) = m;
    let mut cfg = match a.preset.as_str() {
        "tiny-digits" => VitConfig::tiny_digits(),
        "vit-s" => VitConfig::vit_s(),
        "vit-b" => VitConfig::vit_b(),
        other => anyhow::bail!("unknown preset '{other}' (expected tiny-digits, vit-s or vit-b)"),
    };
    let set = |field: &mut usize, v: Option<usize>| {
        if let Some(v) = v {
            *field = v;
        }
    };
    set(&mut cfg.image, a.image);
    set(&mut cfg.channels, a.channels);
    set(&mut cfg.patch, a.patch);
    set(&mut cfg.dim, a.dim);
    set(&mut cfg.depth, a.depth);
    set(&mut cfg.heads, a.heads);
    set(&mut cfg.mlp, a.mlp);
    if let Some(k) = a.classes {
        cfg.classes = (k > 0).then_some(k);
    }
    let sp = common::spinner("building the model".into());
    let g = build_vit(&cfg, a.seed);
    sp.finish_and_clear();
    let g = g?;
    let rep = crate::onnx::export_file(&g, &a.output, &crate::onnx::ExportOptions::default())?;
    println!(
        "wrote {} (ViT {}×{}×{}, patch {}, dim {}, depth {}, heads {}, mlp {}, {} weights, {} bytes)",
        a.output.display(),
        cfg.channels,
        cfg.image,
        cfg.image,
        cfg.patch,
        cfg.dim,
        cfg.depth,
        cfg.heads,
        cfg.mlp,
        cfg.parameter_count().unwrap_or(0),
        rep.bytes
    );
    Ok(ExitCode::SUCCESS)
}
