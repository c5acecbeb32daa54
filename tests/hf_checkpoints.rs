//! The Hugging Face checkpoint front end against transformers itself: for every
//! family glora builds, `tests/reference/hf_checkpoints.py` saves a freshly
//! initialised model and its outputs on fixed inputs; the graph glora builds from the
//! folder must reproduce them (≤ 1e-4), before and after simplification and after
//! export to ONNX in tract. The real all-MiniLM-L6-v2 fixture is checked the same way.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::*;
use glora::ir::Tensor;

const TOLERANCE: f32 = 1e-4;

/// The folder the reference script wrote, made once per test binary; `None` (after a
/// notice) without torch and transformers.
fn references() -> Option<&'static Path> {
    static DIR: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();
    DIR.get_or_init(|| {
        let py = python_with(&["torch", "transformers", "safetensors"])?;
        let dir = tempfile::tempdir().unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/hf_checkpoints.py");
        let mut cmd = std::process::Command::new(py);
        cmd.arg(&script).arg(dir.path());
        let minilm = fixtures_dir().join("models/all-minilm-l6-v2");
        if minilm.is_dir() {
            cmd.arg("--minilm").arg(&minilm);
        }
        let smollm = fixtures_dir().join("models/smollm2-135m-instruct");
        if smollm.join(".complete").is_file() {
            cmd.arg("--smollm").arg(&smollm);
        }
        let o = cmd.output().expect("python runs");
        assert!(o.status.success(), "{}", stderr(&o));
        Some(dir)
    })
    .as_ref()
    .map(|d| d.path())
}

