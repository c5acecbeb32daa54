//! `glora inspect MODEL`: what a model takes and gives, what it is made of, and
//! which linear layers glora can adapt. `glora inspect NAME.glora`: a supernet's base
//! model, adapted layers, rank set, parameter counts and chosen config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::common;
use super::compile::group;
use crate::glora::{layer_params, model_param_range, supernet_params};
use crate::supernet::artifact;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model (an ONNX file or a Hugging Face checkpoint folder (config.json + safetensors)), or a supernet directory written by `glora compile`.
    pub model: PathBuf,
    /// Also print the whole graph after simplification, one node per line.
    #[arg(long)]
    pub dump: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if a.model.is_dir() && !crate::models::is_checkpoint_dir(&a.model) {
        return inspect_supernet(&a.model);
    }
    let mut g = common::import(&a.model, &[])?;
    println!("model: {}", a.model.display());
    println!("inputs:");
    for &i in &g.inputs {
        let v = &g.node(i).outputs[0];
        println!("  {:<28} {}", v.name, ty(&v.ty));
    }
    println!("outputs:");
    for &o in &g.outputs {
        let v = g.value(o);
        println!("  {:<28} {}", v.name, ty(&v.ty));
    }
    println!("parameters: {}", g.weight_count());
    let before = g.op_histogram();
    common::optimize(&mut g, &a.model)?;
    let after = g.op_histogram();
    println!("ops (as imported -> simplified):");
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    for n in names {
        let (b, f) = (
            before.get(n).copied().unwrap_or(0),
            after.get(n).copied().unwrap_or(0),
        );
        println!("  {n:<22} {b:>6} -> {f:<6}");
    }
    let layers = crate::passes::find_linear_layers(&g);
    println!("linear layers: {}", layers.len());
    if !layers.is_empty() {
        let w = layers
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        println!("  {:<w$}  {:>6}  {:>6}  bias", "name", "in", "out");
        for l in &layers {
            println!(
                "  {:<w$}  {:>6}  {:>6}  {}",
                l.name,
                l.d_in,
                l.d_out,
                if l.bias.is_some() { "yes" } else { "no" }
            );
        }
    }
    if a.dump {
        println!("{}", crate::ir::print::dump(&g));
    }
    Ok(ExitCode::SUCCESS)
}

fn ty(t: &Option<crate::ir::TensorType>) -> String {
    t.as_ref()
        .map(|t| t.to_string())
        .unwrap_or_else(|| "?".into())
}

/// Reads the manifest (checked against its schema) and the adapters; the base model
/// is only hashed, not imported, so a supernet whose base moved can still be inspected.
fn inspect_supernet(dir: &Path) -> anyhow::Result<ExitCode> {
    let manifest = artifact::read_manifest(dir)?;
    let space = manifest.search_space(&dir.join(artifact::MANIFEST_FILE))?;
    let base = manifest.base_path(dir);
    let base_state = match artifact::check_base(&manifest, dir) {
        Ok(_) => "sha256 ok".to_string(),
        Err(e) => format!("PROBLEM: {e:#}"),
    };
    println!("supernet: {}", dir.display());
    println!("base model: {} ({base_state})", base.display());
    println!("ranks: {:?}", space.ranks());
    for (slot, options) in [
        ("A", &manifest.search_space.a),
        ("B", &manifest.search_space.b),
        ("C", &manifest.search_space.c),
        ("D", &manifest.search_space.d),
        ("E", &manifest.search_space.e),
    ] {
        println!("  {slot}: {}", options.join(", "));
    }
    println!("configs per layer: {}", space.len());
    let adapters = match artifact::layer_adapters(dir, &manifest.layers, space.max_rank()) {
        Ok(a) => format!("{} tensors, shapes ok", 8 * a.len()),
        Err(e) => format!("PROBLEM: {e:#}"),
    };
    println!("adapters: {adapters}");
    if let Some(config) = &manifest.config {
        let names: Vec<&str> = manifest.layers.iter().map(|l| l.name.as_str()).collect();
        if let Err(e) = config.validate(&space, &names) {
            println!("config: PROBLEM: {e}");
        }
    }
    println!("adapted layers: {}", manifest.layers.len());
    let w = manifest
        .layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let config = manifest.config.as_ref();
    println!(
        "  {:<w$}  {:>6}  {:>6}  {:<4}  {:<6}  {:>10}",
        "name", "in", "out", "bias", "kind", "params"
    );
    for l in &manifest.layers {
        println!(
            "  {:<w$}  {:>6}  {:>6}  {:<4}  {:<6}  {:>10}",
            l.name,
            l.d_in,
            l.d_out,
            if l.has_bias { "yes" } else { "no" },
            format!("{:?}", l.kind),
            group(supernet_params(l.shape(), space.max_rank()))
        );
    }
    if let Some(c) = config {
        let shapes: Vec<(String, crate::glora::LayerShape)> = manifest
            .layers
            .iter()
            .map(|l| (l.name.clone(), l.shape()))
            .collect();
        println!("chosen config (parameters each layer reads):");
        for line in crate::glora::table::text_table(&crate::glora::layer_rows(&shapes, c)).lines() {
            println!("  {line}");
        }
    }
    let supernet: usize = manifest
        .layers
        .iter()
        .map(|l| supernet_params(l.shape(), space.max_rank()))
        .sum();
    let range = model_param_range(&space, manifest.layers.iter().map(|l| l.shape()));
    println!("adapter parameters:");
    println!("  full supernet   {:>12}", group(supernet));
    println!("  smallest config {:>12}", group(range.min));
    println!("  largest config  {:>12}", group(range.max));
    match config {
        Some(c) => {
            let n: usize = manifest
                .layers
                .iter()
                .filter_map(|l| c.get(&l.name).map(|lc| layer_params(l.shape(), lc)))
                .sum();
            println!("  chosen config   {:>12}", group(n));
        }
        None => println!("config: none chosen yet"),
    }
    Ok(ExitCode::SUCCESS)
}
