//! GGUF model files (llama.cpp's format) as a front end: the header is read by
//! candle-core's GGUF reader; the architecture and hyper-parameters in its metadata
//! become the `config.json` a Hugging Face folder of the same model would have, so
//! the decoder is built by its family's file like any checkpoint; and the weights
//! are a [`WeightSource`] that renames Hugging Face names to GGUF ones
//! (`model.layers.0.self_attn.q_proj.weight` → `blk.0.attn_q.weight`), dequantises
//! each tensor to f32 on request (F32, F16, BF16, Q4_0…Q8_1, Q2_K…Q8_K) and undoes
//! the row order llama.cpp gives LLaMA's query and key projections.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::{Map, Value as Json, json};

use super::hf_config::HfConfig;
use super::weights::{Init, WeightSource};
use super::{HfModel, ModelError};
use crate::ir::Tensor;

/// GGUF architectures and the `model_type` each is built as.
const ARCHITECTURES: [(&str, &str); 3] = [
    ("llama", "llama"),
    ("mistral", "mistral"),
    ("qwen2", "qwen2"),
];

/// An open GGUF file: its parsed header and a reader for the tensor data.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<GgufFile, ModelError> {
        let err = |what: String| ModelError::File {
            path: path.to_path_buf(),
            what,
        };
        let file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| {
            // candle names the unknown type's number but not the tensor: find it.
            let unknown = e.to_string().contains("unknown dtype");
            let mut bytes = Vec::new();
            if unknown && let Ok(f) = File::open(path) {
                // Headers (vocabularies included) are far smaller than this.
                let _ = std::io::Read::read_to_end(&mut std::io::Read::take(f, 256 << 20), &mut bytes);
            }
            match unknown_type_tensor(&bytes) {
                Some((name, t)) => err(format!(
                    "tensor '{name}' has GGML type {t}, which is not supported (supported: {SUPPORTED_TYPES})"
                )),
                None => err(format!("not a readable GGUF file: {e}")),
            }
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    fn error(&self, what: impl std::fmt::Display) -> ModelError {
        ModelError::File {
            path: self.path.clone(),
            what: what.to_string(),
        }
    }

    /// The metadata value `key`, which must be present.
    fn get(&self, key: &str) -> Result<&Value, ModelError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.error(format!("metadata key '{key}' is missing")))
    }

    fn uint(&self, key: &str) -> Result<usize, ModelError> {
        let v = self.get(key)?;
        let n = match v {
            Value::U8(x) => Some(u64::from(*x)),
            Value::U16(x) => Some(u64::from(*x)),
            Value::U32(x) => Some(u64::from(*x)),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.error(format!("metadata key '{key}' is {v:?}, not a count")))
    }

    fn opt_uint(&self, key: &str) -> Result<Option<usize>, ModelError> {
        if self.content.metadata.contains_key(key) {
            self.uint(key).map(Some)
        } else {
            Ok(None)
        }
    }

    fn opt_float(&self, key: &str) -> Result<Option<f64>, ModelError> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(f64::from(*x))),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(other) => {
                Err(self.error(format!("metadata key '{key}' is {other:?}, not a number")))
            }
        }
    }

    fn opt_string(&self, key: &str) -> Result<Option<&str>, ModelError> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => {
                Err(self.error(format!("metadata key '{key}' is {other:?}, not a string")))
            }
        }
    }

    /// `general.architecture` and the `model_type` it is built as.
    fn architecture(&self) -> Result<(String, &'static str), ModelError> {
        let arch = self
            .opt_string("general.architecture")?
            .ok_or_else(|| self.error("metadata key 'general.architecture' is missing"))?;
        ARCHITECTURES
            .iter()
            .find(|(a, _)| *a == arch)
            .map(|(a, t)| (a.to_string(), *t))
            .ok_or_else(|| {
                let known: Vec<&str> = ARCHITECTURES.iter().map(|(a, _)| *a).collect();
                self.error(format!(
                    "general.architecture {arch:?} is not supported (supported: {})",
                    known.join(", ")
                ))
            })
    }

    /// The `config.json` a Hugging Face folder of this model would have, made from
    /// the metadata (the keys transformers' own GGUF reader maps).
    pub fn config(&self) -> Result<HfConfig, ModelError> {
        let (arch, model_type) = self.architecture()?;
        let key = |k: &str| format!("{arch}.{k}");
        let heads = self.uint(&key("attention.head_count"))?;
        let hidden = self.uint(&key("embedding_length"))?;
        let head_dim = match self.opt_uint(&key("attention.key_length"))? {
            Some(d) => d,
            None => match self.opt_uint(&key("rope.dimension_count"))? {
                Some(d) => d,
                None if heads > 0 => hidden / heads,
                None => 0,
            },
        };
        let vocab = match self.opt_uint(&key("vocab_size"))? {
            Some(v) => v,
            None => match self.content.metadata.get("tokenizer.ggml.tokens") {
                Some(Value::Array(a)) => a.len(),
                _ => {
                    return Err(self.error(format!(
                        "metadata has neither '{}' nor 'tokenizer.ggml.tokens'",
                        key("vocab_size")
                    )));
                }
            },
        };
        let mut c = Map::new();
        c.insert("model_type".into(), json!(model_type));
        c.insert("vocab_size".into(), json!(vocab));
        c.insert("hidden_size".into(), json!(hidden));
        c.insert(
            "intermediate_size".into(),
            json!(self.uint(&key("feed_forward_length"))?),
        );
        c.insert(
            "num_hidden_layers".into(),
            json!(self.uint(&key("block_count"))?),
        );
        c.insert("num_attention_heads".into(), json!(heads));
        let kv = self
            .opt_uint(&key("attention.head_count_kv"))?
            .unwrap_or(heads);
        c.insert("num_key_value_heads".into(), json!(kv));
        c.insert("head_dim".into(), json!(head_dim));
        if let Some(n) = self.opt_uint(&key("context_length"))? {
            c.insert("max_position_embeddings".into(), json!(n));
        }
        if let Some(e) = self.opt_float(&key("attention.layer_norm_rms_epsilon"))? {
            c.insert("rms_norm_eps".into(), json!(e));
        }
        let mut rope = Map::new();
        if let Some(t) = self.opt_float(&key("rope.freq_base"))? {
            rope.insert("rope_theta".into(), json!(t));
        }
        if let Some(d) = self.opt_uint(&key("rope.dimension_count"))?
            && d != head_dim
            && head_dim > 0
        {
            rope.insert(
                "partial_rotary_factor".into(),
                json!(d as f64 / head_dim as f64),
            );
        }
        match self.opt_string(&key("rope.scaling.type"))? {
            None | Some("none") => {
                rope.insert("rope_type".into(), json!("default"));
            }
            Some(kind) => {
                rope.insert("rope_type".into(), json!(kind));
                if let Some(f) = self.opt_float(&key("rope.scaling.factor"))? {
                    rope.insert("factor".into(), json!(f));
                }
            }
        }
        if self.content.tensor_infos.contains_key("rope_freqs.weight") {
            return Err(self.error(
                "tensor 'rope_freqs.weight' (per-frequency RoPE factors, as llama.cpp stores Llama 3.1's scaling) is not supported",
            ));
        }
        c.insert("rope_parameters".into(), Json::Object(rope));
        if let Some(w) = self.opt_uint(&key("attention.sliding_window"))? {
            c.insert("sliding_window".into(), json!(w));
        } else if arch == "mistral" {
            c.insert("sliding_window".into(), Json::Null);
        }
        let tied = !self.content.tensor_infos.contains_key("output.weight");
        c.insert("tie_word_embeddings".into(), json!(tied));
        for (gguf, hf) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
            ("tokenizer.ggml.padding_token_id", "pad_token_id"),
        ] {
            if let Some(id) = self.opt_uint(gguf)? {
                c.insert(hf.into(), json!(id));
            }
        }
        Ok(HfConfig {
            path: self.path.clone(),
            json: Json::Object(c),
            model_type: model_type.to_string(),
        })
    }
}

