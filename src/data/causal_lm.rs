//! Causal language-modelling data: a JSONL file whose lines each hold a `text`, a
//! `prompt` with its `response` (or `completion`), or `messages` (role/content
//! maps, rendered by the checkpoint's [`ChatTemplate`]). Each example becomes token
//! ids with, at every position, the id the model is to predict there: the next
//! token where that token is trained, else [`IGNORE_INDEX`]. A plain text trains on
//! every token; a prompt/response pair on the response only; a chat on the
//! assistant's turns only (each turn's span is found by rendering the chat prefix by
//! prefix, so the template's own markers around a turn stay untrained up to where
//! the assistant's text starts, and its end-of-turn token is trained). Texts and
//! responses end with the tokenizer's end-of-text token. Examples are cut to the
//! maximum length, or with packing concatenated and cut into windows of it.

use std::ops::Range;
use std::path::Path;

use rayon::prelude::*;
use serde_json::Value;

use super::chat::{ChatTemplate, Message};
use super::dataset::IGNORE_INDEX;
use super::{Dataset, Features, TextDataError, TextTokenizer, Tokens, json_message};

/// How causal-LM data is read.
#[derive(Clone, Copy, Debug, Default)]
pub struct LmOptions<'a> {
    /// The template `messages` lines are rendered with; without one they are an
    /// error naming the line.
    pub template: Option<&'a ChatTemplate>,
    /// Concatenate the examples and cut the stream into sequences of the maximum
    /// length, rather than one (truncated) example per sequence.
    pub pack: bool,
}

/// The name the one "class" of language-modelling data goes by.
pub const LM_LABEL: &str = "text";

/// One example before tokenisation.
#[derive(Debug, Clone, PartialEq)]
struct Example {
    text: String,
    /// Byte ranges of `text` whose tokens are trained.
    trained: Vec<Range<usize>>,
    /// Whether the tokenizer adds its special tokens (a chat template writes its
    /// own).
    add_special: bool,
    /// Whether the end-of-text token follows, trained.
    append_eos: bool,
    line: usize,
}

/// One tokenised example: ids and whether each one is trained.
#[derive(Debug, Clone, PartialEq)]
struct Piece {
    ids: Vec<u32>,
    trained: Vec<bool>,
    line: usize,
}

/// What reading left out, for the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LmReport {
    /// Examples with no trained token left after truncation.
    pub skipped_untrained: usize,
    /// The line of the first of them.
    pub first_untrained: Option<usize>,
    pub blank_lines: usize,
}

/// Causal-LM examples read from `path` and tokenised.
#[derive(Debug, Clone)]
pub struct LmData {
    pub dataset: Dataset,
    pub report: LmReport,
}