fn reference(folder: &Path) -> Vec<(String, Tensor)> {
    glora::io::read_safetensors(&folder.join("reference.safetensors")).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.to_f32_vec()
        .iter()
        .zip(b.to_f32_vec())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs `g` on the reference inputs it takes and compares every output it has a
/// reference for; returns how many it compared.
fn check_outputs(what: &str, g: &glora::ir::Graph, refs: &[(String, Tensor)]) -> usize {
    let input_names: Vec<String> = g.inputs.iter().map(|&i| g.node(i).name.clone()).collect();
    let inputs: Vec<(String, Tensor)> = input_names
        .iter()
        .map(|n| {
            let t = refs.iter().find(|(r, _)| r == n);
            (
                n.clone(),
                t.unwrap_or_else(|| panic!("{what}: no reference input {n}"))
                    .1
                    .clone(),
            )
        })
        .collect();
    let outs = glora::exec::run_cpu(g, &inputs).unwrap();
    let mut compared = 0;
    for (o, t) in g.outputs.iter().zip(&outs) {
        let name = &g.value(*o).name;
        let (_, want) = refs
            .iter()
            .find(|(r, _)| r == name)
            .unwrap_or_else(|| panic!("{what}: output {name} has no reference"));
        let d = max_diff(t, want);
        println!("{what}: {name} max |diff| {d:.2e}");
        assert!(
            d <= TOLERANCE,
            "{what}: {name} differs from transformers by {d}"
        );
        compared += 1;
    }
    compared
}

/// Built, simplified, exported and run in tract: all equal transformers.
fn check_family(name: &str, outputs: usize) -> Option<glora::models::HfModel> {
    let dir = references()?.join(name);
    let refs = reference(&dir);
    let m = glora::models::build_checkpoint(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        check_outputs(name, &m.graph, &refs),
        outputs,
        "{name}: outputs"
    );
    let mut g = m.graph.clone();
    glora::passes::optimize(&mut g, &glora::exec::CpuBackend).unwrap();
    check_outputs(&format!("{name} simplified"), &g, &refs);
    let onnx = tempfile::tempdir().unwrap();
    let path = onnx.path().join("model.onnx");
    glora::onnx::export_file(&g, &path, &Default::default()).unwrap();
    let inputs: Vec<(String, Tensor)> = g
        .inputs
        .iter()
        .map(|&i| {
            let n = g.node(i).name.clone();
            let t = refs.iter().find(|(r, _)| *r == n).unwrap().1.clone();
            (n, t)
        })
        .collect();
    let tract = glora::verify::TractModel::load(&path, &inputs).unwrap();
    let outs = tract.run(&inputs).unwrap();
    for (o, t) in g.outputs.iter().zip(&outs) {
        let oname = &g.value(*o).name;
        let want = &refs.iter().find(|(r, _)| r == oname).unwrap().1;
        let d = max_diff(t, want);
        println!("{name} in tract: {oname} max |diff| {d:.2e}");
        assert!(d <= TOLERANCE, "{name} in tract: {oname} differs by {d}");
    }
    Some(m)
}

fn layer_names(g: &glora::ir::Graph) -> Vec<String> {
    glora::passes::find_linear_layers(g)
        .into_iter()
        .map(|l| l.name)
        .collect()
}

/// `{prefix}.{i}.{module}` for each module of each of two layers.
fn two_layers(prefix: &str, modules: &[&str]) -> Vec<String> {
    (0..2)
        .flat_map(|i| modules.iter().map(move |m| format!("{prefix}.{i}.{m}")))
        .collect()
}

/// The module paths of BERT's linear layers, written out for two layers.
fn bert_layers(pooler: bool) -> Vec<String> {
    let mut v = two_layers(
        "encoder.layer",
        &[
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ],
    );
    if pooler {
        v.push("pooler.dense".into());
    }
    v
}

/// The graph's linear layers are exactly `want`, in any order.
fn assert_layers(g: &glora::ir::Graph, mut want: Vec<String>) {
    let mut names = layer_names(g);
    names.sort();
    want.sort();
    assert_eq!(names, want);
}

fn input_names(g: &glora::ir::Graph) -> Vec<&str> {
    g.inputs.iter().map(|&i| g.node(i).name.as_str()).collect()
}

#[test]
fn bert_equals_transformers_and_names_layers_by_module_path() {
    let Some(m) = check_family("bert", 2) else {
        return;
    };
    assert_layers(&m.graph, bert_layers(true));
    assert_eq!(
        input_names(&m.graph),
        ["input_ids", "attention_mask", "token_type_ids"]
    );
    assert_eq!(m.max_positions, Some(64));
}

#[test]
fn bert_variants_equal_transformers() {
    check_family("bert-gelu-new", 2);
    let Some(m) = check_family("bert-relu-nopooler", 1) else {
        return;
    };
    assert_eq!(layer_names(&m.graph).len(), bert_layers(false).len());
}

#[test]
fn task_model_prefix_sharded_and_half_precision_checkpoints_load() {
    check_family("bert-task", 2);
    check_family("bert-sharded", 2);
    check_family("bert-f16", 2);
    check_family("bert-bf16", 2);
}

#[test]
fn roberta_family_equals_transformers() {
    let Some(m) = check_family("roberta", 2) else {
        return;
    };
    assert_eq!(input_names(&m.graph), ["input_ids", "attention_mask"]);
    // 66 positions, of which pad_token_id + 1 = 2 are never used by a real token.
    assert_eq!(m.max_positions, Some(64));
    check_family("xlm-roberta", 2);
}

#[test]
fn distilbert_equals_transformers() {
    let Some(m) = check_family("distilbert", 1) else {
        return;
    };
    assert!(layer_names(&m.graph).contains(&"transformer.layer.1.ffn.lin2".to_string()));
}

#[test]
fn vision_families_equal_transformers() {
    let Some(m) = check_family("vit", 2) else {
        return;
    };
    assert!(
        layer_names(&m.graph).contains(&"encoder.layer.0.attention.attention.query".to_string())
    );
    check_family("deit", 2);
    check_family("dinov2", 2);
    check_family("dinov2-swiglu", 2);
}

#[test]
fn minilm_fixture_equals_transformers() {
    let Some(refs) = references() else { return };
    let Some(dir) = fixture("models/all-minilm-l6-v2") else {
        return;
    };
    let refs = reference(&refs.join("minilm"));
    let m = glora::models::build_checkpoint(&dir).unwrap();
    assert_eq!(check_outputs("minilm", &m.graph, &refs), 2);
    let names = layer_names(&m.graph);
    assert_eq!(names.len(), 37, "{names:?}");
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("encoder.layer."))
            .count(),
        36
    );
    assert_eq!(m.max_positions, Some(512));
}

/// The module paths of a two-layer decoder's linear layers, the head last.
fn decoder_layers() -> Vec<String> {
    let mut v = two_layers(
        "model.layers",
        &[
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ],
    );
    v.push("lm_head".into());
    v
}

