//! Turning texts into token ids with a Hugging Face `tokenizer.json`.
//!
//! [`TextTokenizer`] wraps the `tokenizers` crate and gives the ids transformers
//! gives for `tokenizer(text, pair, truncation=True, max_length=N)`: special tokens
//! added, longest-first truncation between text and pair. The file's own padding
//! and truncation settings are switched off (MiniLM's pads every text to 128), since
//! batches are padded later to their longest member; the pad id and the model's
//! maximum length are kept for that step.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::Value;
use tokenizers::utils::truncation::{
    TruncationDirection, TruncationParams, TruncationStrategy, truncate_encodings,
};
use tokenizers::{EncodeInput, Encoding, PostProcessor, Tokenizer};

use super::{TextDataError, TextRecord, json_message};

/// transformers writes `int(1e30)` as `model_max_length` when it does not know it.
const UNKNOWN_MAX_LENGTH: f64 = 1e29;

/// The token ids of one text (or pair), unpadded: the attention mask is all ones
/// over `input_ids.len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub input_ids: Vec<u32>,
    /// 0 for the first segment's tokens, 1 for the pair's (BERT's segment ids).
    pub token_type_ids: Vec<u32>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// The byte range `[start, end)` of the text a token covers.
pub type Offset = (usize, usize);

/// A tokenizer loaded from a `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    pad_id: Option<u32>,
    /// The id of `tokenizer_config.json`'s `eos_token`: what a language model
    /// learns to end a text with.
    eos_id: Option<u32>,
    model_max_length: Option<usize>,
}

