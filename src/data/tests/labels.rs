//! Label ordering and the mapping of other splits onto the training labels.

use std::path::Path;
use std::sync::Arc;

use crate::data::{LabelSet, TextRecord};

fn record(label: &str, file: &str, line: usize) -> TextRecord {
    TextRecord {
        text: "t".to_string(),
        pair: None,
        label: label.to_string(),
        line,
        source: Arc::from(Path::new(file)),
    }
}

#[test]
fn integer_labels_sort_by_value_and_others_lexicographically() {
    let numeric = LabelSet::from_labels(["10", "2", "0", "2", "1", "007"]);
    assert_eq!(numeric.names(), ["0", "1", "2", "007", "10"]);
    assert_eq!(numeric.index("10"), Some(4));
    assert_eq!(numeric.index("7"), None);

    // One label that is not a non-negative integer turns the whole set to text order.
    let mixed = LabelSet::from_labels(["10", "2", "-1", "b", "B"]);
    assert_eq!(mixed.names(), ["-1", "10", "2", "B", "b"]);

    let words = LabelSet::from_labels(["spam", "ham", "spam"]);
    assert_eq!(words.names(), ["ham", "spam"]);
    assert_eq!((words.len(), words.is_empty()), (2, false));
    assert_eq!(words.index("spam"), Some(1));

    let huge = LabelSet::from_labels(["99999999999999999999999", "3"]);
    assert_eq!(huge.names(), ["3", "99999999999999999999999"]);
    assert!(LabelSet::from_labels([]).is_empty());
}

#[test]
fn a_test_label_unseen_in_training_names_its_file_and_line() {
    let train = [
        record("spam", "train.csv", 2),
        record("ham", "train.csv", 3),
    ];
    let labels = LabelSet::from_records(&train);
    let test = [
        record("ham", "test.csv", 2),
        record("spam", "test.csv", 3),
        record("maybe", "test.csv", 4),
    ];
    assert_eq!(labels.indices_of(&test[..2]).unwrap(), vec![0, 1]);
    assert_eq!(
        labels.indices_of(&test).unwrap_err().to_string(),
        "test.csv:4: label 'maybe' is not among the 2 training labels (ham, spam)"
    );
    let whole_file = record("eggs", "folder/eggs/1.txt", 0);
    assert_eq!(
        labels.index_of(&whole_file).unwrap_err().to_string(),
        "folder/eggs/1.txt: label 'eggs' is not among the 2 training labels (ham, spam)"
    );
}
