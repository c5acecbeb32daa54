//! ONNX import (file → [`Graph`]) and export ([`Graph`] → file).
//!
//! Import reads a model in explicit phases (decode, opset check, initializers, graph
//! inputs, node translation, edge wiring, type inference, validation); export writes a
//! graph back at an opset from 17 to 21, moving large weights into an external data
//! file when the model would otherwise be too big. The protobuf types are generated
//! from `schemas/onnx.proto` into [`pb`]; they never leave this module except through
//! [`export_model`] and [`tensor_from_proto`]. One file per op family under `ops/`
//! knows how each operation is spelled in ONNX, in both directions.

mod attrs;
mod export;
mod external;
mod import;
mod names;
mod ops;
pub mod pb;
mod tensor;

use std::path::PathBuf;

pub use export::{export_file, export_model};
pub use import::{import_bytes, import_file, read_metadata};
pub use tensor::{read_tensor_file, tensor_from_proto};

#[cfg(doc)]
use crate::ir::Graph;

/// An import or export failure; the message is one line and names the file and, where
/// there is one, the node and tensor at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OnnxError(pub String);

impl OnnxError {
    pub(crate) fn new(msg: impl Into<String>) -> OnnxError {
        OnnxError(one_line(&msg.into()))
    }

    /// The same error with `context` (a file name, a tensor) in front.
    pub(crate) fn within(self, context: &str) -> OnnxError {
        OnnxError::new(format!("{context}: {}", self.0))
    }
}

/// Messages end up in terminals and logs: keep them to one line even when a name in
/// the model or a decoder message carries line breaks.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Choices for [`export_file`] and [`export_model`].
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Default-domain opset to write; `None` means 17. It is raised to what the graph
    /// needs and is never below 17 (LayerNormalization needs it).
    pub opset: Option<i64>,
    /// When the initializers hold more bytes than this, every initializer above 1 KiB
    /// goes into `<file>.data` beside the model.
    pub external_data_threshold: u64,
    /// Written as the model's `producer_name`.
    pub producer: String,
    /// Key–value pairs written as the model's `metadata_props` (`id2label`, …).
    pub metadata: Vec<(String, String)>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            opset: None,
            external_data_threshold: 2 << 30,
            producer: "glora".to_string(),
            metadata: Vec::new(),
        }
    }
}

/// What [`export_file`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportReport {
    /// The default-domain opset of the written model.
    pub opset: i64,
    /// Size of the model file in bytes (without the external data file).
    pub bytes: u64,
    /// The external data file, when weights were moved out of the model.
    pub external_data: Option<PathBuf>,
}
