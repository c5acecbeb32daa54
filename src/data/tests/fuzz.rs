//! A deterministic mutation fuzzer over every loader: valid inputs get a few random
//! byte mutations each, and every load must end in `Ok` or `Err`, never a panic.
//! Loads that succeed must also keep the readers' promises (no blank texts, labels
//! that map, token counts within `max_length`).

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::tokenizer::small_tokenizer_json;
use super::{fixture, write};
use crate::data::{
    ClassMap, FolderOptions, LabelSet, TableFormat, TextColumns, TextData, TextTokenizer,
    parse_table, read_text_folder,
};

/// Bytes that mean something to one of the formats.
const INTERESTING: &[u8] = b"\",\t\n\r{}[]:=*?\\0-e \x00\xff\xef\xbb\xbf\xc3";

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
    Duplicate { from: usize, len: usize, to: usize },
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mutation::Flip { at, bit } => write!(f, "flip bit {bit} at {at}"),
            Mutation::Set { at, byte } => write!(f, "set byte {at} to 0x{byte:02x}"),
            Mutation::Insert { at, bytes } => write!(f, "insert {bytes:?} at {at}"),
            Mutation::Delete { at, len } => write!(f, "delete {len} bytes at {at}"),
            Mutation::Truncate { at } => write!(f, "truncate at {at}"),
            Mutation::Duplicate { from, len, to } => {
                write!(f, "copy {len} bytes from {from} to {to}")
            }
        }
    }
}

/// A position, in the first `hot` bytes half of the time: that is where the
/// structure of a large file sits (a tokenizer's settings before its vocabulary).
fn position(rng: &mut StdRng, len: usize, hot: usize) -> usize {
    let span = if hot > 0 && rng.random_bool(0.5) {
        hot.min(len)
    } else {
        len
    };
    rng.random_range(0..=span)
}

fn random_byte(rng: &mut StdRng) -> u8 {
    if rng.random_bool(0.6) {
        INTERESTING[rng.random_range(0..INTERESTING.len())]
    } else {
        rng.random()
    }
}

/// One to four mutations of `input`, with what they were.
fn mutate(rng: &mut StdRng, input: &[u8], hot: usize) -> (Vec<u8>, Vec<Mutation>) {
    let mut out = input.to_vec();
    let mut done = Vec::new();
    for _ in 0..rng.random_range(1..=4) {
        let len = out.len();
        let at = position(rng, len, hot);
        let m = match rng.random_range(0..6) {
            0 if at < len => Mutation::Flip {
                at,
                bit: rng.random_range(0..8),
            },
            1 if at < len => Mutation::Set {
                at,
                byte: random_byte(rng),
            },
            2 if at < len => Mutation::Delete {
                at,
                len: rng.random_range(1..=16).min(len - at),
            },
            3 if rng.random_bool(0.3) => Mutation::Truncate { at },
            4 if at < len => {
                let chunk = rng.random_range(1..=64).min(len - at);
                Mutation::Duplicate {
                    from: at,
                    len: chunk,
                    to: position(rng, len, hot),
                }
            }
            _ => Mutation::Insert {
                at,
                bytes: (0..rng.random_range(1..=3))
                    .map(|_| random_byte(rng))
                    .collect(),
            },
        };
        match &m {
            Mutation::Flip { at, bit } => out[*at] ^= 1 << bit,
            Mutation::Set { at, byte } => out[*at] = *byte,
            Mutation::Insert { at, bytes } => {
                out.splice(*at..*at, bytes.iter().copied());
            }
            Mutation::Delete { at, len } => {
                out.drain(*at..*at + *len);
            }
            Mutation::Truncate { at } => out.truncate(*at),
            Mutation::Duplicate { from, len, to } => {
                let chunk = out[*from..*from + *len].to_vec();
                out.splice(*to..*to, chunk);
            }
        }
        done.push(m);
    }
    (out, done)
}

