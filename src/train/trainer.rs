//! The training loop. It builds the training graph of a supernet (or of its base model
//! for head-only and full fine-tuning) once, then for each step draws the batch from a
//! seeded per-epoch order, picks the step's GLoRA config (uniformly random per layer
//! from an RNG seeded by the run's seed and the step number, or the fixed one), runs
//! forward and backward on the CPU executor, applies AdamW on the host to every
//! tensor that took part, and pushes the updated tensors back into the session.
//!
//! Everything a step depends on is a function of the seed, the step number and the
//! checkpointed tensors, so a run resumed from a checkpoint repeats the steps an
//! uninterrupted run takes, bit for bit. Checkpoints and the artifact's files are
//! written atomically; a non-finite loss stops the run before anything is written.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

use super::checkpoint::{self, Checkpoint};
use super::graph::{build_eval_graph, build_training_graph, make_weights_trainable};
use super::loss::{RowScores, score_rows};
use super::mode::Mode;
use super::optim::{AdamW, AdamWConfig};
use super::schedule::LrSchedule;
use super::step::{Stepper, adapter_index};
use crate::data::{Dataset, InputLayout};
use crate::exec::{Device, DeviceSession};
use crate::glora::ModelConfig;
use crate::ir::{Graph, Tensor};
use crate::supernet::{Supernet, apply_weights};

/// Settings of one training run.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub mode: Mode,
    pub epochs: u64,
    /// Stop after this many steps in all (for short runs and benchmarks).
    pub max_steps: Option<u64>,
    pub batch: usize,
    pub optimizer: AdamWConfig,
    pub schedule: LrSchedule,
    pub label_smoothing: f32,
    pub seed: u64,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// The config validation runs the supernet with (fixed mode: the fixed config).
    pub eval_config: Option<ModelConfig>,
    pub eval_batch: usize,
    pub progress: bool,
    /// A pause after every step.
    pub throttle: std::time::Duration,
    /// Where training and validation run.
    pub device: Device,
}

/// What a finished run reports.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSummary {
    pub steps: u64,
    pub last_loss: f32,
    pub val_accuracy: Option<f32>,
    pub val_loss: Option<f32>,
    /// A language model's validation loss before its first step (runs that start
    /// fresh), the baseline its perplexity is compared with.
    pub val_loss_before: Option<f32>,
    pub samples_per_s: f64,
}

/// Where a run writes: the artifact directory, its checkpoint and metrics.
pub struct RunFiles {
    pub dir: PathBuf,
    pub checkpoint: PathBuf,
    pub metrics: PathBuf,
}

impl RunFiles {
    pub fn in_artifact(dir: &Path, metrics: Option<&Path>) -> RunFiles {
        RunFiles {
            dir: dir.to_path_buf(),
            checkpoint: dir.join(checkpoint::CHECKPOINT_FILE),
            metrics: metrics
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dir.join("metrics.jsonl")),
        }
    }
}

/// 64-bit mix of two words (SplitMix64 finaliser), for per-step and per-epoch seeds.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sample order of `epoch`: a seeded permutation of `0..n`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(mix(seed, epoch.wrapping_add(1)));
    for i in (1..n).rev() {
        let j = rand::RngExt::random_range(&mut rng, 0..=i);
        order.swap(i, j);
    }
    order
}

/// A batch: the named inputs, the labels as the loss reads them, and as values
/// (one per row of the loss; negative where a position has no target).
type Batch = (Vec<(String, Tensor)>, Tensor, Vec<i64>);

/// The inputs and labels of the examples `idx` of `data`, as a batch.
fn gather_batch(layout: &InputLayout, data: &Dataset, idx: &[usize]) -> anyhow::Result<Batch> {
    let x = layout.batch(data, idx)?;
    let labels = layout.labels(data, idx)?;
    let y = Tensor::from_i64(layout.label_shape(idx.len()), labels.clone())?;
    Ok((x, y, labels))
}

