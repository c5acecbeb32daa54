//! The GGUF front end on files written here with candle-core's GGUF writer: a tiny
//! LLaMA whose weights are known, its query and key rows stored in llama.cpp's order.
//! In f32 it must build exactly the model a Hugging Face folder of the same weights
//! builds; in every quantised type its weights must equal the gguf package's own
//! dequantisation (`tests/reference/gguf_dequantize.py`, where Python has it) and lie
//! near the originals; bad files are one-line errors; mutated headers never panic.

mod common;

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use common::*;
use glora::ir::Tensor;
use glora::models::builder::GraphBuilder;
use glora::models::gguf::{GgufFile, GgufWeights, build_gguf, gguf_name};
use glora::models::{HfConfig, Init, RandomWeights, RecordingWeights, WeightSource};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// K-quant blocks are 256 wide, so every weight's rows are 256 long.
const HIDDEN: usize = 256;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const VOCAB: usize = 32;

fn config_json(tied: bool) -> String {
    format!(
        r#"{{"model_type": "llama", "vocab_size": {VOCAB}, "hidden_size": {HIDDEN},
            "intermediate_size": {HIDDEN}, "num_hidden_layers": 1,
            "num_attention_heads": {HEADS}, "num_key_value_heads": {KV_HEADS},
            "head_dim": 64, "max_position_embeddings": 16, "rms_norm_eps": 1e-5,
            "rope_parameters": {{"rope_type": "default", "rope_theta": 10000.0}},
            "tie_word_embeddings": {tied}, "initializer_range": 0.1}}"#
    )
}

/// The tiny model's weights, by Hugging Face name, and its config.
fn weights(tied: bool) -> (HfConfig, Vec<(String, Tensor)>) {
    let cfg = HfConfig {
        path: "config.json".into(),
        json: serde_json::from_str(&config_json(tied)).unwrap(),
        model_type: "llama".into(),
    };
    let mut rec = RecordingWeights::new(RandomWeights::new(5));
    let mut b = GraphBuilder::new("tiny", &mut rec);
    glora::models::llama::build(&cfg, &mut b).unwrap();
    drop(b);
    // Norm weights away from 1, so that a swapped norm would show.
    let seen = rec
        .seen
        .into_iter()
        .map(|(name, t)| {
            if t.shape().len() > 1 {
                return (name, t);
            }
            let v: Vec<f32> = (0..t.shape()[0])
                .map(|i| 0.5 + (i % 7) as f32 * 0.1)
                .collect();
            (name, Tensor::from_f32(t.shape().to_vec(), v).unwrap())
        })
        .collect();
    (cfg, seen)
}

/// transformers' order → llama.cpp's: row `h·d + half·d/2 + i` goes to `h·d + 2i + half`.
fn permute_rows(v: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    let cols = v.len() / rows;
    let half = rows / heads / 2;
    let mut out = vec![0.0; v.len()];
    for h in 0..heads {
        for part in 0..2 {
            for i in 0..half {
                let hf = h * 2 * half + part * half + i;
                let gg = h * 2 * half + 2 * i + part;
                out[gg * cols..(gg + 1) * cols].copy_from_slice(&v[hf * cols..(hf + 1) * cols]);
            }
        }
    }
    out
}

