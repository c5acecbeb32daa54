//! Chat templates: the Jinja template a decoder checkpoint ships
//! (`chat_template.jinja`, or `chat_template` in `tokenizer_config.json`) rendered
//! with minijinja as transformers' `apply_chat_template` renders it: `messages`
//! (role/content maps), `add_generation_prompt`, the special tokens by name, and
//! `raise_exception`. Chat data and `glora generate --chat` go through it.

use std::path::{Path, PathBuf};

use minijinja::{Environment, Error, ErrorKind, context};
use serde::Serialize;
use serde_json::Value;

use super::TextDataError;

/// The file transformers 5 writes the template to.
pub const TEMPLATE_FILE: &str = "chat_template.jinja";
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// One message of a chat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A checkpoint's chat template with the special tokens it may name.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    source: String,
    /// Where the template came from, for messages.
    path: PathBuf,
    bos_token: String,
    eos_token: String,
    pad_token: String,
    unk_token: String,
}

/// A special token of `tokenizer_config.json`: a string or `{"content": …}`.
fn token(config: &Value, key: &str) -> String {
    match config.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

fn raise_exception(msg: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// The template of the tokenizer folder `dir`: `chat_template.jinja`, else the
    /// `chat_template` of `tokenizer_config.json` (a string, or a list of named
    /// templates of which `default` is taken).
    pub fn from_dir(dir: &Path) -> Result<ChatTemplate, TextDataError> {
        let config_path = dir.join(TOKENIZER_CONFIG);
        let config: Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| TextDataError::Content {
                path: config_path.clone(),
                line: Some(e.line()),
                column: Some(e.column()),
                what: e.to_string(),
            })?,
            Err(_) => Value::Null,
        };
        let file = dir.join(TEMPLATE_FILE);
        let (source, path) = if file.is_file() {
            let text = std::fs::read_to_string(&file).map_err(|e| TextDataError::io(&file, e))?;
            (text, file)
        } else {
            let from_config = match config.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            };
            let text = from_config.ok_or_else(|| TextDataError::Content {
                path: dir.to_path_buf(),
                line: None,
                column: None,
                what: format!(
                    "no chat template: neither {TEMPLATE_FILE} nor a \"chat_template\" in {TOKENIZER_CONFIG}"
                ),
            })?;
            (text, config_path)
        };
        Ok(ChatTemplate {
            source,
            path,
            bos_token: token(&config, "bos_token"),
            eos_token: token(&config, "eos_token"),
            pad_token: token(&config, "pad_token"),
            unk_token: token(&config, "unk_token"),
        })
    }

    /// The template of the tokenizer folder `dir` as [`ChatTemplate::from_dir`]
    /// reads it, or `None` when the folder has none; a template that is there but
    /// unreadable is still an error.
    pub fn find(dir: &Path) -> Result<Option<ChatTemplate>, TextDataError> {
        match ChatTemplate::from_dir(dir) {
            Ok(t) => Ok(Some(t)),
            // Only "no template at all" names the folder itself; every other
            // failure names the file at fault.
            Err(TextDataError::Content {
                path, line: None, ..
            }) if path == dir => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The template among files held in memory (`chat_template.jinja`, with the
    /// special tokens of `tokenizer_config.json`), named in messages as inside
    /// `path`; `None` when there is none.
    pub fn from_memory(
        path: &Path,
        files: &[(String, Vec<u8>)],
    ) -> Result<Option<ChatTemplate>, TextDataError> {
        let get = |name: &str| files.iter().find(|(n, _)| n == name).map(|(_, b)| b);
        let Some(source) = get(TEMPLATE_FILE) else {
            return Ok(None);
        };
        let file = path.join(TEMPLATE_FILE);
        let source = String::from_utf8(source.clone())
            .map_err(|_| TextDataError::file(&file, "the template is not UTF-8"))?;
        let config: Value = match get(TOKENIZER_CONFIG) {
            Some(b) => serde_json::from_slice(b).map_err(|e| TextDataError::Content {
                path: path.join(TOKENIZER_CONFIG),
                line: Some(e.line()),
                column: Some(e.column()),
                what: e.to_string(),
            })?,
            None => Value::Null,
        };
        Ok(Some(ChatTemplate {
            source,
            path: file,
            bos_token: token(&config, "bos_token"),
            eos_token: token(&config, "eos_token"),
            pad_token: token(&config, "pad_token"),
            unk_token: token(&config, "unk_token"),
        }))
    }

    /// A template given as text, with no special tokens (tests, GGUF metadata).
    pub fn from_source(source: &str, path: &Path) -> ChatTemplate {
        ChatTemplate {
            source: source.into(),
            path: path.into(),
            bos_token: String::new(),
            eos_token: String::new(),
            pad_token: String::new(),
            unk_token: String::new(),
        }
    }

    /// With the special tokens the template may name.
    pub fn with_tokens(mut self, bos: &str, eos: &str) -> ChatTemplate {
        self.bos_token = bos.into();
        self.eos_token = eos.into();
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The text of `messages`, ending with the assistant's turn opened when
    /// `add_generation_prompt`.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TextDataError> {
        let fail = |e: Error| {
            let mut what = format!("chat template: {}", e.kind());
            if let Some(d) = e.detail() {
                what.push_str(&format!(": {d}"));
            }
            TextDataError::Content {
                path: self.path.clone(),
                line: e.line(),
                column: None,
                what,
            }
        };
        let mut env = Environment::new();
        env.add_function("raise_exception", raise_exception);
        env.add_template("chat", &self.source).map_err(fail)?;
        let t = env.get_template("chat").map_err(fail)?;
        t.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            pad_token => &self.pad_token,
            unk_token => &self.unk_token,
        })
        .map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_as_transformers_does() {
        let t = ChatTemplate::from_source(SMOL, Path::new("t.jinja"));
        let out = t.render(&[Message::new("user", "Hi?")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t
            .render(
                &[Message::new("system", "S"), Message::new("user", "U")],
                false,
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        );
        let bos =
            ChatTemplate::from_source("{{ bos_token }}{{ messages[0].content }}", Path::new("t"))
                .with_tokens("<s>", "</s>");
        assert_eq!(
            bos.render(&[Message::new("user", "x")], false).unwrap(),
            "<s>x"
        );
    }

    #[test]
    fn failures_name_the_template_and_line() {
        let t = ChatTemplate::from_source(
            "line one\n{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}",
            Path::new("chat_template.jinja"),
        );
        let e = t
            .render(&[Message::new("assistant", "x")], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("chat_template.jinja")
                && e.contains("first must be user")
                && e.contains(":2"),
            "{e}"
        );
        let bad = ChatTemplate::from_source("{% for %}", Path::new("bad.jinja"));
        let e = bad.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("bad.jinja") && e.contains("syntax"), "{e}");
    }

    #[test]
    fn reads_the_template_file_or_the_tokenizer_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(TOKENIZER_CONFIG),
            r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ eos_token }}D"}], "eos_token": {"content": "</s>"}}"#,
        )
        .unwrap();
        let t = ChatTemplate::from_dir(dir.path()).unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "</s>D");
        std::fs::write(dir.path().join(TEMPLATE_FILE), "F{{ eos_token }}").unwrap();
        let t = ChatTemplate::from_dir(dir.path()).unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "F</s>");
        let empty = tempfile::tempdir().unwrap();
        let e = ChatTemplate::from_dir(empty.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no chat template"), "{e}");
    }
}
