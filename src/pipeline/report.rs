//! The report of a pipeline run: `report.json` (every figure, for scripts) and
//! `report.md` (the same for people), both written atomically into the run folder,
//! with the training curves plotted beside them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{RunPaths, StageSummary, write_json};
use crate::glora::ModelConfig;

/// Wall-clock time of one stage of this invocation (0 when its result was reused).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: String,
    pub seconds: f64,
}

/// What the report keeps of a search.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchStats {
    pub evaluated: usize,
    pub generations: usize,
    pub seconds: f64,
    pub seconds_per_genome: f64,
}

/// Everything a pipeline run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipelineReport {
    pub model: String,
    pub data: String,
    pub method: String,
    pub budget: Option<usize>,
    pub adapted_layers: usize,
    /// Adapter parameters the chosen config reads.
    pub adapter_params: usize,
    pub head_params: usize,
    pub train_samples: usize,
    pub val_samples: usize,
    pub test_samples: usize,
    /// Validation accuracy of the chosen config (the search's best for GLoRA).
    pub val_accuracy: Option<f32>,
    /// Accuracy of the exported model on the test split, measured once.
    pub test_accuracy: f32,
    pub tract_max_abs_error: f64,
    pub base_bytes: u64,
    pub merged_bytes: u64,
    pub base_ops: BTreeMap<String, usize>,
    pub merged_ops: BTreeMap<String, usize>,
    pub train: StageSummary,
    pub search: Option<SearchStats>,
    pub stage_seconds: Vec<StageTime>,
    pub config: ModelConfig,
}

/// Writes `report.json`, `report.md` and the plots: training loss and validation
/// accuracy per step, and the search front when there was a search.
pub fn write(r: &PipelineReport, paths: &RunPaths) -> anyhow::Result<()> {
    write_json(&paths.report_json, r)?;
    crate::io::write_atomic(&paths.report_md, markdown(r).as_bytes())?;
    plot_curves(paths)?;
    if paths.search.is_file() {
        plot_front(paths, r.budget)?;
    }
    Ok(())
}

/// (step, value) of `key` in a metrics file, in file order.
fn metric(path: &std::path::Path, key: &str) -> Vec<(f64, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("step")?.as_f64()?, v.get(key)?.as_f64()?)))
        .collect()
}

fn plot_curves(paths: &RunPaths) -> anyhow::Result<()> {
    use crate::plot::{ChartText, Series, line_chart};
    let runs = [
        ("training", paths.supernet.join("metrics.jsonl")),
        ("retraining", paths.supernet.join("retrain_metrics.jsonl")),
    ];
    let mut loss = Vec::new();
    let mut acc = Vec::new();
    for (name, file) in &runs {
        let l = metric(file, "loss");
        if !l.is_empty() {
            loss.push(Series {
                name: format!("{name} loss"),
                points: l,
            });
        }
        let a = metric(file, "val_acc");
        if !a.is_empty() {
            acc.push(Series {
                name: format!("{name} val acc"),
                points: a,
            });
        }
    }
    if !loss.is_empty() {
        line_chart(
            &paths.root.join("loss"),
            &loss,
            &ChartText::new("Training loss", "step", "cross-entropy"),
        )?;
    }
    if !acc.is_empty() {
        line_chart(
            &paths.root.join("val_accuracy"),
            &acc,
            &ChartText::new("Validation accuracy", "step", "accuracy"),
        )?;
    }
    Ok(())
}

fn plot_front(paths: &RunPaths, budget: Option<usize>) -> anyhow::Result<()> {
    use crate::plot::{ChartText, FrontPoint, search_front};
    let text = std::fs::read_to_string(&paths.search)?;
    let record: serde_json::Value = serde_json::from_str(&text)?;
    let points: Vec<FrontPoint> = record
        .get("evaluated")
        .and_then(|e| e.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|e| {
                    Some(FrontPoint {
                        params: e.get("params")?.as_f64()?,
                        accuracy: e.get("accuracy")?.as_f64()?,
                        generation: e.get("generation")?.as_u64()? as usize,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let best = record
        .get("best")
        .and_then(|b| Some((b.get("params")?.as_f64()?, b.get("accuracy")?.as_f64()?)));
    search_front(
        &paths.root.join("search_front"),
        &points,
        best,
        budget.map(|b| b as f64),
        &ChartText::new("Search front", "adapter parameters", "validation accuracy"),
    )?;
    Ok(())
}

fn pct(x: f32) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// The report as Markdown.
pub fn markdown(r: &PipelineReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# glora pipeline report\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| model | `{}` |", r.model);
    let _ = writeln!(s, "| data | `{}` |", r.data);
    let _ = writeln!(s, "| method | {} |", r.method);
    if let Some(b) = r.budget {
        let _ = writeln!(s, "| parameter budget | {b} |");
    }
    let _ = writeln!(s, "| adapted layers | {} |", r.adapted_layers);
    let _ = writeln!(s, "| adapter parameters | {} |", r.adapter_params);
    let _ = writeln!(s, "| head parameters | {} |", r.head_params);
    let _ = writeln!(
        s,
        "| samples (train / val / test) | {} / {} / {} |",
        r.train_samples, r.val_samples, r.test_samples
    );
    if let Some(v) = r.val_accuracy {
        let _ = writeln!(s, "| validation accuracy | {} |", pct(v));
    }
    let _ = writeln!(s, "| **test accuracy** | **{}** |", pct(r.test_accuracy));
    let _ = writeln!(
        s,
        "| tract vs glora, max abs error | {:.2e} |",
        r.tract_max_abs_error
    );
    let _ = writeln!(
        s,
        "| file size (base / merged) | {} / {} bytes |",
        r.base_bytes, r.merged_bytes
    );
    let _ = writeln!(
        s,
        "| training | {} steps, last loss {:.4}, {:.1} samples/s, {:.1} s |",
        r.train.steps, r.train.last_loss, r.train.samples_per_s, r.train.seconds
    );
    if let Some(st) = &r.search {
        let _ = writeln!(
            s,
            "| search | {} genomes in {} generations, {:.1} s ({:.1} ms per genome) |",
            st.evaluated,
            st.generations,
            st.seconds,
            1e3 * st.seconds_per_genome
        );
    }
    let _ = writeln!(s, "\n## Time per stage (this invocation)\n");
    let _ = writeln!(s, "| stage | seconds |\n|---|---|");
    for t in &r.stage_seconds {
        let _ = writeln!(s, "| {} | {:.1} |", t.stage, t.seconds);
    }
    let _ = writeln!(s, "\n## Operators, base model vs merged export\n");
    let _ = writeln!(s, "| op | base | merged |\n|---|---|---|");
    let mut ops: Vec<&String> = r.base_ops.keys().chain(r.merged_ops.keys()).collect();
    ops.sort();
    ops.dedup();
    for op in ops {
        let _ = writeln!(
            s,
            "| {op} | {} | {} |",
            r.base_ops.get(op).copied().unwrap_or(0),
            r.merged_ops.get(op).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        s,
        "\n## Chosen config\n\n```json\n{}\n```",
        r.config.to_json()
    );
    s
}
