//! Reading labelled texts from one table file: CSV (`.csv`), TSV (`.tsv`) or JSON
//! lines (`.jsonl`, `.ndjson`).
//!
//! CSV and TSV need a header row and follow RFC 4180 quoting (the `csv` crate does
//! the parsing), so a quoted field may span lines; JSONL holds one object per line.
//! The caller names the text, pair and label columns in [`TextColumns`]; every
//! record keeps the line it starts on for later messages. Rows with empty text are
//! left out and counted in the [`ReadReport`](super::ReadReport), since one stray
//! row should not stop a run but should not pass silently either.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::{TextData, TextDataError, TextRecord, is_blank, json_message, list_names};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The layout of a table file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Csv,
    Tsv,
    Jsonl,
}

impl TableFormat {
    /// The format a file's extension announces.
    pub fn from_path(path: &Path) -> Option<TableFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(TableFormat::Csv),
            "tsv" => Some(TableFormat::Tsv),
            "jsonl" | "ndjson" => Some(TableFormat::Jsonl),
            _ => None,
        }
    }
}

/// Which columns (CSV/TSV) or keys (JSONL) hold the text, the pair and the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextColumns {
    pub text: String,
    /// The second text of a pair task; `None` for single-text tasks.
    pub pair: Option<String>,
    pub label: String,
}

impl Default for TextColumns {
    fn default() -> Self {
        TextColumns {
            text: "text".to_string(),
            pair: None,
            label: "label".to_string(),
        }
    }
}

/// Reads the table at `path`, in the format its extension names.
pub fn read_table(path: &Path, columns: &TextColumns) -> Result<TextData, TextDataError> {
    let format = TableFormat::from_path(path).ok_or_else(|| {
        TextDataError::file(
            path,
            "unknown table format (expected .csv, .tsv, .jsonl or .ndjson)",
        )
    })?;
    let bytes = std::fs::read(path).map_err(|e| TextDataError::io(path, e))?;
    parse_table(path, &bytes, format, columns)
}

/// Parses table `bytes` that came from `path` (used for messages and as each
/// record's source).
pub fn parse_table(
    path: &Path,
    bytes: &[u8],
    format: TableFormat,
    columns: &TextColumns,
) -> Result<TextData, TextDataError> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let source: Arc<Path> = Arc::from(path);
    match format {
        TableFormat::Csv => parse_delimited(source, bytes, b',', columns),
        TableFormat::Tsv => parse_delimited(source, bytes, b'\t', columns),
        TableFormat::Jsonl => parse_jsonl(source, bytes, columns),
    }
}

/// Where the wanted columns sit in a CSV/TSV header.
struct ColumnIndices {
    text: usize,
    pair: Option<usize>,
    label: usize,
}

fn find_columns(
    path: &Path,
    header_line: usize,
    header: &[String],
    columns: &TextColumns,
) -> Result<ColumnIndices, TextDataError> {
    let find = |name: &str| -> Result<usize, TextDataError> {
        let mut hits = header
            .iter()
            .enumerate()
            .filter(|(_, h)| h.trim() == name)
            .map(|(i, _)| i);
        let first = hits.next().ok_or_else(|| {
            let quoted: Vec<String> = header.iter().map(|h| format!("'{h}'")).collect();
            TextDataError::line(
                path,
                header_line,
                format!(
                    "no column '{name}' in the header (columns: {})",
                    list_names(&quoted, 30)
                ),
            )
        })?;
        if hits.next().is_some() {
            return Err(TextDataError::line(
                path,
                header_line,
                format!("column '{name}' appears more than once in the header"),
            ));
        }
        Ok(first)
    };
    Ok(ColumnIndices {
        text: find(&columns.text)?,
        pair: columns.pair.as_deref().map(find).transpose()?,
        label: find(&columns.label)?,
    })
}

/// A field as UTF-8, or an error naming its line and column.
fn utf8_field<'a>(
    path: &Path,
    line: usize,
    column: &str,
    bytes: &'a [u8],
) -> Result<&'a str, TextDataError> {
    std::str::from_utf8(bytes).map_err(|e| {
        TextDataError::line(
            path,
            line,
            format!(
                "column '{column}': invalid UTF-8 (byte 0x{:02x} at offset {} of the field)",
                bytes[e.valid_up_to()],
                e.valid_up_to()
            ),
        )
    })
}

