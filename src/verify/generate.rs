//! Text generation with an exported decoder and its KV cache, in tract: the prompt's
//! tokens go through one prefill (an empty past), then each new token through one
//! step that is fed the previous step's `present.*`. The decoder's shape comes from
//! the `genai_config.json` written beside it (onnxruntime-genai's file), which also
//! names its end-of-sequence ids. Greedy decoding by default; temperature, top-k and
//! top-p sampling with a seed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

use super::TractModel;
use crate::ir::Tensor;

/// onnxruntime-genai's configuration file, written beside an exported decoder.
pub const GENAI_CONFIG: &str = "genai_config.json";

/// What a decoding loop needs to know about an exported decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderShape {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    /// Ids that end generation.
    pub eos: Vec<u32>,
    pub context_length: usize,
}

/// `genai_config.json` for a decoder of this shape whose file is `filename`.
pub fn genai_config(
    shape: &DecoderShape,
    model_type: &str,
    heads: usize,
    hidden: usize,
    bos: Option<u32>,
    pad: Option<u32>,
    filename: &str,
) -> Value {
    let eos: Value = match shape.eos.as_slice() {
        [one] => (*one).into(),
        many => many.to_vec().into(),
    };
    serde_json::json!({
        "model": {
            "type": model_type,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": pad.or(shape.eos.first().copied()),
            "vocab_size": shape.vocab,
            "context_length": shape.context_length,
            "decoder": {
                "filename": filename,
                "head_size": shape.head_dim,
                "hidden_size": hidden,
                "num_attention_heads": heads,
                "num_key_value_heads": shape.kv_heads,
                "num_hidden_layers": shape.layers,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value"
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value"
                }
            }
        },
        "search": {
            "do_sample": false,
            "max_length": shape.context_length,
            "num_beams": 1,
            "num_return_sequences": 1,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0
        }
    })
}

impl DecoderShape {
    /// Reads the `genai_config.json` at `path`.
    pub fn read(path: &Path) -> anyhow::Result<DecoderShape> {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let get = |ptr: &str| -> anyhow::Result<usize> {
            v.pointer(ptr)
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .with_context(|| format!("{}: no count at {ptr}", path.display()))
        };
        let eos = match v.pointer("/model/eos_token_id") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|n| n as u32)
                .collect(),
            Some(other) => other.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(DecoderShape {
            layers: get("/model/decoder/num_hidden_layers")?,
            kv_heads: get("/model/decoder/num_key_value_heads")?,
            head_dim: get("/model/decoder/head_size")?,
            vocab: get("/model/vocab_size")?,
            eos,
            context_length: get("/model/context_length").unwrap_or(usize::MAX),
        })
    }
}

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// 0 (or below) is greedy.
    pub temperature: f32,
    /// Keep the `top_k` likeliest tokens (0: all).
    pub top_k: usize,
    /// Keep the likeliest tokens whose probabilities add up to `top_p`.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Sampling {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// The index of the largest logit (the first of equals, as `argmax` takes it).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// A token drawn from `logits` under `s`.
pub fn choose(logits: &[f32], s: &Sampling, rng: &mut StdRng) -> usize {
    if s.temperature <= 0.0 {
        return argmax(logits);
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if s.top_k > 0 {
        order.truncate(s.top_k);
    }
    let top = logits[order[0]];
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| (f64::from(logits[i] - top) / f64::from(s.temperature)).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    let mut kept = 0.0;
    let mut cut = probs.len();
    for (i, p) in probs.iter().enumerate() {
        kept += p;
        if kept >= f64::from(s.top_p) {
            cut = i + 1;
            break;
        }
    }
    let probs = &probs[..cut];
    let total: f64 = probs.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, p) in probs.iter().enumerate() {
        u -= p;
        if u <= 0.0 {
            return order[i];
        }
    }
    order[cut - 1]
}

/// What a generation produced, and how fast.
#[derive(Clone, Debug)]
pub struct Generated {
    pub tokens: Vec<u32>,
    /// Whether an end-of-sequence id stopped it (it is not among `tokens`).
    pub stopped: bool,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

impl Generated {
    /// New tokens per second over the decode steps (the prefill's token aside).
    pub fn tokens_per_second(&self) -> f64 {
        let steps = self.tokens.len().saturating_sub(1) + usize::from(self.stopped);
        if self.decode_seconds > 0.0 {
            steps as f64 / self.decode_seconds
        } else {
            0.0
        }
    }
}

/// An exported decoder with a KV cache, loaded in tract for every shape.
pub struct CachedDecoder {
    model: TractModel,
    pub shape: DecoderShape,
    pub path: PathBuf,
}

impl CachedDecoder {
    /// Loads `path` and the `genai_config.json` beside it.
    pub fn load(path: &Path) -> anyhow::Result<CachedDecoder> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let cfg = dir.join(GENAI_CONFIG);
        if !cfg.is_file() {
            bail!(
                "{}: no {GENAI_CONFIG} beside it; export the decoder with `glora export`, which writes one",
                path.display()
            );
        }
        let shape = DecoderShape::read(&cfg)?;
        let model = TractModel::load_dynamic(path)?;
        for want in ["input_ids", "attention_mask", "position_ids"] {
            if !model.input_names().iter().any(|n| n == want) {
                bail!(
                    "{}: no input '{want}'; not a decoder with a KV cache",
                    path.display()
                );
            }
        }
        Ok(CachedDecoder {
            model,
            shape,
            path: path.to_path_buf(),
        })
    }

