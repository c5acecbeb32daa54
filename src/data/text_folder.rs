//! Reading labelled texts from a folder with one subfolder per class, each file one
//! example (the layout of the SpamAssassin corpus: `easy-ham-1/`, `spam-2/`, …).
//!
//! Without a [`ClassMap`] every subfolder is its own label; with one, glob rules on
//! the subfolder names merge several folders into a class. Files are read as UTF-8
//! lossily, because raw mail mixes encodings and one odd byte should not cost the
//! whole message. Hidden files and the corpus's `cmds` files are not examples. Order
//! is that of the sorted paths, so the same folder always gives the same records.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use super::{TextData, TextDataError, TextRecord, is_blank, list_names};

/// Rules `PATTERN=LABEL` that name the class of each subfolder: `*` matches any run
/// of characters, `?` any one; the first rule that matches wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassMap {
    spec: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    pattern: Vec<char>,
    label: String,
}

impl Rule {
    fn pattern(&self) -> String {
        self.pattern.iter().collect()
    }
}

impl ClassMap {
    /// Parses `'easy-ham-*=ham,hard-ham-*=ham,spam-*=spam'`.
    pub fn parse(spec: &str) -> Result<ClassMap, TextDataError> {
        let err = |what: String| TextDataError::ClassMap {
            spec: spec.to_string(),
            what,
        };
        if spec.trim().is_empty() {
            return Err(err("no rules (expected PATTERN=LABEL,...)".to_string()));
        }
        let mut rules = Vec::new();
        for (i, rule) in spec.split(',').enumerate() {
            let n = i + 1;
            let rule = rule.trim();
            let Some((pattern, label)) = rule.split_once('=') else {
                return Err(err(format!("rule {n} ('{rule}'): expected PATTERN=LABEL")));
            };
            let (pattern, label) = (pattern.trim(), label.trim());
            if pattern.is_empty() || label.is_empty() {
                return Err(err(format!(
                    "rule {n} ('{rule}'): empty {}",
                    if pattern.is_empty() {
                        "pattern"
                    } else {
                        "label"
                    }
                )));
            }
            if pattern.contains(['/', '\\']) {
                return Err(err(format!(
                    "rule {n} ('{rule}'): patterns match subfolder names, not paths"
                )));
            }
            rules.push(Rule {
                pattern: pattern.chars().collect(),
                label: label.to_string(),
            });
        }
        Ok(ClassMap {
            spec: spec.to_string(),
            rules,
        })
    }

    /// The label of subfolder `name`, from the first rule that matches it.
    pub fn label_for(&self, name: &str) -> Option<&str> {
        self.rule_for(name).map(|r| self.rules[r].label.as_str())
    }

    fn rule_for(&self, name: &str) -> Option<usize> {
        let name: Vec<char> = name.chars().collect();
        self.rules
            .iter()
            .position(|r| glob_match(&r.pattern, &name))
    }

    /// The text the map was parsed from.
    pub fn spec(&self) -> &str {
        &self.spec
    }
}

impl FromStr for ClassMap {
    type Err = TextDataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClassMap::parse(s)
    }
}

/// Shell-style matching of a whole name, `*` and `?` only. Greedy with one
/// backtrack point, which is exact for patterns without character classes.
fn glob_match(pattern: &[char], name: &[char]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// How to read a class folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderOptions {
    /// Merges subfolders into classes; without it each subfolder is a class.
    pub class_map: Option<ClassMap>,
    /// Only files with this extension (`txt` or `.txt`, any case) are examples;
    /// needed where a corpus keeps other files beside its texts.
    pub extension: Option<String>,
}

/// Names that sit beside examples without being examples: hidden files and the
/// SpamAssassin archives' `cmds` listings.
fn is_ignored(name: &str) -> bool {
    name.starts_with('.') || name == "cmds"
}

fn has_extension(path: &Path, wanted: Option<&str>) -> bool {
    let Some(wanted) = wanted else {
        return true;
    };
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(wanted))
}

