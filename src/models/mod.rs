//! Model front ends: IR graphs built from a model's description rather than imported
//! from ONNX. A Hugging Face checkpoint folder (`config.json` + safetensors) is built
//! by its family's file (`bert`, `distilbert`, `hf_vit`, `dinov2`, `llama`) through the shared
//! [`builder`] and a [`weights`] source; a GGUF file ([`gguf`]) becomes the same
//! config and a dequantising weight source; [`open`] picks the front end for whatever
//! path a user gives (ONNX file, checkpoint folder or GGUF file). `vit` builds the plain,
//! randomly initialised ViT our benchmarks compare with PyTorch on.

mod attention;
pub mod bert;
pub mod builder;
pub mod dinov2;
pub mod distilbert;
pub mod gguf;
pub mod hf_config;
pub mod hf_vit;
pub mod llama;
mod open;
pub mod rotary;
mod vit;
pub mod weights;

use std::path::{Path, PathBuf};

pub use hf_config::HfConfig;
pub use open::{ModelFormat, is_checkpoint_dir, load_model, model_format};
pub use vit::{VitConfig, build_vit};
pub use weights::{Init, RandomWeights, RecordingWeights, SafetensorsWeights, WeightSource};

use crate::ir::infer::infer_types;
use crate::ir::{DType, Dim, Graph, GraphError, Shape, TensorError, TensorType};

/// Output names of the Hugging Face front ends, as transformers names them.
pub const LAST_HIDDEN_STATE: &str = "last_hidden_state";
pub const POOLER_OUTPUT: &str = "pooler_output";

/// A model that cannot be built: a configuration that does not describe a valid
/// network, a checkpoint file that does not fit it, or a graph that fails its own
/// checks.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("{}: {what}", path.display())]
    File { path: PathBuf, what: String },
    #[error("weight '{name}': {source}")]
    Tensor { name: String, source: TensorError },
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// What a family's builder reports beside the graph it filled in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuiltModel {
    /// The longest token sequence the position embeddings cover (text models).
    pub max_positions: Option<usize>,
}

/// A checkpoint folder built into a graph, with what the rest of glora needs to know
/// about it.
#[derive(Debug)]
pub struct HfModel {
    pub graph: Graph,
    pub model_type: String,
    pub max_positions: Option<usize>,
    /// `id2label` of a fine-tuned checkpoint, when it names real labels.
    pub label_names: Option<Vec<String>>,
}

/// The i64 `[batch, sequence]` type of token inputs.
fn token_input() -> TensorType {
    TensorType::new(
        DType::I64,
        Shape(vec![Dim::sym("batch"), Dim::sym("sequence")]),
    )
}

type BuildFn = fn(&HfConfig, &mut builder::GraphBuilder<'_>) -> Result<BuiltModel, ModelError>;

/// One family: the `model_type`s it builds, the prefixes its task models put before
/// the base model's weights, and its builder.
struct Family {
    model_types: &'static [&'static str],
    prefixes: &'static [&'static str],
    build: BuildFn,
}

const FAMILIES: [Family; 5] = [
    Family {
        model_types: &bert::MODEL_TYPES,
        prefixes: &bert::PREFIXES,
        build: bert::build,
    },
    Family {
        model_types: &distilbert::MODEL_TYPES,
        prefixes: &distilbert::PREFIXES,
        build: distilbert::build,
    },
    Family {
        model_types: &hf_vit::MODEL_TYPES,
        prefixes: &hf_vit::PREFIXES,
        build: hf_vit::build,
    },
    Family {
        model_types: &dinov2::MODEL_TYPES,
        prefixes: &dinov2::PREFIXES,
        build: dinov2::build,
    },
    Family {
        model_types: &llama::MODEL_TYPES,
        prefixes: &llama::PREFIXES,
        build: llama::build,
    },
];

/// Every `model_type` a checkpoint folder may have.
pub fn supported_model_types() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.model_types.iter().copied())
        .collect()
}

fn family(cfg: &HfConfig) -> Result<&'static Family, ModelError> {
    FAMILIES
        .iter()
        .find(|f| f.model_types.contains(&cfg.model_type.as_str()))
        .ok_or_else(|| {
            cfg.error(
                "model_type",
                format!(
                    "{:?} is not supported (supported: {})",
                    cfg.model_type,
                    supported_model_types().join(", ")
                ),
            )
        })
}

