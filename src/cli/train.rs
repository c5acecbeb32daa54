//! `glora train NAME.glora --data PATH`: trains a supernet's adapters (or its head, or
//! every weight) on labelled images or texts, or a decoder on language-model data,
//! with checkpoints, JSON-lines metrics and exact resume.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::common;
use crate::glora::ModelConfig;
use crate::search::fitness::DEFAULT_EVAL_BATCH;
use crate::supernet::Supernet;
use crate::train::mode::{preset_config, uniform_config};
use crate::train::optim::AdamWConfig;
use crate::train::prepare::prepare_data;
use crate::train::schedule::{LrSchedule, Preset, Stepping, WarmupCosine};
use crate::train::{Method, Mode, RunFiles, TrainOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The supernet directory (from `glora compile`); trained tensors are written back
    /// into it, with `checkpoint.safetensors` and `metrics.jsonl`.
    pub supernet: PathBuf,
    #[command(flatten)]
    pub data: common::DataFlags,
    /// What trains: supernet (random config per layer per step), fixed (--config),
    /// lora (B as LoRA), ssf (A, D, E vectors), bitfit (E vector), head-only, or full
    /// (every base weight).
    #[arg(long, default_value = "supernet")]
    pub mode: Method,
    /// The config of --mode fixed (JSON, as `glora export --save-config` writes;
    /// required by --mode fixed, ignored otherwise).
    #[arg(long, value_name = "CONFIG.json")]
    pub config: Option<PathBuf>,
    /// LoRA rank of the lora preset, for --mode lora and --eval-config lora (default:
    /// the largest rank of the supernet).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Training settings of the reference recipe (AdamW 1e-4, wd 1e-4, batch 64,
    /// 500 epochs, 10 warm-up epochs from 1e-6, cosine to 1e-5, per epoch); replaces
    /// --lr, --weight-decay, --epochs, --batch and the schedule flags.
    #[arg(long)]
    pub reference: bool,
    /// Passes over the training data (epochs).
    #[arg(long, default_value_t = 10)]
    pub epochs: u64,
    /// Stop after this many optimiser steps in all, counting those before a resume
    /// (default: every step of --epochs).
    #[arg(long, value_name = "STEPS")]
    pub steps: Option<u64>,
    /// Examples (images, texts or sequences) per step (the last partial batch of an
    /// epoch is left out).
    #[arg(long, default_value_t = 32, value_name = "EXAMPLES")]
    pub batch: usize,
    /// Peak learning rate, reached at the end of the warm-up.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// AdamW's decoupled weight decay coefficient (0: none).
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Linear warm-up from lr/100 to --lr, in epochs.
    #[arg(long, default_value_t = 1, value_name = "EPOCHS")]
    pub warmup_epochs: u64,
    /// Learning rate at the end of the cosine decay (at most --lr).
    #[arg(long, default_value_t = 1e-5)]
    pub min_lr: f64,
    /// Step the schedule once per epoch instead of once per step.
    #[arg(long)]
    pub lr_per_epoch: bool,
    /// Label smoothing of the cross-entropy, a fraction 0–1 (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f32,
    /// Seed of the sample order, the per-step configs and a new head's weights; a
    /// resumed run must keep it.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write a checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub checkpoint_every: u64,
    /// Continue the run whose checkpoint is in the supernet directory, with the same
    /// flags; prints the step it resumes at (default: start from step 0).
    #[arg(long)]
    pub resume: bool,
    /// Metrics file, JSON lines: one per step and one per validation (default:
    /// NAME.glora/metrics.jsonl).
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    #[command(flatten)]
    pub head: common::HeadFlags,
    /// Classes of a new head (default: the data's).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Replace a head the supernet already has (default: keep it and train it on).
    #[arg(long)]
    pub new_head: bool,
    /// The config the supernet is validated with after each epoch in --mode supernet:
    /// a config file or lora|ssf|bitfit (default: lora).
    #[arg(long, value_name = "CONFIG")]
    pub eval_config: Option<String>,
    /// Images per validation batch.
    #[arg(long, default_value_t = DEFAULT_EVAL_BATCH, value_name = "IMAGES")]
    pub eval_batch: usize,
    /// Sleep this long after every step (to watch or interrupt short runs).
    #[arg(long, hide = true, default_value_t = 0)]
    pub throttle_ms: u64,
    #[command(flatten)]
    pub device: super::common::DeviceFlags,
}

fn config_arg(net: &Supernet, arg: &str, rank: usize) -> anyhow::Result<ModelConfig> {
    if let Ok(m) = arg.parse::<Method>()
        && let Some(c) = preset_config(m, rank)
    {
        return Ok(uniform_config(net.layer_names(), c));
    }
    super::export::read_config(net, Path::new(arg))
}

fn ensure_head(net: &mut Supernet, a: &Args, labels: &[String]) -> anyhow::Result<()> {
    let classes = labels.len();
    if net.head.is_some() && !a.new_head {
        let h = &net.head.as_ref().map(|h| h.spec.clone());
        if let Some(spec) = h
            && spec.num_classes < classes
        {
            bail!(
                "the supernet's head has {} classes but the data has {classes}; pass --new-head",
                spec.num_classes
            );
        }
        return Ok(());
    }
    net.attach_new_head(
        a.head.features.as_deref(),
        a.head.pool,
        a.num_classes.unwrap_or(classes),
        a.seed,
    )?;
    if let Some(h) = net.head.as_mut()
        && h.spec.num_classes == classes
    {
        h.spec.labels = labels.to_vec();
    }
    Ok(())
}

