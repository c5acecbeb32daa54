//! `search.json`: what a search did and found, for people, plots and later stages.
//!
//! The record holds the settings, the budget and the supernet's feasible range, how
//! random genomes were drawn, the best config (as the `{"layers": {...}}` object
//! `glora export --config` reads) with its fitness (accuracy, or a language
//! model's negative validation loss, as `fitness` says) and parameters, the ranked
//! top-k archive, every evaluated genome (its per-layer configs in the order of
//! `layers`), per-generation statistics, and the totals. Written atomically.

use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use super::evolution::{Evaluated, SearchOutcome};
use super::fitness::Score;

/// The record's file name inside the output folder.
pub const SEARCH_FILE: &str = "search.json";
/// Bumped when a field changes meaning or goes away.
pub const RECORD_VERSION: u32 = 1;

/// The key a fitness value is written under: `accuracy`, or `fitness` for a
/// language model's negative loss (the `generations` statistics hold it too).
fn fitness_key(score: Score) -> &'static str {
    match score {
        Score::Accuracy => "accuracy",
        Score::NegativeLoss => "fitness",
    }
}

fn evaluated_json(e: &Evaluated, index: usize, score: Score) -> Value {
    let mut v = json!({
        "index": index,
        "generation": e.generation,
        "params": e.params,
        "config": e.genome,
    });
    v[fitness_key(score)] = json!(e.accuracy);
    v
}

/// The JSON record of `outcome`, whose fitness is `score`; `head_params` are the
/// classification head's parameters, reported beside the adapter counts and never
/// part of them.
pub fn search_record(outcome: &SearchOutcome, head_params: Option<usize>, score: Score) -> Value {
    let best = outcome.best().map(|b| {
        let mut v = json!({
            "params": b.params,
            "generation": b.generation,
            "config": outcome.config_of(&b.genome),
        });
        v[fitness_key(score)] = json!(b.accuracy);
        if score == Score::NegativeLoss {
            v["val_loss"] = json!(-b.accuracy);
            v["val_perplexity"] = json!((-b.accuracy).exp());
        }
        v
    });
    let top_k: Vec<Value> = outcome
        .archive
        .iter()
        .enumerate()
        .map(|(rank, &i)| {
            let mut v = evaluated_json(&outcome.evaluated[i], i, score);
            v["rank"] = json!(rank + 1);
            v
        })
        .collect();
    let evaluated: Vec<Value> = outcome
        .evaluated
        .iter()
        .enumerate()
        .map(|(i, e)| evaluated_json(e, i, score))
        .collect();
    json!({
        "format_version": RECORD_VERSION,
        "fitness": score.describe(),
        "settings": outcome.settings,
        "budget": outcome.budget,
        "feasible_range": {"min": outcome.range.min, "max": outcome.range.max},
        "head_params": head_params,
        "sampling": outcome.sampling,
        "layers": outcome.layer_names,
        "best": best,
        "top_k": top_k,
        "generations": outcome.generations,
        "evaluated": evaluated,
        "total_evaluations": outcome.evaluated.len(),
        "seconds": outcome.seconds,
        "seconds_per_evaluation": outcome.seconds_per_evaluation(),
    })
}

/// Writes the record to `path` atomically.
pub fn write_search_record(
    path: &Path,
    outcome: &SearchOutcome,
    head_params: Option<usize>,
    score: Score,
) -> anyhow::Result<()> {
    // Compact: the list of evaluated genomes dominates and would triple in size.
    let bytes = serde_json::to_vec(&search_record(outcome, head_params, score))
        .context("serialising the search record")?;
    crate::io::write_atomic(path, &bytes).with_context(|| path.display().to_string())
}