/// Writes the weights as a GGUF file: 2-D weights in `dtype`, norms in f32.
fn write_gguf(path: &Path, weights: &[(String, Tensor)], dtype: GgmlDType, arch: &str) {
    let mut tensors = Vec::new();
    for (name, t) in weights {
        let g = gguf_name(name).unwrap_or_else(|| panic!("no GGUF name for {name}"));
        let mut v = t.to_f32_vec();
        let rows = t.shape()[0];
        if g.contains(".attn_q.") {
            v = permute_rows(&v, rows, HEADS);
        } else if g.contains(".attn_k.") {
            v = permute_rows(&v, rows, KV_HEADS);
        }
        let ct = candle_core::Tensor::from_vec(v, t.shape(), &candle_core::Device::Cpu).unwrap();
        let dt = if t.shape().len() == 1 {
            GgmlDType::F32
        } else {
            dtype
        };
        tensors.push((g, QTensor::quantize(&ct, dt).unwrap()));
    }
    let meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (format!("{arch}.block_count"), Value::U32(1)),
        (format!("{arch}.context_length"), Value::U32(16)),
        (
            format!("{arch}.embedding_length"),
            Value::U32(HIDDEN as u32),
        ),
        (
            format!("{arch}.feed_forward_length"),
            Value::U32(HIDDEN as u32),
        ),
        (
            format!("{arch}.attention.head_count"),
            Value::U32(HEADS as u32),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            Value::U32(KV_HEADS as u32),
        ),
        (format!("{arch}.rope.freq_base"), Value::F32(10000.0)),
        (format!("{arch}.rope.dimension_count"), Value::U32(64)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
        (format!("{arch}.vocab_size"), Value::U32(VOCAB as u32)),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
}

fn inputs() -> Vec<(String, Tensor)> {
    vec![
        (
            "input_ids".into(),
            Tensor::from_i64(vec![2, 5], vec![1, 5, 9, 30, 2, 7, 7, 3, 0, 0]).unwrap(),
        ),
        (
            "attention_mask".into(),
            Tensor::from_i64(vec![2, 5], vec![1, 1, 1, 1, 1, 1, 1, 1, 0, 0]).unwrap(),
        ),
    ]
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// f32 weights: the GGUF builds the model its Hugging Face folder builds, to the bit,
/// with a separate and with a tied head (no `output.weight` in the file).
#[test]
fn f32_gguf_builds_the_model_of_its_folder() {
    for tied in [false, true] {
        let (_, w) = weights(tied);
        let tmp = tempfile::tempdir().unwrap();
        let gguf = tmp.path().join("tiny.gguf");
        write_gguf(&gguf, &w, GgmlDType::F32, "llama");
        std::fs::write(tmp.path().join("config.json"), config_json(tied)).unwrap();
        glora::io::write_safetensors(&tmp.path().join("model.safetensors"), &w).unwrap();
        let a = build_gguf(&gguf).unwrap();
        let b = glora::models::build_checkpoint(tmp.path()).unwrap();
        let ya = glora::exec::run_cpu(&a.graph, &inputs()).unwrap();
        let yb = glora::exec::run_cpu(&b.graph, &inputs()).unwrap();
        let d = max_diff(&ya[0].to_f32_vec(), &yb[0].to_f32_vec());
        println!("tied {tied}: GGUF vs folder logits {d:.2e}");
        assert_eq!(d, 0.0, "tied {tied}");
        assert!(ya[0].to_f32_vec().iter().any(|v| v.abs() > 1e-3));
    }
}

/// How far each type's dequantised weights may lie from the originals, relative to
/// their RMS: about twice each format's measured rounding, so that a mis-decoded
/// block (wrong scale, wrong nibble order) fails.
const TYPES: [(GgmlDType, f32); 13] = [
    (GgmlDType::F32, 0.0),
    (GgmlDType::F16, 5e-4),
    (GgmlDType::BF16, 4e-3),
    (GgmlDType::Q8_0, 0.01),
    (GgmlDType::Q5_0, 0.08),
    (GgmlDType::Q5_1, 0.08),
    (GgmlDType::Q4_0, 0.15),
    (GgmlDType::Q4_1, 0.15),
    (GgmlDType::Q6K, 0.035),
    (GgmlDType::Q5K, 0.07),
    (GgmlDType::Q4K, 0.14),
    (GgmlDType::Q3K, 0.28),
    (GgmlDType::Q2K, 0.5),
];

#[test]
fn every_quantised_type_dequantises_as_the_gguf_package_does() {
    let py = python_with(&["gguf", "safetensors", "numpy"]);
    let (cfg, w) = weights(false);
    let tmp = tempfile::tempdir().unwrap();
    for (dtype, bound) in TYPES {
        let gguf = tmp.path().join(format!("tiny-{dtype:?}.gguf"));
        write_gguf(&gguf, &w, dtype, "llama");
        let mut ours = GgufWeights::new(GgufFile::open(&gguf).unwrap(), &cfg);
        let reference = py.as_ref().map(|py| {
            let out = tmp.path().join(format!("ref-{dtype:?}.safetensors"));
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/gguf_dequantize.py");
            let o = std::process::Command::new(py)
                .arg(&script)
                .arg(&gguf)
                .arg(&out)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            glora::io::read_safetensors(&out).unwrap()
        });
        let (mut worst, mut vs_ref) = (0.0f32, 0.0f32);
        for (name, original) in &w {
            let got = ours.tensor(name, original.shape(), Init::Zeros).unwrap();
            let (g, o) = (got.to_f32_vec(), original.to_f32_vec());
            let rms = (o.iter().map(|x| x * x).sum::<f32>() / o.len() as f32).sqrt();
            let err = (g
                .iter()
                .zip(&o)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                / o.len() as f32)
                .sqrt()
                / rms;
            worst = worst.max(err);
            assert!(
                err <= bound,
                "{dtype:?} {name}: relative RMS error {err} > {bound}"
            );
            if let Some(r) = &reference {
                let want = &r.iter().find(|(n, _)| n == name).unwrap().1;
                let d = max_diff(&g, &want.to_f32_vec());
                vs_ref = vs_ref.max(d);
                assert!(
                    d <= 1e-6,
                    "{dtype:?} {name}: differs from the gguf package by {d}"
                );
            }
        }
        let m = build_gguf(&gguf).unwrap();
        let y = glora::exec::run_cpu(&m.graph, &inputs()).unwrap();
        assert!(y[0].to_f32_vec().iter().all(|v| v.is_finite()), "{dtype:?}");
        println!(
            "{dtype:?}: relative RMS error ≤ {worst:.2e}; vs gguf package {}",
            if reference.is_some() {
                format!("{vs_ref:.1e}")
            } else {
                "not checked".into()
            }
        );
    }
}

#[test]
fn bad_gguf_files_are_named_errors() {
    let (_, w) = weights(false);
    let tmp = tempfile::tempdir().unwrap();
    let err = |p: &Path| build_gguf(p).expect_err("an error").to_string();
    let gpt2 = tmp.path().join("gpt2.gguf");
    write_gguf(&gpt2, &w, GgmlDType::F32, "gpt2");
    let e = err(&gpt2);
    assert!(
        e.contains("gpt2.gguf") && e.contains("\"gpt2\"") && e.contains("llama"),
        "{e}"
    );
    let good = tmp.path().join("good.gguf");
    write_gguf(&good, &w, GgmlDType::Q8_0, "llama");
    let bytes = std::fs::read(&good).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let e = err(&cut);
    assert!(
        e.contains("cut.gguf") && e.contains("tensor 'output.weight'"),
        "{e}"
    );
    std::fs::write(&cut, &bytes[..100]).unwrap();
    let e = err(&cut);
    assert!(e.contains("cut.gguf") && e.contains("GGUF"), "{e}");
    // An unknown quantisation type: the dtype field of the first tensor record.
    let name = b"token_embd.weight";
    let at = bytes.windows(name.len()).position(|s| s == name).unwrap();
    let dtype_at = at + name.len() + 4 + 2 * 8;
    let mut odd = bytes.clone();
    odd[dtype_at..dtype_at + 4].copy_from_slice(&99u32.to_le_bytes());
    let p = tmp.path().join("odd.gguf");
    std::fs::write(&p, &odd).unwrap();
    let e = err(&p);
    assert!(
        e.contains("odd.gguf") && e.contains("'token_embd.weight'") && e.contains("type 99"),
        "{e}"
    );
    let o = glora(&["inspect", path_str(&gpt2)]);
    assert_one_line_error(&o, &["gpt2.gguf", "gpt2"]);
}

/// Byte-level mutations of a whole small GGUF file, header and data: every build
/// ends in a model or an error.
#[test]
fn mutated_gguf_files_never_panic() {
    let (_, w) = weights(false);
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.gguf");
    write_gguf(&good, &w, GgmlDType::Q4K, "llama");
    let bytes = std::fs::read(&good).unwrap();
    let header = bytes
        .windows(4)
        .rposition(|s| s == b"blk.")
        .unwrap_or(bytes.len())
        + 64;
    let mut rng = StdRng::seed_from_u64(3);
    let p = tmp.path().join("fuzz.gguf");
    let (mut tried, mut built) = (0, 0);
    for i in 0..2000 {
        let mut v = bytes.clone();
        // Mostly the header, where the counts, lengths and types are.
        let span = if i % 4 == 0 {
            v.len()
        } else {
            header.min(v.len())
        };
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..span.min(v.len()));
            match rng.random_range(0..4) {
                0 => v[at] ^= 1 << rng.random_range(0..8),
                1 => v[at] = 0xff,
                2 => v.truncate(at),
                _ => {
                    let n: u64 = [0, 1, u32::MAX as u64, u64::MAX][rng.random_range(0..4)];
                    let end = (at + 8).min(v.len());
                    let b = n.to_le_bytes();
                    v[at..end].copy_from_slice(&b[..end - at]);
                }
            }
            if v.is_empty() {
                break;
            }
        }
        std::fs::write(&p, &v).unwrap();
        let r = std::panic::catch_unwind(|| build_gguf(&p).is_ok());
        match r {
            Ok(ok) => built += usize::from(ok),
            Err(_) => panic!("mutation {i}: the GGUF loader panicked"),
        }
        tried += 1;
    }
    println!("fuzzed {tried} GGUF files; {built} still built");
    assert!(built < tried, "no mutation was caught");
}
