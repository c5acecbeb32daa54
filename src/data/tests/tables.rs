//! CSV, TSV and JSONL tables written by hand, with the records and messages they
//! must give.

use std::path::{Path, PathBuf};

use super::write;
use crate::data::{TableFormat, TextColumns, TextData, TextDataError, parse_table, read_table};

fn read(path: &Path) -> TextData {
    read_table(path, &TextColumns::default()).unwrap()
}

fn read_err(path: &Path, columns: &TextColumns) -> String {
    read_table(path, columns).unwrap_err().to_string()
}

/// (text, pair, label, line) of each record, for comparing with a hand-made list.
fn rows(data: &TextData) -> Vec<(&str, Option<&str>, &str, usize)> {
    data.records
        .iter()
        .map(|r| (r.text.as_str(), r.pair.as_deref(), r.label.as_str(), r.line))
        .collect()
}

fn pair_columns() -> TextColumns {
    TextColumns {
        text: "premise".to_string(),
        pair: Some("hypothesis".to_string()),
        label: "label".to_string(),
    }
}

fn table(name: &str, body: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, body);
    (dir, path)
}

#[test]
fn csv_quoting_and_multi_line_fields_keep_the_line_where_a_record_starts() {
    let (_dir, path) = table(
        "data.csv",
        b"id,text,label\n\
          1,plain text,spam\n\
          2,\"quoted, with a comma\",ham\n\
          3,\"say \"\"hi\"\"\",ham\n\
          4,\"two\nlines\",spam\n\
          5,after the break, ham \r\n\
          6,\"\",ham\n",
    );
    let data = read(&path);
    assert_eq!(
        rows(&data),
        vec![
            ("plain text", None, "spam", 2),
            ("quoted, with a comma", None, "ham", 3),
            ("say \"hi\"", None, "ham", 4),
            ("two\nlines", None, "spam", 5),
            ("after the break", None, "ham", 7),
        ]
    );
    assert_eq!(data.report.skipped_empty_text, 1);
    assert_eq!(
        data.report.first_empty_text,
        Some(format!("{}:8", path.display()))
    );
    assert!(data.records.iter().all(
        |r| &*r.source == path.as_path() && r.location().starts_with(&*path.to_string_lossy())
    ));
    assert_eq!(data.records[3].location(), format!("{}:5", path.display()));
}

#[test]
fn csv_lines_are_counted_in_crlf_files_and_across_blank_lines() {
    let (_dir, path) = table(
        "crlf.csv",
        b"\r\n\ntext,label\r\na,1\r\n\r\n\r\nb,2\r\n\"c\r\nd\",3\r\ne,4",
    );
    assert_eq!(
        rows(&read(&path)),
        vec![
            ("a", None, "1", 4),
            ("b", None, "2", 7),
            ("c\r\nd", None, "3", 8),
            ("e", None, "4", 10),
        ]
    );
    let (_dir, path) = table("late.csv", b"\n\nid,label\nx,1\n");
    assert_eq!(
        read_err(&path, &TextColumns::default()),
        format!(
            "{}:3: no column 'text' in the header (columns: 'id', 'label')",
            path.display()
        )
    );
}

#[test]
fn tsv_splits_on_tabs_only_and_reads_pairs() {
    let (_dir, path) = table(
        "pairs.tsv",
        b"premise\thypothesis\tlabel\n\
          A man, sleeping.\tA person rests.\tentailment\n\
          \"Quoted\ttab\"\t\tneutral\n",
    );
    let data = read_table(&path, &pair_columns()).unwrap();
    assert_eq!(
        rows(&data),
        vec![
            ("A man, sleeping.", Some("A person rests."), "entailment", 2),
            ("Quoted\ttab", Some(""), "neutral", 3),
        ]
    );
}

#[test]
fn a_byte_order_mark_at_the_start_is_ignored() {
    let (_dir, csv) = table("bom.csv", b"\xEF\xBB\xBFtext,label\nhello,1\n");
    assert_eq!(rows(&read(&csv)), vec![("hello", None, "1", 2)]);
    let (_dir, jsonl) = table(
        "bom.jsonl",
        b"\xEF\xBB\xBF{\"text\": \"hello\", \"label\": 1}\n",
    );
    assert_eq!(rows(&read(&jsonl)), vec![("hello", None, "1", 1)]);
}

#[test]
fn jsonl_labels_may_be_strings_integers_or_bools_and_blank_lines_are_skipped() {
    let (_dir, path) = table(
        "data.ndjson",
        b"{\"text\": \"a\", \"label\": 3}\n\
          \n\
          {\"text\": \"b\", \"label\": true, \"extra\": [1, 2]}\r\n\
          {\"label\": \" spam \", \"text\": \"c\\u00e9\\n\"}\n\
          \x20\t\n\
          {\"text\": \"  \", \"label\": 0}\n\
          {\"text\": \"d\", \"label\": -7}",
    );
    let data = read(&path);
    assert_eq!(
        rows(&data),
        vec![
            ("a", None, "3", 1),
            ("b", None, "true", 3),
            ("c\u{e9}\n", None, "spam", 4),
            ("d", None, "-7", 7),
        ]
    );
    assert_eq!(data.report.skipped_blank_lines, 2);
    assert_eq!(data.report.skipped_empty_text, 1);
    assert_eq!(
        data.report.first_empty_text,
        Some(format!("{}:6", path.display()))
    );
}

