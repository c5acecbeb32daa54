//! `glora demo`: the whole story on data the binary carries. A small ViT is built,
//! pre-trained with full fine-tuning on a source task (UCI digits 0–4), then adapted
//! few-shot to a target task (digits 5–9, a handful of images per class) by four
//! methods on the same splits — head only, LoRA, GLoRA (supernet, search under LoRA's
//! parameter count) and full fine-tuning — each through the pipeline, so every merged
//! ONNX is verified in tract and tested once. The comparison goes to the terminal and
//! to `report.md`/`report.json`/`report.html` in the output folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::exec::Device;

use super::{PipelineOptions, PipelineReport, TrainSettings, run_pipeline, write_json};
use crate::data::Dataset;
use crate::train::Method;
use crate::train::prepare::DataPlan;

/// The UCI optical digits (CC BY 4.0), see `data/README.md`.
const DIGITS: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// Target-task training images per class.
const SHOTS: usize = 40;
/// Training epochs of every method on the target task.
const EPOCHS: u64 = 60;
/// Epochs of GLoRA's supernet: every step trains one random config per layer, so the
/// supernet needs longer than a single config does (the reference trains it for 500).
const SUPERNET_EPOCHS: u64 = 3 * EPOCHS;
/// Epochs GLoRA retrains its chosen subnet after the search.
const RETRAIN_EPOCHS: u64 = 20;

/// One row of the comparison.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoRow {
    pub method: String,
    pub adapter_params: usize,
    pub head_params: usize,
    pub val_accuracy: Option<f32>,
    pub test_accuracy: f32,
    pub tract_max_abs_error: f64,
    pub seconds: f64,
    pub model: PathBuf,
}

/// What the demo measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DemoReport {
    pub source_test_accuracy: f32,
    pub lora_budget: usize,
    pub rows: Vec<DemoRow>,
    pub seconds: f64,
}

/// Writes the source and target tasks as `train.safetensors`/`test.safetensors`
/// folders under `dir`.
fn write_tasks(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let raw = dir.join("digits.csv.gz");
    crate::io::write_atomic(&raw, DIGITS).with_context(|| raw.display().to_string())?;
    let all = Dataset::load_digits_csv(&raw)?;
    let source = all.select_classes(&[0, 1, 2, 3, 4])?;
    let target = all.select_classes(&[5, 6, 7, 8, 9])?;
    let (src_train, src_test) = source.split(0.2, 11)?;
    // A few shots per class to adapt on; everything else of the target is its test set.
    let shots = target.k_shot(SHOTS, 12)?;
    let test = complement(&target, &shots)?;
    let (src_dir, tgt_dir) = (dir.join("source"), dir.join("target"));
    for (d, train, test) in [(&src_dir, &src_train, &src_test), (&tgt_dir, &shots, &test)] {
        std::fs::create_dir_all(d).with_context(|| d.display().to_string())?;
        train.save_safetensors(&d.join("train.safetensors"))?;
        test.save_safetensors(&d.join("test.safetensors"))?;
    }
    Ok((src_dir, tgt_dir))
}

/// The images of `all` that are not in `part` (compared by pixels and label).
fn complement(all: &Dataset, part: &Dataset) -> anyhow::Result<Dataset> {
    let (all_images, part_images) = (all.images()?, part.images()?);
    let len = all_images.image_len();
    let key = |d: &Dataset, im: &crate::data::Images, i: usize| -> Vec<u32> {
        let mut k: Vec<u32> = im.values[i * len..(i + 1) * len]
            .iter()
            .map(|v| v.to_bits())
            .collect();
        k.push(d.labels[i]);
        k
    };
    let taken: std::collections::HashSet<Vec<u32>> =
        (0..part.n).map(|i| key(part, part_images, i)).collect();
    let rest: Vec<usize> = (0..all.n)
        .filter(|&i| !taken.contains(&key(all, all_images, i)))
        .collect();
    Ok(all.subset(&rest)?)
}

fn options(
    method: Method,
    train: TrainSettings,
    budget: Option<usize>,
    device: &Device,
) -> PipelineOptions {
    PipelineOptions {
        method,
        budget,
        train,
        device: device.clone(),
        data: DataPlan {
            val_fraction: 0.25,
            test_fraction: 0.0,
            split_seed: 3,
            ..DataPlan::default()
        },
        ..PipelineOptions::default()
    }
}

