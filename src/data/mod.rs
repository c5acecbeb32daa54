//! Datasets as labelled examples, whatever the examples are. Each file format is one
//! producer: IDX, the digits CSV, safetensors and image folders ([`images`]); CSV, TSV
//! and JSONL tables of texts ([`read_table`]) and folders of text files with one
//! subfolder per class ([`read_text_folder`], merged by a [`ClassMap`]), tokenised by
//! [`TextTokenizer`]; JSONL texts, prompt/response pairs and chats for causal
//! language modelling ([`read_lm_data`]); [`open_data`] picks the producer for a path. A [`Dataset`] holds
//! [`Features`] (images as f32 planes or token sequences) with a label per example and
//! the class names, and is carved the same way whatever it holds. An [`InputLayout`]
//! cuts it into batches of the named input tensors a model takes.

mod batch;
mod causal_lm;
pub mod chat;
mod dataset;
mod images;
mod labels;
mod open;
mod text;
mod text_folder;
mod text_table;
mod tokenize;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use batch::{ATTENTION_MASK, INPUT_IDS, InputLayout, TOKEN_TYPE_IDS};
pub use causal_lm::{LM_LABEL, LmData, LmOptions, LmReport, parse_lm_data, read_lm_data};
pub use dataset::{Dataset, Features, IGNORE_INDEX, Images, Tokens, numbered_labels};
pub use labels::LabelSet;
pub use open::{DataSplits, Preprocess, TextSource, imagenet_stats, open_data, open_test_data};
pub use text::{ReadReport, TextData, TextDataError, TextRecord};
use text::{is_blank, json_message, list_names};
pub use text_folder::{ClassMap, FolderOptions, read_text_folder};
pub use text_table::{TableFormat, TextColumns, parse_table, read_table};
pub use tokenize::{Encoded, TextTokenizer};

/// Why a dataset could not be loaded or transformed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file that is missing, unreadable or malformed.
    #[error("{}: {what}", path.display())]
    File { path: PathBuf, what: String },
    /// A request that does not fit the dataset (bad fraction, too few examples...).
    #[error("dataset: {0}")]
    Invalid(String),
    /// A text file that cannot be read, parsed or encoded.
    #[error(transparent)]
    Text(#[from] TextDataError),
}