/// llama.cpp's token types: a control token (`<|im_start|>`) and a user-defined one.
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

impl GgufFile {
    fn strings(&self, key: &str) -> Result<Vec<String>, ModelError> {
        match self.get(key)? {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.error(format!(
                        "metadata key '{key}' entry {i} is {other:?}, not a string"
                    ))),
                })
                .collect(),
            other => Err(self.error(format!("metadata key '{key}' is {other:?}, not a list"))),
        }
    }

    fn token_types(&self, n: usize) -> Vec<i64> {
        match self.content.metadata.get("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.to_i32().map(i64::from).unwrap_or(1))
                .collect(),
            _ => vec![1; n],
        }
    }

    /// The Hugging Face tokenizer files this file's metadata describes, as
    /// transformers' own GGUF reader makes them: `tokenizer.json` (a byte-level BPE
    /// for llama.cpp's `gpt2` tokenizer model, control tokens as special added
    /// tokens), `tokenizer_config.json` (the special tokens by name) and, when the
    /// metadata has one, `chat_template.jinja`.
    pub fn tokenizer_files(&self) -> Result<Vec<(String, Vec<u8>)>, ModelError> {
        let model = self
            .opt_string("tokenizer.ggml.model")?
            .ok_or_else(|| self.error("metadata key 'tokenizer.ggml.model' is missing"))?;
        if model != "gpt2" {
            return Err(self.error(format!(
                "tokenizer.ggml.model {model:?} is not supported yet (only \"gpt2\", byte-level BPE); pass --tokenizer DIR"
            )));
        }
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let merges = self.strings("tokenizer.ggml.merges")?;
        let types = self.token_types(tokens.len());
        let vocab: Map<String, Json> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let added: Vec<Json> = tokens
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let ty = types.get(i).copied().unwrap_or(1);
                (ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED).then(|| {
                    json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": ty != TOKEN_CONTROL,
                           "special": ty == TOKEN_CONTROL})
                })
            })
            .collect();
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                                "trim_offsets": true, "use_regex": true});
        let token_of = |key: &str| -> Result<Option<String>, ModelError> {
            Ok(self.opt_uint(key)?.and_then(|i| tokens.get(i).cloned()))
        };
        let bos = token_of("tokenizer.ggml.bos_token_id")?;
        let add_bos = matches!(
            self.content.metadata.get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(true))
        );
        let single = match (&bos, add_bos) {
            (Some(b), true) => json!([{"SpecialToken": {"id": b, "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}]),
            _ => json!([{"Sequence": {"id": "A", "type_id": 0}}]),
        };
        let special_tokens = match (&bos, add_bos) {
            (Some(b), true) => {
                let id = self.opt_uint("tokenizer.ggml.bos_token_id")?;
                json!({ b.clone(): {"id": b, "ids": [id], "tokens": [b]} })
            }
            _ => json!({}),
        };
        let tokenizer = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": byte_level,
            "post_processor": {"type": "TemplateProcessing", "single": single,
                               "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                                        {"Sequence": {"id": "B", "type_id": 1}}],
                               "special_tokens": special_tokens},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                        "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": "", "end_of_word_suffix": "",
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges}
        });
        let mut config = Map::new();
        for (key, name) in [
            ("tokenizer.ggml.bos_token_id", "bos_token"),
            ("tokenizer.ggml.eos_token_id", "eos_token"),
            ("tokenizer.ggml.padding_token_id", "pad_token"),
            ("tokenizer.ggml.unknown_token_id", "unk_token"),
        ] {
            if let Some(t) = token_of(key)? {
                config.insert(name.into(), json!(t));
            }
        }
        let mut files = vec![
            (
                "tokenizer.json".to_string(),
                serde_json::to_vec(&tokenizer).unwrap_or_default(),
            ),
            (
                "tokenizer_config.json".to_string(),
                serde_json::to_vec_pretty(&Json::Object(config)).unwrap_or_default(),
            ),
        ];
        if let Some(t) = self.opt_string("tokenizer.chat_template")? {
            files.push(("chat_template.jinja".to_string(), t.as_bytes().to_vec()));
        }
        Ok(files)
    }
}