/// LLaMA with grouped-query attention and a tied head; with biases, an explicit
/// head_dim and one key/value head; linear and Llama 3 RoPE scaling. Three rows each:
/// full, right-padded and left-padded.
#[test]
fn llama_decoders_equal_transformers() {
    let Some(m) = check_family("llama", 1) else {
        return;
    };
    assert_layers(&m.graph, decoder_layers());
    assert_eq!(input_names(&m.graph), ["input_ids", "attention_mask"]);
    assert_eq!(m.max_positions, Some(64));
    check_family("llama-bias-headdim", 1);
    check_family("llama-linear-rope", 1);
    check_family("llama3-rope", 1);
}

/// Mistral's sliding window on every layer, Qwen2's q/k/v biases and a window on
/// the layers `layer_types` marks, both windows shorter than the inputs.
#[test]
fn mistral_and_qwen2_equal_transformers() {
    check_family("mistral", 1);
    check_family("qwen2", 1);
}

/// The real SmolLM2-135M-Instruct folder (made from the GGUF fixture by
/// `make_hf_llm.py`): a chat prompt and a padded sentence give transformers' logits.
#[test]
fn smollm2_fixture_equals_transformers() {
    let Some(refs) = references() else { return };
    let Some(dir) = fixture("models/smollm2-135m-instruct/.complete") else {
        return;
    };
    let dir = dir.parent().unwrap();
    let refs = reference(&refs.join("smollm"));
    let m = glora::models::build_checkpoint(dir).unwrap();
    let get = |n: &str| refs.iter().find(|(r, _)| r == n).unwrap().1.clone();
    let inputs = vec![
        ("input_ids".to_string(), get("input_ids")),
        ("attention_mask".to_string(), get("attention_mask")),
    ];
    let ours = &glora::exec::run_cpu(&m.graph, &inputs).unwrap()[0];
    let (torch, exact) = (get("logits"), get("logits_f64"));
    // Both sides round in f32 through thirty layers (transformers is itself about
    // 1e-4 from its f64 result on logits near 40), so the bound is on the distance
    // from exact, relative to transformers' own, and on the two f32 results apart.
    let torch_err = max_diff(&torch, &exact);
    let our_err = max_diff(ours, &exact);
    let apart = max_diff(ours, &torch);
    println!(
        "smollm2 logits: ours−f64 {our_err:.2e}, transformers−f64 {torch_err:.2e}, apart {apart:.2e}"
    );
    assert!(
        our_err <= (2.0 * torch_err).max(TOLERANCE),
        "ours {our_err} from f64, transformers {torch_err}"
    );
    assert!(apart <= 3.0 * TOLERANCE, "{apart}");
    let names = layer_names(&m.graph);
    assert_eq!(names.len(), 30 * 7 + 1, "{names:?}");
    assert_eq!(m.max_positions, Some(8192));
}

/// The SmolLM2 GGUF fixture itself (Q4_1 and Q8_0 weights, F32 norms): built from
/// its metadata and dequantised, it gives the logits of the folder transformers'
/// GGUF reader made from it, and transformers' own logits as closely as the folder.
#[test]
fn smollm2_gguf_equals_its_folder_and_transformers() {
    let Some(refs) = references() else { return };
    let Some(gguf) = fixture("models/smollm2-135m-instruct.Q4_1.gguf") else {
        return;
    };
    let Some(dir) = fixture("models/smollm2-135m-instruct/.complete") else {
        return;
    };
    let refs = reference(&refs.join("smollm"));
    let get = |n: &str| refs.iter().find(|(r, _)| r == n).unwrap().1.clone();
    let inputs = vec![
        ("input_ids".to_string(), get("input_ids")),
        ("attention_mask".to_string(), get("attention_mask")),
    ];
    let from_gguf = glora::models::gguf::build_gguf(&gguf).unwrap();
    let ours = glora::exec::run_cpu(&from_gguf.graph, &inputs)
        .unwrap()
        .remove(0);
    let folder = glora::models::build_checkpoint(dir.parent().unwrap()).unwrap();
    let ours_folder = glora::exec::run_cpu(&folder.graph, &inputs)
        .unwrap()
        .remove(0);
    let between = max_diff(&ours, &ours_folder);
    let torch_err = max_diff(&get("logits"), &get("logits_f64"));
    let our_err = max_diff(&ours, &get("logits_f64"));
    println!(
        "smollm2 GGUF: vs our folder {between:.2e}; vs f64 {our_err:.2e} (transformers {torch_err:.2e})"
    );
    assert!(between <= TOLERANCE, "{between}");
    assert!(our_err <= (2.0 * torch_err).max(TOLERANCE), "{our_err}");
    assert_eq!(layer_names(&from_gguf.graph), layer_names(&folder.graph));
    assert_eq!(from_gguf.max_positions, Some(8192));
}

