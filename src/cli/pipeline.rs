//! `glora pipeline MODEL.onnx --data PATH --budget B -o RUN/`: compile, train, search
//! (or a fixed method), export, verify and test in one command, resumable.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::passes::Pool;
use crate::pipeline::{PipelineOptions, TrainSettings, run_pipeline};
use crate::search::SearchSettings;
use crate::train::Method;
use crate::train::source::DataPlan;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pretrained ONNX model.
    pub model: PathBuf,
    /// Labelled images (the formats `glora train` reads).
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// The run folder; a rerun continues from what it holds.
    #[arg(short, long)]
    pub output: PathBuf,
    /// glora (supernet + search), or a fixed method to compare with: lora, ssf,
    /// bitfit, head-only, full.
    #[arg(long, default_value = "glora")]
    pub method: String,
    /// Adapter parameter budget of the search (e.g. 0.5M, 40k).
    #[arg(long, value_parser = crate::search::parse_param_count)]
    pub budget: Option<usize>,
    /// Smallest adapter parameter count the search accepts.
    #[arg(long, value_parser = crate::search::parse_param_count, default_value = "0")]
    pub min_budget: usize,
    #[arg(long, default_value_t = 50)]
    pub population: usize,
    #[arg(long, default_value_t = 20)]
    pub generations: usize,
    /// Epochs of retraining the chosen subnet (0: none).
    #[arg(long, default_value_t = 0)]
    pub retrain_epochs: u64,
    /// Training epochs (supernet or method).
    #[arg(long, default_value_t = 10)]
    pub epochs: u64,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed of initialisation, sample order, per-step configs and the search.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Adapt only linear layers whose name matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub targets: Option<String>,
    /// LoRA ranks the search space offers.
    #[arg(long, value_delimiter = ',', default_value = "4")]
    pub ranks: Vec<usize>,
    /// The value the classification head reads (default: the model's first output).
    #[arg(long)]
    pub features: Option<String>,
    #[arg(long)]
    pub pool: Option<Pool>,
    /// Resize images to SIZE×SIZE and declare the model's image input at that size
    /// before simplifying it (default: the model's input size when fixed).
    #[arg(long)]
    pub image_size: Option<usize>,
    #[command(flatten)]
    pub device: super::common::DeviceFlags,
    #[arg(long)]
    pub imagenet_norm: bool,
    /// Use at most this many training images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Test on at most this many images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Test fraction carved off when the data has no test split.
    #[arg(long, default_value_t = 0.2)]
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
            image_size: a.image_size,
            imagenet_norm: a.imagenet_norm,
            val_fraction: a.val_fraction,
            test_fraction: a.test_fraction,
            limit: a.limit,
            test_limit: a.test_limit,
            ..DataPlan::default()
        },
        targets: a.targets.clone(),
        ranks: a.ranks.clone(),
        features: a.features.clone(),
        pool: a.pool,
        device: a.device.open()?,
        ..PipelineOptions::default()
    };
    let r = run_pipeline(&a.model, &a.data, &a.output, &opts)?;
    println!(
        "{}: test accuracy {:.2}% with {} adapter parameters ({} in the head); tract error {:.1e}",
        r.method,
        100.0 * r.test_accuracy,
        r.adapter_params,
        r.head_params,
        r.tract_max_abs_error
    );
    println!(
        "wrote {} (model.onnx, report.md, report.json)",
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
