//! The deployable decoder with a KV cache: a supernet over a decoder checkpoint (or
//! GGUF file) is rebuilt by its family's builder in the cached form
//! ([`crate::models::llama::DecoderForm::Cached`]), the weights coming from the
//! supernet's own graph, with every adapted layer folded under the chosen config. So
//! the file has the base model's ops and cost, and every trained change (adapters,
//! full fine-tuning) is in it, without the checkpoint being read again.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, bail};

use super::Supernet;
use crate::glora::{ModelConfig, merge};
use crate::ir::{Graph, Op, Tensor};
use crate::models::llama::DecoderForm;
use crate::models::{HfConfig, Init, ModelError, WeightSource};
use crate::passes;

/// A merged layer: PyTorch-layout weight `[d_out, d_in]` and the bias it has, if any.
struct Merged {
    weight: Tensor,
    bias: Option<Tensor>,
}

/// The weights of a supernet's graph under their Hugging Face names, adapted layers
/// merged.
struct SupernetWeights {
    /// Every constant of the graph by name, as the graph holds it.
    consts: HashMap<String, Tensor>,
    /// Constants that are a plain linear layer's `[d_in, d_out]` weight.
    transposed: HashSet<String>,
    /// Adapted layers by module path.
    merged: HashMap<String, Merged>,
}

