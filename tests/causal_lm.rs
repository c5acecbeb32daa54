//! Causal-LM data and training against transformers: `tests/reference/causal_lm.py`
//! tokenises plain texts, a prompt/response pair and chats with the SmolLM2
//! fixture's own tokenizer and chat template, labels the trained tokens as a
//! transformers user would, and gives the model's loss on them. glora's reader must
//! give the same ids and next-token targets, and its loss on the built graph the
//! same sum. Then `glora train --task causal-lm` on chats lowers the validation
//! perplexity it reports, and `glora search` scores configs by validation loss.

mod common;

use std::path::Path;

use common::*;
use glora::data::chat::ChatTemplate;
use glora::data::{Features, IGNORE_INDEX, LmOptions, TextTokenizer, read_lm_data};
use glora::ir::Tensor;

const SAMPLE: &str = r#"{"text": "The capital of France is Paris. It lies on the Seine."}
{"prompt": "Question: what is two plus two?\nAnswer:", "response": " Four."}

{"messages": [{"role": "user", "content": "Hi there!"}, {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]}
{"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "Yes."}]}
"#;

fn smollm2() -> Option<std::path::PathBuf> {
    let marker = fixture("models/smollm2-135m-instruct/.complete")?;
    Some(marker.parent().unwrap().to_path_buf())
}

#[derive(serde::Deserialize)]
struct Reference {
    ids: Vec<u32>,
    labels: Vec<i64>,
    loss_sum: f64,
    count: usize,
}

#[test]
fn smollm2_lm_data_and_loss_equal_transformers() {
    let Some(py) = python_with(&["torch", "transformers"]) else {
        return;
    };
    let Some(dir) = smollm2() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("sample.jsonl");
    std::fs::write(&data, SAMPLE).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/causal_lm.py");
    let o = std::process::Command::new(py)
        .arg(&script)
        .arg(&dir)
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let refs: Vec<Reference> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(refs.len(), 4);

    let tok = TextTokenizer::from_dir(&dir).unwrap();
    let template = ChatTemplate::find(&dir)
        .unwrap()
        .expect("SmolLM2 has a chat template");
    let opts = LmOptions {
        template: Some(&template),
        pack: false,
    };
    let ours = read_lm_data(&data, &tok, 512, opts).unwrap();
    assert_eq!(ours.report.blank_lines, 1);
    let Features::Tokens(t) = &ours.dataset.features else {
        panic!("tokens expected")
    };
    let targets = t.targets.as_ref().unwrap();
    let graph = glora::models::build_checkpoint(&dir).unwrap().graph;
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(t.ids[i], r.ids, "example {i}: ids");
        // transformers shifts the labels inside the model; ours are shifted.
        let mut shifted: Vec<i32> = r.labels[1..].iter().map(|&l| l as i32).collect();
        shifted.push(IGNORE_INDEX);
        assert_eq!(targets[i], shifted, "example {i}: targets");
        let n = r.ids.len();
        let inputs = vec![
            (
                "input_ids".to_string(),
                Tensor::from_i64(vec![1, n], r.ids.iter().map(|&v| i64::from(v)).collect())
                    .unwrap(),
            ),
            (
                "attention_mask".to_string(),
                Tensor::from_i64(vec![1, n], vec![1; n]).unwrap(),
            ),
        ];
        let logits = glora::exec::run_cpu(&graph, &inputs).unwrap().remove(0);
        let vocab = *logits.shape().last().unwrap();
        let labels: Vec<i64> = targets[i].iter().map(|&v| i64::from(v)).collect();
        let s = glora::train::loss::score_rows(&logits.to_f32_vec(), vocab, &labels).unwrap();
        println!(
            "example {i}: {} targets, loss sum {:.5} (transformers {:.5})",
            s.counted, s.loss_sum, r.loss_sum
        );
        assert_eq!(s.counted, r.count, "example {i}: counted targets");
        assert!(
            (s.loss_sum - r.loss_sum).abs() <= 1e-4 * r.loss_sum.abs().max(1.0),
            "example {i}: loss sum {} vs transformers {}",
            s.loss_sum,
            r.loss_sum
        );
    }
}

/// A few chats repeated, so that a handful of steps can learn them.
fn chats(n: usize) -> String {
    let pairs = [
        ("What colour is the sky?", "The sky is blue."),
        ("What do cows drink?", "Cows drink water."),
        ("How many legs has a cat?", "A cat has four legs."),
        ("What is ice made of?", "Ice is frozen water."),
    ];
    (0..n)
        .map(|i| {
            let (q, a) = pairs[i % pairs.len()];
            format!(
                "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{q}\"}}, {{\"role\": \"assistant\", \"content\": \"{a}\"}}]}}\n"
            )
        })
        .collect()
}

fn perplexities(out: &str) -> (f64, f64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("validation perplexity"))
        .unwrap_or_else(|| panic!("no perplexity line in:\n{out}"));
    let nums: Vec<f64> = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches(',').parse().ok())
        .collect();
    (nums[0], nums[1])
}

