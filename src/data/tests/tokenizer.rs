//! Token ids from a small hand-written tokenizer (worked out by hand) and from the
//! MiniLM fixture (compared with transformers through `tokenizer_ids.py`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{Value, json};

use super::{fixture, write};
use crate::data::{Encoded, TextRecord, TextTokenizer};

/// A BERT-style tokenizer with twelve tokens. Its file asks for padding to 8 and
/// truncation to 5, which `TextTokenizer` must ignore.
pub(super) fn small_tokenizer_json() -> Value {
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let token = |id: &str, type_id: u32| json!({"SpecialToken": {"id": id, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 5, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [token("[CLS]", 0), seq("A", 0), token("[SEP]", 0)],
            "pair": [token("[CLS]", 0), seq("A", 0), token("[SEP]", 0), seq("B", 1), token("[SEP]", 1)],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100,
                  "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, "world": 5,
                            "##s": 6, ",": 7, "!": 8, "cafe": 9, "wor": 10, "##ld": 11}}
    })
}

fn small_at(dir: &Path, json: &Value) -> TextTokenizer {
    let path = write(dir, "tokenizer.json", json.to_string().as_bytes());
    TextTokenizer::from_file(&path).unwrap()
}

fn enc(ids: &[u32], types: &[u32]) -> Encoded {
    Encoded {
        input_ids: ids.to_vec(),
        token_type_ids: types.to_vec(),
    }
}

#[test]
fn small_tokenizer_ids_match_hand_worked_wordpiece() {
    let dir = tempfile::tempdir().unwrap();
    let tok = small_at(dir.path(), &small_tokenizer_json());
    let e = |text: &str, pair: Option<&str>, max: usize| tok.encode(text, pair, max).unwrap();
    // [CLS] hello , world ##s ! [SEP]: longer than the file's truncation to 5 and
    // not padded to its 8.
    assert_eq!(
        e("Hello, worlds!", None, 64),
        enc(&[2, 4, 7, 5, 6, 8, 3], &[0; 7])
    );
    // Lower-casing strips the accent; an unknown word is one [UNK].
    assert_eq!(e("Café xyz", None, 64), enc(&[2, 9, 1, 3], &[0; 4]));
    assert_eq!(e("", None, 64), enc(&[2, 3], &[0, 0]));
    assert_eq!(
        e("hello", Some("world"), 64),
        enc(&[2, 4, 3, 5, 3], &[0, 0, 0, 1, 1])
    );
    // An empty pair is no pair, as in transformers.
    assert_eq!(e("hello", Some(""), 64), enc(&[2, 4, 3], &[0, 0, 0]));
    assert_eq!(e("hello", Some(" "), 64), enc(&[2, 4, 3, 3], &[0, 0, 0, 1]));
    // Four tokens into a budget of 4 - 2 special = 2.
    assert_eq!(
        e("hello world hello world", None, 4),
        enc(&[2, 4, 5, 3], &[0; 4])
    );
    assert_eq!(e("hello world", None, 2), enc(&[2, 3], &[0, 0]));
    // Longest first, 4 + 2 tokens into 7 - 3 = 4: only the text is cut, to 2.
    assert_eq!(
        e("hello world hello world", Some("worlds"), 7),
        enc(&[2, 4, 5, 3, 5, 6, 3], &[0, 0, 0, 0, 1, 1, 1])
    );
    // 4 + 3 tokens into 3: both are cut, the longer keeps 2 and the shorter 1.
    assert_eq!(
        e("hello world hello world", Some("world worlds"), 6),
        enc(&[2, 4, 5, 3, 5, 3], &[0, 0, 0, 0, 1, 1])
    );
    // The pair longer than the text: 1 + 4 tokens into 3, the text keeps its 1.
    assert_eq!(
        e("hello", Some("world hello world hello"), 6),
        enc(&[2, 4, 3, 5, 4, 3], &[0, 0, 0, 1, 1, 1])
    );
    assert_eq!(
        tok.encode("hello", Some("world"), 2)
            .unwrap_err()
            .to_string(),
        format!(
            "{}: max_length 2 leaves no room for the 3 special tokens",
            dir.path().join("tokenizer.json").display()
        )
    );
    assert_eq!(
        (
            tok.num_special_tokens(false),
            tok.num_special_tokens(true),
            tok.vocab_size()
        ),
        (2, 3, 12)
    );
    assert_eq!(tok.token_to_id("[SEP]"), Some(3));
}