fn transpose(t: &Tensor) -> anyhow::Result<Tensor> {
    let (r, c) = (t.shape()[0], t.shape()[1]);
    let v = t.to_f32_vec();
    let out: Vec<f32> = (0..c)
        .flat_map(|j| {
            v.iter()
                .skip(j)
                .step_by(c)
                .copied()
                .take(r)
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Tensor::from_f32(vec![c, r], out)?)
}

impl SupernetWeights {
    fn new(net: &Supernet, config: &ModelConfig) -> anyhow::Result<SupernetWeights> {
        let g = &net.graph;
        let mut consts = HashMap::new();
        for id in g.node_ids() {
            let n = g.node(id);
            if let Op::Const(t) = &n.op {
                consts.insert(n.name.clone(), t.clone());
            }
        }
        let transposed = passes::find_linear_layers(g)
            .into_iter()
            .filter(|l| l.kind == passes::LinearKind::MatMul)
            .map(|l| g.node(l.weight).name.clone())
            .collect();
        let mut merged = HashMap::new();
        for l in passes::glora_layers(g) {
            let n = passes::read_glora_node(g, l.node)?;
            let lc = config
                .get(&l.name)
                .with_context(|| format!("the config has no entry for layer '{}'", l.name))?;
            let m = merge(
                &n.w0_out_in,
                n.b0_values.as_deref(),
                n.shape(),
                lc,
                &n.adapters,
            )
            .with_context(|| format!("merging layer '{}'", l.name))?;
            let (d_in, d_out) = (l.shape.d_in, l.shape.d_out);
            let bias = passes::merged_has_bias(l.shape.has_bias, lc)
                .then(|| Tensor::from_f32(vec![d_out], m.bias))
                .transpose()?;
            merged.insert(
                l.name.clone(),
                Merged {
                    weight: Tensor::from_f32(vec![d_out, d_in], m.weight)?,
                    bias,
                },
            );
        }
        Ok(SupernetWeights {
            consts,
            transposed,
            merged,
        })
    }

    fn find(&self, name: &str) -> Option<Result<Tensor, ModelError>> {
        if let Some((layer, leaf)) = name.rsplit_once('.')
            && let Some(m) = self.merged.get(layer)
        {
            return match leaf {
                "weight" => Some(Ok(m.weight.clone())),
                "bias" => m.bias.clone().map(Ok),
                _ => None,
            };
        }
        let t = self.consts.get(name)?;
        if self.transposed.contains(name) {
            return Some(transpose(t).map_err(|e| ModelError::Config(format!("{name}: {e}"))));
        }
        Some(Ok(t.clone()))
    }
}

impl WeightSource for SupernetWeights {
    fn tensor(&mut self, name: &str, shape: &[usize], _init: Init) -> Result<Tensor, ModelError> {
        let t = self
            .find(name)
            .ok_or_else(|| ModelError::Config(format!("the supernet has no weight '{name}'")))??;
        if t.shape() != shape {
            return Err(ModelError::Config(format!(
                "the supernet's weight '{name}' is {:?} but the decoder needs {shape:?}",
                t.shape()
            )));
        }
        Ok(t)
    }

    fn has(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    fn bias_added(&self, layer: &str) -> bool {
        self.merged.get(layer).is_some_and(|m| m.bias.is_some())
    }

    fn describe(&self) -> String {
        "the supernet's merged weights".into()
    }
}

impl Supernet {
    /// Whether the base model is a decoder the cached form can be built for.
    pub fn is_decoder(&self) -> bool {
        crate::models::decoder_config(&self.base_path).is_ok()
    }

    /// The deployable decoder with a KV cache: adapters folded under `config` into
    /// the cached form of the base model's family (see [`DecoderForm::Cached`]).
    pub fn merged_cached(&self, config: &ModelConfig) -> anyhow::Result<Graph> {
        self.check_config(config)?;
        if self.head.is_some() {
            bail!("the supernet has a classification head; a KV cache is for language models");
        }
        let mut cfg: HfConfig = crate::models::decoder_config(&self.base_path)?;
        // The head reads its own (possibly adapted) weight, tied or not.
        if let Some(obj) = cfg.json.as_object_mut() {
            obj.insert("tie_word_embeddings".into(), false.into());
        }
        let mut weights = SupernetWeights::new(self, config)?;
        let built = crate::models::build_decoder(&cfg, &mut weights, DecoderForm::Cached)
            .with_context(|| format!("rebuilding {} with a KV cache", self.base_path.display()))?;
        Ok(built.graph)
    }
}

/// Files a runtime wants beside an exported decoder: the tokenizer and chat
/// template of a checkpoint folder, copied.
const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
];

/// Token ids under `key` of a config: one id or a list.
fn ids(v: &serde_json::Value, key: &str) -> Vec<u32> {
    match v.get(key) {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(serde_json::Value::as_u64)
            .map(|n| n as u32)
            .collect(),
        Some(other) => other.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        None => Vec::new(),
    }
}

impl Supernet {
    /// The files to write beside the exported decoder `onnx_name`: its
    /// `genai_config.json` and the tokenizer files (a checkpoint folder's, copied, or
    /// those a GGUF file's metadata describes).
    pub fn decoder_files(&self, onnx_name: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let cfg = crate::models::decoder_config(&self.base_path)?;
        let dims = crate::models::llama::decoder_dims(&cfg)?;
        let dir = self.base_path.is_dir().then_some(self.base_path.as_path());
        let generation: serde_json::Value = dir
            .and_then(|d| std::fs::read_to_string(d.join("generation_config.json")).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        let mut eos = ids(&generation, "eos_token_id");
        if eos.is_empty() {
            eos = ids(&cfg.json, "eos_token_id");
        }
        let first = |key: &str| {
            ids(&generation, key)
                .first()
                .or(ids(&cfg.json, key).first())
                .copied()
        };
        let shape = crate::verify::generate::DecoderShape {
            layers: dims.layers,
            kv_heads: dims.kv_heads,
            head_dim: dims.head_dim,
            vocab: dims.vocab,
            eos,
            context_length: dims.max_positions,
        };
        let genai = crate::verify::generate::genai_config(
            &shape,
            &cfg.model_type,
            dims.heads,
            dims.hidden,
            first("bos_token_id"),
            first("pad_token_id"),
            onnx_name,
        );
        let mut files = vec![(
            crate::verify::generate::GENAI_CONFIG.to_string(),
            serde_json::to_vec_pretty(&genai)?,
        )];
        if dir.is_none() {
            // A GGUF file: its metadata's tokenizer and chat template, as transformers
            // reads them. A tokenizer model it cannot describe is left out, and
            // `glora generate` then asks for --tokenizer.
            if let Ok(tok) = crate::models::gguf::GgufFile::open(&self.base_path)
                .and_then(|f| f.tokenizer_files())
            {
                files.extend(tok);
            }
        }
        if let Some(d) = dir {
            for name in TOKENIZER_FILES {
                let p = d.join(name);
                if p.is_file() {
                    files.push((
                        name.to_string(),
                        std::fs::read(&p).with_context(|| p.display().to_string())?,
                    ));
                }
            }
        }
        Ok(files)
    }
}