/// Runs the demo into `out` (created; an earlier demo there is continued), training
/// and evaluating on `device`.
pub fn run_demo(out: &Path, device: &Device) -> anyhow::Result<DemoReport> {
    let t0 = Instant::now();
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let (source, target) = write_tasks(&out.join("data"))?;

    let vit = out.join("vit.onnx");
    if !vit.is_file() {
        let cfg = crate::models::VitConfig {
            classes: None,
            ..crate::models::VitConfig::tiny_digits()
        };
        let g = crate::models::build_vit(&cfg, 0)?;
        crate::onnx::export_file(&g, &vit, &crate::onnx::ExportOptions::default())?;
    }
    println!("pre-training a ViT (8×8, dim 64, depth 4) on digits 0–4 with full fine-tuning");
    let pre = run_pipeline(
        &vit,
        &source,
        &out.join("pretrain"),
        &options(
            Method::Full,
            TrainSettings {
                epochs: 15,
                lr: 2e-3,
                seed: 1,
                ..TrainSettings::default()
            },
            None,
            device,
        ),
    )?;
    println!(
        "source task test accuracy {:.2}%",
        100.0 * pre.test_accuracy
    );
    let pretrained = out.join("pretrain").join("model.onnx");

    let few_shot = TrainSettings {
        epochs: EPOCHS,
        batch: 16,
        lr: 3e-3,
        seed: 2,
        ..TrainSettings::default()
    };
    let adapt = |method: Method, budget: Option<usize>| -> anyhow::Result<PipelineOptions> {
        let mut o = options(method, few_shot.clone(), budget, device);
        if method == Method::Supernet {
            o.train.epochs = SUPERNET_EPOCHS;
            o.retrain_epochs = RETRAIN_EPOCHS;
        }
        o.targets = Some("blocks".into());
        o.features = Some("features".into());
        Ok(o)
    };
    let mut rows = Vec::new();
    let mut lora_budget = 0;
    for method in [
        Method::HeadOnly,
        Method::Lora,
        Method::Supernet,
        Method::Full,
    ] {
        let name = match method {
            Method::Supernet => "glora".to_string(),
            m => m.to_string(),
        };
        println!("adapting to digits 5–9 ({SHOTS} images per class): {name}");
        let budget = (method == Method::Supernet).then_some(lora_budget);
        let start = Instant::now();
        let r: PipelineReport = run_pipeline(
            &pretrained,
            &target,
            &out.join(&name),
            &adapt(method, budget)?,
        )?;
        if method == Method::Lora {
            lora_budget = r.adapter_params;
        }
        rows.push(DemoRow {
            method: name.clone(),
            adapter_params: if method == Method::Full {
                full_params(&pretrained)?
            } else {
                r.adapter_params
            },
            head_params: r.head_params,
            val_accuracy: r.val_accuracy,
            test_accuracy: r.test_accuracy,
            tract_max_abs_error: r.tract_max_abs_error,
            seconds: start.elapsed().as_secs_f64(),
            model: out.join(&name).join("model.onnx"),
        });
    }
    let report = DemoReport {
        source_test_accuracy: pre.test_accuracy,
        lora_budget,
        rows,
        seconds: t0.elapsed().as_secs_f64(),
    };
    write_json(&out.join("report.json"), &report)?;
    crate::io::write_atomic(&out.join("report.md"), markdown(&report).as_bytes())?;
    crate::io::write_atomic(
        &out.join(super::report::HTML_FILE),
        html(&report).as_bytes(),
    )?;
    Ok(report)
}

/// The comparison as a page linking each method's own report.
fn html(r: &DemoReport) -> String {
    use super::html::{MethodLink, comparison_page, esc};
    let page = |dir: &str| format!("{dir}/{}", super::report::HTML_FILE);
    let methods: Vec<MethodLink> = r
        .rows
        .iter()
        .map(|row| MethodLink {
            method: &row.method,
            cells: vec![
                row.adapter_params.to_string(),
                row.head_params.to_string(),
                row.val_accuracy
                    .map_or("–".to_string(), |v| format!("{:.2}%", 100.0 * v)),
                format!("{:.2}%", 100.0 * row.test_accuracy),
                format!("{:.1e}", row.tract_max_abs_error),
                format!("{:.1}", row.seconds),
            ],
            page: page(&row.method),
        })
        .collect();
    let mut extra = format!(
        "<p>Pre-training on digits 0–4: <a href=\"{}\">its report</a> (test accuracy {:.2}%). \
         Total time {:.1} s.</p>\n<h2>Validation accuracy per epoch</h2>\n",
        esc(&page("pretrain")),
        100.0 * r.source_test_accuracy,
        r.seconds
    );
    let curves: Vec<(String, std::path::PathBuf)> = r
        .rows
        .iter()
        .filter_map(|row| {
            let dir = row.model.parent()?;
            Some((row.method.clone(), dir.join("val_accuracy.svg")))
        })
        .collect();
    extra.push_str(&super::html::figure_grid(&curves));
    comparison_page(
        "glora demo",
        &intro(r),
        &[
            "method",
            "trained parameters",
            "head",
            "val acc",
            "test acc",
            "tract error",
            "seconds",
        ],
        &methods,
        &extra,
    )
}

/// What the demo did, in a paragraph.
fn intro(r: &DemoReport) -> String {
    format!(
        "A ViT (8×8 grey images, patch 2, dim 64, depth 4) pre-trained on UCI digits 0–4 \
         (test accuracy {:.2}%), adapted to digits 5–9 from {SHOTS} images per class. \
         Every method trains {EPOCHS} epochs; GLoRA trains its supernet for \
         {SUPERNET_EPOCHS}, searches under LoRA's adapter parameter count ({}) and \
         retrains the chosen subnet for {RETRAIN_EPOCHS} epochs. Every merged model was \
         verified in tract and tested once on the held-out target images.",
        100.0 * r.source_test_accuracy,
        r.lora_budget
    )
}

/// Trainable weights of full fine-tuning: every float tensor of the model.
fn full_params(model: &Path) -> anyhow::Result<usize> {
    let g = crate::models::load_model(model)?;
    Ok(g.node_ids()
        .into_iter()
        .filter_map(|id| g.node(id).op.weight())
        .filter(|t| t.dtype() == crate::ir::DType::F32 && t.numel() > 1)
        .map(|t| t.numel())
        .sum())
}

/// The comparison table, as the terminal and `report.md` show it.
pub fn table(r: &DemoReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| method | trained parameters | head | val acc | test acc | tract error | seconds |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for row in &r.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2}% | {:.1e} | {:.1} |",
            row.method,
            row.adapter_params,
            row.head_params,
            row.val_accuracy
                .map_or("–".to_string(), |v| format!("{:.2}%", 100.0 * v)),
            100.0 * row.test_accuracy,
            row.tract_max_abs_error,
            row.seconds
        );
    }
    s
}

fn markdown(r: &DemoReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# glora demo\n");
    let _ = writeln!(s, "{}\n", intro(r));
    s.push_str(&table(r));
    let _ = writeln!(s, "\nTotal time {:.1} s.", r.seconds);
    s
}
