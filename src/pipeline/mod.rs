//! The whole job in one call: compile a model into a supernet, train it, search the
//! best config under a parameter budget (GLoRA), optionally retrain that subnet,
//! export the merged ONNX, verify it in tract, evaluate the test split once, and
//! write a report. Or the same with a fixed method (LoRA, SSF, BitFit, head-only,
//! full fine-tuning) in place of the search, so methods compare on the same splits.
//!
//! Every stage leaves its result in the run folder, written atomically, and a stage
//! whose result is there is not run again: a pipeline killed at any point and rerun
//! continues where it stopped (training resumes from its checkpoint).

pub mod demo;
mod html;
mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::exec::Device;
use crate::glora::{LayerConfig, ModelConfig};
use crate::supernet::Supernet;
use crate::train::mode::{preset_config, uniform_config};
use crate::train::optim::AdamWConfig;
use crate::train::prepare::{DataPlan, PreparedData, prepare_data};
use crate::train::schedule::{LrSchedule, Stepping, WarmupCosine};
use crate::train::trainer::{RunFiles, TrainOptions, TrainSummary};
use crate::train::{Method, Mode};

pub use report::{PipelineReport, StageTime};

/// Training settings of one stage.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSettings {
    pub epochs: u64,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_epochs: u64,
    pub min_lr: f64,
    pub label_smoothing: f32,
    pub seed: u64,
}

impl Default for TrainSettings {
    fn default() -> TrainSettings {
        TrainSettings {
            epochs: 10,
            batch: 32,
            lr: 1e-3,
            weight_decay: 1e-4,
            warmup_epochs: 1,
            min_lr: 1e-5,
            label_smoothing: 0.0,
            seed: 0,
        }
    }
}

/// Everything a pipeline run is told.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// `Supernet` means GLoRA: supernet training, then the search.
    pub method: Method,
    /// Adapter parameter budget of the search.
    pub budget: Option<usize>,
    pub min_budget: usize,
    pub search: crate::search::SearchSettings,
    pub train: TrainSettings,
    /// Epochs of retraining the chosen subnet (0: none).
    pub retrain_epochs: u64,
    pub data: DataPlan,
    pub targets: Option<String>,
    pub exclude: Option<String>,
    pub ranks: Vec<usize>,
    pub features: Option<String>,
    pub pool: Option<crate::passes::Pool>,
    /// Largest tract-vs-glora difference the export may show.
    pub tolerance: f64,
    pub progress: bool,
    /// Where training, the search and the test evaluation run.
    pub device: crate::exec::Device,
}

impl Default for PipelineOptions {
    fn default() -> PipelineOptions {
        PipelineOptions {
            method: Method::Supernet,
            budget: None,
            min_budget: 0,
            search: crate::search::SearchSettings::default(),
            train: TrainSettings::default(),
            retrain_epochs: 0,
            data: DataPlan {
                test_fraction: 0.2,
                ..DataPlan::default()
            },
            targets: None,
            exclude: None,
            ranks: vec![4],
            features: None,
            pool: None,
            tolerance: 1e-4,
            progress: true,
            device: crate::exec::Device::Cpu,
        }
    }
}

/// Files of a run folder.
pub struct RunPaths {
    pub root: PathBuf,
    pub supernet: PathBuf,
    pub train_summary: PathBuf,
    pub retrain_summary: PathBuf,
    pub search: PathBuf,
    /// Every score the search computed, appended as it goes.
    pub search_journal: PathBuf,
    pub model: PathBuf,
    pub report_json: PathBuf,
    pub report_md: PathBuf,
}

impl RunPaths {
    pub fn new(root: &Path) -> RunPaths {
        RunPaths {
            root: root.to_path_buf(),
            supernet: root.join("supernet.glora"),
            train_summary: root.join("train.json"),
            retrain_summary: root.join("retrain.json"),
            search: root.join("search.json"),
            search_journal: root.join("search_evaluations.jsonl"),
            model: root.join("model.onnx"),
            report_json: root.join("report.json"),
            report_md: root.join("report.md"),
        }
    }
}

/// A finished training stage, as `train.json` records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageSummary {
    pub steps: u64,
    pub last_loss: f32,
    pub val_accuracy: Option<f32>,
    pub samples_per_s: f64,
    pub seconds: f64,
}

fn schedule(t: &TrainSettings, steps_per_epoch: u64, epochs: u64) -> LrSchedule {
    LrSchedule {
        curve: WarmupCosine {
            base_lr: t.lr,
            lr_min: t.min_lr.min(t.lr),
            warmup_lr_init: t.lr / 100.0,
            warmup_t: t.warmup_epochs.min(epochs.saturating_sub(1)) * steps_per_epoch,
            t_initial: (epochs * steps_per_epoch).max(1),
        },
        stepping: Stepping::PerStep { steps_per_epoch },
    }
}