fn finish(
    cfg: &HfConfig,
    f: &Family,
    weights: &mut dyn WeightSource,
) -> Result<HfModel, ModelError> {
    finish_with(cfg, f.build, weights)
}

fn finish_with(
    cfg: &HfConfig,
    build: BuildFn,
    weights: &mut dyn WeightSource,
) -> Result<HfModel, ModelError> {
    let mut b = builder::GraphBuilder::new(&cfg.model_type, weights);
    let built = build(cfg, &mut b)?;
    let mut graph = b.g;
    infer_types(&mut graph)?;
    graph.validate()?;
    Ok(HfModel {
        graph,
        model_type: cfg.model_type.clone(),
        max_positions: built.max_positions,
        label_names: cfg.label_names(),
    })
}

/// The longest token sequence a checkpoint folder's position embeddings cover, read
/// from its `config.json` alone; `None` for other models and configs without one.
pub fn max_positions(model: &Path) -> Option<usize> {
    if !is_checkpoint_dir(model) {
        return None;
    }
    let cfg = HfConfig::read(model).ok()?;
    let n = cfg.json.get("max_position_embeddings")?.as_u64()? as usize;
    if bert::MODEL_TYPES[1..].contains(&cfg.model_type.as_str()) {
        // RoBERTa's positions start after the padding index.
        let pad = cfg
            .json
            .get("pad_token_id")
            .and_then(|v| v.as_u64())
            .unwrap_or(1) as usize;
        return Some(n.saturating_sub(pad + 1));
    }
    Some(n)
}

/// Builds the model of a Hugging Face checkpoint folder from its `config.json` and
/// safetensors weights.
pub fn build_checkpoint(dir: &Path) -> Result<HfModel, ModelError> {
    let cfg = HfConfig::read(dir)?;
    let f = family(&cfg)?;
    let mut weights = SafetensorsWeights::open(dir, f.prefixes)?;
    finish(&cfg, f, &mut weights)
}

/// The config of a decoder checkpoint folder or GGUF file (its header alone).
pub fn decoder_config(path: &Path) -> Result<HfConfig, ModelError> {
    let cfg = if is_checkpoint_dir(path) {
        HfConfig::read(path)?
    } else {
        gguf::GgufFile::open(path)?.config()?
    };
    if !llama::MODEL_TYPES.contains(&cfg.model_type.as_str()) {
        return Err(cfg.error(
            "model_type",
            format!(
                "{:?} is not a decoder (decoders: {})",
                cfg.model_type,
                llama::MODEL_TYPES.join(", ")
            ),
        ));
    }
    Ok(cfg)
}

/// The config and weights of a decoder checkpoint folder or GGUF file.
pub fn decoder_source(path: &Path) -> Result<(HfConfig, Box<dyn WeightSource>), ModelError> {
    let cfg = decoder_config(path)?;
    let weights: Box<dyn WeightSource> = if is_checkpoint_dir(path) {
        Box::new(SafetensorsWeights::open(path, &llama::PREFIXES)?)
    } else {
        Box::new(gguf::GgufWeights::new(gguf::GgufFile::open(path)?, &cfg))
    };
    Ok((cfg, weights))
}

/// Builds a decoder from `cfg` and `weights` as `form`.
pub fn build_decoder(
    cfg: &HfConfig,
    weights: &mut dyn WeightSource,
    form: llama::DecoderForm,
) -> Result<HfModel, ModelError> {
    let build: BuildFn = match form {
        llama::DecoderForm::Full => llama::build,
        llama::DecoderForm::Cached => |c, b| llama::build_form(c, b, llama::DecoderForm::Cached),
    };
    finish_with(cfg, build, weights)
}

/// Builds a checkpoint folder's architecture with seeded random weights instead of
/// its own (or a `config.json` alone).
pub fn build_random(cfg: &HfConfig, seed: u64) -> Result<HfModel, ModelError> {
    let f = family(cfg)?;
    finish(cfg, f, &mut RandomWeights::new(seed))
}