/// A panic's message, for turning a panic inside `tokenizers` into an error.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// The tokenizer's error, with the JSON line and column when parsing failed.
fn load_error(path: &Path, e: &(dyn std::error::Error + Send + Sync + 'static)) -> TextDataError {
    match e.downcast_ref::<serde_json::Error>() {
        Some(json) if json.line() > 0 => TextDataError::Content {
            path: path.to_path_buf(),
            line: Some(json.line()),
            column: Some(json.column()),
            what: format!("cannot load the tokenizer: {}", json_message(json)),
        },
        _ => TextDataError::file(path, format!("cannot load the tokenizer: {e}")),
    }
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`, and `dir/tokenizer_config.json` when present.
    pub fn from_dir(dir: &Path) -> Result<TextTokenizer, TextDataError> {
        TextTokenizer::from_file(&dir.join("tokenizer.json"))
    }

    /// Loads a `tokenizer.json`, and the `tokenizer_config.json` beside it when
    /// present (for `model_max_length` and `pad_token`).
    pub fn from_file(path: &Path) -> Result<TextTokenizer, TextDataError> {
        let bytes = std::fs::read(path).map_err(|e| TextDataError::io(path, e))?;
        let config_path = path.with_file_name("tokenizer_config.json");
        let config = if config_path.is_file() {
            Some(read_tokenizer_config(&config_path)?)
        } else {
            None
        };
        TextTokenizer::build(path, &bytes, config.as_ref())
    }

    /// Loads a tokenizer from files held in memory (a GGUF file's metadata made into
    /// `tokenizer.json` and `tokenizer_config.json`), named in messages as inside
    /// `path`.
    pub fn from_memory(
        path: &Path,
        files: &[(String, Vec<u8>)],
    ) -> Result<TextTokenizer, TextDataError> {
        let get = |name: &str| files.iter().find(|(n, _)| n == name).map(|(_, b)| b);
        let json = path.join("tokenizer.json");
        let bytes =
            get("tokenizer.json").ok_or_else(|| TextDataError::file(path, "holds no tokenizer"))?;
        let config = get("tokenizer_config.json")
            .map(|b| parse_tokenizer_config(&path.join("tokenizer_config.json"), b))
            .transpose()?;
        TextTokenizer::build(&json, bytes, config.as_ref())
    }

    /// Loads a tokenizer from the bytes of a `tokenizer.json` that came from `path`
    /// (named in messages), without a `tokenizer_config.json`.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<TextTokenizer, TextDataError> {
        TextTokenizer::build(path, bytes, None)
    }

    fn build(
        path: &Path,
        bytes: &[u8],
        config: Option<&TokenizerConfig>,
    ) -> Result<TextTokenizer, TextDataError> {
        // tokenizers 0.23 panics on a syntax error inside "decoder" (an `expect`
        // in its deserialiser), so the syntax is checked first, strings decoded
        // (a lone surrogate escape is such an error); that also gives every syntax
        // error its line and column.
        if let Err(e) = serde_json::from_slice::<Value>(bytes) {
            return Err(TextDataError::Content {
                path: path.to_path_buf(),
                line: Some(e.line()),
                column: Some(e.column()),
                what: format!(
                    "cannot load the tokenizer: invalid JSON: {}",
                    json_message(&e)
                ),
            });
        }
        // Any other panic while loading a malformed file must not take the
        // program down either.
        let loaded =
            catch_unwind(AssertUnwindSafe(|| Tokenizer::from_bytes(bytes))).map_err(|p| {
                TextDataError::file(
                    path,
                    format!(
                        "cannot load the tokenizer (the tokenizers crate panicked: {})",
                        panic_message(&*p)
                    ),
                )
            })?;
        let mut tokenizer = loaded.map_err(|e| load_error(path, &*e))?;
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| {
                config
                    .and_then(|c| c.pad_token.as_deref())
                    .and_then(|t| tokenizer.token_to_id(t))
            })
            .or_else(|| tokenizer.token_to_id("[PAD]"))
            .or_else(|| tokenizer.token_to_id("<pad>"));
        let eos_id = config
            .and_then(|c| c.eos_token.as_deref())
            .and_then(|t| tokenizer.token_to_id(t));
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| TextDataError::file(path, format!("cannot load the tokenizer: {e}")))?;
        // A template naming a special token that the file does not define loads
        // and then panics in every encode; finding that now names the file.
        for probe in [EncodeInput::Single("a".into()), ("a", "b").into()] {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| tokenizer.encode(probe, true))) {
                return Err(TextDataError::file(
                    path,
                    format!(
                        "cannot load the tokenizer (the tokenizers crate panicked encoding a test text: {})",
                        panic_message(&*p)
                    ),
                ));
            }
        }
        Ok(TextTokenizer {
            tokenizer,
            path: path.to_path_buf(),
            pad_id,
            eos_id,
            model_max_length: config.and_then(|c| c.model_max_length),
        })
    }

    /// The end-of-text id, when `tokenizer_config.json` names one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The ids of `text` with the byte range of the text each one covers (empty for
    /// a special token the post-processor added), special tokens added when
    /// `add_special`; nothing truncated.
    pub fn encode_with_offsets(
        &self,
        text: &str,
        add_special: bool,
    ) -> Result<(Vec<u32>, Vec<Offset>), TextDataError> {
        let fail = |what: String| TextDataError::file(&self.path, format!("cannot encode: {what}"));
        let encoding = catch_unwind(AssertUnwindSafe(|| {
            self.tokenizer.encode(text, add_special)
        }))
        .map_err(|p| {
            fail(format!(
                "the tokenizers crate panicked: {}",
                panic_message(&*p)
            ))
        })?
        .map_err(|e| fail(e.to_string()))?;
        Ok((encoding.get_ids().to_vec(), encoding.get_offsets().to_vec()))
    }

    /// The `tokenizer.json` this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id batches are padded with, when the tokenizer has one.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// The longest input the model was trained for, from `tokenizer_config.json`;
    /// `None` when absent or given as transformers' "unknown" sentinel.
    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }

    /// The number of ids, added tokens included: the embedding table's row count.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The id of a token, e.g. `[CLS]`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// How many special tokens encoding adds to one text, or to a pair.
    pub fn num_special_tokens(&self, pair: bool) -> usize {
        self.tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(pair))
    }

    /// The underlying tokenizer, with padding and truncation switched off.
    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Encodes `text` (and `pair`) with special tokens, keeping at most `max_length`
    /// ids in all: tokens are taken off the end of the longer segment first, as
    /// transformers' `truncation=True` does. An empty `pair` counts as none, as it
    /// does in transformers.
    pub fn encode(
        &self,
        text: &str,
        pair: Option<&str>,
        max_length: usize,
    ) -> Result<Encoded, TextDataError> {
        // transformers drops an empty pair (`if text_pair` in its fast tokenizer),
        // giving `[CLS] text [SEP]` rather than a second, empty segment.
        let pair = pair.filter(|p| !p.is_empty());
        let special = self.num_special_tokens(pair.is_some());
        if max_length < special {
            return Err(TextDataError::file(
                &self.path,
                format!("max_length {max_length} leaves no room for the {special} special tokens"),
            ));
        }
        let fail = |what: String| TextDataError::file(&self.path, format!("cannot encode: {what}"));
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.encode_unguarded(text, pair, max_length - special)
        }))
        .map_err(|p| {
            fail(format!(
                "the tokenizers crate panicked: {}",
                panic_message(&*p)
            ))
        })?;
        let encoding = result.map_err(|e| fail(e.to_string()))?;
        Ok(Encoded {
            input_ids: encoding.get_ids().to_vec(),
            token_type_ids: encoding.get_type_ids().to_vec(),
        })
    }

    /// `Tokenizer::encode` with a truncation length chosen per call: the tokenizer's
    /// own truncation setting is shared state, so the steps of its `post_process`
    /// are taken here instead.
    fn encode_unguarded(
        &self,
        text: &str,
        pair: Option<&str>,
        content_length: usize,
    ) -> tokenizers::Result<Encoding> {
        let first = self.tokenizer.encode(text, false)?;
        let second = match pair {
            Some(p) => {
                let mut e = self.tokenizer.encode(p, false)?;
                e.set_type_ids(vec![1; e.len()]);
                Some(e)
            }
            None => None,
        };
        let params = TruncationParams {
            direction: TruncationDirection::Right,
            max_length: content_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        };
        let (mut first, mut second) = truncate_encodings(first, second, &params)?;
        // The cut-off tail would be post-processed too (for pairs, every
        // combination of tails), which costs much on long documents and is unused.
        first.take_overflowing();
        if let Some(s) = second.as_mut() {
            s.take_overflowing();
        }
        self.tokenizer.post_process(first, second, true)
    }

    /// Encodes many records in parallel, in order; an error names the record's file
    /// and line.
    pub fn encode_records(
        &self,
        records: &[TextRecord],
        max_length: usize,
    ) -> Result<Vec<Encoded>, TextDataError> {
        records
            .par_iter()
            .map(|r| {
                self.encode(&r.text, r.pair.as_deref(), max_length)
                    .map_err(|e| r.error(e.to_string()))
            })
            .collect()
    }
}

/// The parts of `tokenizer_config.json` that matter after tokenisation.
struct TokenizerConfig {
    model_max_length: Option<usize>,
    pad_token: Option<String>,
    eos_token: Option<String>,
}

fn read_tokenizer_config(path: &Path) -> Result<TokenizerConfig, TextDataError> {
    let bytes = std::fs::read(path).map_err(|e| TextDataError::io(path, e))?;
    parse_tokenizer_config(path, &bytes)
}

fn parse_tokenizer_config(path: &Path, bytes: &[u8]) -> Result<TokenizerConfig, TextDataError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| TextDataError::Content {
        path: path.to_path_buf(),
        line: Some(e.line()),
        column: Some(e.column()),
        what: format!("invalid JSON: {}", json_message(&e)),
    })?;
    let Value::Object(map) = value else {
        return Err(TextDataError::file(path, "expected a JSON object"));
    };
    let model_max_length = match map.get("model_max_length") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (_, Some(f)) if f >= UNKNOWN_MAX_LENGTH => None,
            (Some(u), _) => Some(usize::try_from(u).unwrap_or(usize::MAX)),
            _ => {
                return Err(TextDataError::file(
                    path,
                    format!("key 'model_max_length': expected a positive integer, found {n}"),
                ));
            }
        },
        Some(other) => {
            return Err(TextDataError::file(
                path,
                format!("key 'model_max_length': expected a number, found {other}"),
            ));
        }
    };
    // Newer files write added tokens as objects: {"content": "[PAD]", ...}.
    let token = |key: &str| match map.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    Ok(TokenizerConfig {
        model_max_length,
        pad_token: token("pad_token"),
        eos_token: token("eos_token"),
    })
}