fn schedule(a: &Args, steps_per_epoch: u64) -> (AdamWConfig, LrSchedule, u64, usize) {
    if a.reference {
        let s = Preset::Reference.settings();
        return (s.optimizer, s.schedule, s.epochs, s.batch_size);
    }
    let opt = AdamWConfig {
        lr: a.lr,
        weight_decay: a.weight_decay,
        ..AdamWConfig::default()
    };
    let (stepping, warmup, total) = if a.lr_per_epoch {
        (Stepping::PerEpoch, a.warmup_epochs, a.epochs)
    } else {
        (
            Stepping::PerStep { steps_per_epoch },
            a.warmup_epochs * steps_per_epoch,
            a.epochs * steps_per_epoch,
        )
    };
    let curve = WarmupCosine {
        base_lr: a.lr,
        lr_min: a.min_lr.min(a.lr),
        warmup_lr_init: a.lr / 100.0,
        warmup_t: warmup,
        t_initial: total.max(1),
    };
    (opt, LrSchedule { curve, stepping }, a.epochs, a.batch)
}

/// `1×8×8 images` or `texts`, for the summary line.
fn describe_examples(d: &crate::data::Dataset) -> String {
    match &d.features {
        crate::data::Features::Images(im) => {
            let [c, h, w] = im.dims();
            format!("{c}×{h}×{w} images")
        }
        crate::data::Features::Tokens(t) => format!("texts (longest {} tokens)", t.longest()),
    }
}

/// The positions of a language-model dataset that have a target.
fn target_tokens(d: &crate::data::Dataset) -> usize {
    match &d.features {
        crate::data::Features::Tokens(t) => t
            .targets
            .as_ref()
            .map_or(0, |ts| ts.iter().flatten().filter(|&&v| v >= 0).count()),
        crate::data::Features::Images(_) => 0,
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let sp = common::spinner(format!("loading {}", a.supernet.display()));
    let net = Supernet::load(&a.supernet);
    sp.finish_and_clear();
    let mut net = net?;
    let plan = a.data.plan(net.is_decoder())?;
    let lm = plan.text.causal_lm;
    let data = prepare_data(&a.data.data, &net, &plan)?;
    for w in &data.warnings {
        eprintln!("warning: {w}");
    }
    let (train, val) = (data.train, data.val);
    if !lm {
        ensure_head(&mut net, &a, &train.label_names)?;
    }
    let rank = a.rank.unwrap_or(net.space.max_rank());
    let mode = match a.mode {
        Method::Supernet => Mode::Supernet,
        Method::Fixed => {
            let path = a
                .config
                .as_ref()
                .context("--mode fixed needs --config CONFIG.json")?;
            Mode::Fixed(super::export::read_config(&net, path)?)
        }
        Method::HeadOnly => Mode::HeadOnly,
        Method::Full => Mode::Full,
        m => {
            let c = preset_config(m, rank).context("preset")?;
            let config = uniform_config(net.layer_names(), c);
            net.check_config(&config)
                .with_context(|| format!("--mode {m}"))?;
            Mode::Fixed(config)
        }
    };
    let eval_config = match (&mode, &a.eval_config) {
        (Mode::Supernet, Some(s)) => Some(config_arg(&net, s, rank)?),
        (Mode::Supernet, None) => Some(config_arg(&net, "lora", rank)?),
        _ => None,
    };
    let batch = a.batch.min(train.n).max(1);
    let (optimizer, schedule, epochs, batch) = {
        let (o, s, e, b) = schedule(&a, (train.n / batch) as u64);
        (o, s, e, if a.reference { b } else { batch })
    };
    let opts = TrainOptions {
        mode: mode.clone(),
        epochs,
        max_steps: a.steps,
        batch,
        optimizer,
        schedule,
        label_smoothing: a.label_smoothing,
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
        eval_config,
        eval_batch: a.eval_batch,
        progress: true,
        throttle: std::time::Duration::from_millis(a.throttle_ms),
        device: a.device.open()?,
    };
    let files = RunFiles::in_artifact(&a.supernet, a.metrics.as_deref());
    println!(
        "training {} ({}) on {} {}{}, validating on {}",
        a.supernet.display(),
        a.mode,
        train.n,
        describe_examples(&train),
        if lm {
            format!(" ({} target tokens)", target_tokens(&train))
        } else {
            format!(" ({} classes)", train.num_classes)
        },
        val.as_ref().map_or(0, |v| v.n)
    );
    match &mode {
        Mode::Fixed(c) => net.config = Some(c.clone()),
        Mode::HeadOnly | Mode::Full => {
            net.config = Some(uniform_config(
                net.layer_names(),
                crate::glora::LayerConfig::NONE,
            ))
        }
        Mode::Supernet => {}
    }
    let summary = crate::train::train(&mut net, &train, val.as_ref(), &opts, &files, a.resume)?;
    println!(
        "steps {}, last loss {:.4}, {:.1} samples/s",
        summary.steps, summary.last_loss, summary.samples_per_s
    );
    match (summary.val_accuracy, summary.val_loss) {
        (Some(acc), Some(loss)) if lm => {
            if let Some(before) = summary.val_loss_before {
                println!(
                    "validation perplexity {:.3} before training, {:.3} after",
                    f64::from(before).exp(),
                    f64::from(loss).exp()
                );
            }
            println!(
                "validation loss {loss:.4} per token, perplexity {:.3}, next-token accuracy {acc:.4}",
                f64::from(loss).exp()
            )
        }
        (Some(acc), Some(loss)) => println!("validation accuracy {acc:.4}, loss {loss:.4}"),
        _ => {}
    }
    println!(
        "wrote {} (checkpoint {}, metrics {})",
        a.supernet.display(),
        files.checkpoint.display(),
        files.metrics.display()
    );
    Ok(ExitCode::SUCCESS)
}
