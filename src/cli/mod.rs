//! The `glora` command line: one file per subcommand, each parsing its arguments with
//! clap's derive API and calling the library. Errors come back as one line.

mod bench;
mod common;
mod compile;
mod convert;
mod demo;
mod export;
mod generate;
mod inspect;
mod model;
mod pipeline;
mod predict;
mod run;
mod search;
mod train;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// GLoRA fine-tuning as a compile-train-export pipeline: import an ONNX model or a Hugging Face checkpoint, adapt,
/// train, search, merge, and export an ONNX file with the base model's cost.
#[derive(Debug, Parser)]
#[command(name = "glora", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a model's inputs, outputs, op histogram, parameter count and linear layers,
    /// or a supernet directory's layers, ranks, parameter counts and config.
    Inspect(inspect::Args),
    /// Run a model with glora's CPU executor and summarise (or save) its outputs.
    Run(run::Args),
    /// Import a model, simplify it (fold constants, fuse LayerNorm and GELU, drop dead
    /// code) and export it again.
    Convert(convert::Args),
    /// Adapt a model's linear layers with GLoRA and write the supernet directory
    /// (NAME.glora: base model reference, adapters, search space).
    Compile(compile::Args),
    /// Write a model built in glora (a ViT with random weights) as ONNX.
    #[command(subcommand)]
    Model(model::Model),
    /// Train a supernet's adapters (or a fixed config, the head only, or every
    /// weight) on labelled images, with checkpoints and exact resume.
    Train(train::Args),
    /// Search for the per-layer config with the best validation accuracy within a
    /// budget of adapter parameters, and store it in the supernet.
    Search(search::Args),
    /// Write the model a config selects from a supernet: merged into plain weights
    /// (the base model's ops and cost) or, with --unmerged, in standard ops per layer.
    Export(export::Args),
    /// Run a model in tract and compare it with another model, with glora's executor,
    /// or with a supernet's adapted graph under a config.
    Verify(verify::Args),
    /// The whole job: compile, train, search (or a fixed method), export the merged
    /// ONNX, verify it in tract, test once and report; a rerun continues.
    Pipeline(pipeline::Args),
    /// Classify texts with an exported model in tract: each label with its
    /// probability.
    Predict(predict::Args),
    /// Continue a prompt, or answer it as a chat turn, with an exported decoder and
    /// its KV cache in tract; prints the text as it comes and the tokens per second.
    Generate(generate::Args),
    /// Pre-train a small ViT on digits 0–4, adapt it few-shot to digits 5–9 with
    /// head-only, LoRA, GLoRA and full fine-tuning, and compare (no files or network
    /// needed).
    Demo(demo::Args),
    /// Measure speed: glora's executor against tract.
    #[command(subcommand)]
    Bench(bench::Bench),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Run(a) => run::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Compile(a) => compile::run(a),
        Command::Model(m) => model::run(m),
        Command::Train(a) => train::run(a),
        Command::Search(a) => search::run(a),
        Command::Export(a) => export::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Pipeline(a) => pipeline::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(b) => bench::run(b),
    }
}