fn train_options(
    t: &TrainSettings,
    mode: Mode,
    epochs: u64,
    train: &Dataset,
    eval_config: Option<ModelConfig>,
    progress: bool,
    device: &Device,
) -> TrainOptions {
    let batch = t.batch.min(train.n).max(1);
    let steps_per_epoch = (train.n / batch) as u64;
    TrainOptions {
        mode,
        epochs,
        max_steps: None,
        batch,
        optimizer: AdamWConfig {
            lr: t.lr,
            weight_decay: t.weight_decay,
            ..AdamWConfig::default()
        },
        schedule: schedule(t, steps_per_epoch, epochs),
        label_smoothing: t.label_smoothing,
        seed: t.seed,
        checkpoint_every: steps_per_epoch.max(1),
        eval_config,
        eval_batch: 64,
        progress,
        throttle: std::time::Duration::ZERO,
        device: device.clone(),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    crate::io::write_atomic(path, text.as_bytes()).with_context(|| path.display().to_string())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Option<T>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(Some(
        serde_json::from_str(&text).with_context(|| path.display().to_string())?,
    ))
}

/// Runs (or continues) a training stage whose summary goes to `summary`.
fn training_stage(
    net: &mut Supernet,
    data: &PreparedData,
    opts: &TrainOptions,
    files: &RunFiles,
    summary: &Path,
) -> anyhow::Result<StageSummary> {
    if let Some(done) = read_json::<StageSummary>(summary)? {
        return Ok(done);
    }
    let resume = files.checkpoint.is_file();
    let t0 = Instant::now();
    let s: TrainSummary =
        crate::train::train(net, &data.train, data.val.as_ref(), opts, files, resume)?;
    let done = StageSummary {
        steps: s.steps,
        last_loss: s.last_loss,
        val_accuracy: s.val_accuracy,
        samples_per_s: s.samples_per_s,
        seconds: t0.elapsed().as_secs_f64(),
    };
    write_json(summary, &done)?;
    Ok(done)
}

/// The config the exported model uses for a fixed method.
fn method_config(net: &Supernet, method: Method, rank: usize) -> ModelConfig {
    let c = preset_config(method, rank).unwrap_or(LayerConfig::NONE);
    uniform_config(net.layer_names(), c)
}

/// The ONNX metadata key of a classifier's label names, as transformers' configs
/// name the map.
pub const ID2LABEL: &str = "id2label";

/// `{"0": "ham", "1": "spam"}`: the label names by class index, as JSON.
pub fn id2label(names: &[String]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i.to_string(), serde_json::Value::from(n.as_str())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Accuracy and confusion matrix of the exported model on `data`, run by glora's
/// executor from the file.
fn test_accuracy(
    model: &Path,
    data: &Dataset,
    batch: usize,
    device: &Device,
) -> anyhow::Result<(f32, Vec<Vec<usize>>)> {
    let g = crate::onnx::import_file(model)?;
    let layout = crate::train::trainer::layout_for(&g, &[data])?;
    let eval = crate::train::graph::build_eval_graph(&g, &layout.shapes(batch))?;
    let session = device.session(&eval)?;
    let m = crate::train::trainer::confusion_matrix(&session, &layout, data, batch)?;
    let correct: usize = (0..m.len()).map(|i| m[i][i]).sum();
    Ok((correct as f32 / data.n.max(1) as f32, m))
}

/// The exported model in tract against glora's executor on the adapted supernet graph
/// under `config`, on the first images of `data`. Returns the largest difference.
fn verify_in_tract(
    net: &Supernet,
    config: &ModelConfig,
    model: &Path,
    data: &Dataset,
) -> anyhow::Result<f64> {
    let n = data.n.min(8);
    if n == 0 {
        bail!("no examples to verify the export on");
    }
    let layout = crate::train::trainer::layout_for(&net.graph, &[data])?;
    let first: Vec<usize> = (0..n).collect();
    let inputs = layout.batch(data, &first)?;
    let tract = crate::verify::TractModel::load(model, &inputs)?;
    let theirs = tract.run(&inputs)?;
    let (ours, names) = net.run_adapted(config, &inputs)?;
    let cmp = crate::verify::compare_outputs(&names, &theirs, &ours);
    Ok(cmp.iter().map(|c| c.max_abs).fold(0.0, f64::max))
}

/// Runs the pipeline on `model` and `data` into the folder `out`.
pub fn run_pipeline(
    model: &Path,
    data_path: &Path,
    out: &Path,
    opts: &PipelineOptions,
) -> anyhow::Result<PipelineReport> {
    if opts.data.text.causal_lm {
        bail!(
            "{}: the pipeline does not run language models yet; fine-tune a decoder with glora compile, train, search and export",
            model.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let paths = RunPaths::new(out);
    let reused = reused_stages(&paths, opts);
    if opts.progress && !reused.is_empty() {
        println!("reusing {}", reused.join(", "));
    }
    let mut times: Vec<StageTime> = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, clock: &mut Instant| {
        times.push(StageTime {
            stage: name.to_string(),
            seconds: clock.elapsed().as_secs_f64(),
        });
        *clock = Instant::now();
    };

    // Compile.
    let mut net = if paths
        .supernet
        .join(crate::supernet::MANIFEST_FILE)
        .is_file()
    {
        let net = Supernet::load(&paths.supernet)?;
        let given = std::fs::canonicalize(model).with_context(|| model.display().to_string())?;
        if net.base_path != given {
            bail!(
                "{}: this run was compiled from {}, not {}; use another output folder",
                paths.supernet.display(),
                net.base_path.display(),
                given.display()
            );
        }
        let asked = opts.data.image_size.map(|s| [s, s]);
        if asked.is_some() && net.image_size != asked {
            bail!(
                "{}: this run was compiled for images of {}, not {}; use another output folder",
                paths.supernet.display(),
                net.image_size
                    .map_or("the model's declared size".to_string(), |[h, w]| format!(
                        "{h}x{w}"
                    )),
                asked.map_or(String::new(), |[h, w]| format!("{h}x{w}")),
            );
        }
        net
    } else {
        let net = Supernet::compile(
            model,
            opts.targets.as_deref(),
            opts.exclude.as_deref(),
            &opts.ranks,
            opts.train.seed,
            opts.data.image_size.map(|s| [s, s]),
        )?;
        net.save(&paths.supernet)?;
        net
    };
    lap("compile", &mut clock);

    let data = prepare_data(data_path, &net, &opts.data)?;
    for w in &data.warnings {
        eprintln!("warning: {w}");
    }
    let Some(test) = data.test.clone() else {
        bail!(
            "{}: the data has no test split; give a folder with one or set a test fraction",
            data_path.display()
        );
    };
    if net.head.is_none() {
        net.attach_new_head(
            opts.features.as_deref(),
            opts.pool,
            data.train.num_classes,
            opts.train.seed,
        )?;
        if let Some(h) = net.head.as_mut() {
            h.spec.labels = data.train.label_names.clone();
        }
    }
    let rank = net.space.max_rank();
    let method = opts.method;
    let mode = match method {
        Method::Supernet => Mode::Supernet,
        Method::HeadOnly => Mode::HeadOnly,
        Method::Full => Mode::Full,
        Method::Fixed => bail!("the pipeline takes a named method, not --mode fixed"),
        m => Mode::Fixed(method_config(&net, m, rank)),
    };
    let eval_config = match &mode {
        Mode::Supernet => Some(method_config(&net, Method::Lora, rank)),
        _ => None,
    };
    if let Mode::Fixed(c) = &mode {
        net.config = Some(c.clone());
    } else if !matches!(mode, Mode::Supernet) {
        net.config = Some(method_config(&net, method, rank));
    }

    // Train.
    let train_opts = train_options(
        &opts.train,
        mode,
        opts.train.epochs,
        &data.train,
        eval_config,
        opts.progress,
        &opts.device,
    );
    let files = RunFiles::in_artifact(&paths.supernet, None);
    let trained = training_stage(&mut net, &data, &train_opts, &files, &paths.train_summary)?;
    // A completed stage left its tensors in the artifact; reload them.
    net = Supernet::load(&paths.supernet)?;
    lap("train", &mut clock);

    // Search (GLoRA) and optional retraining.
    let mut search_summary = None;
    let config = if method == Method::Supernet {
        let budget = opts
            .budget
            .context("GLoRA needs a parameter budget (--budget)")?;
        let val = data
            .val
            .as_ref()
            .context("the search needs a validation split (--val-fraction > 0)")?;
        let result = search_stage(&mut net, val, budget, opts, &paths)?;
        search_summary = Some(result.clone());
        lap("search", &mut clock);
        let best = result.best_config.clone();
        net.config = Some(best.clone());
        crate::supernet::artifact::write_manifest(&paths.supernet, &net.manifest()?)?;
        if opts.retrain_epochs > 0 {
            let retrain = train_options(
                &opts.train,
                Mode::Fixed(best.clone()),
                opts.retrain_epochs,
                &data.train,
                None,
                opts.progress,
                &opts.device,
            );
            let files = RunFiles {
                dir: paths.supernet.clone(),
                checkpoint: paths.supernet.join("retrain_checkpoint.safetensors"),
                metrics: paths.supernet.join("retrain_metrics.jsonl"),
            };
            training_stage(&mut net, &data, &retrain, &files, &paths.retrain_summary)?;
            net = Supernet::load(&paths.supernet)?;
            lap("retrain", &mut clock);
        }
        best
    } else {
        net.config.clone().context("no config after training")?
    };

    // Export, verify, evaluate.
    if !paths.model.is_file() {
        let g = net.merged(&config)?;
        let opts = crate::onnx::ExportOptions {
            metadata: vec![(ID2LABEL.to_string(), id2label(&data.train.label_names))],
            ..Default::default()
        };
        crate::onnx::export_file(&g, &paths.model, &opts)?;
    }
    if matches!(data.train.features, crate::data::Features::Tokens(_)) {
        copy_tokenizer(&opts.data.text, model, &paths.root)?;
    }
    lap("export", &mut clock);
    let verify_error = verify_in_tract(&net, &config, &paths.model, &test)?;
    if verify_error > opts.tolerance {
        bail!(
            "{}: tract differs from glora's executor by {verify_error:.3e} (tolerance {:.1e})",
            paths.model.display(),
            opts.tolerance
        );
    }
    lap("verify", &mut clock);
    let (test_acc, confusion) = test_accuracy(&paths.model, &test, 64, &opts.device)?;
    lap("test", &mut clock);

    let merged = crate::onnx::import_file(&paths.model)?;
    let base = base_as_exported(model)?;
    let report = PipelineReport {
        model: model.display().to_string(),
        data: data_path.display().to_string(),
        method: match method {
            Method::Supernet => "glora".to_string(),
            m => m.to_string(),
        },
        budget: opts.budget,
        adapted_layers: net.layers.len(),
        adapter_params: net.config_params(&config)?,
        head_params: net
            .head
            .as_ref()
            .map_or(0, |h| h.weight.numel() + h.bias.numel()),
        train_samples: data.train.n,
        val_samples: data.val.as_ref().map_or(0, |v| v.n),
        test_samples: test.n,
        val_accuracy: search_summary
            .as_ref()
            .map(|s| s.best_accuracy as f32)
            .or(trained.val_accuracy),
        test_accuracy: test_acc,
        labels: test.label_names.clone(),
        confusion,
        tract_max_abs_error: verify_error,
        base_bytes: file_size(model),
        merged_bytes: file_size(&paths.model),
        base_ops: base.op_histogram(),
        merged_ops: merged.op_histogram(),
        train: trained,
        search: search_summary.map(|s| s.stats),
        stage_seconds: times,
        layers: crate::glora::layer_rows(&net.shapes(), &config),
        config,
    };
    report::write(&report, &paths)?;
    Ok(report)
}

/// The stages whose results the run folder already holds, as `stage (file)` in run
/// order: what a rerun takes as done instead of running again. Each test is the one
/// the stage itself makes before it skips its work.
fn reused_stages(paths: &RunPaths, opts: &PipelineOptions) -> Vec<String> {
    let glora = opts.method == Method::Supernet;
    let manifest = paths.supernet.join(crate::supernet::MANIFEST_FILE);
    [
        ("compile", &paths.supernet, manifest.is_file()),
        ("train", &paths.train_summary, paths.train_summary.is_file()),
        ("search", &paths.search, glora && paths.search.is_file()),
        (
            "retrain",
            &paths.retrain_summary,
            glora && opts.retrain_epochs > 0 && paths.retrain_summary.is_file(),
        ),
        ("export", &paths.model, paths.model.is_file()),
    ]
    .into_iter()
    .filter(|(_, _, done)| *done)
    .map(|(stage, path, _)| {
        let name = path.file_name().unwrap_or(path.as_os_str());
        format!("{stage} ({})", name.to_string_lossy())
    })
    .collect()
}

/// Puts the run's tokenizer (`tokenizer.json` and its `tokenizer_config.json`) beside
/// the exported model, so that `glora predict RUN/model.onnx` finds it.
fn copy_tokenizer(
    plan: &crate::train::prepare::TextPlan,
    model: &Path,
    root: &Path,
) -> anyhow::Result<()> {
    let Some(tok) = crate::train::prepare::find_tokenizer(plan, model)? else {
        return Ok(());
    };
    let from = tok.path().to_path_buf();
    let config = from.with_file_name("tokenizer_config.json");
    for (src, name) in [(from, "tokenizer.json"), (config, "tokenizer_config.json")] {
        let dst = root.join(name);
        if src.is_file() && src != dst {
            let bytes = std::fs::read(&src).with_context(|| src.display().to_string())?;
            crate::io::write_atomic(&dst, &bytes)?;
        }
    }
    Ok(())
}

/// Bytes of a model: an ONNX file's, or a checkpoint folder's weights and config.
fn file_size(p: &Path) -> u64 {
    if !p.is_dir() {
        return std::fs::metadata(p).map_or(0, |m| m.len());
    }
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n == "config.json" || n.ends_with(".safetensors")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The base model as an ONNX runtime would see it, so that its op histogram compares
/// with the merged export's: an ONNX file as imported, a checkpoint folder as `glora
/// convert` writes it (simplified, exported at the same opset, read back).
fn base_as_exported(model: &Path) -> anyhow::Result<crate::ir::Graph> {
    if !crate::models::is_checkpoint_dir(model) {
        return Ok(crate::onnx::import_file(model)?);
    }
    let mut g = crate::models::load_model(model)?;
    crate::passes::optimize(&mut g, &crate::exec::CpuBackend)?;
    let proto = crate::onnx::export_model(&g, &crate::onnx::ExportOptions::default())?;
    let bytes = prost::Message::encode_to_vec(&proto);
    Ok(crate::onnx::import_bytes(
        &bytes,
        None,
        &model.display().to_string(),
    )?)
}

/// What the pipeline keeps of a search.
#[derive(Clone, Debug)]
pub struct SearchChoice {
    pub best_config: ModelConfig,
    pub best_accuracy: f64,
    pub stats: report::SearchStats,
}

/// Runs the search on the validation split, or reads the choice a finished search
/// left in `search.json`.
fn search_stage(
    net: &mut Supernet,
    val: &Dataset,
    budget: usize,
    opts: &PipelineOptions,
    paths: &RunPaths,
) -> anyhow::Result<SearchChoice> {
    if let Some(record) = read_json::<serde_json::Value>(&paths.search)? {
        return choice_from_record(&record)
            .with_context(|| format!("{}: unreadable search record", paths.search.display()));
    }
    // Scores go to a journal as they come, so a search killed part-way and rerun
    // replays what it had done instead of computing it again.
    let mut fitness = crate::search::JournaledFitness::open(
        &paths.search_journal,
        crate::search::ValidationFitness::new(net, val, 64, &opts.device)?,
    )?;
    let total = opts.search.max_evaluations() as u64;
    let bar = if opts.progress {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "search {bar:30} {pos}/{len} genomes [{elapsed} < {eta}] {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let budget = crate::search::Budget {
        min: opts.min_budget,
        max: budget,
    };
    let outcome = crate::search::search(net, budget, &opts.search, &mut fitness, &mut |p| {
        bar.set_position(p.evaluated as u64);
        bar.set_message(format!("best {:.4}", p.best_accuracy));
    });
    bar.finish_and_clear();
    let outcome = outcome?;
    let head = net.head.as_ref().map(|h| h.weight.numel() + h.bias.numel());
    let mut record =
        crate::search::search_record(&outcome, head, crate::search::fitness::Score::Accuracy);
    // Genomes replayed from the journal took no time in this run; the time per
    // genome counts only those evaluated here.
    let replayed = fitness.replayed();
    let computed = outcome.evaluated.len().saturating_sub(replayed);
    record["replayed_evaluations"] = serde_json::json!(replayed);
    record["seconds_per_evaluation"] = serde_json::json!(outcome.seconds / computed.max(1) as f64);
    // Compact, as `glora search` writes it: the evaluated genomes dominate.
    crate::io::write_atomic(&paths.search, &serde_json::to_vec(&record)?)
        .with_context(|| paths.search.display().to_string())?;
    choice_from_record(&record)
}

fn choice_from_record(record: &serde_json::Value) -> anyhow::Result<SearchChoice> {
    let best = record.get("best").context("no best genome")?;
    let config: ModelConfig =
        serde_json::from_value(best.get("config").cloned().context("no best config")?)?;
    let num = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
    Ok(SearchChoice {
        best_config: config,
        best_accuracy: num(best, "accuracy"),
        stats: report::SearchStats {
            evaluated: num(record, "total_evaluations") as usize,
            generations: record
                .get("generations")
                .and_then(|g| g.as_array())
                .map_or(0, |g| g.len()),
            seconds: num(record, "seconds"),
            seconds_per_genome: num(record, "seconds_per_evaluation"),
        },
    })
}
