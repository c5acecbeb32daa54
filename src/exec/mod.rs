//! Execution of IR graphs. A [`Plan`] orders the compute nodes of a graph and records
//! when each intermediate value can be dropped; a [`Session`] owns a graph, its plan
//! and its weights uploaded once to a [`Backend`], and runs the plan on host tensors
//! fed by the caller. [`CpuBackend`] computes on candle-core CPU tensors; a GPU
//! backend plugs in through the same trait. Constant folding reaches the CPU backend
//! through [`crate::ir::eval::NodeEval`].

mod cpu;
pub mod cuda;
mod device;
pub mod parity;
mod plan;
mod session;
pub(crate) mod shapes;

#[cfg(test)]
mod tests;

pub use cpu::products::{MatrixProduct, PreparedProduct, ProductKind};
pub use cpu::{CpuBackend, CpuKernels, CpuValue, SIMD_ENV, cpu_kernels};
pub use cuda::{CudaBackend, CudaOptions, CudaValue};
pub use device::{Device, DeviceSession, DeviceSpec};
pub use plan::{Plan, Step};
pub use session::Session;

use crate::glora::LayerConfig;
use crate::ir::{GloraLinearAttrs, Graph, Node, Tensor};

/// A device that holds values and computes nodes on them.
pub trait Backend {
    /// A tensor living on the backend.
    type Value: Clone;
    fn name(&self) -> &'static str;
    /// Copies a host tensor onto the backend.
    fn upload(&self, t: &Tensor) -> Result<Self::Value, ExecError>;
    /// Copies a value back to the host.
    fn download(&self, v: &Self::Value) -> Result<Tensor, ExecError>;
    /// Computes the outputs of `node`; `inputs[i]` is input slot i (`None` for an
    /// empty optional slot). Returns one value per node output.
    fn run_node(
        &self,
        node: &Node,
        inputs: &[Option<&Self::Value>],
    ) -> Result<Vec<Self::Value>, ExecError>;
    /// Computes a GLoRA layer under `config`, the session's run-time choice for it.
    /// Inputs are the node's eleven slots.
    fn run_glora_linear(
        &self,
        node: &Node,
        attrs: &GloraLinearAttrs,
        config: &LayerConfig,
        inputs: &[Option<&Self::Value>],
    ) -> Result<Self::Value, ExecError> {
        let _ = (attrs, config, inputs);
        Err(ExecError::node(
            node,
            format!("the {} backend cannot run GLoRA layers", self.name()),
        ))
    }
    /// Computes the backward of a GLoRA layer under `config`: inputs are the eleven
    /// forward slots and `dy`; outputs the eight adapter gradients, then `dx` when the
    /// node has a ninth output.
    fn run_glora_linear_grad(
        &self,
        node: &Node,
        attrs: &GloraLinearAttrs,
        config: &LayerConfig,
        inputs: &[Option<&Self::Value>],
    ) -> Result<Vec<Self::Value>, ExecError> {
        let _ = (attrs, config, inputs);
        Err(ExecError::node(
            node,
            format!("the {} backend cannot train GLoRA layers", self.name()),
        ))
    }
}

/// A failure to plan or run a graph. The message is one line naming the node and op,
/// or the graph input, at fault.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A node could not be computed.
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    /// A tensor fed to the graph does not match the graph's input.
    #[error("input '{name}': {msg}")]
    Input { name: String, msg: String },
    /// The graph itself cannot be executed (a cycle, a dangling edge).
    #[error("graph: {0}")]
    Graph(String),
}

impl ExecError {
    pub(crate) fn node(node: &Node, msg: impl Into<String>) -> ExecError {
        ExecError::Node {
            node: node.name.clone(),
            op: node.op.name().to_string(),
            msg: msg.into(),
        }
    }
}

/// Runs `g` once on the CPU backend; outputs come back in graph order.
pub fn run_cpu(g: &Graph, inputs: &[(String, Tensor)]) -> Result<Vec<Tensor>, ExecError> {
    Session::new(g, CpuBackend)?.run(inputs)
}