/// How the loads of one loader ended.
#[derive(Debug, Default)]
struct Tally {
    tried: usize,
    ok: usize,
    rejected: usize,
    /// Rejections that were a panic inside `tokenizers`, turned into an error.
    guarded: usize,
    panics: Vec<String>,
}

/// What a load did with a mutated input.
enum Outcome {
    Loaded,
    Rejected(String),
}

/// Runs `load` on `count` mutations of `base` and fails listing every input that
/// panicked, with the mutations that made it.
fn fuzz(
    name: &str,
    base: &[u8],
    hot: usize,
    count: usize,
    seed: u64,
    load: impl Fn(&[u8]) -> Outcome,
) {
    assert!(
        matches!(load(base), Outcome::Loaded),
        "{name}: the unmutated input must load"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    for i in 0..count {
        let (input, mutations) = mutate(&mut rng, base, hot);
        tally.tried += 1;
        match catch_unwind(AssertUnwindSafe(|| load(&input))) {
            Ok(Outcome::Loaded) => tally.ok += 1,
            Ok(Outcome::Rejected(message)) => {
                tally.rejected += 1;
                if message.contains("the tokenizers crate panicked") {
                    tally.guarded += 1;
                }
            }
            Err(payload) => {
                let what = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let list: Vec<String> = mutations.iter().map(|m| m.to_string()).collect();
                let shown: String = String::from_utf8_lossy(&input).chars().take(300).collect();
                tally.panics.push(format!(
                    "#{i} [{}]: {what}\n  input starts {shown:?}",
                    list.join("; ")
                ));
            }
        }
    }
    let guarded = if name.contains("tokenizer") {
        format!(
            " ({} of them panics inside tokenizers turned into errors)",
            tally.guarded
        )
    } else {
        String::new()
    };
    println!(
        "fuzz {name}: {} mutated inputs tried, {} loaded, {} rejected{guarded}, {} panicked",
        tally.tried,
        tally.ok,
        tally.rejected,
        tally.panics.len()
    );
    assert!(
        tally.panics.is_empty(),
        "{name}: {} inputs panicked:\n{}",
        tally.panics.len(),
        tally.panics.join("\n")
    );
}

/// The promises a successful table read keeps.
fn check_table(data: &TextData, pair: bool) {
    let labels = LabelSet::from_records(&data.records);
    assert_eq!(
        labels.indices_of(&data.records).unwrap().len(),
        data.records.len()
    );
    let mut last = 0;
    for r in &data.records {
        assert!(
            !r.text.trim().is_empty(),
            "blank text kept at line {}",
            r.line
        );
        assert!(!r.label.is_empty() && r.label.trim() == r.label);
        assert_eq!(r.pair.is_some(), pair);
        assert!(r.line > last, "lines out of order: {} after {last}", r.line);
        last = r.line;
    }
}

fn table_loader(
    name: &'static str,
    format: TableFormat,
    columns: TextColumns,
) -> impl Fn(&[u8]) -> Outcome {
    move |bytes| match parse_table(Path::new(name), bytes, format, &columns) {
        Ok(data) => {
            check_table(&data, columns.pair.is_some());
            Outcome::Loaded
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with(name), "{message}");
            Outcome::Rejected(message)
        }
    }
}

fn pair_columns() -> TextColumns {
    TextColumns {
        text: "premise".to_string(),
        pair: Some("hypothesis".to_string()),
        label: "label".to_string(),
    }
}

#[test]
fn fuzz_csv() {
    let base = "\u{feff}id,premise,hypothesis,label\n\
                1,\"A man, in a \"\"hat\"\".\",He wears something.,entailment\n\
                2,\"Two\nlines\",x,neutral\r\n\
                3, ,y,contradiction\n\
                4,caf\u{e9} \u{2615},\"\",1\n";
    fuzz(
        "csv",
        base.as_bytes(),
        0,
        3000,
        1,
        table_loader("fuzz.csv", TableFormat::Csv, pair_columns()),
    );
}

