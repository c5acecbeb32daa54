//! Model builders: IR graphs of known architectures made from a configuration and a
//! seed, with randomly initialised frozen weights. They stand in for pretrained
//! exports in tests and benchmarks; the graphs they return go to passes, executors
//! and the exporter like any imported model.

mod vit;

pub use vit::{VitConfig, build_vit};

use crate::ir::{GraphError, TensorError};

/// A model that cannot be built: a configuration that does not describe a valid
/// network, or a graph that fails its own checks.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("weight '{name}': {source}")]
    Tensor { name: String, source: TensorError },
    #[error(transparent)]
    Graph(#[from] GraphError),
}
