//! glora: GLoRA fine-tuning as a compile-train-export pipeline.
//!
//! A model enters through [`onnx`] as an [`ir::Graph`], is rewritten by [`passes`],
//! runs on a backend from [`exec`], leaves through [`onnx`] again and is checked in
//! tract by [`verify`]. A GLoRA [`supernet`] ties these together: the adapted graph,
//! its search space and its adapters, saved as a `NAME.glora/` directory. Labelled
//! examples (images, tokenised texts) and their batches come from [`data`]. The
//! `glora` binary's subcommands live in [`cli`].

pub mod bench;
pub mod cli;
pub mod data;
pub mod exec;
pub mod glora;
pub mod io;
pub mod ir;
pub mod models;
pub mod onnx;
pub mod passes;
pub mod pipeline;
pub mod plot;
pub mod search;
pub mod supernet;
pub mod train;
pub mod verify;