/// The layout that feeds the examples of every split in `splits` to `forward`: token
/// sequences padded to the longest of them all, so one graph serves every split.
pub fn layout_for(forward: &Graph, splits: &[&Dataset]) -> anyhow::Result<InputLayout> {
    let first = splits
        .first()
        .ok_or_else(|| anyhow!("no data to lay out"))?;
    let mut layout = InputLayout::for_model(forward, first)?;
    for d in &splits[1..] {
        let other = InputLayout::for_model(forward, d)?;
        layout = layout.covering(&other)?;
    }
    Ok(layout)
}

/// The forward graph a mode trains: the supernet with its head, or the base model
/// with its head for head-only and full fine-tuning. A decoder without a
/// classification head trains as the language model it is: its own logits.
pub fn forward_graph(net: &Supernet, mode: &Mode) -> anyhow::Result<Graph> {
    let graph = match mode {
        Mode::Supernet | Mode::Fixed(_) => &net.graph,
        Mode::HeadOnly | Mode::Full => &net.base,
    };
    if net.head.is_some() {
        return net.with_head(graph.clone());
    }
    if !net.is_decoder() {
        bail!("the supernet has no classification head; attach one first");
    }
    if matches!(mode, Mode::HeadOnly) {
        bail!(
            "head-only training needs a classification head; a language model trains its adapters (or every weight with full)"
        );
    }
    Ok(graph.clone())
}

/// Runs the forward graph over `data` in batches of `batch` (the last one padded with
/// copies of its first example, which are not counted) and hands `f` each batch's
/// logits rows of the real examples (one per example, or one per position of a
/// language model), the logits per row, and the rows' labels.
fn for_each_batch(
    session: &DeviceSession,
    layout: &InputLayout,
    data: &Dataset,
    batch: usize,
    mut f: impl FnMut(&[f32], usize, &[i64]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let classes = data.num_classes;
    let rows_per_example = layout.label_shape(1)[0];
    let mut start = 0;
    while start < data.n {
        let end = (start + batch).min(data.n);
        let mut idx: Vec<usize> = (start..end).collect();
        let real = idx.len();
        idx.resize(batch, start);
        let (x, _, labels) = gather_batch(layout, data, &idx)?;
        let logits = session.run(&x)?[0].to_f32_vec();
        let k = logits.len() / (batch * rows_per_example).max(1);
        if k < classes {
            bail!("the model gives {k} logits per sample but the data has {classes} classes");
        }
        let rows = real * rows_per_example;
        f(&logits[..rows * k], k, &labels[..rows])?;
        start = end;
    }
    Ok(())
}

/// The scores of the forward graph on `data`, in batches of `batch`, summed over
/// every row that has a label: examples, or a language model's target positions.
pub fn evaluate_rows(
    session: &DeviceSession,
    layout: &InputLayout,
    data: &Dataset,
    batch: usize,
) -> anyhow::Result<RowScores> {
    let mut total = RowScores::default();
    for_each_batch(session, layout, data, batch, |rows, k, labels| {
        total.add(score_rows(rows, k, labels)?);
        Ok(())
    })?;
    Ok(total)
}

/// Accuracy and mean loss of the forward graph on `data`, in batches of `batch`
/// (per example; per target token for a language model).
pub fn evaluate(
    session: &DeviceSession,
    layout: &InputLayout,
    data: &Dataset,
    batch: usize,
) -> anyhow::Result<(f32, f32)> {
    let s = evaluate_rows(session, layout, data, batch)?;
    Ok((s.accuracy() as f32, s.mean_loss() as f32))
}

/// Counts of (true class, predicted class) over `data`: row `t`, column `p` holds the
/// examples of class `t` the model gives the largest logit to class `p`.
pub fn confusion_matrix(
    session: &DeviceSession,
    layout: &InputLayout,
    data: &Dataset,
    batch: usize,
) -> anyhow::Result<Vec<Vec<usize>>> {
    let classes = data.num_classes;
    let mut m = vec![vec![0usize; classes]; classes];
    for_each_batch(session, layout, data, batch, |rows, k, labels| {
        for (row, &t) in rows.chunks_exact(k).zip(labels) {
            let Ok(t) = usize::try_from(t) else {
                continue;
            };
            let p = row[..classes]
                .iter()
                .enumerate()
                .fold(0, |best, (j, v)| if *v > row[best] { j } else { best });
            m[t][p] += 1;
        }
        Ok(())
    })?;
    Ok(m)
}

/// Appends JSON lines to the metrics file.
struct Metrics {
    file: std::fs::File,
}

impl Metrics {
    /// Opens the metrics file: truncated for a new run, or cut back to the lines up to
    /// `keep_until` (inclusive) for a resumed one.
    fn open(path: &Path, keep_until: Option<u64>) -> anyhow::Result<Metrics> {
        let kept = match keep_until {
            Some(step) if path.exists() => {
                let text =
                    std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
                text.lines()
                    .filter(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .ok()
                            .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                            .is_some_and(|s| s <= step)
                    })
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            }
            _ => String::new(),
        };
        crate::io::write_atomic(path, kept.as_bytes())
            .with_context(|| path.display().to_string())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| path.display().to_string())?;
        Ok(Metrics { file })
    }

    fn write(&mut self, v: serde_json::Value) -> anyhow::Result<()> {
        writeln!(self.file, "{v}").context("writing metrics")?;
        Ok(())
    }
}