#[test]
fn fuzz_tsv() {
    let base = "text\tlabel\n\
                plain words\tham\n\
                \"quoted\ttab\nand line\"\tspam\n\
                \t ham \n\
                last\t0\n";
    fuzz(
        "tsv",
        base.as_bytes(),
        0,
        2000,
        2,
        table_loader("fuzz.tsv", TableFormat::Tsv, TextColumns::default()),
    );
}

#[test]
fn fuzz_jsonl() {
    let base = "{\"premise\": \"A man\", \"hypothesis\": \"He\", \"label\": \"entailment\"}\n\
                \n\
                {\"premise\": \"caf\\u00e9 \u{2615}\", \"hypothesis\": \"\", \"label\": 3}\r\n\
                {\"premise\": \" \", \"hypothesis\": \"h\", \"label\": true}\n\
                {\"label\": false, \"hypothesis\": \"x\\ny\", \"premise\": \"q\\\"uote\"}";
    fuzz(
        "jsonl",
        base.as_bytes(),
        0,
        3000,
        3,
        table_loader("fuzz.jsonl", TableFormat::Jsonl, pair_columns()),
    );
}

#[test]
fn fuzz_class_map() {
    let dir = tempfile::tempdir().unwrap();
    for folder in ["easy-ham-1", "hard-ham-1", "spam-2"] {
        write(dir.path(), &format!("{folder}/1.txt"), folder.as_bytes());
    }
    let names = ["easy-ham-1", "hard-ham-1", "spam-2", "", "x", "hard-ham-12"];
    fuzz(
        "class map",
        b"easy-ham-*=ham,hard-ham-?=ham,spam-*=spam",
        0,
        3000,
        4,
        |bytes| {
            let spec = String::from_utf8_lossy(bytes);
            let map = match ClassMap::parse(&spec) {
                Ok(map) => map,
                Err(e) => return Outcome::Rejected(e.to_string()),
            };
            for name in names {
                if let Some(label) = map.label_for(name) {
                    assert!(!label.is_empty());
                }
            }
            let options = FolderOptions {
                class_map: Some(map),
                extension: None,
            };
            match read_text_folder(dir.path(), &options) {
                Ok(data) => {
                    assert_eq!(data.records.len(), 3);
                    Outcome::Loaded
                }
                Err(e) => Outcome::Rejected(e.to_string()),
            }
        },
    );
}

/// Loads a tokenizer from `bytes` and encodes a single text and a pair with it.
fn tokenizer_loader(name: &'static str) -> impl Fn(&[u8]) -> Outcome {
    move |bytes| {
        let tok = match TextTokenizer::from_bytes(Path::new(name), bytes) {
            Ok(tok) => tok,
            Err(e) => return Outcome::Rejected(e.to_string()),
        };
        for (text, pair, max) in [
            ("Hello, worlds! Café ☕ hello", None, 5),
            ("hello world", Some("worlds hello world"), 7),
            ("", Some(""), 64),
        ] {
            match tok.encode(text, pair, max) {
                Ok(e) => {
                    assert!(e.len() <= max, "{} ids for max_length {max}", e.len());
                    assert_eq!(e.token_type_ids.len(), e.len());
                }
                Err(e) => return Outcome::Rejected(e.to_string()),
            }
        }
        Outcome::Loaded
    }
}

#[test]
fn fuzz_small_tokenizer_json() {
    let base = serde_json::to_vec_pretty(&small_tokenizer_json()).unwrap();
    fuzz(
        "small tokenizer.json",
        &base,
        0,
        3000,
        5,
        tokenizer_loader("small/tokenizer.json"),
    );
}

#[test]
fn fuzz_minilm_tokenizer_json() {
    let Some(path) = fixture("models/all-minilm-l6-v2/tokenizer.json") else {
        return;
    };
    let base = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&base);
    let vocab = text.find("\"vocab\"").expect("a WordPiece vocabulary");
    fuzz(
        "MiniLM tokenizer.json",
        &base,
        vocab,
        600,
        6,
        tokenizer_loader("minilm/tokenizer.json"),
    );
}
