//! `glora predict MODEL.onnx --text "…"`: classifies texts with an exported model in
//! tract and prints each label with its probability.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The exported classifier (model.onnx of `glora pipeline` or `glora export`).
    pub model: PathBuf,
    /// A text to classify (repeatable).
    #[arg(long = "text", value_name = "TEXT")]
    pub texts: Vec<String>,
    /// Classify every row of a CSV, TSV or JSONL file (its --text-column) instead.
    #[arg(long, value_name = "FILE", conflicts_with = "texts")]
    pub data: Option<PathBuf>,
    /// The column (or JSONL key) holding the text, for --data.
    #[arg(long, default_value = "text", value_name = "NAME")]
    pub text_column: String,
    /// The column holding a pair task's second text, for --data.
    #[arg(long, value_name = "NAME")]
    pub text_pair_column: Option<String>,
    /// The column holding the true label, for --data: accuracy is printed when given.
    #[arg(long, value_name = "NAME")]
    pub label_column: Option<String>,
    /// The tokenizer.json, or the folder holding it (default: beside the model).
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Tokens each text is cut to, special tokens included.
    #[arg(long, default_value_t = 512, value_name = "TOKENS")]
    pub max_length: usize,
    /// Labels printed per text, most likely first (default: all).
    #[arg(long, value_name = "K")]
    pub top: Option<usize>,
}

/// A text and, for pair tasks, its second text.
type TextAndPair = (String, Option<String>);

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let plan = crate::train::prepare::TextPlan {
        tokenizer: a.tokenizer.clone(),
        ..Default::default()
    };
    let tokenizer = crate::train::prepare::find_tokenizer(&plan, &a.model)?.with_context(|| {
        format!(
            "{}: no tokenizer.json beside the model; pass --tokenizer DIR",
            a.model.display()
        )
    })?;
    let (texts, truth): (Vec<TextAndPair>, Vec<Option<String>>) = match &a.data {
        Some(file) => {
            let columns = crate::data::TextColumns {
                text: a.text_column.clone(),
                pair: a.text_pair_column.clone(),
                label: a
                    .label_column
                    .clone()
                    .unwrap_or_else(|| a.text_column.clone()),
            };
            let read = crate::data::read_table(file, &columns)?;
            read.records
                .into_iter()
                .map(|r| {
                    let label = a.label_column.as_ref().map(|_| r.label);
                    ((r.text, r.pair), label)
                })
                .unzip()
        }
        None => {
            if a.texts.is_empty() {
                bail!("nothing to classify: give --text \"…\" or --data FILE");
            }
            a.texts.iter().map(|t| ((t.clone(), None), None)).unzip()
        }
    };
    let sp = super::common::spinner(format!("classifying {} texts in tract", texts.len()));
    let predictions = crate::verify::predict_texts(&a.model, &tokenizer, &texts, a.max_length);
    sp.finish_and_clear();
    let predictions = predictions?;
    let mut correct = 0usize;
    for (((text, _), p), t) in texts.iter().zip(&predictions).zip(&truth) {
        let shown: String = text.chars().take(60).collect::<String>().replace('\n', " ");
        let ellipsis = if text.chars().count() > 60 { "…" } else { "" };
        let ranked: Vec<String> = p
            .ranked
            .iter()
            .take(a.top.unwrap_or(usize::MAX))
            .map(|(l, pr)| format!("{l} {pr:.4}"))
            .collect();
        let verdict = match t {
            Some(t) if t == p.label() => {
                correct += 1;
                "  ✓".to_string()
            }
            Some(t) => format!("  ✗ (true: {t})"),
            None => String::new(),
        };
        println!("{}{verdict}\t{shown}{ellipsis}", ranked.join("  "));
    }
    if truth.iter().all(Option::is_some) && !truth.is_empty() {
        println!(
            "accuracy {:.2}% ({correct} of {})",
            100.0 * correct as f64 / truth.len() as f64,
            truth.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