#[test]
fn jsonl_pairs_come_from_the_pair_key() {
    let (_dir, path) = table(
        "pairs.jsonl",
        "{\"premise\": \"Es regnet.\", \"hypothesis\": \"Die Straße ist nass.\", \"label\": \"entailment\"}\n"
            .as_bytes(),
    );
    let data = read_table(&path, &pair_columns()).unwrap();
    assert_eq!(
        rows(&data),
        vec![(
            "Es regnet.",
            Some("Die Stra\u{df}e ist nass."),
            "entailment",
            1
        )]
    );
}

#[test]
fn parse_table_reads_bytes_in_the_format_given() {
    let name = Path::new("memory.tsv");
    let data = parse_table(
        name,
        b"text\tlabel\nx,y\tz\n",
        TableFormat::Tsv,
        &TextColumns::default(),
    )
    .unwrap();
    assert_eq!(rows(&data), vec![("x,y", None, "z", 2)]);
    let as_csv = parse_table(
        name,
        b"text\tlabel\nx,y\tz\n",
        TableFormat::Csv,
        &TextColumns::default(),
    )
    .unwrap_err();
    assert_eq!(
        as_csv.to_string(),
        "memory.tsv:1: no column 'text' in the header (columns: 'text\tlabel')"
    );
    assert_eq!(
        TableFormat::from_path(Path::new("a/b.NDJSON")),
        Some(TableFormat::Jsonl)
    );
    assert_eq!(TableFormat::from_path(Path::new("a/b.json")), None);
}

#[test]
fn csv_errors_name_file_line_and_column() {
    let cases: [(&str, &[u8], &str); 6] = [
        (
            "missing.csv",
            b"id,body,label\n1,x,2\n",
            ":1: no column 'text' in the header (columns: 'id', 'body', 'label')",
        ),
        (
            "short.csv",
            b"id,text,label\n1,ok,a\n2,too few\n",
            ":3: row has 2 fields, the header has 3 (id, text, label)",
        ),
        (
            "long.tsv",
            b"text\tlabel\nok\ta\n\"multi\nline\"\tb\textra\n",
            ":3: row has 3 fields, the header has 2 (text, label)",
        ),
        (
            "label.csv",
            b"text,label\na,1\nb,\" \"\n",
            ":3: column 'label': empty label",
        ),
        (
            "bytes.csv",
            b"text,label\nok,1\nab\xffc,1\n",
            ":3: column 'text': invalid UTF-8 (byte 0xff at offset 2 of the field)",
        ),
        (
            "twice.csv",
            b"text,label,text\na,b,c\n",
            ":1: column 'text' appears more than once in the header",
        ),
    ];
    for (name, body, expected) in cases {
        let (_dir, path) = table(name, body);
        assert_eq!(
            read_err(&path, &TextColumns::default()),
            format!("{}{expected}", path.display()),
            "{name}"
        );
    }
    let (_dir, path) = table("nopair.csv", b"premise,label\na,b\n");
    assert_eq!(
        read_err(&path, &pair_columns()),
        format!(
            "{}:1: no column 'hypothesis' in the header (columns: 'premise', 'label')",
            path.display()
        )
    );
    let (_dir, path) = table("empty.csv", b"");
    assert_eq!(
        read_err(&path, &TextColumns::default()),
        format!("{}: empty file: a header row is needed", path.display())
    );
}

#[test]
fn jsonl_errors_name_file_line_and_key() {
    let cases: [(&str, &str); 9] = [
        (
            "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"a\" \"label\": 1}",
            ":2:14: invalid JSON: expected `,` or `}`",
        ),
        (
            "{\"text\": 5, \"label\": 1}",
            ":1: key 'text': expected a string, found a number",
        ),
        (
            "{\"text\": null, \"label\": 1}",
            ":1: key 'text': expected a string, found null",
        ),
        ("{\"label\": 1}", ":1: key 'text': missing"),
        ("\n\n{\"text\": \"a\"}", ":3: key 'label': missing label"),
        (
            "{\"text\": \"a\", \"label\": null}",
            ":1: key 'label': missing label",
        ),
        (
            "{\"text\": \"a\", \"label\": 1.5}",
            ":1: key 'label': expected a string, integer or bool label, found a number (1.5)",
        ),
        (
            "{\"text\": \"a\", \"label\": \"\"}",
            ":1: key 'label': empty label",
        ),
        ("[1, 2]", ":1: expected a JSON object, found an array"),
    ];
    for (body, expected) in cases {
        let (_dir, path) = table("data.jsonl", body.as_bytes());
        assert_eq!(
            read_err(&path, &TextColumns::default()),
            format!("{}{expected}", path.display()),
            "{body}"
        );
    }
    let (_dir, path) = table(
        "bytes.jsonl",
        b"{\"text\": \"a\", \"label\": 1}\n{\"text\": \"\xff\", \"label\": 1}\n",
    );
    assert_eq!(
        read_err(&path, &TextColumns::default()),
        format!("{}:2:11: invalid UTF-8 (byte 0xff)", path.display())
    );
    let (_dir, path) = table("pairs.jsonl", b"{\"premise\": \"a\", \"label\": 1}\n");
    assert_eq!(
        read_err(&path, &pair_columns()),
        format!("{}:1: key 'hypothesis': missing", path.display())
    );
}

#[test]
fn unknown_formats_and_missing_files_are_errors_naming_the_path() {
    let (_dir, path) = table("data.json", b"[]");
    assert_eq!(
        read_err(&path, &TextColumns::default()),
        format!(
            "{}: unknown table format (expected .csv, .tsv, .jsonl or .ndjson)",
            path.display()
        )
    );
    let missing = path.with_file_name("absent.csv");
    let err = read_table(&missing, &TextColumns::default()).unwrap_err();
    assert!(
        matches!(&err, TextDataError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", missing.display()))
    );
}