#[test]
fn pad_id_comes_from_padding_config_then_pad_token_then_pad_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut json = small_tokenizer_json();
    assert_eq!(small_at(dir.path(), &json).pad_id(), Some(0));
    json["padding"]["pad_id"] = json!(5);
    assert_eq!(small_at(dir.path(), &json).pad_id(), Some(5));
    json["padding"] = Value::Null;
    assert_eq!(small_at(dir.path(), &json).pad_id(), Some(0));
    write(
        dir.path(),
        "tokenizer_config.json",
        br#"{"pad_token": "[UNK]"}"#,
    );
    assert_eq!(small_at(dir.path(), &json).pad_id(), Some(1));
    write(
        dir.path(),
        "tokenizer_config.json",
        br#"{"pad_token": {"content": "[SEP]", "lstrip": false}}"#,
    );
    assert_eq!(small_at(dir.path(), &json).pad_id(), Some(3));
    std::fs::remove_file(dir.path().join("tokenizer_config.json")).unwrap();
    json["model"]["vocab"]["<pad>"] = json["model"]["vocab"]["[PAD]"].take();
    json["model"]["vocab"]
        .as_object_mut()
        .unwrap()
        .remove("[PAD]");
    json["added_tokens"][0]["content"] = json!("<pad>");
    assert_eq!(small_at(dir.path(), &json).pad_id(), Some(0));
    json["model"]["vocab"]
        .as_object_mut()
        .unwrap()
        .remove("<pad>");
    json["added_tokens"].as_array_mut().unwrap().remove(0);
    assert_eq!(small_at(dir.path(), &json).pad_id(), None);
}