/// The tokenizer and chat template in the SmolLM2 GGUF's metadata, written out as
/// Hugging Face files, tokenize as the folder transformers' GGUF reader made does.
#[test]
fn smollm2_gguf_tokenizer_equals_its_folders() {
    let Some(gguf) = fixture("models/smollm2-135m-instruct.Q4_1.gguf") else {
        return;
    };
    let Some(done) = fixture("models/smollm2-135m-instruct/.complete") else {
        return;
    };
    let folder = done.parent().unwrap();
    let files = glora::models::gguf::GgufFile::open(&gguf)
        .unwrap()
        .tokenizer_files()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (name, bytes) in &files {
        std::fs::write(tmp.path().join(name), bytes).unwrap();
    }
    let ours = glora::data::TextTokenizer::from_dir(tmp.path()).unwrap();
    let theirs = glora::data::TextTokenizer::from_dir(folder).unwrap();
    for text in [
        "What is the capital of France?",
        "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
        "Numbers 1234567 and 3.14159, café naïve 東京 🙂",
        "  leading spaces\tand\ttabs\n\n",
    ] {
        let a = ours.inner().encode(text, true).unwrap();
        let b = theirs.inner().encode(text, true).unwrap();
        assert_eq!(a.get_ids(), b.get_ids(), "{text:?}");
        assert_eq!(
            ours.inner().decode(a.get_ids(), false).unwrap(),
            theirs.inner().decode(b.get_ids(), false).unwrap()
        );
    }
    let template = std::fs::read_to_string(tmp.path().join("chat_template.jinja")).unwrap();
    let want = std::fs::read_to_string(folder.join("chat_template.jinja")).unwrap();
    assert_eq!(template.trim_end(), want.trim_end());
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("tokenizer_config.json")).unwrap())
            .unwrap();
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("tokenizer_config.json")).unwrap())
            .unwrap();
    for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
        assert_eq!(cfg[key], want[key], "{key}");
    }
}

/// Folders that are not checkpoints glora can build: one line naming the file and key.
#[test]
fn bad_checkpoints_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = |p: &Path| glora::models::build_checkpoint(p).unwrap_err().to_string();
    std::fs::write(d.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let e = err(d);
    assert!(
        e.contains("config.json") && e.contains("gpt2") && e.contains("bert, roberta"),
        "{e}"
    );
    std::fs::write(
        d.join("config.json"),
        "{\"model_type\": \"bert\",\n \"vocab_size\": }",
    )
    .unwrap();
    let e = err(d);
    assert!(e.contains("config.json") && e.contains("line 2"), "{e}");
    std::fs::write(
        d.join("config.json"),
        r#"{"model_type": "bert", "vocab_size": 10}"#,
    )
    .unwrap();
    let e = err(d);
    assert!(e.contains("no model.safetensors"), "{e}");
    std::fs::write(d.join("model.safetensors"), b"not a safetensors file").unwrap();
    let e = err(d);
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    // A checkpoint whose shapes disagree with its config: the tensor is named.
    let Some(refs) = references() else { return };
    let good = refs.join("bert");
    std::fs::copy(good.join("model.safetensors"), d.join("model.safetensors")).unwrap();
    std::fs::write(
        d.join("config.json"),
        r#"{"model_type": "bert", "vocab_size": 10, "hidden_size": 30, "num_attention_heads": 4}"#,
    )
    .unwrap();
    let e = err(d);
    assert!(e.contains("num_attention_heads") && e.contains("30"), "{e}");
    std::fs::write(
        d.join("config.json"),
        r#"{"model_type": "bert", "vocab_size": 10, "hidden_act": "mish"}"#,
    )
    .unwrap();
    let e = err(d);
    assert!(e.contains("hidden_act") && e.contains("mish"), "{e}");
    let cfg = std::fs::read_to_string(good.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace("\"intermediate_size\": 37", "\"intermediate_size\": 38"),
    )
    .unwrap();
    std::fs::copy(good.join("model.safetensors"), d.join("model.safetensors")).unwrap();
    let e = err(d);
    assert!(
        e.contains("encoder.layer.0.intermediate.dense.weight") && e.contains("[37, 32]"),
        "{e}"
    );
}