/// The tensor types candle-core dequantises.
const SUPPORTED_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";

/// GGML type numbers of [`SUPPORTED_TYPES`].
const KNOWN_TYPES: [u32; 15] = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 30];

/// A bounds-checked reader over a GGUF header.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = usize::try_from(self.u64()?).ok()?;
        Some(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    /// Skips one metadata value of GGUF value type `t`.
    fn skip(&mut self, t: u32, depth: usize) -> Option<()> {
        let size = match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => return self.string().map(|_| ()),
            9 if depth < 4 => {
                let inner = self.u32()?;
                for _ in 0..self.u64()? {
                    self.skip(inner, depth + 1)?;
                }
                return Some(());
            }
            _ => return None,
        };
        self.take(size).map(|_| ())
    }
}

/// The first tensor record of a GGUF v2/v3 header whose type is not one of
/// [`KNOWN_TYPES`], with that type; `None` when the header cannot be walked that far.
fn unknown_type_tensor(b: &[u8]) -> Option<(String, u32)> {
    let mut c = Cursor { b, at: 0 };
    if c.take(4)? != b"GGUF" || c.u32()? < 2 {
        return None;
    }
    let tensors = c.u64()?;
    let kvs = c.u64()?;
    for _ in 0..kvs {
        c.string()?;
        let t = c.u32()?;
        c.skip(t, 0)?;
    }
    for _ in 0..tensors {
        let name = c.string()?;
        let dims = usize::try_from(c.u32()?).ok()?;
        c.take(dims.checked_mul(8)?)?;
        let t = c.u32()?;
        c.u64()?;
        if !KNOWN_TYPES.contains(&t) {
            return Some((name, t));
        }
    }
    None
}