    /// Runs `ids` (one row) after `past` (`2·layers` tensors), the tokens at positions
    /// `start..`; returns the last token's logits and the new cache.
    fn step(
        &self,
        ids: &[u32],
        start: usize,
        past: &[Tensor],
    ) -> anyhow::Result<(Vec<f32>, Vec<Tensor>)> {
        let n = ids.len();
        let total = start + n;
        let mut inputs = vec![
            (
                "input_ids".to_string(),
                Tensor::from_i64(vec![1, n], ids.iter().map(|&i| i64::from(i)).collect())?,
            ),
            (
                "attention_mask".to_string(),
                Tensor::from_i64(vec![1, total], vec![1; total])?,
            ),
            (
                "position_ids".to_string(),
                Tensor::from_i64(vec![1, n], (start as i64..total as i64).collect())?,
            ),
        ];
        for (i, pair) in past.chunks(2).enumerate() {
            inputs.push((crate::models::llama::past_name(i, "key"), pair[0].clone()));
            inputs.push((crate::models::llama::past_name(i, "value"), pair[1].clone()));
        }
        let mut out = self.model.run(&inputs)?;
        let present = out.split_off(1);
        let logits = out.remove(0).to_f32_vec();
        let vocab = logits.len() / n;
        Ok((logits[(n - 1) * vocab..].to_vec(), present))
    }

    /// Continues `prompt` by up to `max_new` tokens, calling `on_token` with each.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_new: usize,
        sampling: &Sampling,
        mut on_token: impl FnMut(u32),
    ) -> anyhow::Result<Generated> {
        if prompt.is_empty() {
            bail!("the prompt has no tokens");
        }
        let s = &self.shape;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= s.vocab) {
            bail!(
                "token id {bad} is outside the model's vocabulary of {}",
                s.vocab
            );
        }
        let empty = Tensor::from_f32(vec![1, s.kv_heads, 0, s.head_dim], Vec::new())?;
        let mut past = vec![empty; 2 * s.layers];
        let mut rng = StdRng::seed_from_u64(sampling.seed);
        let mut tokens = Vec::new();
        let mut stopped = false;
        let t0 = Instant::now();
        let mut prefill_seconds = 0.0;
        let (mut pending, mut start) = (prompt.to_vec(), 0usize);
        while tokens.len() < max_new {
            let (logits, present) = self.step(&pending, start, &past)?;
            if start == 0 {
                prefill_seconds = t0.elapsed().as_secs_f64();
            }
            start += pending.len();
            past = present;
            let next = choose(&logits, sampling, &mut rng) as u32;
            if s.eos.contains(&next) {
                stopped = true;
                break;
            }
            tokens.push(next);
            on_token(next);
            pending = vec![next];
        }
        Ok(Generated {
            tokens,
            stopped,
            prefill_seconds,
            decode_seconds: t0.elapsed().as_secs_f64() - prefill_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_largest() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(choose(&[0.1, 3.0, 2.0], &Sampling::default(), &mut rng), 1);
    }

    /// top-k 1 is greedy at any temperature; top-p keeps the smallest set reaching p;
    /// draws follow the tempered probabilities.
    #[test]
    fn sampling_respects_top_k_top_p_and_temperature() {
        let mut rng = StdRng::seed_from_u64(2);
        let logits = [0.0f32, 1.0, 2.0, 3.0];
        let k1 = Sampling {
            temperature: 5.0,
            top_k: 1,
            top_p: 1.0,
            seed: 0,
        };
        for _ in 0..50 {
            assert_eq!(choose(&logits, &k1, &mut rng), 3);
        }
        // p(3) = e³/Σ ≈ 0.644 at temperature 1: top-p 0.6 keeps it alone.
        let p = Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.6,
            seed: 0,
        };
        for _ in 0..50 {
            assert_eq!(choose(&logits, &p, &mut rng), 3);
        }
        let free = Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        };
        let mut counts = [0usize; 4];
        for _ in 0..20000 {
            counts[choose(&logits, &free, &mut rng)] += 1;
        }
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let want = f64::from(logits[i]).exp() / z;
            let got = c as f64 / 20000.0;
            assert!((got - want).abs() < 0.015, "token {i}: {got} vs {want}");
        }
    }

    #[test]
    fn genai_config_round_trips_the_decoder_shape() {
        let shape = DecoderShape {
            layers: 30,
            kv_heads: 3,
            head_dim: 64,
            vocab: 49152,
            eos: vec![2],
            context_length: 8192,
        };
        let v = genai_config(&shape, "llama", 9, 576, Some(1), Some(2), "model.onnx");
        assert_eq!(
            v["model"]["decoder"]["inputs"]["past_key_names"],
            "past_key_values.%d.key"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(GENAI_CONFIG);
        std::fs::write(&p, v.to_string()).unwrap();
        assert_eq!(DecoderShape::read(&p).unwrap(), shape);
    }
}
