//! Labelled texts as read from files, before tokenisation: each [`TextRecord`] keeps
//! its file and line so that a problem found later (an unknown test label, a text the
//! tokenizer rejects) is still reported where it is, and [`TextDataError`] always
//! names the file at fault, then the line and column when there is one. Tables
//! (`text_table`) and class folders (`text_folder`) produce them; `LabelSet` turns
//! their label names into class indices and `TextTokenizer` their texts into ids.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why text data could not be read, parsed or encoded. The message always starts
/// with the file at fault, then the line and column when there is one.
#[derive(Debug, thiserror::Error)]
pub enum TextDataError {
    /// A file or folder that cannot be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Content that is malformed, or that does not fit the task.
    #[error("{}: {what}", Place { path, line: *line, column: *column })]
    Content {
        path: PathBuf,
        /// 1-based; `None` when the problem concerns the whole file or folder.
        line: Option<usize>,
        /// 1-based character column within the line, where the parser knows it.
        column: Option<usize>,
        /// What is wrong, starting with the column or key name when there is one.
        what: String,
    },
    /// A class map that does not parse, before any folder is looked at.
    #[error("class map '{spec}': {what}")]
    ClassMap { spec: String, what: String },
}

impl TextDataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TextDataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A problem with a whole file or folder.
    pub(crate) fn file(path: &Path, what: impl Into<String>) -> Self {
        TextDataError::Content {
            path: path.to_path_buf(),
            line: None,
            column: None,
            what: what.into(),
        }
    }

    /// A problem on one line of a file.
    pub(crate) fn line(path: &Path, line: usize, what: impl Into<String>) -> Self {
        TextDataError::Content {
            path: path.to_path_buf(),
            line: Some(line),
            column: None,
            what: what.into(),
        }
    }
}

/// `path`, `path:line` or `path:line:column`, as compilers print places.
pub(super) struct Place<'a> {
    pub(super) path: &'a Path,
    pub(super) line: Option<usize>,
    pub(super) column: Option<usize>,
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// One labelled example: a text, the second text of a pair task, and its label name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRecord {
    pub text: String,
    /// The second segment for sentence-pair tasks (entailment, paraphrase...).
    pub pair: Option<String>,
    pub label: String,
    /// 1-based line where the record starts in a table; 0 for a record that is a
    /// whole file.
    pub line: usize,
    /// The file the record came from; shared between the rows of one table.
    pub source: Arc<Path>,
}

impl TextRecord {
    /// The record's place for messages: `file:line`, or `file` for a whole file.
    pub fn location(&self) -> String {
        Place {
            path: &self.source,
            line: (self.line > 0).then_some(self.line),
            column: None,
        }
        .to_string()
    }

    /// An error about this record, at its place.
    pub(crate) fn error(&self, what: impl Into<String>) -> TextDataError {
        TextDataError::Content {
            path: self.source.to_path_buf(),
            line: (self.line > 0).then_some(self.line),
            column: None,
            what: what.into(),
        }
    }
}

/// What a reader passed over without failing, for the caller to warn about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Rows or files whose text was empty or only whitespace, which were left out.
    pub skipped_empty_text: usize,
    /// Where the first of them was (`file:line`, or `file` in a folder), so that a
    /// warning can point at it.
    pub first_empty_text: Option<String>,
    /// Blank lines in a JSONL file, which carry no record.
    pub skipped_blank_lines: usize,
}

impl ReadReport {
    pub(super) fn note_empty(&mut self, path: &Path, line: usize) {
        self.skipped_empty_text += 1;
        if self.first_empty_text.is_none() {
            let line = (line > 0).then_some(line);
            self.first_empty_text = Some(
                Place {
                    path,
                    line,
                    column: None,
                }
                .to_string(),
            );
        }
    }
}

/// The records of one file or folder and what was passed over reading them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextData {
    pub records: Vec<TextRecord>,
    pub report: ReadReport,
}

/// Text that is empty for training purposes: nothing but whitespace.
pub(super) fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

/// serde_json's message without the " at line L column C" it appends, which our
/// messages already give in front.
pub(super) fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(cut) => full[..cut].to_string(),
        None => full,
    }
}

/// Lists up to `max` names, then how many more there are, for messages.
pub(super) fn list_names<S: AsRef<str>>(names: &[S], max: usize) -> String {
    let mut out: Vec<String> = names
        .iter()
        .take(max)
        .map(|n| n.as_ref().to_string())
        .collect();
    if names.len() > max {
        out.push(format!("and {} more", names.len() - max));
    }
    out.join(", ")
}