#[test]
fn chat_training_lowers_validation_perplexity() {
    let Some(dir) = smollm2() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("chats.jsonl");
    std::fs::write(&data, chats(24)).unwrap();
    let net = tmp.path().join("s.glora");
    glora_ok(&[
        "compile",
        path_str(&dir),
        "-o",
        path_str(&net),
        "--targets",
        "q_proj,v_proj",
    ]);
    let out = glora_ok(&[
        "train",
        path_str(&net),
        "--data",
        path_str(&data),
        "--mode",
        "lora",
        "--rank",
        "4",
        "--batch",
        "4",
        "--epochs",
        "2",
        "--lr",
        "3e-3",
        "--warmup-epochs",
        "0",
        "--val-fraction",
        "0.25",
    ]);
    println!("{out}");
    assert!(out.contains("target tokens"), "{out}");
    let (before, after) = perplexities(&out);
    assert!(
        after < 0.8 * before,
        "perplexity {before} before, {after} after"
    );
    // The metrics hold the baseline at step 0, then each epoch's validation.
    let metrics = std::fs::read_to_string(net.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    assert_eq!(first["step"], 0);
    assert!(first["val_loss"].as_f64().is_some());

    // The search scores configs by validation loss and records it as such.
    let out = glora_ok(&[
        "search",
        path_str(&net),
        "--data",
        path_str(&data),
        "--val-fraction",
        "0.25",
        "--budget",
        "50k",
        "--population",
        "3",
        "--generations",
        "1",
        "--parents",
        "2",
        "--mutations",
        "1",
        "--crossovers",
        "1",
    ]);
    assert!(
        out.contains("validation loss") && out.contains("perplexity"),
        "{out}"
    );
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(net.join("search.json")).unwrap()).unwrap();
    assert_eq!(record["fitness"], "negative validation loss per token");
    let best = &record["best"];
    let loss = best["val_loss"].as_f64().unwrap();
    assert!((best["fitness"].as_f64().unwrap() + loss).abs() < 1e-12);
    assert!((best["val_perplexity"].as_f64().unwrap() - loss.exp()).abs() < 1e-9);
    assert!(best["params"].as_u64().unwrap() <= 50_000);
}

#[test]
fn bad_language_model_data_is_a_one_line_error() {
    let Some(dir) = smollm2() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let net = tmp.path().join("s.glora");
    glora_ok(&[
        "compile",
        path_str(&dir),
        "-o",
        path_str(&net),
        "--targets",
        "q_proj",
    ]);
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\n{\"label\": 3}\n").unwrap();
    let o = glora(&[
        "train",
        path_str(&net),
        "--data",
        path_str(&bad),
        "--steps",
        "1",
    ]);
    assert_one_line_error(&o, &["bad.jsonl:2", "the line has keys label"]);
    let csv = tmp.path().join("d.csv");
    std::fs::write(&csv, "text,label\nhello,a\n").unwrap();
    let o = glora(&[
        "train",
        path_str(&net),
        "--data",
        path_str(&csv),
        "--steps",
        "1",
    ]);
    assert_one_line_error(&o, &["d.csv", "JSONL"]);
    let o = glora(&[
        "train",
        path_str(&net),
        "--data",
        path_str(&bad),
        "--task",
        "classify",
    ]);
    assert_one_line_error(&o, &["--task classify", "decoder"]);
    let run = tmp.path().join("run");
    let o = glora(&[
        "pipeline",
        path_str(&dir),
        "--data",
        path_str(&bad),
        "-o",
        path_str(&run),
        "--budget",
        "10k",
    ]);
    assert_one_line_error(&o, &["does not run language models yet"]);
    assert!(!run.exists(), "nothing is written before the refusal");
}

/// A GGUF file brings its own tokenizer and chat template: the same causal-LM data
/// read through them equal what the folder made from it gives.
#[test]
fn gguf_tokenizer_and_template_give_the_folders_data() {
    let Some(dir) = smollm2() else { return };
    let Some(gguf) = fixture("models/smollm2-135m-instruct.Q4_1.gguf") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("sample.jsonl");
    std::fs::write(&data, SAMPLE).unwrap();
    let plan = glora::train::prepare::TextPlan::default();
    let tok = glora::train::prepare::find_tokenizer(&plan, &gguf)
        .unwrap()
        .expect("the GGUF file has a tokenizer");
    let files = glora::models::gguf::GgufFile::open(&gguf)
        .unwrap()
        .tokenizer_files()
        .unwrap();
    let template = ChatTemplate::from_memory(&gguf, &files).unwrap().unwrap();
    let from_gguf = read_lm_data(
        &data,
        &tok,
        512,
        LmOptions {
            template: Some(&template),
            pack: false,
        },
    )
    .unwrap();
    let folder_tok = TextTokenizer::from_dir(&dir).unwrap();
    let folder_template = ChatTemplate::find(&dir).unwrap().unwrap();
    let from_folder = read_lm_data(
        &data,
        &folder_tok,
        512,
        LmOptions {
            template: Some(&folder_template),
            pack: false,
        },
    )
    .unwrap();
    assert_eq!(from_gguf.dataset, from_folder.dataset);

    // `glora train` on a supernet of the GGUF file finds them with no --tokenizer.
    let net = tmp.path().join("g.glora");
    glora_ok(&[
        "compile",
        path_str(&gguf),
        "-o",
        path_str(&net),
        "--targets",
        "q_proj",
    ]);
    let out = glora_ok(&[
        "train",
        path_str(&net),
        "--data",
        path_str(&data),
        "--steps",
        "1",
        "--batch",
        "2",
        "--val-fraction",
        "0",
    ]);
    assert!(out.contains("(34 target tokens)"), "{out}");
}