/// The MiniLM folder through the CLI, as a user meets it: `inspect` names the layers
/// by module path, `convert` writes an ONNX file with Hugging Face input names and
/// dynamic batch and sequence that passes the strict checker.
#[test]
fn minilm_folder_through_inspect_and_convert() {
    let Some(dir) = fixture("models/all-minilm-l6-v2") else {
        return;
    };
    let out = glora_ok(&["inspect", path_str(&dir)]);
    assert!(out.contains("linear layers: 37"), "{out}");
    assert!(
        out.contains("encoder.layer.5.attention.self.value"),
        "{out}"
    );
    assert!(out.contains("pooler.dense"), "{out}");
    let tmp = tempfile::tempdir().unwrap();
    let onnx = tmp.path().join("minilm.onnx");
    glora_ok(&["convert", path_str(&dir), "-o", path_str(&onnx)]);
    let back = glora::onnx::import_file(&onnx).unwrap();
    let inputs: Vec<String> = back
        .inputs
        .iter()
        .map(|&i| {
            let v = &back.node(i).outputs[0];
            format!("{} {}", v.name, v.ty.as_ref().unwrap().shape)
        })
        .collect();
    assert_eq!(
        inputs,
        [
            "input_ids [batch,sequence]",
            "attention_mask [batch,sequence]",
            "token_type_ids [batch,sequence]"
        ]
    );
    if let Some(py) = python_with_onnx() {
        onnx_check(&py, &onnx).unwrap();
    }
    let verdict = glora_ok(&[
        "verify",
        path_str(&onnx),
        "--ours",
        "--shape",
        "input_ids=2x11",
        "--tolerance",
        "1e-4",
    ]);
    assert!(verdict.contains("OK:"), "{verdict}");
    // A folder that is neither a checkpoint nor a supernet: one line naming it.
    let o = glora(&["run", path_str(tmp.path()), "--random-inputs"]);
    assert_one_line_error(&o, &["config.json"]);
}

/// Columns `from..to` of a `[rows, cols]` i64 tensor.
fn columns(t: &Tensor, from: usize, to: usize) -> Tensor {
    let (rows, cols) = (t.shape()[0], t.shape()[1]);
    let v = t.to_i64_vec();
    let out: Vec<i64> = (0..rows)
        .flat_map(|r| v[r * cols + from..r * cols + to].to_vec())
        .collect();
    Tensor::from_i64(vec![rows, to - from], out).unwrap()
}

/// Position `at` of `[rows, seq, vocab]` logits, `[rows, vocab]`.
fn at_position(t: &Tensor, at: usize) -> Vec<f32> {
    let (rows, seq, vocab) = (t.shape()[0], t.shape()[1], t.shape()[2]);
    let v = t.to_f32_vec();
    (0..rows)
        .flat_map(|r| v[(r * seq + at) * vocab..(r * seq + at + 1) * vocab].to_vec())
        .collect()
}

/// Runs a graph on named inputs, returning its outputs.
type Runner<'a> = dyn FnMut(&[(String, Tensor)]) -> Vec<Tensor> + 'a;

/// A prefill of 4 tokens and 3 one-token decode steps through the cached form,
/// each step fed the previous step's `present.*`, in our executor and in tract.
/// Returns, per step, the logits of its tokens as `[rows, tokens, vocab]` flattened.
fn cached_steps(
    g: &glora::ir::Graph,
    ids: &Tensor,
    mask: &Tensor,
    layers: usize,
    kv_shape: [usize; 2],
    run: &mut Runner<'_>,
) -> Vec<(usize, usize, Tensor)> {
    let rows = ids.shape()[0];
    let [kv_heads, head_dim] = kv_shape;
    let mut past: Vec<Tensor> = (0..2 * layers)
        .map(|_| Tensor::from_f32(vec![rows, kv_heads, 0, head_dim], vec![]).unwrap())
        .collect();
    let mut out = Vec::new();
    for (from, to) in [(0, 4), (4, 5), (5, 6), (6, 7)] {
        let positions: Vec<i64> = (0..rows).flat_map(|_| from as i64..to as i64).collect();
        let mut inputs = vec![
            ("input_ids".to_string(), columns(ids, from, to)),
            ("attention_mask".to_string(), columns(mask, 0, to)),
            (
                "position_ids".to_string(),
                Tensor::from_i64(vec![rows, to - from], positions).unwrap(),
            ),
        ];
        for i in 0..layers {
            inputs.push((
                glora::models::llama::past_name(i, "key"),
                past[2 * i].clone(),
            ));
            inputs.push((
                glora::models::llama::past_name(i, "value"),
                past[2 * i + 1].clone(),
            ));
        }
        let names: Vec<String> = g.inputs.iter().map(|&n| g.node(n).name.clone()).collect();
        let ordered: Vec<(String, Tensor)> = names
            .iter()
            .map(|n| inputs.iter().find(|(m, _)| m == n).unwrap().clone())
            .collect();
        let mut y = run(&ordered);
        past = y.split_off(1);
        assert_eq!(past[0].shape(), &[rows, kv_heads, to, head_dim]);
        out.push((from, to, y.remove(0)));
    }
    out
}

