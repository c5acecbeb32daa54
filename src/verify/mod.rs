//! Verification: runs ONNX files in tract, the independent reference runtime, and
//! compares their outputs with another file's or with our executor's. Inputs come
//! from the user or from a seeded generator that follows the graph's input types.
//! [`predict_texts`] runs an exported text classifier on texts; [`generate`] runs an
//! exported decoder with its KV cache.

mod compare;
pub mod generate;
mod inputs;
mod predict;
mod tract_runner;

pub use compare::{Comparison, compare_outputs};
pub use inputs::{
    InputError, apply_index_bounds, bound_symbols, concrete_input_shapes, index_bounds,
    parse_shape, random_inputs,
};
pub use predict::{Prediction, exported_labels, predict_texts};
pub use tract_runner::{TractModel, VerifyError};
