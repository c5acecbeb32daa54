//! Class folders: class maps, what counts as an example, and the SpamAssassin corpus.

use std::collections::BTreeMap;
use std::path::Path;

use super::{fixture, write};
use crate::data::{ClassMap, FolderOptions, TextData, read_text_folder};

fn with_map(spec: &str) -> FolderOptions {
    FolderOptions {
        class_map: Some(ClassMap::parse(spec).unwrap()),
        extension: None,
    }
}

/// Label → number of records.
fn counts(data: &TextData) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in &data.records {
        *out.entry(r.label.clone()).or_default() += 1;
    }
    out
}

fn folder_err(dir: &Path, options: &FolderOptions) -> String {
    read_text_folder(dir, options).unwrap_err().to_string()
}

#[test]
fn class_map_rules_match_subfolder_names_and_the_first_match_wins() {
    let map = ClassMap::parse(" easy-ham-* = ham , hard-ham-?=ham,spam-*=spam,*=other").unwrap();
    assert_eq!(map.label_for("easy-ham-1"), Some("ham"));
    assert_eq!(map.label_for("easy-ham-"), Some("ham"));
    assert_eq!(map.label_for("hard-ham-1"), Some("ham"));
    assert_eq!(map.label_for("hard-ham-12"), Some("other"));
    assert_eq!(map.label_for("spam-2"), Some("spam"));
    assert_eq!(map.label_for("Spam-2"), Some("other"));
    let exact = ClassMap::parse("a*b*c=x,?=one").unwrap();
    for (name, label) in [
        ("abc", Some("x")),
        ("aXXbYYc", Some("x")),
        ("abcbc", Some("x")),
        ("acb", None),
        ("abcd", None),
        ("é", Some("one")),
        ("", None),
        ("ab", None),
    ] {
        assert_eq!(exact.label_for(name), label, "{name}");
    }
    let star = ClassMap::parse("*=all").unwrap();
    assert_eq!(star.label_for(""), Some("all"));
    assert_eq!(star.spec(), "*=all");
    let parsed: ClassMap = "x=y".parse().unwrap();
    assert_eq!(parsed.label_for("x"), Some("y"));
}

#[test]
fn class_map_syntax_errors_quote_the_map_and_the_rule() {
    for (spec, expected) in [
        ("", "class map '': no rules (expected PATTERN=LABEL,...)"),
        (
            "a=b,spam",
            "class map 'a=b,spam': rule 2 ('spam'): expected PATTERN=LABEL",
        ),
        ("=ham", "class map '=ham': rule 1 ('=ham'): empty pattern"),
        (
            "a=b,",
            "class map 'a=b,': rule 2 (''): expected PATTERN=LABEL",
        ),
        (
            "ham-*= ",
            "class map 'ham-*= ': rule 1 ('ham-*='): empty label",
        ),
        (
            "x/y=z",
            "class map 'x/y=z': rule 1 ('x/y=z'): patterns match subfolder names, not paths",
        ),
    ] {
        assert_eq!(ClassMap::parse(spec).unwrap_err().to_string(), expected);
    }
}

/// a/ and b/ with examples, ignored files and a nested folder; top-level files too.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "README", b"not an example");
    write(root, "a-1/2.txt", b"second");
    write(root, "a-1/1.txt", b"first");
    write(root, "a-1/.hidden", b"ignored");
    write(root, "a-1/cmds", b"ignored too");
    write(root, "a-1/nested/3.eml", b"caf\xe9 latin-1");
    write(root, "a-2/x.txt", b"\xEF\xBB\xBFwith bom");
    write(root, "a-2/blank.txt", b" \n\t ");
    write(root, "b/only.txt", b"bee");
    write(root, ".git/config", b"a hidden folder");
    dir
}

#[test]
fn each_subfolder_is_a_label_without_a_class_map() {
    let dir = tree();
    let data = read_text_folder(dir.path(), &FolderOptions::default()).unwrap();
    let got: Vec<(String, &str, &str)> = data
        .records
        .iter()
        .map(|r| {
            let rel = r.source.strip_prefix(dir.path()).unwrap();
            (rel.display().to_string(), r.text.as_str(), r.label.as_str())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a-1/1.txt".to_string(), "first", "a-1"),
            ("a-1/2.txt".to_string(), "second", "a-1"),
            ("a-1/nested/3.eml".to_string(), "caf\u{fffd} latin-1", "a-1"),
            ("a-2/x.txt".to_string(), "with bom", "a-2"),
            ("b/only.txt".to_string(), "bee", "b"),
        ]
    );
    assert!(data.records.iter().all(|r| r.line == 0 && r.pair.is_none()));
    assert_eq!(data.report.skipped_empty_text, 1);
    assert_eq!(
        data.report.first_empty_text,
        Some(dir.path().join("a-2/blank.txt").display().to_string())
    );
    assert_eq!(
        data.records[0].location(),
        dir.path().join("a-1/1.txt").display().to_string()
    );
}