/// The KV-cache form of each decoder: a prefill and three decode steps reproduce,
/// at every step, the logits of one full forward without a cache (≤ 1e-4), in our
/// executor and, exported to ONNX, in tract. Mistral's window (3) is shorter than
/// the seven tokens, and one row of each batch is left-padded.
#[test]
fn cached_decoders_prefill_and_decode_like_the_full_forward() {
    let Some(refs) = references() else { return };
    for (name, kv_heads, head_dim) in [
        ("llama", 2, 8),
        ("mistral", 2, 8),
        ("qwen2", 2, 8),
        ("llama-bias-headdim", 1, 12),
    ] {
        let dir = refs.join(name);
        let r = reference(&dir);
        let get = |n: &str| r.iter().find(|(m, _)| m == n).unwrap().1.clone();
        let (ids, mask) = (get("input_ids"), get("attention_mask"));
        let full = glora::models::build_checkpoint(&dir).unwrap();
        let full_logits = glora::exec::run_cpu(
            &full.graph,
            &[
                ("input_ids".to_string(), ids.clone()),
                ("attention_mask".to_string(), mask.clone()),
            ],
        )
        .unwrap()
        .remove(0);
        let (cfg, mut w) = glora::models::decoder_source(&dir).unwrap();
        let cached = glora::models::build_decoder(
            &cfg,
            w.as_mut(),
            glora::models::llama::DecoderForm::Cached,
        )
        .unwrap();
        let n_layers = (cached.graph.outputs.len() - 1) / 2;
        let onnx = tempfile::tempdir().unwrap();
        let path = onnx.path().join("decoder.onnx");
        glora::onnx::export_file(&cached.graph, &path, &Default::default()).unwrap();
        let mut ours =
            |inputs: &[(String, Tensor)]| glora::exec::run_cpu(&cached.graph, inputs).unwrap();
        let steps_ours = cached_steps(
            &cached.graph,
            &ids,
            &mask,
            n_layers,
            [kv_heads, head_dim],
            &mut ours,
        );
        // One plan with symbolic batch, sequence and past lengths runs every step.
        let dynamic = glora::verify::TractModel::load_dynamic(&path).unwrap();
        let mut in_tract = |inputs: &[(String, Tensor)]| dynamic.run(inputs).unwrap();
        let steps_tract = cached_steps(
            &cached.graph,
            &ids,
            &mask,
            n_layers,
            [kv_heads, head_dim],
            &mut in_tract,
        );
        // Compared where the token is real: a leading pad token sees no key at all,
        // and its uniform weights then span however many keys the pass holds.
        let real = mask.to_i64_vec();
        let (rows, seq) = (ids.shape()[0], ids.shape()[1]);
        let vocab = full_logits.shape()[2];
        let (mut worst_ours, mut worst_tract) = (0.0f32, 0.0f32);
        for ((from, to, a), (_, _, b)) in steps_ours.iter().zip(&steps_tract) {
            for (k, at) in (*from..*to).enumerate() {
                let (want, got_a, got_b) = (
                    at_position(&full_logits, at),
                    at_position(a, k),
                    at_position(b, k),
                );
                for r in (0..rows).filter(|&r| real[r * seq + at] == 1) {
                    let span = r * vocab..(r + 1) * vocab;
                    let d = |got: &[f32]| {
                        want[span.clone()]
                            .iter()
                            .zip(&got[span.clone()])
                            .map(|(x, y)| (x - y).abs())
                            .fold(0.0, f32::max)
                    };
                    worst_ours = worst_ours.max(d(&got_a));
                    worst_tract = worst_tract.max(d(&got_b));
                }
            }
        }
        println!(
            "{name} cached: ours {worst_ours:.2e}, tract {worst_tract:.2e} from the full forward"
        );
        assert!(
            worst_ours <= TOLERANCE && worst_tract <= TOLERANCE,
            "{name}"
        );
    }
}

