//! The report of a pipeline run: `report.json` (every figure, for scripts),
//! `report.md` and `report.html` (the same for people) and `config.json` (the chosen
//! config), all written atomically into the run folder, with the training curves,
//! the search front and the chosen adapters plotted beside them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context;

use serde::{Deserialize, Serialize};

use super::{RunPaths, StageSummary, write_json};
use crate::glora::ModelConfig;
use crate::glora::table::{LayerRow, markdown_table};

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
    /// The class names, in label order.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Test examples by (true class, predicted class).
    #[serde(default)]
    pub confusion: Vec<Vec<usize>>,
    pub tract_max_abs_error: f64,
    pub base_bytes: u64,
    pub merged_bytes: u64,
    pub base_ops: BTreeMap<String, usize>,
    pub merged_ops: BTreeMap<String, usize>,
    pub train: StageSummary,
    pub search: Option<SearchStats>,
    pub stage_seconds: Vec<StageTime>,
    pub config: ModelConfig,
    /// The chosen config per layer, with the parameters each term reads.
    #[serde(default)]
    pub layers: Vec<LayerRow>,
}

/// The chosen config, beside the report.
pub const CONFIG_FILE: &str = "config.json";
/// The self-contained page of the run.
pub const HTML_FILE: &str = "report.html";

/// Writes the plots (training loss, validation per epoch, the search front when
/// there was a search, the chosen adapters when they read any parameter), then
/// `config.json`, `report.json`, `report.md` and `report.html`.
pub fn write(r: &PipelineReport, paths: &RunPaths) -> anyhow::Result<()> {
    plot_curves(paths)?;
    if paths.search.is_file() {
        plot_front(paths, r.budget)?;
    }
    if r.layers.iter().any(|l| l.total() > 0) {
        crate::plot::config_chart(
            &paths.root.join("config"),
            &r.layers,
            &format!(
                "Chosen adapters ({}, {} parameters)",
                r.method, r.adapter_params
            ),
        )?;
    }
    let config = paths.root.join(CONFIG_FILE);
    crate::io::write_atomic(&config, r.config.to_json().as_bytes())
        .with_context(|| config.display().to_string())?;
    write_json(&paths.report_json, r)?;
    crate::io::write_atomic(&paths.report_md, markdown(r, &paths.root).as_bytes())?;
    let html = paths.root.join(HTML_FILE);
    crate::io::write_atomic(&html, super::html::pipeline_page(r, &paths.root).as_bytes())
        .with_context(|| html.display().to_string())?;
    Ok(())
}

/// The lines of a metrics file that carry `key`: (step, epoch, value), in file order.
fn metric(path: &std::path::Path, key: &str) -> Vec<(f64, f64, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some((
                v.get("step")?.as_f64()?,
                v.get("epoch").and_then(|e| e.as_f64()).unwrap_or(0.0),
                v.get(key)?.as_f64()?,
            ))
        })
        .collect()
}

/// The steps after which an epoch ended, but the last: where a new epoch begins.
fn epoch_ends(rows: &[(f64, f64, f64)]) -> Vec<f64> {
    rows.windows(2)
        .filter(|w| w[1].1 != w[0].1)
        .map(|w| w[0].0)
        .collect()
}

/// `2nd`, `3rd`, `11th`, `21st`, …
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// At most `most` of `marks`, every k-th, and the k.
fn thin_marks(marks: Vec<f64>, most: usize) -> (Vec<f64>, usize) {
    let k = marks.len().div_ceil(most.max(1)).max(1);
    let kept = marks
        .into_iter()
        .enumerate()
        .filter(|(i, _)| (i + 1) % k == 0)
        .map(|(_, m)| m)
        .collect();
    (kept, k)
}

