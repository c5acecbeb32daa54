//! Decoders through the command line, as a user meets them: `glora compile` a
//! checkpoint, `glora export` it merged with a KV cache, `glora generate` with it in
//! tract. Greedy answers are checked token for token against transformers'
//! `generate` (the SmolLM2 fixture, `tests/reference/generate.py`) and against our
//! executor decoding the adapted supernet without a cache.

mod common;

use std::path::Path;

use common::*;
use glora::ir::Tensor;
use glora::models::builder::GraphBuilder;
use glora::models::{HfConfig, RandomWeights, RecordingWeights};
use glora::verify::generate::{CachedDecoder, Sampling, argmax};

/// Greedy decoding with our executor on the adapted supernet, one full forward of the
/// whole sequence per new token: the reference without a cache.
fn executor_greedy(
    net: &glora::supernet::Supernet,
    prompt: &[u32],
    n: usize,
    eos: &[u32],
) -> Vec<u32> {
    let config = net.config.clone().expect("a config");
    let mut ids: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
    let mut out = Vec::new();
    for _ in 0..n {
        let len = ids.len();
        let inputs = [
            (
                "input_ids".to_string(),
                Tensor::from_i64(vec![1, len], ids.clone()).unwrap(),
            ),
            (
                "attention_mask".to_string(),
                Tensor::from_i64(vec![1, len], vec![1; len]).unwrap(),
            ),
        ];
        let (y, _) = net.run_adapted(&config, &inputs).unwrap();
        let logits = y[0].to_f32_vec();
        let vocab = logits.len() / len;
        let next = argmax(&logits[(len - 1) * vocab..]) as u32;
        if eos.contains(&next) {
            break;
        }
        out.push(next);
        ids.push(i64::from(next));
    }
    out
}

/// A small random LLaMA checkpoint folder (tied head, grouped-query attention).
fn tiny_llama(dir: &Path) {
    let config = r#"{"model_type": "llama", "vocab_size": 64, "hidden_size": 32,
        "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 64, "tie_word_embeddings": true,
        "initializer_range": 0.3, "eos_token_id": 63}"#;
    std::fs::write(dir.join("config.json"), config).unwrap();
    let cfg = HfConfig::read(dir).unwrap();
    let mut rec = RecordingWeights::new(RandomWeights::new(9));
    let mut b = GraphBuilder::new("tiny", &mut rec);
    glora::models::llama::build(&cfg, &mut b).unwrap();
    drop(b);
    glora::io::write_safetensors(&dir.join("model.safetensors"), &rec.seen).unwrap();
}

/// With random adapters under a random config on every layer, the exported decoder
/// decodes in tract and in onnxruntime (where Python has it), through its cache, the
/// tokens our executor decodes from the adapted supernet without one, and the
/// genai_config.json beside it describes it.
#[test]
fn exported_decoder_generates_what_the_adapted_supernet_generates() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("tiny");
    std::fs::create_dir(&ckpt).unwrap();
    tiny_llama(&ckpt);
    let net_dir = tmp.path().join("tiny.glora");
    glora_ok(&[
        "compile",
        path_str(&ckpt),
        "-o",
        path_str(&net_dir),
        "--random-adapters",
    ]);
    let cfg_file = tmp.path().join("config.json");
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let onnx = out_dir.join("tiny.onnx");
    glora_ok(&[
        "export",
        path_str(&net_dir),
        "--random-config",
        "--seed",
        "4",
        "--save-config",
        path_str(&cfg_file),
        "-o",
        path_str(&onnx),
    ]);
    let genai: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("genai_config.json")).unwrap())
            .unwrap();
    assert_eq!(genai["model"]["decoder"]["num_key_value_heads"], 2);
    assert_eq!(genai["model"]["decoder"]["head_size"], 8);
    assert_eq!(genai["model"]["decoder"]["filename"], "tiny.onnx");
    assert_eq!(genai["model"]["eos_token_id"], 63);
    let mut net = glora::supernet::Supernet::load(&net_dir).unwrap();
    net.config = Some(
        glora::glora::ModelConfig::from_json(&std::fs::read_to_string(&cfg_file).unwrap()).unwrap(),
    );
    let decoder = CachedDecoder::load(&onnx).unwrap();
    for prompt in [vec![5u32, 17, 3, 40, 22], vec![9]] {
        let got = decoder
            .generate(&prompt, 12, &Sampling::default(), |_| {})
            .unwrap();
        let want = executor_greedy(&net, &prompt, 12, &[63]);
        println!("prompt {prompt:?}: {:?}", got.tokens);
        assert_eq!(got.tokens, want, "prompt {prompt:?}");
        // onnxruntime reads the same file and decodes the same tokens.
        if let Some(py) = python_with(&["onnxruntime", "numpy"]) {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/ort_generate.py");
            let o = std::process::Command::new(py)
                .arg(&script)
                .arg(&onnx)
                .arg(serde_json::to_string(&prompt).unwrap())
                .arg("12")
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            let ort: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(ort, want, "onnxruntime, prompt {prompt:?}");
        }
    }
}