/// `glora export` of a decoder supernet writes the merged KV-cache decoder: it
/// passes the strict checker, and in tract a prefill and three decode steps give
/// at every real token the logits of our executor on the adapted graph (≤ 1e-4),
/// with random adapters under a random config on every linear layer, the head too.
#[test]
fn exported_decoder_with_cache_equals_the_adapted_supernet() {
    let Some(refs) = references() else { return };
    for name in ["llama", "qwen2"] {
        let dir = refs.join(name);
        let r = reference(&dir);
        let get = |n: &str| r.iter().find(|(m, _)| m == n).unwrap().1.clone();
        let (ids, mask) = (get("input_ids"), get("attention_mask"));
        let tmp = tempfile::tempdir().unwrap();
        let net_dir = tmp.path().join("net.glora");
        let onnx = tmp.path().join("decoder.onnx");
        let cfg_file = tmp.path().join("config.json");
        glora_ok(&[
            "compile",
            path_str(&dir),
            "-o",
            path_str(&net_dir),
            "--random-adapters",
        ]);
        let out = glora_ok(&[
            "export",
            path_str(&net_dir),
            "--random-config",
            "--seed",
            "3",
            "--save-config",
            path_str(&cfg_file),
            "-o",
            path_str(&onnx),
        ]);
        assert!(out.contains("with a KV cache"), "{out}");
        if let Some(py) = python_with_onnx() {
            onnx_check(&py, &onnx).unwrap();
        }
        let net = glora::supernet::Supernet::load(&net_dir).unwrap();
        let config =
            glora::glora::ModelConfig::from_json(&std::fs::read_to_string(&cfg_file).unwrap())
                .unwrap();
        let (adapted, _) = net
            .run_adapted(
                &config,
                &[
                    ("input_ids".to_string(), ids.clone()),
                    ("attention_mask".to_string(), mask.clone()),
                ],
            )
            .unwrap();
        let want_all = &adapted[0];
        // The adapters must move the logits, or the comparison below proves nothing.
        let base = glora::models::build_checkpoint(&dir).unwrap();
        let base_logits = glora::exec::run_cpu(
            &base.graph,
            &[
                ("input_ids".to_string(), ids.clone()),
                ("attention_mask".to_string(), mask.clone()),
            ],
        )
        .unwrap()
        .remove(0);
        assert!(
            max_diff(&base_logits, want_all) > 1e-2,
            "{name}: adapters change nothing"
        );
        let g = glora::onnx::import_file(&onnx).unwrap();
        let n_layers = (g.outputs.len() - 1) / 2;
        let dims = g.value_type(g.outputs[1]).unwrap().shape.dims().to_vec();
        let known = |d: &glora::ir::Dim| match d {
            glora::ir::Dim::Known(n) => *n,
            other => panic!("present has a {other:?} axis"),
        };
        let kv = [known(&dims[1]), known(&dims[3])];
        let mut in_tract = |inputs: &[(String, Tensor)]| {
            let m = glora::verify::TractModel::load(&onnx, inputs).unwrap();
            m.run(inputs).unwrap()
        };
        let steps = cached_steps(&g, &ids, &mask, n_layers, kv, &mut in_tract);
        let real = mask.to_i64_vec();
        let (rows, seq, vocab) = (ids.shape()[0], ids.shape()[1], want_all.shape()[2]);
        let mut worst = 0.0f32;
        for (from, to, got) in &steps {
            for (k, at) in (*from..*to).enumerate() {
                let (want, got) = (at_position(want_all, at), at_position(got, k));
                for r in (0..rows).filter(|&r| real[r * seq + at] == 1) {
                    let span = r * vocab..(r + 1) * vocab;
                    let d = want[span.clone()]
                        .iter()
                        .zip(&got[span])
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0, f32::max);
                    worst = worst.max(d);
                }
            }
        }
        println!("{name}: exported KV-cache decoder vs the adapted supernet {worst:.2e}");
        assert!(worst <= TOLERANCE, "{name}: {worst}");
    }
}