fn string_field<'v>(
    obj: &'v serde_json::Map<String, Value>,
    key: &str,
    path: &Path,
    line: usize,
) -> Result<Option<&'v str>, TextDataError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(TextDataError::line(
            path,
            line,
            format!("key '{key}': expected a string, found {}", kind(other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn messages_of(v: &Value, path: &Path, line: usize) -> Result<Vec<Message>, TextDataError> {
    let Value::Array(items) = v else {
        return Err(TextDataError::line(
            path,
            line,
            format!("key 'messages': expected a list, found {}", kind(v)),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let bad =
                |what: String| TextDataError::line(path, line, format!("messages[{i}]: {what}"));
            let Value::Object(o) = m else {
                return Err(bad(format!("expected an object, found {}", kind(m))));
            };
            let field = |key: &str| match o.get(key) {
                Some(Value::String(s)) => Ok(s.as_str()),
                Some(other) => Err(bad(format!(
                    "'{key}': expected a string, found {}",
                    kind(other)
                ))),
                None => Err(bad(format!("has no '{key}'"))),
            };
            Ok(Message::new(field("role")?, field("content")?))
        })
        .collect()
}

/// The byte spans of the assistant's turns in `full`, the rendering of all of
/// `messages`: each from the end of the chat before it with the assistant's turn
/// opened to the end of the chat up to and including it.
fn assistant_spans(
    messages: &[Message],
    template: &ChatTemplate,
    full: &str,
    path: &Path,
    line: usize,
) -> Result<Vec<Range<usize>>, TextDataError> {
    let at_line = |e: TextDataError| TextDataError::line(path, line, e.to_string());
    let mut spans = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let opened = template.render(&messages[..i], true).map_err(at_line)?;
        let closed = template.render(&messages[..=i], false).map_err(at_line)?;
        if !closed.starts_with(&opened) || !full.starts_with(&closed) {
            return Err(TextDataError::line(
                path,
                line,
                format!(
                    "the chat template {} does not render this chat prefix by prefix (message {i} changes what comes before it), so its assistant turns cannot be told apart",
                    template.path().display()
                ),
            ));
        }
        spans.push(opened.len()..closed.len());
    }
    Ok(spans)
}

/// The example one JSON line holds; `None` for a blank line.
fn parse_line(
    text: &str,
    path: &Path,
    line: usize,
    template: Option<&ChatTemplate>,
) -> Result<Option<Example>, TextDataError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(text).map_err(|e| TextDataError::Content {
        path: path.to_path_buf(),
        line: Some(line),
        column: Some(e.column()),
        what: format!("invalid JSON: {}", json_message(&e)),
    })?;
    let Value::Object(obj) = value else {
        return Err(TextDataError::line(
            path,
            line,
            format!("expected a JSON object, found {}", kind(&value)),
        ));
    };
    if let Some(m) = obj.get("messages") {
        let messages = messages_of(m, path, line)?;
        let template = template.ok_or_else(|| {
            TextDataError::line(
                path,
                line,
                "a 'messages' chat needs the model's chat template (chat_template.jinja or tokenizer_config.json beside the tokenizer)",
            )
        })?;
        let full = template
            .render(&messages, false)
            .map_err(|e| TextDataError::line(path, line, e.to_string()))?;
        let trained = assistant_spans(&messages, template, &full, path, line)?;
        return Ok(Some(Example {
            text: full,
            trained,
            add_special: false,
            append_eos: false,
            line,
        }));
    }
    let response = match string_field(&obj, "response", path, line)? {
        Some(r) => Some(r),
        None => string_field(&obj, "completion", path, line)?,
    };
    if let Some(prompt) = string_field(&obj, "prompt", path, line)? {
        let response = response.ok_or_else(|| {
            TextDataError::line(
                path,
                line,
                "a 'prompt' needs a 'response' (or 'completion')",
            )
        })?;
        return Ok(Some(Example {
            text: format!("{prompt}{response}"),
            trained: std::iter::once(prompt.len()..prompt.len() + response.len())
                .collect::<Vec<_>>(),
            add_special: true,
            append_eos: true,
            line,
        }));
    }
    if let Some(t) = string_field(&obj, "text", path, line)? {
        return Ok(Some(Example {
            text: t.to_string(),
            trained: std::iter::once(0..t.len()).collect::<Vec<_>>(),
            add_special: true,
            append_eos: true,
            line,
        }));
    }
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    Err(TextDataError::line(
        path,
        line,
        format!(
            "expected a 'text', a 'prompt' with a 'response', or 'messages'; the line has {}",
            if keys.is_empty() {
                "no keys".to_string()
            } else {
                format!("keys {}", keys.join(", "))
            }
        ),
    ))
}

/// Tokenises an example: a token is trained when it covers text (not a special
/// token the tokenizer added) starting inside a trained span.
fn tokenise(ex: &Example, tok: &TextTokenizer) -> Result<Piece, TextDataError> {
    let (mut ids, offsets) = tok
        .encode_with_offsets(&ex.text, ex.add_special)
        .map_err(|e| TextDataError::Content {
            path: tok.path().to_path_buf(),
            line: None,
            column: None,
            what: format!("line {} of the data: {e}", ex.line),
        })?;
    let mut trained: Vec<bool> = offsets
        .iter()
        .map(|&(a, b)| a < b && ex.trained.iter().any(|r| r.contains(&a)))
        .collect();
    if ex.append_eos
        && let Some(eos) = tok.eos_id()
    {
        ids.push(eos);
        trained.push(true);
    }
    Ok(Piece {
        ids,
        trained,
        line: ex.line,
    })
}

/// The next-token targets of a sequence whose tokens are `trained` or not.
fn targets(ids: &[u32], trained: &[bool]) -> Vec<i32> {
    (0..ids.len())
        .map(|t| match (ids.get(t + 1), trained.get(t + 1)) {
            (Some(&next), Some(true)) => next as i32,
            _ => IGNORE_INDEX,
        })
        .collect()
}

/// Sequences of at most `max_length` tokens: each piece cut to it, or with `pack`
/// all pieces end to end cut into windows of it. Sequences without a target are
/// left out and counted.
fn sequences(
    pieces: Vec<Piece>,
    max_length: usize,
    pack: bool,
    report: &mut LmReport,
) -> (Vec<Vec<u32>>, Vec<Vec<i32>>) {
    let (mut ids, mut tgts) = (Vec::new(), Vec::new());
    let mut keep = |i: Vec<u32>, tr: &[bool], line: usize, report: &mut LmReport| {
        let t = targets(&i, tr);
        if t.iter().all(|&v| v == IGNORE_INDEX) {
            report.skipped_untrained += 1;
            report.first_untrained.get_or_insert(line);
            return;
        }
        ids.push(i);
        tgts.push(t);
    };
    if pack {
        let first_line = pieces.first().map_or(0, |p| p.line);
        let all_ids: Vec<u32> = pieces.iter().flat_map(|p| p.ids.iter().copied()).collect();
        let all_trained: Vec<bool> = pieces
            .iter()
            .flat_map(|p| p.trained.iter().copied())
            .collect();
        for (i, tr) in all_ids
            .chunks(max_length)
            .zip(all_trained.chunks(max_length))
        {
            keep(i.to_vec(), tr, first_line, report);
        }
    } else {
        for p in pieces {
            let n = p.ids.len().min(max_length);
            keep(p.ids[..n].to_vec(), &p.trained[..n], p.line, report);
        }
    }
    (ids, tgts)
}

/// Parses and tokenises the JSONL `bytes` that came from `path`.
pub fn parse_lm_data(
    path: &Path,
    bytes: &[u8],
    tokenizer: &TextTokenizer,
    max_length: usize,
    opts: LmOptions<'_>,
) -> Result<LmData, TextDataError> {
    if max_length < 2 {
        return Err(TextDataError::file(
            path,
            format!(
                "max_length {max_length}: a language model needs at least 2 tokens to predict one"
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        TextDataError::line(path, line, "the file is not UTF-8")
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut report = LmReport::default();
    let mut examples = Vec::new();
    for (i, l) in text.lines().enumerate() {
        match parse_line(l, path, i + 1, opts.template)? {
            Some(e) => examples.push(e),
            None => report.blank_lines += 1,
        }
    }
    if examples.is_empty() {
        return Err(TextDataError::file(path, "no examples"));
    }
    let pieces = examples
        .par_iter()
        .map(|e| tokenise(e, tokenizer))
        .collect::<Result<Vec<_>, _>>()?;
    let (ids, targets) = sequences(pieces, max_length, opts.pack, &mut report);
    if ids.is_empty() {
        return Err(TextDataError::file(
            path,
            format!("no example has a token to train on within {max_length} tokens"),
        ));
    }
    let n = ids.len();
    let features = Features::Tokens(Tokens {
        ids,
        type_ids: None,
        targets: Some(targets),
        pad_id: tokenizer.pad_id().or(tokenizer.eos_id()).unwrap_or(0),
        max_length,
    });
    Ok(LmData {
        dataset: Dataset {
            features,
            labels: vec![0; n],
            n,
            num_classes: 1,
            label_names: vec![LM_LABEL.to_string()],
        },
        report,
    })
}

/// Reads and tokenises the JSONL file at `path`; see [`parse_lm_data`].
pub fn read_lm_data(
    path: &Path,
    tokenizer: &TextTokenizer,
    max_length: usize,
    opts: LmOptions<'_>,
) -> Result<LmData, TextDataError> {
    let bytes = std::fs::read(path).map_err(|e| TextDataError::io(path, e))?;
    parse_lm_data(path, &bytes, tokenizer, max_length, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_next_trained_token() {
        // Positions 0..4; tokens 2 and 3 are trained: position 1 predicts 12,
        // position 2 predicts 13, the rest nothing.
        let t = targets(&[10, 11, 12, 13], &[false, false, true, true]);
        assert_eq!(t, [IGNORE_INDEX, 12, 13, IGNORE_INDEX]);
    }

    fn piece(ids: &[u32], trained: &[bool], line: usize) -> Piece {
        Piece {
            ids: ids.to_vec(),
            trained: trained.to_vec(),
            line,
        }
    }

    #[test]
    fn truncation_and_packing_by_hand() {
        let pieces = vec![
            piece(&[1, 2, 3, 4, 5], &[false, true, true, true, true], 1),
            // Only its first token would be trained, which no position predicts.
            piece(&[6, 7], &[true, false], 2),
            piece(&[8, 9, 10], &[false, false, true], 3),
        ];
        let mut report = LmReport::default();
        let (ids, t) = sequences(pieces.clone(), 3, false, &mut report);
        assert_eq!(ids, [vec![1, 2, 3], vec![8, 9, 10]]);
        assert_eq!(
            t,
            [
                vec![2, 3, IGNORE_INDEX],
                vec![IGNORE_INDEX, 10, IGNORE_INDEX]
            ]
        );
        assert_eq!(
            (report.skipped_untrained, report.first_untrained),
            (1, Some(2))
        );
        // Packed: 1 2 3 4 | 5 6 7 8 | 9 10. Token 6 is trained, so it is the
        // target of 5 across the example boundary, as in one concatenated text.
        let mut report = LmReport::default();
        let (ids, t) = sequences(pieces, 4, true, &mut report);
        assert_eq!(ids, [vec![1, 2, 3, 4], vec![5, 6, 7, 8], vec![9, 10]]);
        assert_eq!(
            t,
            [
                vec![2, 3, 4, IGNORE_INDEX],
                vec![6, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
                vec![10, IGNORE_INDEX]
            ]
        );
        assert_eq!(report.skipped_untrained, 0);
    }

    const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    #[test]
    fn lines_become_texts_and_trained_spans() {
        let p = Path::new("d.jsonl");
        let t = ChatTemplate::from_source(CHATML, Path::new("t.jinja"));
        let e = parse_line(r#"{"text": "hello"}"#, p, 1, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.text.as_str(), e.trained.clone()),
            ("hello", std::iter::once(0..5).collect::<Vec<_>>())
        );
        assert!(e.add_special && e.append_eos);
        let e = parse_line(r#"{"prompt": "Q: ", "completion": "A"}"#, p, 2, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.text.as_str(), e.trained.clone()),
            ("Q: A", std::iter::once(3..4).collect::<Vec<_>>())
        );
        let line = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "?"}, {"role": "assistant", "content": "!"}]}"#;
        let e = parse_line(line, p, 3, Some(&t)).unwrap().unwrap();
        let full = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n<|im_start|>user\n?<|im_end|>\n<|im_start|>assistant\n!<|im_end|>\n";
        assert_eq!(e.text, full);
        let spans: Vec<&str> = e.trained.iter().map(|r| &full[r.clone()]).collect();
        assert_eq!(spans, ["yo<|im_end|>\n", "!<|im_end|>\n"]);
        assert!(!e.add_special && !e.append_eos);
        assert!(parse_line("   ", p, 4, None).unwrap().is_none());
    }

    #[test]
    fn bad_lines_name_the_line_and_key() {
        let p = Path::new("d.jsonl");
        let t = ChatTemplate::from_source(CHATML, Path::new("t.jinja"));
        let cases: &[(&str, Option<&ChatTemplate>, &str)] = &[
            (
                "{\"text\": 3}",
                None,
                "d.jsonl:7: key 'text': expected a string, found a number",
            ),
            ("{\"text\": ", None, "d.jsonl:7:"),
            ("[1]", None, "expected a JSON object, found a list"),
            ("{\"prompt\": \"x\"}", None, "a 'prompt' needs a 'response'"),
            ("{\"label\": \"x\"}", None, "the line has keys label"),
            (
                "{\"messages\": []}",
                None,
                "needs the model's chat template",
            ),
            (
                "{\"messages\": [{\"role\": \"user\"}]}",
                Some(&t),
                "messages[0]: has no 'content'",
            ),
            (
                "{\"messages\": {}}",
                Some(&t),
                "key 'messages': expected a list",
            ),
        ];
        for (line, template, want) in cases {
            let e = parse_line(line, p, 7, *template).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
        }
        // A template that writes the last message differently once more follow.
        let shifting = ChatTemplate::from_source(
            "{% for m in messages %}{% if loop.last %}[{{ m.content }}]{% else %}{{ m.content }}{% endif %}{% endfor %}",
            Path::new("s.jinja"),
        );
        let line = r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}"#;
        let e = parse_line(line, p, 9, Some(&shifting))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("d.jsonl:9") && e.contains("prefix by prefix"),
            "{e}"
        );
    }
}