/// The GGUF name of a Hugging Face decoder weight, `None` for names GGUF does not
/// have.
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, module) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let (module, kind) = module.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// Undoes llama.cpp's row order of a LLaMA query or key projection: within each of
/// `heads` heads GGUF interleaves the two rotary halves (row `2i + half`), where
/// transformers keeps them apart (row `half·d/2 + i`). `rows` are the leading axis of
/// `values`, each `cols` long (a bias has one column).
pub fn unpermute_rows(values: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = vec![0.0f32; values.len()];
    for h in 0..heads {
        for part in 0..2 {
            for i in 0..half {
                let hf = h * 2 * half + part * half + i;
                let gg = h * 2 * half + i * 2 + part;
                out[hf * cols..(hf + 1) * cols]
                    .copy_from_slice(&values[gg * cols..(gg + 1) * cols]);
            }
        }
    }
    out
}

/// The weights of a GGUF file under their Hugging Face names, dequantised to f32.
pub struct GgufWeights {
    file: GgufFile,
    /// Query and key heads whose rows are to be put back in transformers' order
    /// (LLaMA only: llama.cpp leaves Qwen2's as they are).
    permuted: Option<(usize, usize)>,
}

impl GgufWeights {
    pub fn new(file: GgufFile, cfg: &HfConfig) -> GgufWeights {
        let permuted = (cfg.model_type == "llama").then(|| {
            let n = |k: &str| cfg.json.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
            (n("num_attention_heads"), n("num_key_value_heads"))
        });
        GgufWeights { file, permuted }
    }
}

