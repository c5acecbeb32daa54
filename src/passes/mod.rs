//! Graph rewrites. Each pass takes the graph the importer (or an earlier pass)
//! produced, rewrites it in place, reports how many nodes it removed, replaced or
//! fused, and leaves a graph that passes [`Graph::validate`]. [`optimize`] is the
//! standard pipeline that `glora convert` runs before adapters are inserted;
//! [`find_linear_layers`] then tells the adapter stage where the linear layers are,
//! [`insert_glora`] puts GLoRA layers there, and [`reparameterize`] (merged weights)
//! or [`expand_glora`] (standard ops on activations) takes them out again.

mod autodiff;
mod constant_fold;
mod dce;
mod expand_glora;
mod fuse_gelu;
mod fuse_layer_norm;
mod head;
mod identity;
mod image_size;
mod insert_glora;
mod linear;
mod pattern;
mod reparameterize;

use anyhow::Context;

use crate::ir::Graph;
use crate::ir::eval::NodeEval;
use crate::ir::infer::infer_types;

pub use autodiff::{ParamGrad, autodiff};
pub use constant_fold::{MAX_FOLDED_ELEMENTS, fold_constants};
pub use dce::eliminate_dead_code;
pub use expand_glora::expand_glora;
pub use fuse_gelu::fuse_gelu;
pub use fuse_layer_norm::fuse_layer_norm;
pub use head::{
    HEAD_BIAS, HEAD_WEIGHT, HeadSpec, LOGITS, Pool, attach_head, default_features, default_pool,
    init_head, plan_head, rename_head_for_export, with_mask,
};
pub use identity::eliminate_identity;
pub use image_size::set_image_size;
pub use insert_glora::{
    AdaptedLayer, adapter_tensors, glora_layers, insert_glora, select_layers, set_adapter_tensors,
};
pub use linear::{LinearKind, LinearLayer, find_linear_layers};
pub use reparameterize::reparameterize;
pub(crate) use reparameterize::{merged_has_bias, read_glora_node};

/// What one pass did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassReport {
    pub pass: &'static str,
    /// Nodes removed, replaced or fused.
    pub changed: usize,
}

impl std::fmt::Display for PassReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} nodes changed", self.pass, self.changed)
    }
}

/// The standard clean-up pipeline: type inference, Identity removal, constant
/// folding, LayerNorm and GELU fusion, dead-code elimination, type inference again
/// and a final structural check.
pub fn optimize(g: &mut Graph, eval: &dyn NodeEval) -> anyhow::Result<Vec<PassReport>> {
    infer_types(g).context("type inference before optimisation")?;
    let reports = vec![
        eliminate_identity(g)?,
        fold_constants(g, eval)?,
        fuse_layer_norm(g)?,
        fuse_gelu(g)?,
        eliminate_dead_code(g)?,
    ];
    infer_types(g).context("type inference after optimisation")?;
    g.validate().context("graph check after optimisation")?;
    Ok(reports)
}