#[test]
fn model_max_length_is_read_from_tokenizer_config_and_the_sentinel_means_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let json = small_tokenizer_json();
    assert_eq!(small_at(dir.path(), &json).model_max_length(), None);
    let config = |body: &str| write(dir.path(), "tokenizer_config.json", body.as_bytes());
    config(r#"{"model_max_length": 512, "do_lower_case": true}"#);
    assert_eq!(small_at(dir.path(), &json).model_max_length(), Some(512));
    config(r#"{"model_max_length": 1000000000000000019884624838656}"#);
    assert_eq!(small_at(dir.path(), &json).model_max_length(), None);
    config(r#"{"model_max_length": 1e30}"#);
    assert_eq!(small_at(dir.path(), &json).model_max_length(), None);

    let tokenizer_path = write(dir.path(), "tokenizer.json", json.to_string().as_bytes());
    let cfg = config("{\n  \"model_max_length\": 512,\n  oops\n}");
    assert_eq!(
        TextTokenizer::from_file(&tokenizer_path)
            .unwrap_err()
            .to_string(),
        format!("{}:3:3: invalid JSON: key must be a string", cfg.display())
    );
    config(r#"{"model_max_length": "long"}"#);
    assert_eq!(
        TextTokenizer::from_file(&tokenizer_path)
            .unwrap_err()
            .to_string(),
        format!(
            "{}: key 'model_max_length': expected a number, found \"long\"",
            cfg.display()
        )
    );
    config(r#"{"model_max_length": -1}"#);
    assert_eq!(
        TextTokenizer::from_file(&tokenizer_path)
            .unwrap_err()
            .to_string(),
        format!(
            "{}: key 'model_max_length': expected a positive integer, found -1",
            cfg.display()
        )
    );
}

#[test]
fn loading_errors_name_the_tokenizer_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = TextTokenizer::from_dir(dir.path()).unwrap_err();
    let expected = dir.path().join("tokenizer.json");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", expected.display())),
        "{err}"
    );
    let name = Path::new("models/x/tokenizer.json");
    assert_eq!(
        TextTokenizer::from_bytes(name, b"{\"version\": \"1.0\",\n \"model\": [")
            .unwrap_err()
            .to_string(),
        "models/x/tokenizer.json:2:11: cannot load the tokenizer: invalid JSON: EOF while parsing a list"
    );
    // A syntax error inside "decoder" makes tokenizers 0.23 panic while loading.
    let mut text = serde_json::to_string_pretty(&small_tokenizer_json()).unwrap();
    let at = text.find("\"cleanup\": true").unwrap();
    text.replace_range(at..at + 1, "");
    let line = text[..at].matches('\n').count() + 1;
    let err = TextTokenizer::from_bytes(name, text.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("models/x/tokenizer.json:{line}:")),
        "{err}"
    );
    assert!(err.contains("invalid JSON"), "{err}");
    let mut missing_field = small_tokenizer_json();
    missing_field.as_object_mut().unwrap().remove("model");
    let err = TextTokenizer::from_bytes(name, missing_field.to_string().as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("models/x/tokenizer.json:1:") && err.contains("model"),
        "{err}"
    );
    // tokenizers loads a template that names an undefined special token, then
    // panics in every encode; loading must report it instead.
    for template in ["single", "pair"] {
        let mut bad = small_tokenizer_json();
        bad["post_processor"][template][0]["SpecialToken"]["id"] = json!("[BOS]");
        assert_eq!(
            TextTokenizer::from_bytes(name, bad.to_string().as_bytes())
                .unwrap_err()
                .to_string(),
            "models/x/tokenizer.json: cannot load the tokenizer (the tokenizers crate \
             panicked encoding a test text: no entry found for key)",
            "{template}"
        );
    }
    let mut no_unk = small_tokenizer_json();
    no_unk["model"]["unk_token"] = json!("[NOPE]");
    let tok = TextTokenizer::from_bytes(name, no_unk.to_string().as_bytes()).unwrap();
    let err = tok.encode("xyz", None, 16).unwrap_err().to_string();
    assert!(
        err.starts_with("models/x/tokenizer.json: cannot encode: "),
        "{err}"
    );
}

#[test]
fn encode_records_keeps_order_and_names_the_record_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let tok = small_at(dir.path(), &small_tokenizer_json());
    let source: Arc<Path> = Arc::from(Path::new("train.csv"));
    let record = |text: &str, pair: Option<&str>, line| TextRecord {
        text: text.to_string(),
        pair: pair.map(str::to_string),
        label: "x".to_string(),
        line,
        source: source.clone(),
    };
    let records: Vec<TextRecord> = (0..200)
        .map(|i| {
            let words = ["hello"; 7][..i % 7].join(" ");
            record(&words, (i % 3 == 0).then_some("world"), i + 2)
        })
        .collect();
    let batch = tok.encode_records(&records, 6).unwrap();
    for (r, e) in records.iter().zip(&batch) {
        let n = r.text.split_whitespace().count();
        let ids = if r.pair.is_some() {
            let kept = n.min(2);
            [vec![2], vec![4; kept], vec![3, 5, 3]].concat()
        } else {
            [vec![2], vec![4; n.min(4)], vec![3]].concat()
        };
        assert_eq!(e.input_ids, ids, "{}", r.location());
    }
    let err = tok
        .encode_records(&[record("a", None, 9), record("b", Some("c"), 10)], 2)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "train.csv:10: {}: max_length 2 leaves no room for the 3 special tokens",
            dir.path().join("tokenizer.json").display()
        )
    );
}

#[test]
fn minilm_tokenizer_ignores_its_padding_and_reads_its_config() {
    let Some(dir) = fixture("models/all-minilm-l6-v2") else {
        return;
    };
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    let e = tok
        .encode("Hello, world! GLoRA merges adapters.", None, 512)
        .unwrap();
    // 14 ids, not the 128 the file's padding would give.
    assert_eq!(e.len(), 14);
    assert_eq!((e.input_ids[0], e.input_ids[13]), (101, 102));
    assert_eq!(e.token_type_ids, vec![0; 14]);
    assert_eq!(tok.pad_id(), Some(0));
    assert_eq!(tok.model_max_length(), Some(512));
    assert_eq!(tok.vocab_size(), 30_522);
}