#[test]
fn a_class_map_merges_subfolders_and_an_extension_filters_files() {
    let dir = tree();
    let data = read_text_folder(dir.path(), &with_map("a-*=A,b=B")).unwrap();
    assert_eq!(
        counts(&data),
        BTreeMap::from([("A".to_string(), 4), ("B".to_string(), 1)])
    );
    let txt = FolderOptions {
        extension: Some(".TXT".to_string()),
        ..with_map("a-*=A,b=B")
    };
    let data = read_text_folder(dir.path(), &txt).unwrap();
    assert_eq!(
        counts(&data),
        BTreeMap::from([("A".to_string(), 3), ("B".to_string(), 1)])
    );
}

#[test]
fn folder_errors_name_the_folder_and_what_does_not_match() {
    let dir = tree();
    let root = dir.path().display();
    assert_eq!(
        folder_err(dir.path(), &with_map("a-1=A")),
        format!("{root}: class map 'a-1=A' has no rule for subfolders a-2, b")
    );
    assert_eq!(
        folder_err(dir.path(), &with_map("a-*=A,b=B,c-*=C")),
        format!(
            "{root}: class map 'a-*=A,b=B,c-*=C': rule 'c-*=C' matches no subfolder \
             (subfolders: a-1, a-2, b)"
        )
    );
    assert_eq!(
        folder_err(dir.path(), &with_map("a-*=A,a-2=A2,*=B")),
        format!(
            "{root}: class map 'a-*=A,a-2=A2,*=B': rule 'a-2=A2' only matches subfolders \
             that earlier rules already label (subfolders: a-1, a-2, b)"
        )
    );
    let eml = FolderOptions {
        extension: Some("eml".to_string()),
        class_map: None,
    };
    assert_eq!(
        folder_err(dir.path(), &eml),
        format!("{root}: subfolder 'a-2' holds no .eml files")
    );
    let flat = tempfile::tempdir().unwrap();
    write(flat.path(), "one.txt", b"x");
    assert_eq!(
        folder_err(flat.path(), &FolderOptions::default()),
        format!(
            "{}: no class subfolders (expected one subfolder of text files per class)",
            flat.path().display()
        )
    );
    let file = flat.path().join("one.txt");
    assert_eq!(
        folder_err(&file, &FolderOptions::default()),
        format!("{}: not a folder", file.display())
    );
    let missing = flat.path().join("absent");
    assert!(
        folder_err(&missing, &FolderOptions::default())
            .starts_with(&format!("{}: ", missing.display()))
    );
}

/// Files in `dir` that the reader should take, counted with plain `read_dir`.
fn count_files(dir: &Path, extension: Option<&str>) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "cmds")
        .filter(|n| extension.is_none_or(|x| n.ends_with(&format!(".{x}"))))
        .count()
}

#[test]
fn spam_assassin_has_4150_ham_and_1896_spam() {
    let Some(root) = fixture("data/spam-assassin") else {
        return;
    };
    // The packaged corpus keeps a `.json` copy beside each raw `.txt` email.
    let options = FolderOptions {
        extension: Some("txt".to_string()),
        ..with_map("easy-ham-*=ham,hard-ham-*=ham,spam-*=spam")
    };
    let data = read_text_folder(&root, &options).unwrap();
    let by_dir = |names: &[&str], ext| -> usize {
        names.iter().map(|n| count_files(&root.join(n), ext)).sum()
    };
    let ham_dirs = ["easy-ham-1", "easy-ham-2", "hard-ham-1"];
    let spam_dirs = ["spam-1", "spam-2"];
    assert_eq!(by_dir(&ham_dirs, Some("txt")), 2_500 + 1_400 + 250);
    assert_eq!(by_dir(&spam_dirs, Some("txt")), 500 + 1_396);
    assert_eq!(data.report.skipped_empty_text, 0);
    assert_eq!(
        counts(&data),
        BTreeMap::from([("ham".to_string(), 4_150), ("spam".to_string(), 1_896)])
    );

    let first = &data.records[0];
    assert_eq!(first.label, "ham");
    let raw = std::fs::read(&first.source).unwrap();
    assert_eq!(first.text.as_bytes(), raw.as_slice());
    assert!(first.source.starts_with(root.join("easy-ham-1")));

    // Without the filter every file is an example, the JSON copies included.
    let all = read_text_folder(
        &root,
        &with_map("easy-ham-*=ham,hard-ham-*=ham,spam-*=spam"),
    )
    .unwrap();
    assert_eq!(
        all.records.len() + all.report.skipped_empty_text,
        by_dir(&ham_dirs, None) + by_dir(&spam_dirs, None)
    );
}