/// Line numbers of CSV records. The `csv` crate's positions are where the previous
/// record ended, before the line terminator and any blank lines that it skips, so
/// its line numbers drift on CRLF files; the line is counted here instead, from the
/// first byte of the record.
struct LineCounter<'a> {
    bytes: &'a [u8],
    offset: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        LineCounter {
            bytes,
            offset: 0,
            line: 1,
        }
    }

    /// The 1-based line of the record read at `position`; positions only grow.
    fn record_line(&mut self, position: Option<&csv::Position>) -> usize {
        let Some(position) = position else {
            return self.line;
        };
        let mut start = (position.byte() as usize).clamp(self.offset, self.bytes.len());
        while start < self.bytes.len() && matches!(self.bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        self.line += self.bytes[self.offset..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.offset = start;
        self.line
    }
}

fn parse_delimited(
    source: Arc<Path>,
    bytes: &[u8],
    delimiter: u8,
    columns: &TextColumns,
) -> Result<TextData, TextDataError> {
    let path: &Path = &source;
    // Row lengths are checked here rather than by the csv crate, so that the
    // message can give the line and the header's columns.
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes);
    let header_bytes = reader
        .byte_headers()
        .map_err(|e| TextDataError::line(path, 1, format!("cannot read the header: {e}")))?
        .clone();
    if header_bytes.is_empty() {
        return Err(TextDataError::file(
            path,
            "empty file: a header row is needed",
        ));
    }
    let mut lines = LineCounter::new(bytes);
    let header_line = lines.record_line(header_bytes.position());
    let header: Vec<String> = header_bytes
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            utf8_field(path, header_line, &format!("#{}", i + 1), cell).map(str::to_string)
        })
        .collect::<Result<_, _>>()?;
    let at = find_columns(path, header_line, &header, columns)?;

    let mut data = TextData::default();
    let mut row = csv::ByteRecord::new();
    loop {
        let more = reader
            .read_byte_record(&mut row)
            .map_err(|e| TextDataError::file(path, e.to_string()))?;
        if !more {
            break;
        }
        let line = lines.record_line(row.position());
        if row.len() != header.len() {
            return Err(TextDataError::line(
                path,
                line,
                format!(
                    "row has {} fields, the header has {} ({})",
                    row.len(),
                    header.len(),
                    list_names(&header, 30)
                ),
            ));
        }
        let text = utf8_field(path, line, &columns.text, &row[at.text])?;
        let label = utf8_field(path, line, &columns.label, &row[at.label])?.trim();
        let pair = match (at.pair, &columns.pair) {
            (Some(i), Some(name)) => Some(utf8_field(path, line, name, &row[i])?.to_string()),
            _ => None,
        };
        if label.is_empty() {
            return Err(TextDataError::line(
                path,
                line,
                format!("column '{}': empty label", columns.label),
            ));
        }
        if is_blank(text) {
            data.report.note_empty(path, line);
            continue;
        }
        data.records.push(TextRecord {
            text: text.to_string(),
            pair,
            label: label.to_string(),
            line,
            source: source.clone(),
        });
    }
    Ok(data)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The string at `key`, or an error naming the key.
fn json_string(
    path: &Path,
    line: usize,
    object: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<String, TextDataError> {
    match object.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(TextDataError::line(
            path,
            line,
            format!("key '{key}': expected a string, found {}", json_kind(other)),
        )),
        None => Err(TextDataError::line(
            path,
            line,
            format!("key '{key}': missing"),
        )),
    }
}

/// A label may be written as a string, an integer or a bool; all become names.
fn json_label(
    path: &Path,
    line: usize,
    object: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<String, TextDataError> {
    let err = |what: String| TextDataError::line(path, line, format!("key '{key}': {what}"));
    let label = match object.get(key) {
        None | Some(Value::Null) => return Err(err("missing label".to_string())),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(other) => {
            return Err(err(format!(
                "expected a string, integer or bool label, found {} ({other})",
                json_kind(other)
            )));
        }
    };
    if label.is_empty() {
        return Err(err("empty label".to_string()));
    }
    Ok(label)
}

fn parse_jsonl(
    source: Arc<Path>,
    bytes: &[u8],
    columns: &TextColumns,
) -> Result<TextData, TextDataError> {
    let path: &Path = &source;
    let mut data = TextData::default();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|e| TextDataError::Content {
            path: path.to_path_buf(),
            line: Some(line),
            column: Some(e.valid_up_to() + 1),
            what: format!("invalid UTF-8 (byte 0x{:02x})", raw[e.valid_up_to()]),
        })?;
        if text.trim().is_empty() {
            data.report.skipped_blank_lines += 1;
            continue;
        }
        let value: Value = serde_json::from_str(text).map_err(|e| TextDataError::Content {
            path: path.to_path_buf(),
            line: Some(line),
            column: Some(e.column()),
            what: format!("invalid JSON: {}", json_message(&e)),
        })?;
        let Value::Object(object) = &value else {
            return Err(TextDataError::line(
                path,
                line,
                format!("expected a JSON object, found {}", json_kind(&value)),
            ));
        };
        let body = json_string(path, line, object, &columns.text)?;
        let pair = columns
            .pair
            .as_deref()
            .map(|key| json_string(path, line, object, key))
            .transpose()?;
        let label = json_label(path, line, object, &columns.label)?;
        if is_blank(&body) {
            data.report.note_empty(path, line);
            continue;
        }
        data.records.push(TextRecord {
            text: body,
            pair,
            label,
            line,
            source: source.clone(),
        });
    }
    Ok(data)
}