/// Trains `net` on `train` (validating on `val` after each epoch) and leaves the
/// trained tensors in `net` and in the artifact directory of `files`. With `resume`
/// the run continues from the checkpoint there and, when `opts.progress` is set, says
/// so on stdout in one line (`resuming at step K of N from FILE`) before the first
/// step.
pub fn train(
    net: &mut Supernet,
    train: &Dataset,
    val: Option<&Dataset>,
    opts: &TrainOptions,
    files: &RunFiles,
    resume: bool,
) -> anyhow::Result<TrainSummary> {
    if train.n == 0 {
        bail!("the training data is empty");
    }
    let batch = opts.batch.min(train.n).max(1);
    let steps_per_epoch = (train.n / batch) as u64;
    let total = opts
        .max_steps
        .unwrap_or(u64::MAX)
        .min(steps_per_epoch * opts.epochs);
    let mut forward = forward_graph(net, &opts.mode)?;
    if matches!(opts.mode, Mode::Full) {
        make_weights_trainable(&mut forward);
    }
    let layout = match val {
        Some(v) => layout_for(&forward, &[train, v])?,
        None => layout_for(&forward, &[train])?,
    };
    let mut tg = build_training_graph(&forward, &layout.shapes(batch), opts.label_smoothing)?;
    if matches!(opts.mode, Mode::HeadOnly) {
        // The base model's weights stay frozen: the graph holds only head parameters.
        tg.params.retain(|(n, _)| n.starts_with("glora_head."));
    }
    let eval_forward = build_eval_graph(&forward, &layout.shapes(opts.eval_batch.max(1)))?;
    let mut eval_session = opts.device.session(&eval_forward)?;
    let fixed = match &opts.mode {
        Mode::Fixed(c) => Some(c.clone()),
        _ => None,
    };
    let eval_config = opts.eval_config.clone().or_else(|| fixed.clone());
    if matches!(opts.mode, Mode::Supernet | Mode::Fixed(_)) {
        let c = eval_config
            .clone()
            .ok_or_else(|| anyhow!("no config to validate the supernet with"))?;
        net.check_config(&c).context("validation config")?;
        eval_session.set_glora_configs(&c)?;
        if let Some(f) = &fixed {
            net.check_config(f).context("--config")?;
        }
    }
    let mut stepper = Stepper::new(
        tg,
        AdamW::new(opts.optimizer),
        adapter_index(net),
        &opts.device,
    )?;
    let mut start = 0u64;
    if resume {
        let ck = Checkpoint::read(&files.checkpoint)?;
        ck.check_compatible(opts.seed, &stepper.names)?;
        for i in 0..stepper.names.len() {
            let name = stepper.names[i].clone();
            let t = ck.param(&name).ok_or_else(|| {
                anyhow!(
                    "{}: parameter {name} is missing",
                    files.checkpoint.display()
                )
            })?;
            if t.shape() != stepper.values[i].shape() {
                bail!(
                    "{}: parameter {name} is {:?}, the model's is {:?}",
                    files.checkpoint.display(),
                    t.shape(),
                    stepper.values[i].shape()
                );
            }
            stepper.set_value(i, t.clone())?;
        }
        stepper.set_optimizer(
            AdamW::import_state(opts.optimizer, &ck.optimizer)
                .map_err(|e| anyhow!("{}: {e}", files.checkpoint.display()))?,
        )?;
        start = ck.step;
        if opts.progress {
            // Before the first step, so whoever reruns a killed job sees at once that
            // it continues, and from which file, rather than starting again.
            println!(
                "resuming at step {start} of {total} from {}",
                files.checkpoint.display()
            );
        }
    }
    let mut metrics = Metrics::open(&files.metrics, resume.then_some(start))?;
    let mut val_loss_before = None;
    if let Some(val) = val
        && layout.label_shape(1)[0] > 1
        && start == 0
        && total > 0
    {
        // A language model has no chance level to read its loss against: its own
        // loss before training is the baseline.
        let (va, vl) = evaluate(&eval_session, &layout, val, opts.eval_batch.max(1))?;
        metrics.write(json!({"step": 0, "epoch": 0, "val_loss": vl, "val_acc": va}))?;
        if opts.progress {
            println!(
                "before training: val_loss {vl:.4} (perplexity {:.3}) val_acc {va:.4}",
                f64::from(vl).exp()
            );
        }
        val_loss_before = Some(vl);
    }
    let bar = progress_bar(opts.progress, total, start);
    let mut order_epoch = u64::MAX;
    let mut order = Vec::new();
    let mut last_loss = f32::NAN;
    let mut val_result = None;
    let timer = Instant::now();
    let mut samples = 0u64;
    for step in start..total {
        let epoch = step / steps_per_epoch;
        let in_epoch = step % steps_per_epoch;
        if epoch != order_epoch {
            order = epoch_order(train.n, opts.seed, epoch);
            order_epoch = epoch;
        }
        let i0 = in_epoch as usize * batch;
        let (x, y, labels) = gather_batch(&layout, train, &order[i0..i0 + batch])?;
        let config = match (&opts.mode, &fixed) {
            (Mode::Supernet, _) => Some(net.random_config(mix(opts.seed, step))),
            (_, Some(f)) => Some(f.clone()),
            _ => None,
        };
        let lr = opts.schedule.lr(epoch, in_epoch);
        let out = match stepper.step(x, y, config.as_ref(), lr, step + 1) {
            Ok(o) => o,
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        };
        let loss = out.loss;
        last_loss = loss;
        let logits = out.logits.to_f32_vec();
        let k = logits.len() / labels.len().max(1);
        let acc = score_rows(&logits, k, &labels)?.accuracy() as f32;
        samples += batch as u64;
        let rate = samples as f64 / timer.elapsed().as_secs_f64().max(1e-9);
        metrics.write(json!({
            "step": step + 1, "epoch": epoch, "loss": loss, "acc": acc, "lr": lr,
            "samples_per_s": rate,
        }))?;
        bar.set_position(step + 1);
        bar.set_message(format!("loss {loss:.4} acc {acc:.3} {rate:.1} samples/s"));
        let epoch_done = in_epoch + 1 == steps_per_epoch || step + 1 == total;
        if epoch_done && let Some(val) = val {
            for (name, t) in stepper.named()? {
                eval_session.set_param(&name, &t)?;
            }
            let (va, vl) = evaluate(&eval_session, &layout, val, opts.eval_batch.max(1))?;
            metrics.write(json!({
                "step": step + 1, "epoch": epoch, "val_loss": vl, "val_acc": va,
            }))?;
            bar.println(format!(
                "epoch {epoch}: step {} val_acc {va:.4} val_loss {vl:.4}",
                step + 1
            ));
            val_result = Some((va, vl));
        }
        if !opts.throttle.is_zero() {
            std::thread::sleep(opts.throttle);
        }
        let due = opts.checkpoint_every > 0 && (step + 1) % opts.checkpoint_every == 0;
        if due && step + 1 < total {
            save(net, &mut stepper, opts.seed, step + 1, &order, files)?;
        }
    }
    bar.finish_and_clear();
    let steps_done = total.max(start);
    save(net, &mut stepper, opts.seed, steps_done, &order, files)?;
    Ok(TrainSummary {
        steps: steps_done,
        last_loss,
        val_accuracy: val_result.map(|v| v.0),
        val_loss: val_result.map(|v| v.1),
        val_loss_before,
        samples_per_s: samples as f64 / timer.elapsed().as_secs_f64().max(1e-9),
    })
}

