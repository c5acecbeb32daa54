//! `glora export NAME.glora -o OUT.onnx`: writes the model a config selects from a
//! supernet, merged into plain weights (default) or with each adapted layer in
//! standard ops (`--unmerged`). The config is checked against the supernet before
//! anything is written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::common;
use crate::glora::ModelConfig;
use crate::supernet::Supernet;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The supernet directory written by `glora compile`.
    pub supernet: PathBuf,
    /// The per-layer config, JSON: `{"layers": {"<layer>": {"A": "LoRA_4", "B": "none",
    /// "C": "vector", "D": "constant", "E": "none"}, ...}}`. Default: the config stored
    /// in the supernet, if any.
    #[arg(long, value_name = "CONFIG.json", conflicts_with = "random_config")]
    pub config: Option<PathBuf>,
    /// Draw each layer's config uniformly from the search space instead.
    #[arg(long)]
    pub random_config: bool,
    /// Seed of --random-config.
    #[arg(long, default_value_t = 0, requires = "random_config")]
    pub seed: u64,
    /// Write each adapted layer with standard ops instead of folding the adapters into
    /// its weight and bias (for comparison; costs more at inference).
    #[arg(long)]
    pub unmerged: bool,
    /// Where to write the ONNX model.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Also write the config used to this file (useful with --random-config).
    #[arg(long, value_name = "CONFIG.json")]
    pub save_config: Option<PathBuf>,
    /// ONNX opset to write (default: 17, or higher if the graph needs it).
    #[arg(long)]
    pub opset: Option<i64>,
    /// For a decoder (LLaMA, Mistral, Qwen2), write the plain `input_ids`,
    /// `attention_mask` → `logits` graph instead of the default one with a KV cache
    /// (`position_ids`, `past_key_values.N.key|value` in, `present.N.key|value` out).
    #[arg(long)]
    pub no_kv_cache: bool,
}

/// Reads a config file and checks it against the supernet; errors name the file.
pub fn read_config(net: &Supernet, path: &Path) -> anyhow::Result<ModelConfig> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let config = ModelConfig::from_json(&text).with_context(|| path.display().to_string())?;
    net.check_config(&config)
        .with_context(|| path.display().to_string())?;
    Ok(config)
}

fn choose_config(net: &Supernet, a: &Args) -> anyhow::Result<ModelConfig> {
    if let Some(path) = &a.config {
        return read_config(net, path);
    }
    if a.random_config {
        return Ok(net.random_config(a.seed));
    }
    match &net.config {
        Some(config) => Ok(config.clone()),
        None => bail!(
            "{}: holds no chosen config; pass --config CONFIG.json or --random-config",
            a.supernet.display()
        ),
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let sp = common::spinner(format!("loading {}", a.supernet.display()));
    let net = Supernet::load(&a.supernet);
    sp.finish_and_clear();
    let net = net?;
    let config = choose_config(&net, &a)?;
    let sp = common::spinner(if a.unmerged {
        "expanding the adapters".to_string()
    } else {
        "merging the adapters".to_string()
    });
    let cached = !a.unmerged && !a.no_kv_cache && net.head.is_none() && net.is_decoder();
    let g = if a.unmerged {
        net.unmerged(&config)
    } else if cached {
        net.merged_cached(&config)
    } else {
        net.merged(&config)
    };
    sp.finish_and_clear();
    let g = g?;

    // A head trained on named classes carries their names into the export.
    let metadata = net
        .head
        .as_ref()
        .filter(|h| !h.spec.labels.is_empty())
        .map(|h| {
            vec![(
                crate::pipeline::ID2LABEL.to_string(),
                crate::pipeline::id2label(&h.spec.labels),
            )]
        })
        .unwrap_or_default();
    let opts = crate::onnx::ExportOptions {
        opset: a.opset,
        metadata,
        ..Default::default()
    };
    let sp = common::spinner(format!("writing {}", a.output.display()));
    let rep = crate::onnx::export_file(&g, &a.output, &opts);
    sp.finish_and_clear();
    let rep = rep?;
    if cached {
        let dir = a.output.parent().unwrap_or(Path::new("."));
        let name = a
            .output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (file, bytes) in net.decoder_files(&name)? {
            let path = dir.join(&file);
            crate::io::write_atomic(&path, &bytes).with_context(|| path.display().to_string())?;
            println!("wrote {}", path.display());
        }
    }
    if let Some(path) = &a.save_config {
        crate::io::write_atomic(path, config.to_json().as_bytes())
            .with_context(|| path.display().to_string())?;
        println!("wrote config {}", path.display());
    }
    println!(
        "{} layers, {} adapter parameters in this config",
        net.layers.len(),
        super::compile::group(net.config_params(&config)?)
    );
    println!(
        "wrote {} ({}, opset {}, {} ops, {} bytes{})",
        a.output.display(),
        match (a.unmerged, cached) {
            (true, _) => "unmerged",
            (false, true) => "merged, with a KV cache",
            (false, false) => "merged",
        },
        rep.opset,
        g.op_histogram().values().sum::<usize>(),
        rep.bytes,
        rep.external_data
            .as_ref()
            .map(|p| format!(", weights in {}", p.display()))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
