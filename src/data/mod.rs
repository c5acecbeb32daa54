//! Datasets as labelled examples, whatever the examples are. Each file format is one
//! producer: IDX, the digits CSV, safetensors and image folders ([`images`]); the
//! formats are opened by path ([`open`]). A [`Dataset`] holds [`Features`] (images as
//! f32 planes or token sequences) with a label per example and the class names, and
//! is carved the same way whatever it holds ([`dataset`]). Training reads batches of
//! named input tensors from it.

mod batch;
mod dataset;
mod images;
mod open;

use std::path::PathBuf;

pub use batch::{ATTENTION_MASK, INPUT_IDS, InputLayout, TOKEN_TYPE_IDS};
pub use dataset::{Dataset, Features, Images, Tokens, numbered_labels};
pub use open::{DataSplits, Preprocess, imagenet_stats, open_data};

/// Why a dataset could not be loaded or transformed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file that is missing, unreadable or malformed.
    #[error("{}: {what}", path.display())]
    File { path: PathBuf, what: String },
    /// A request that does not fit the dataset (bad fraction, too few examples...).
    #[error("dataset: {0}")]
    Invalid(String),
}
