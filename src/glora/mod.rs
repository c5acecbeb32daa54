//! The GLoRA method on host values, independent of graphs and backends.
//!
//! A GLoRA layer adapts a frozen linear layer `y = x·W0ᵀ + b0` to
//! `y = x·(W0 + W0⊙A + B)ᵀ + b0 + b0⊙D + E + W0·C`, each term chosen per layer from a
//! small set of options ([`options`]) that share one set of stored tensors
//! ([`init`]). This module holds the options and their strings, per-layer and
//! whole-model configs with their JSON form ([`config`]), the search space
//! ([`space`]), parameter counting ([`params`]), initialisation, and the merge into
//! plain weights together with an unmerged reference forward ([`merge`](mod@merge)),
//! and a chosen config as a per-layer table ([`table`]).
//!
//! Weights come in as plain f32 slices or [`crate::ir::Tensor`]s taken from the
//! imported model; the insertion and reparameterisation passes, the trainer, the
//! search and export call into this module.

pub mod config;
pub mod init;
pub mod merge;
pub mod options;
pub mod params;
pub mod space;
pub mod table;

pub use config::{ConfigError, LayerConfig, ModelConfig};
pub use init::{AdapterError, AdapterTensors, TENSOR_SUFFIXES, tensor_names};
pub use merge::{MergeError, MergedLinear, forward_reference, merge};
pub use options::{AbOption, COption, DeOption, OptionParseError, Slot};
pub use params::{
    LayerShape, ParamRange, ab_params, c_params, d_params, e_params, layer_param_mean,
    layer_param_range, layer_params, model_param_range, model_params, supernet_params,
};
pub use space::{SearchSpace, SpaceError};
pub use table::{LayerRow, layer_rows};
