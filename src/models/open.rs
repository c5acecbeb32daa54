//! The one door every command takes a model through: a path is an ONNX file
//! (imported by [`crate::onnx`]), a Hugging Face checkpoint folder (built by its
//! family) or a GGUF file (its metadata made into the same family's config). Callers
//! get an IR graph and never ask which it was.

use std::path::Path;

use anyhow::bail;

use super::hf_config::CONFIG_FILE;
use crate::ir::Graph;

/// The kinds of model file glora reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    Onnx,
    /// A folder with `config.json` and safetensors weights.
    Checkpoint,
    Gguf,
}

/// Whether `path` is a Hugging Face checkpoint folder.
pub fn is_checkpoint_dir(path: &Path) -> bool {
    path.is_dir() && path.join(CONFIG_FILE).is_file()
}

/// What `path` holds, judged by its name and, for folders, by `config.json`.
pub fn model_format(path: &Path) -> anyhow::Result<ModelFormat> {
    if path.is_dir() {
        if is_checkpoint_dir(path) {
            return Ok(ModelFormat::Checkpoint);
        }
        bail!(
            "{}: a folder without {CONFIG_FILE}; a model is an ONNX file or a Hugging Face checkpoint folder (config.json + model.safetensors)",
            path.display()
        );
    }
    if !path.exists() {
        bail!("{}: no such file or folder", path.display());
    }
    let gguf = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    Ok(if gguf {
        ModelFormat::Gguf
    } else {
        ModelFormat::Onnx
    })
}

/// Reads the model at `path` into an IR graph, whatever its format.
pub fn load_model(path: &Path) -> anyhow::Result<Graph> {
    match model_format(path)? {
        ModelFormat::Onnx => Ok(crate::onnx::import_file(path)?),
        ModelFormat::Checkpoint => Ok(super::build_checkpoint(path)?.graph),
        ModelFormat::Gguf => Ok(super::gguf::build_gguf(path)?.graph),
    }
}
