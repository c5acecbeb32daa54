//! `glora pipeline MODEL --data PATH --budget B -o RUN/`: compile, train, search
//! (or a fixed method), export, verify and test in one command, resumable.

use std::path::PathBuf;
use std::process::ExitCode;

use super::common;
use crate::pipeline::{PipelineOptions, TrainSettings, run_pipeline};
use crate::search::SearchSettings;
use crate::train::Method;
use crate::train::prepare::DataPlan;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pretrained model: an ONNX file or a Hugging Face checkpoint folder (config.json +
    /// safetensors). Decoders (language models) are not run by the pipeline yet.
    pub model: PathBuf,
    #[command(flatten)]
    pub data: common::DataFlags,
    /// The run folder; a rerun continues from what it holds and names the stages it
    /// reuses.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// glora (supernet training, then the search), or a fixed method to compare
    /// with: lora, ssf, bitfit, head-only, full.
    #[arg(long, default_value = "glora")]
    pub method: String,
    /// Most adapter parameters the searched config may have (the head is not
    /// counted): an integer or a count with a k or M suffix, e.g. 40k, 0.5M (required
    /// by --method glora).
    #[arg(long, value_name = "PARAMS", value_parser = crate::search::parse_param_count)]
    pub budget: Option<usize>,
    /// Fewest adapter parameters the searched config may have (same notation as
    /// --budget).
    #[arg(long, value_name = "PARAMS", value_parser = crate::search::parse_param_count, default_value = "0")]
    pub min_budget: usize,
    /// Genomes (configs) in the search's initial population and in each generation.
    #[arg(long, default_value_t = 50, value_name = "GENOMES")]
    pub population: usize,
    /// Rounds of mutation and crossover after the search's initial population.
    #[arg(long, default_value_t = 20, value_name = "ROUNDS")]
    pub generations: usize,
    /// Epochs of retraining the chosen subnet after the search (0: none).
    #[arg(long, default_value_t = 0, value_name = "EPOCHS")]
    pub retrain_epochs: u64,
    /// Passes over the training data (epochs), of the supernet or the fixed method.
    #[arg(long, default_value_t = 10)]
    pub epochs: u64,
    /// Images per training step (the last partial batch of an epoch is left out).
    #[arg(long, default_value_t = 32, value_name = "IMAGES")]
    pub batch: usize,
    /// Peak learning rate of AdamW (weight decay 1e-4), after a one-epoch linear
    /// warm-up from lr/100 and before a cosine decay to 1e-5.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed of initialisation, sample order, per-step configs and the search.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub layers: super::common::LayerFlags,
    /// LoRA ranks the search space offers, e.g. `--ranks 2,4,8`; factors are stored at
    /// the largest.
    #[arg(long, value_delimiter = ',', default_value = "4")]
    pub ranks: Vec<usize>,
    #[command(flatten)]
    pub head: common::HeadFlags,
    #[command(flatten)]
    pub device: common::DeviceFlags,
    /// Test on at most N images, a seeded class-stratified pick (default: the whole
    /// test split).
    #[arg(long, value_name = "N")]
    pub test_limit: Option<usize>,
    /// Fraction (0–1) of the images carved off as the test split when the data comes
    /// without one, before the validation carve.
    #[arg(long, default_value_t = 0.2, value_name = "FRACTION")]
    pub test_fraction: f64,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let method = match a.method.as_str() {
        "glora" => Method::Supernet,
        other => other.parse::<Method>().map_err(anyhow::Error::msg)?,
    };
    let opts = PipelineOptions {
        method,
        budget: a.budget,
        min_budget: a.min_budget,
        search: SearchSettings {
            population: a.population,
            generations: a.generations,
            seed: a.seed,
            ..SearchSettings::default()
        },
        train: TrainSettings {
            epochs: a.epochs,
            batch: a.batch,
            lr: a.lr,
            seed: a.seed,
            ..TrainSettings::default()
        },
        retrain_epochs: a.retrain_epochs,
        data: DataPlan {
            test_fraction: a.test_fraction,
            test_limit: a.test_limit,
            ..a.data
                .plan(crate::models::decoder_config(&a.model).is_ok())?
        },
        targets: a.layers.targets.clone(),
        exclude: a.layers.exclude.clone(),
        ranks: a.ranks.clone(),
        features: a.head.features.clone(),
        pool: a.head.pool,
        device: a.device.open()?,
        ..PipelineOptions::default()
    };
    let r = run_pipeline(&a.model, &a.data.data, &a.output, &opts)?;
    println!(
        "{}: test accuracy {:.2}% with {} adapter parameters ({} in the head); tract error {:.1e}",
        r.method,
        100.0 * r.test_accuracy,
        r.adapter_params,
        r.head_params,
        r.tract_max_abs_error
    );
    println!(
        "wrote {} (model.onnx, report.html, report.md, report.json)",
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