/// The training loss (smoothed over the raw values, epochs marked) and the
/// validation metric per epoch. Retraining follows training on the same step axis.
fn plot_curves(paths: &RunPaths) -> anyhow::Result<()> {
    use crate::plot::{
        ChartText, LineChart, Marks, Series, SeriesStyle, ema, ema_weight, line_chart,
    };
    let runs = [
        ("training", paths.supernet.join("metrics.jsonl")),
        ("retraining", paths.supernet.join("retrain_metrics.jsonl")),
    ];
    let mut loss = LineChart {
        text: ChartText::new("Training loss", "step", "cross-entropy"),
        ..LineChart::default()
    };
    let mut val = LineChart {
        text: ChartText::new("Validation accuracy per epoch", "step", "accuracy"),
        ..LineChart::default()
    };
    let mut val_is_loss = false;
    let mut ends = Vec::new();
    let mut offset = 0.0;
    for (name, file) in &runs {
        let rows = metric(file, "loss");
        if rows.is_empty() {
            continue;
        }
        let raw: Vec<(f64, f64)> = rows.iter().map(|r| (offset + r.0, r.2)).collect();
        let w = ema_weight(raw.len());
        loss.series.push(Series {
            name: format!("{name} (EMA {w:.2})"),
            points: ema(&raw, w),
            style: SeriesStyle::Line,
        });
        loss.series.push(Series {
            name: format!("{name} (raw)"),
            points: raw,
            style: SeriesStyle::Faint,
        });
        ends.extend(epoch_ends(&rows).into_iter().map(|s| offset + s));
        let mut v = metric(file, "val_acc");
        if v.is_empty() {
            v = metric(file, "val_loss");
            val_is_loss |= !v.is_empty();
        }
        if !v.is_empty() {
            val.series.push(Series {
                name: name.to_string(),
                points: v.iter().map(|r| (offset + r.0, r.2)).collect(),
                style: SeriesStyle::Points,
            });
        }
        offset += rows.last().map_or(0.0, |r| r.0);
    }
    if !ends.is_empty() {
        let (at, k) = thin_marks(ends, 40);
        let name = if k == 1 {
            "epoch boundary".to_string()
        } else {
            format!("every {} epoch", ordinal(k))
        };
        loss.marks = Some(Marks { name, at });
    }
    if !loss.series.is_empty() {
        line_chart(&paths.root.join("loss"), &loss)?;
    }
    if val_is_loss {
        val.text = ChartText::new("Validation loss per epoch", "step", "loss");
    }
    if !val.series.is_empty() {
        line_chart(&paths.root.join("val_accuracy"), &val)?;
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

/// One line of a report's summary table.
pub struct SummaryRow {
    pub key: &'static str,
    pub value: String,
    /// The figure the run is judged by (the test accuracy), set in bold.
    pub key_result: bool,
}

/// The summary table's rows, in order, as `report.md` and `report.html` show them.
pub fn summary_rows(r: &PipelineReport) -> Vec<SummaryRow> {
    let row = |key, value| SummaryRow {
        key,
        value,
        key_result: false,
    };
    let mut rows = vec![row("method", r.method.clone())];
    if let Some(b) = r.budget {
        rows.push(row("parameter budget", b.to_string()));
    }
    rows.push(row("adapted layers", r.adapted_layers.to_string()));
    rows.push(row("adapter parameters", r.adapter_params.to_string()));
    rows.push(row("head parameters", r.head_params.to_string()));
    rows.push(row(
        "samples (train / val / test)",
        format!(
            "{} / {} / {}",
            r.train_samples, r.val_samples, r.test_samples
        ),
    ));
    if let Some(v) = r.val_accuracy {
        rows.push(row("validation accuracy", pct(v)));
    }
    rows.push(SummaryRow {
        key_result: true,
        ..row("test accuracy", pct(r.test_accuracy))
    });
    rows.push(row(
        "tract vs glora, max abs error",
        format!("{:.2e}", r.tract_max_abs_error),
    ));
    rows.push(row(
        "file size (base / merged)",
        format!("{} / {} bytes", r.base_bytes, r.merged_bytes),
    ));
    rows.push(row(
        "training",
        format!(
            "{} steps, last loss {:.4}, {:.1} samples/s, {:.1} s",
            r.train.steps, r.train.last_loss, r.train.samples_per_s, r.train.seconds
        ),
    ));
    if let Some(st) = &r.search {
        rows.push(row(
            "search",
            format!(
                "{} genomes in {} generations, {:.1} s ({:.1} ms per genome)",
                st.evaluated,
                st.generations,
                st.seconds,
                1e3 * st.seconds_per_genome
            ),
        ));
    }
    rows
}

/// Every op of the base or the merged model with its count in each, by name.
pub fn op_rows(r: &PipelineReport) -> Vec<(&str, usize, usize)> {
    let mut ops: Vec<&String> = r.base_ops.keys().chain(r.merged_ops.keys()).collect();
    ops.sort();
    ops.dedup();
    ops.into_iter()
        .map(|op| {
            let count = |m: &BTreeMap<String, usize>| m.get(op).copied().unwrap_or(0);
            (op.as_str(), count(&r.base_ops), count(&r.merged_ops))
        })
        .collect()
}

/// The report as Markdown; figures found in `dir` are linked.
/// The confusion matrix as table cells: a header row (`true \ predicted` and the
/// label names), then one row per true class led by its name. Shared by report.md
/// and report.html.
pub fn confusion_rows(r: &PipelineReport) -> Vec<Vec<String>> {
    let name = |i: usize| r.labels.get(i).cloned().unwrap_or_else(|| i.to_string());
    let mut rows = vec![
        std::iter::once("true \\ predicted".to_string())
            .chain((0..r.confusion.len()).map(name))
            .collect::<Vec<_>>(),
    ];
    for (i, counts) in r.confusion.iter().enumerate() {
        rows.push(
            std::iter::once(name(i))
                .chain(counts.iter().map(usize::to_string))
                .collect(),
        );
    }
    rows
}

pub fn markdown(r: &PipelineReport, dir: &std::path::Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# glora pipeline report\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| model | `{}` |", r.model);
    let _ = writeln!(s, "| data | `{}` |", r.data);
    for row in summary_rows(r) {
        if row.key_result {
            let _ = writeln!(s, "| **{}** | **{}** |", row.key, row.value);
        } else {
            let _ = writeln!(s, "| {} | {} |", row.key, row.value);
        }
    }
    let _ = writeln!(s, "\n## Time per stage (this invocation)\n");
    let _ = writeln!(s, "| stage | seconds |\n|---|---|");
    for t in &r.stage_seconds {
        let _ = writeln!(s, "| {} | {:.1} |", t.stage, t.seconds);
    }
    let _ = writeln!(s, "\n## Operators, base model vs merged export\n");
    let _ = writeln!(s, "| op | base | merged |\n|---|---|---|");
    for (op, base, merged) in op_rows(r) {
        let _ = writeln!(s, "| {op} | {base} | {merged} |");
    }
    if !r.confusion.is_empty() {
        let _ = writeln!(
            s,
            "\n## Test confusion matrix\n\nRows are the true classes, columns the predicted ones.\n"
        );
        let rows = confusion_rows(r);
        let _ = writeln!(s, "| {} |", rows[0].join(" | "));
        let _ = writeln!(s, "|{}", "---|".repeat(rows[0].len()));
        for row in &rows[1..] {
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
    }
    let figures: Vec<_> = super::html::FIGURES
        .iter()
        .filter(|(stem, _)| dir.join(format!("{stem}.png")).is_file())
        .collect();
    if !figures.is_empty() {
        let _ = writeln!(s, "\n## Figures\n");
        for (stem, caption) in figures {
            let _ = writeln!(s, "![{caption}]({stem}.png)\n");
        }
    }
    if !r.layers.is_empty() {
        let _ = writeln!(
            s,
            "\n## Chosen adapters\n\nThe config itself is [`{CONFIG_FILE}`]({CONFIG_FILE}).\n"
        );
        s.push_str(&markdown_table(&r.layers));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_marks_fall_where_the_epoch_changes_and_thin_out() {
        let rows: Vec<(f64, f64, f64)> = (1..=12)
            .map(|s| (s as f64, ((s - 1) / 4) as f64, 0.0))
            .collect();
        // Steps 1-4 are epoch 0, 5-8 epoch 1, 9-12 epoch 2.
        assert_eq!(epoch_ends(&rows), vec![4.0, 8.0]);
        let (kept, k) = thin_marks((1..=100).map(f64::from).collect(), 40);
        assert_eq!(k, 3);
        assert_eq!(kept.len(), 33);
        assert_eq!(kept[0], 3.0);
        assert_eq!(thin_marks(vec![1.0, 2.0], 40), (vec![1.0, 2.0], 1));
        let words: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101].map(ordinal).to_vec();
        assert_eq!(
            words,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"
            ]
        );
    }
}