fn progress_bar(show: bool, total: u64, start: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps [{elapsed} < {eta}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(start);
    bar
}

/// Writes the checkpoint, then the trained tensors into the supernet and its artifact.
fn save(
    net: &mut Supernet,
    stepper: &mut Stepper,
    seed: u64,
    step: u64,
    order: &[usize],
    files: &RunFiles,
) -> anyhow::Result<()> {
    let named = stepper.named()?;
    Checkpoint {
        step,
        seed,
        data_order: order.iter().map(|&i| i as i64).collect(),
        params: named.clone(),
        optimizer: stepper.optimizer_state()?,
    }
    .write(&files.checkpoint)?;
    store_trained(net, &named)?;
    write_trained_files(net, &files.dir)
}

/// Moves trained tensors into `net`: adapters into its graph, the head into its head,
/// anything else into its base weights (full fine-tuning).
pub fn store_trained(net: &mut Supernet, named: &[(String, Tensor)]) -> anyhow::Result<()> {
    let mut adapters = Vec::new();
    let mut base = Vec::new();
    for (name, t) in named {
        if name == crate::passes::HEAD_WEIGHT {
            if let Some(h) = net.head.as_mut() {
                h.weight = t.clone();
            }
        } else if name == crate::passes::HEAD_BIAS {
            if let Some(h) = net.head.as_mut() {
                h.bias = t.clone();
            }
        } else if net
            .graph
            .find_value(name)
            .is_some_and(|p| matches!(net.graph.node(p.node).op, crate::ir::Op::Param(_)))
        {
            adapters.push((name.clone(), t.clone()));
        } else {
            base.push((name.clone(), t.clone()));
        }
    }
    apply_weights(&mut net.graph, &adapters)?;
    if !base.is_empty() {
        // Folded weights of the fixed-batch graph keep their value names; names the
        // symbolic-batch base does not have were shape-specialised copies.
        let known: Vec<(String, Tensor)> = base
            .into_iter()
            .filter(|(n, _)| net.base.find_value(n).is_some())
            .collect();
        apply_weights(&mut net.base, &known)?;
        let in_graph: Vec<(String, Tensor)> = known
            .iter()
            .filter(|(n, _)| net.graph.find_value(n).is_some())
            .cloned()
            .collect();
        apply_weights(&mut net.graph, &in_graph)?;
        let mut merged: HashMap<String, Tensor> = net.trained_weights.drain(..).collect();
        merged.extend(known);
        let mut all: Vec<(String, Tensor)> = merged.into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        net.trained_weights = all;
    }
    Ok(())
}

/// Rewrites the artifact's tensor files and manifest, each atomically.
pub fn write_trained_files(net: &Supernet, dir: &Path) -> anyhow::Result<()> {
    crate::io::write_safetensors(&dir.join(crate::supernet::ADAPTERS_FILE), &net.adapters()?)?;
    for (file, tensors) in net.extra_files() {
        crate::io::write_safetensors(&dir.join(file), &tensors)?;
    }
    crate::supernet::artifact::write_manifest(dir, &net.manifest()?)
}
