//! The seam through which passes evaluate nodes on host tensors without depending on
//! an executor: constant folding takes a `&dyn NodeEval`, and `exec` implements it.

use super::{Node, Tensor};

/// Computes the outputs of one node from host tensors.
pub trait NodeEval {
    /// `inputs[i]` is the value of input slot i (`None` for an empty optional slot).
    fn eval(&self, node: &Node, inputs: &[Option<Tensor>]) -> anyhow::Result<Vec<Tensor>>;
}