impl WeightSource for GgufWeights {
    fn tensor(&mut self, name: &str, shape: &[usize], _init: Init) -> Result<Tensor, ModelError> {
        let f = &mut self.file;
        let gname = gguf_name(name)
            .filter(|g| f.content.tensor_infos.contains_key(g))
            .ok_or_else(|| f.error(format!("the file has no tensor for '{name}'")))?;
        let info = &f.content.tensor_infos[&gname];
        if info.shape.dims() != shape {
            return Err(f.error(format!(
                "tensor '{gname}' ({name}) is {:?} but the metadata implies {shape:?}",
                info.shape.dims()
            )));
        }
        let dtype = info.ggml_dtype;
        let values = f
            .content
            .tensor(&mut f.reader, &gname, &candle_core::Device::Cpu)
            .and_then(|q| q.dequantize(&candle_core::Device::Cpu))
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| f.error(format!("tensor '{gname}' ({dtype:?}): {e}")))?;
        let values = match self.permuted {
            Some((heads, kv_heads)) if gname.contains(".attn_q.") || gname.contains(".attn_k.") => {
                let h = if gname.contains(".attn_q.") {
                    heads
                } else {
                    kv_heads
                };
                let rows = shape[0];
                if h == 0 || !rows.is_multiple_of(2 * h) {
                    return Err(f.error(format!(
                        "tensor '{gname}': {rows} rows do not split into {h} heads of rotary pairs"
                    )));
                }
                unpermute_rows(&values, rows, values.len() / rows, h)
            }
            _ => values,
        };
        Tensor::from_f32(shape.to_vec(), values).map_err(|source| ModelError::Tensor {
            name: gname,
            source,
        })
    }

    fn has(&self, name: &str) -> bool {
        gguf_name(name).is_some_and(|g| self.file.content.tensor_infos.contains_key(&g))
    }

    fn describe(&self) -> String {
        self.file.path.display().to_string()
    }
}

/// Builds the decoder of a GGUF file.
pub fn build_gguf(path: &Path) -> Result<HfModel, ModelError> {
    let file = GgufFile::open(path)?;
    let cfg = file.config()?;
    let f = super::family(&cfg)?;
    let mut weights = GgufWeights::new(file, &cfg);
    super::finish(&cfg, f, &mut weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_llama_cpp_names() {
        for (hf, g) in [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
            (
                "model.layers.0.input_layernorm.weight",
                "blk.0.attn_norm.weight",
            ),
            (
                "model.layers.12.post_attention_layernorm.weight",
                "blk.12.ffn_norm.weight",
            ),
            ("model.layers.3.self_attn.q_proj.bias", "blk.3.attn_q.bias"),
            (
                "model.layers.3.self_attn.o_proj.weight",
                "blk.3.attn_output.weight",
            ),
            (
                "model.layers.29.mlp.down_proj.weight",
                "blk.29.ffn_down.weight",
            ),
        ] {
            assert_eq!(gguf_name(hf).as_deref(), Some(g), "{hf}");
        }
        assert_eq!(gguf_name("model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(gguf_name("model.layers.0.mlp.fc1.weight"), None);
    }

    /// Hand-worked: one head of four rows (d/2 = 2) stored as llama.cpp orders them,
    /// q0 q2 q1 q3 (pairs interleaved), comes back as q0 q1 q2 q3.
    #[test]
    fn unpermute_puts_rotary_halves_back_apart() {
        let gguf = [0.0, 0.5, 2.0, 2.5, 1.0, 1.5, 3.0, 3.5];
        let out = unpermute_rows(&gguf, 4, 2, 1);
        assert_eq!(out, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]);
        // Two heads of two rows each: nothing to reorder within a head of one pair.
        let out = unpermute_rows(&[1.0, 2.0, 3.0, 4.0], 4, 1, 2);
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
    }
}