/// The entries of `dir`, sorted by name, without ignored names.
fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, TextDataError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| TextDataError::io(dir, e))? {
        let entry = entry.map_err(|e| TextDataError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_ignored(&name) {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The example files under a class folder, nested folders included, sorted by path.
/// Symbolic links to folders are not followed, so a link cycle cannot recurse.
fn class_files(
    dir: &Path,
    extension: Option<&str>,
    out: &mut Vec<PathBuf>,
) -> Result<(), TextDataError> {
    for (_, path) in sorted_entries(dir)? {
        let kind = std::fs::symlink_metadata(&path).map_err(|e| TextDataError::io(&path, e))?;
        if kind.is_dir() {
            class_files(&path, extension, out)?;
        } else if path.is_file() && has_extension(&path, extension) {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads every example under the class subfolders of `dir`. Files directly in `dir`
/// are not examples (corpora keep listings and licences there).
pub fn read_text_folder(dir: &Path, options: &FolderOptions) -> Result<TextData, TextDataError> {
    if !dir.is_dir() {
        return Err(match std::fs::metadata(dir) {
            Err(e) => TextDataError::io(dir, e),
            Ok(_) => TextDataError::file(dir, "not a folder"),
        });
    }
    let subfolders: Vec<(String, PathBuf)> = sorted_entries(dir)?
        .into_iter()
        .filter(|(_, p)| p.is_dir())
        .collect();
    if subfolders.is_empty() {
        return Err(TextDataError::file(
            dir,
            "no class subfolders (expected one subfolder of text files per class)",
        ));
    }
    let labels = folder_labels(dir, &subfolders, options.class_map.as_ref())?;
    let extension = options
        .extension
        .as_deref()
        .map(|e| e.strip_prefix('.').unwrap_or(e));

    let mut data = TextData::default();
    for ((name, folder), label) in subfolders.iter().zip(labels) {
        let mut files = Vec::new();
        class_files(folder, extension, &mut files)?;
        if files.is_empty() {
            let what = match extension {
                Some(ext) => format!("subfolder '{name}' holds no .{ext} files"),
                None => format!("subfolder '{name}' holds no files"),
            };
            return Err(TextDataError::file(dir, what));
        }
        for file in files {
            let bytes = std::fs::read(&file).map_err(|e| TextDataError::io(&file, e))?;
            let text = String::from_utf8_lossy(&bytes);
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            if is_blank(text) {
                data.report.note_empty(&file, 0);
                continue;
            }
            data.records.push(TextRecord {
                text: text.to_string(),
                pair: None,
                label: label.clone(),
                line: 0,
                source: Arc::from(file.as_path()),
            });
        }
    }
    Ok(data)
}

/// The label of each subfolder, checking that the class map covers every folder and
/// that every rule is used: a rule that labels nothing is most likely a typo.
fn folder_labels(
    dir: &Path,
    subfolders: &[(String, PathBuf)],
    class_map: Option<&ClassMap>,
) -> Result<Vec<String>, TextDataError> {
    let Some(map) = class_map else {
        return Ok(subfolders.iter().map(|(name, _)| name.clone()).collect());
    };
    let chosen: Vec<Option<usize>> = subfolders.iter().map(|(n, _)| map.rule_for(n)).collect();
    let unmatched: Vec<&str> = subfolders
        .iter()
        .zip(&chosen)
        .filter(|(_, rule)| rule.is_none())
        .map(|((name, _), _)| name.as_str())
        .collect();
    if !unmatched.is_empty() {
        return Err(TextDataError::file(
            dir,
            format!(
                "class map '{}' has no rule for subfolder{} {}",
                map.spec,
                if unmatched.len() == 1 { "" } else { "s" },
                list_names(&unmatched, 20)
            ),
        ));
    }
    for (r, rule) in map.rules.iter().enumerate() {
        if chosen.contains(&Some(r)) {
            continue;
        }
        let shadowed = subfolders
            .iter()
            .any(|(n, _)| glob_match(&rule.pattern, &n.chars().collect::<Vec<_>>()));
        let names: Vec<&str> = subfolders.iter().map(|(n, _)| n.as_str()).collect();
        return Err(TextDataError::file(
            dir,
            format!(
                "class map '{}': rule '{}={}' {} (subfolders: {})",
                map.spec,
                rule.pattern(),
                rule.label,
                if shadowed {
                    "only matches subfolders that earlier rules already label"
                } else {
                    "matches no subfolder"
                },
                list_names(&names, 20)
            ),
        ));
    }
    Ok(chosen
        .into_iter()
        .map(|r| map.rules[r.expect("every subfolder matched")].label.clone())
        .collect())
}