/// The SmolLM2 fixture folder with fresh adapters: its exported decoder answers
/// "What is the capital of France?" as a chat, greedily, token for token as
/// transformers' `generate` does on the folder ("The capital of France is Paris.").
#[test]
fn smollm2_answers_as_transformers_does() {
    let Some(done) = fixture("models/smollm2-135m-instruct/.complete") else {
        return;
    };
    let dir = done.parent().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let net_dir = tmp.path().join("smol.glora");
    glora_ok(&["compile", path_str(dir), "-o", path_str(&net_dir)]);
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let onnx = out_dir.join("smol.onnx");
    glora_ok(&[
        "export",
        path_str(&net_dir),
        "--random-config",
        "-o",
        path_str(&onnx),
    ]);
    if let Some(py) = python_with_onnx() {
        onnx_check(&py, &onnx).unwrap();
    }
    let prompt = "What is the capital of France?";
    let out = glora_ok(&[
        "generate",
        path_str(&onnx),
        "--prompt",
        prompt,
        "--chat",
        "--max-new-tokens",
        "12",
        "--ids",
    ]);
    assert!(out.contains("The capital of France is Paris."), "{out}");
    let ids_line = out.lines().find(|l| l.starts_with("ids: ")).unwrap();
    let ours: Vec<u32> = serde_json::from_str(&ids_line["ids: ".len()..]).unwrap();
    let Some(py) = python_with(&["torch", "transformers"]) else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/generate.py");
    let o = std::process::Command::new(py)
        .arg(&script)
        .arg(dir)
        .arg(prompt)
        .arg("12")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut theirs: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
    // transformers keeps the end-of-sequence token; glora stops before it.
    if theirs.last() == Some(&2) {
        theirs.pop();
    }
    println!("glora {ours:?}\ntransformers {theirs:?}");
    assert_eq!(ours, theirs);
}

/// A GGUF file alone is enough: its export carries the tokenizer and chat template
/// from the metadata, and `glora generate --chat` answers with them.
#[test]
fn smollm2_gguf_exports_and_answers_on_its_own() {
    let Some(gguf) = fixture("models/smollm2-135m-instruct.Q4_1.gguf") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let net_dir = tmp.path().join("smol.glora");
    glora_ok(&["compile", path_str(&gguf), "-o", path_str(&net_dir)]);
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let onnx = out_dir.join("smol.onnx");
    let out = glora_ok(&[
        "export",
        path_str(&net_dir),
        "--random-config",
        "-o",
        path_str(&onnx),
    ]);
    for file in [
        "genai_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        assert!(out_dir.join(file).is_file(), "{file}: {out}");
    }
    let out = glora_ok(&[
        "generate",
        path_str(&onnx),
        "--prompt",
        "What is the capital of France?",
        "--chat",
        "--max-new-tokens",
        "12",
    ]);
    assert!(out.contains("The capital of France is Paris."), "{out}");
}

/// Bad input to `glora generate`: one line naming what is wrong.
#[test]
fn generate_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let o = glora(&[
        "generate",
        path_str(&tmp.path().join("none.onnx")),
        "--prompt",
        "x",
    ]);
    assert_one_line_error(&o, &["tokenizer"]);
    let Some(done) = fixture("models/smollm2-135m-instruct/.complete") else {
        return;
    };
    let dir = done.parent().unwrap();
    let fake = tmp.path().join("model.onnx");
    std::fs::write(&fake, b"not onnx").unwrap();
    let o = glora(&[
        "generate",
        path_str(&fake),
        "--tokenizer",
        path_str(dir),
        "--prompt",
        "x",
    ]);
    assert_one_line_error(&o, &["model.onnx", "genai_config.json"]);
}
