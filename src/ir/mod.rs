//! The graph IR that every stage shares: element types, shapes, host tensors,
//! operations, the graph itself, shape inference and a text printer. It knows
//! nothing of ONNX, training or backends.

mod dtype;
pub mod eval;
mod grad_op;
mod graph;
pub mod infer;
mod op;
pub mod print;
mod shape;
mod tensor;

pub use dtype::DType;
pub use grad_op::{GradOp, UnaryGradKind};
pub use graph::{Edge, Graph, GraphError, Node, Port, Value};
pub use op::*;
pub use shape::{Dim, Shape, TensorType};
pub use tensor::{Tensor, TensorData, TensorError};

pub use petgraph::stable_graph::NodeIndex;