/// The interpreter for reference scripts: `$GLORA_PYTHON`, else `python3`.
fn python() -> PathBuf {
    std::env::var_os("GLORA_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// The ids transformers gives for `items`, or `None` (with a notice) when Python or
/// transformers is missing.
fn transformers_ids(dir: &Path, items: &[(String, Option<String>, usize)]) -> Option<Vec<Encoded>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/data/tokenizer_ids.py");
    let request = json!({
        "dir": dir,
        "items": items.iter().map(|(t, p, n)| json!({"text": t, "pair": p, "max_length": n})).collect::<Vec<_>>(),
    });
    let mut child = match Command::new(python())
        .arg(&script)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("TOKENIZERS_PARALLELISM", "false")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            println!("SKIP: cannot run {}: {e}", python().display());
            return None;
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    let body = request.to_string();
    // Written from a thread so that a child that fails early cannot block us.
    let writer = std::thread::spawn(move || stdin.write_all(body.as_bytes()));
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    if out.status.code() == Some(3) {
        println!(
            "SKIP: transformers not importable by {} (set GLORA_PYTHON): {}",
            python().display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let value: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    Some(
        value
            .iter()
            .map(|v| Encoded {
                input_ids: ids(&v["input_ids"]),
                token_type_ids: ids(&v["token_type_ids"]),
            })
            .collect(),
    )
}

/// The first `max` bytes of a file, as UTF-8 lossily (as the folder reader does).
fn head(path: &Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap();
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn prefix(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Three emails from each SpamAssassin folder (first, middle, last) and five Brown
/// documents from different genres, cut to their first few KB.
fn corpus_samples(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for folder in ["easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("spam-assassin").join(folder))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        files.sort();
        for i in [0, files.len() / 2, files.len() - 1] {
            out.push(head(&files[i], 4096));
        }
    }
    for doc in ["ca01", "cf01", "ck01", "cn05", "cr09"] {
        out.push(head(&root.join("brown").join(doc), 3072));
    }
    out
}

#[test]
fn minilm_ids_equal_transformers() {
    let (Some(model), Some(data)) = (fixture("models/all-minilm-l6-v2"), fixture("data")) else {
        return;
    };
    if fixture("data/spam-assassin").is_none() || fixture("data/brown").is_none() {
        return;
    }
    let texts = corpus_samples(&data);
    let mut items: Vec<(String, Option<String>, usize)> = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        items.push((t.clone(), None, if i % 4 == 0 { 512 } else { 128 }));
    }
    let long =
        "GLoRA merges adapters into the weights, so inference costs nothing extra. ".repeat(300);
    let unicode = "Café naïve Ærøskøbing 東京タワー 🤖🎉 Ελληνικά русский עברית ﬁ \u{200b}zero\u{200b}width \
                   e\u{301}t\u{e9} ＦＵＬＬ-ｗｉｄｔｈ";
    let more: Vec<(&str, Option<&str>, usize)> = vec![
        ("Is it raining outside?", Some("The streets are wet."), 128),
        (prefix(&texts[0], 800), Some(prefix(&texts[15], 600)), 128),
        (prefix(&texts[0], 800), Some(prefix(&texts[15], 600)), 16),
        (&texts[3], Some("short hypothesis"), 17),
        ("short premise", Some(&long), 16),
        (&long, Some(&long), 17),
        ("A sentence with an empty pair.", Some(""), 128),
        ("", None, 128),
        ("", Some(""), 128),
        (unicode, None, 128),
        (unicode, Some("plain"), 16),
        ("hello [SEP] world [MASK] [unk] [CLS]", None, 128),
        (
            "tab\there\nnew line\r\n\u{0}nul \u{7f} \u{feff}bom",
            None,
            128,
        ),
        (&long, None, 128),
        (&long, None, 16),
        (&long, None, 512),
    ];
    items.extend(
        more.into_iter()
            .map(|(t, p, n)| (t.to_string(), p.map(str::to_string), n)),
    );
    let Some(expected) = transformers_ids(&model, &items) else {
        return;
    };
    let tok = TextTokenizer::from_dir(&model).unwrap();
    assert_eq!(expected.len(), items.len());
    let source: Arc<Path> = Arc::from(model.as_path());
    let records: Vec<TextRecord> = items
        .iter()
        .map(|(t, p, _)| TextRecord {
            text: t.clone(),
            pair: p.clone(),
            label: String::new(),
            line: 0,
            source: source.clone(),
        })
        .collect();
    let mut truncated = 0;
    for (i, ((text, pair, max), want)) in items.iter().zip(&expected).enumerate() {
        let got = tok.encode(text, pair.as_deref(), *max).unwrap();
        let brief: String = text.chars().take(60).collect();
        assert_eq!(got, *want, "item {i} (max_length {max}): {brief:?}");
        truncated += usize::from(got.len() == *max);
        // The batch path must agree with the one-at-a-time path.
        let batch = tok.encode_records(&records[i..=i], *max).unwrap();
        assert_eq!(batch[0], got, "item {i} through encode_records");
    }
    assert!(truncated >= 15, "only {truncated} items reached max_length");
    println!(
        "compared {} encodings with transformers ({truncated} truncated to max_length)",
        items.len()
    );
}
