//! The label names of a classification task and their class indices.
//!
//! A [`LabelSet`] is built once from the training records; the model's output `i`
//! means `names()[i]`, and every other split is mapped through the same set, so a
//! label that training never saw is an error at the record that carries it.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use super::{TextDataError, TextRecord, list_names};

/// The ordered label names of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSet {
    names: Vec<String>,
    index: HashMap<String, usize>,
}

/// Labels such as `0`, `1`, `10`, which people mean as numbers.
fn is_non_negative_integer(label: &str) -> bool {
    !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit())
}

/// Numeric order for digit strings of any length: by value, then by spelling so
/// that `1` and `01`, which are different labels, still have a fixed order.
fn numeric_order(a: &str, b: &str) -> Ordering {
    let (ta, tb) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    ta.len()
        .cmp(&tb.len())
        .then_with(|| ta.cmp(tb))
        .then_with(|| a.cmp(b))
}

impl LabelSet {
    /// The distinct labels among `labels`: in numeric order when every one is a
    /// non-negative integer (so `2` comes before `10`), in lexicographic (byte)
    /// order otherwise.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> LabelSet {
        let distinct: BTreeSet<&str> = labels.into_iter().collect();
        let mut names: Vec<String> = distinct.into_iter().map(str::to_string).collect();
        if names.iter().all(|n| is_non_negative_integer(n)) {
            names.sort_by(|a, b| numeric_order(a, b));
        }
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        LabelSet { names, index }
    }

    /// The labels of the training records.
    pub fn from_records(records: &[TextRecord]) -> LabelSet {
        LabelSet::from_labels(records.iter().map(|r| r.label.as_str()))
    }

    /// The class index of `label`.
    pub fn index(&self, label: &str) -> Option<usize> {
        self.index.get(label).copied()
    }

    /// The label names, class 0 first.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The class index of a record of another split, or an error at the record's
    /// file and line when training never saw its label.
    pub fn index_of(&self, record: &TextRecord) -> Result<usize, TextDataError> {
        self.index(&record.label).ok_or_else(|| {
            record.error(format!(
                "label '{}' is not among the {} training labels ({})",
                record.label,
                self.names.len(),
                list_names(&self.names, 20)
            ))
        })
    }

    /// The class indices of all `records`, failing at the first unknown label.
    pub fn indices_of(&self, records: &[TextRecord]) -> Result<Vec<usize>, TextDataError> {
        records.iter().map(|r| self.index_of(r)).collect()
    }
}
