//! `glora search NAME.glora --data PATH --budget 0.5M`: the evolutionary search for
//! the per-layer config with the best validation accuracy within a budget of
//! adapter parameters. Writes `search.json` and the search-front charts, and stores
//! the chosen config in the supernet's `glora.json`, where `glora export` finds it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::common;
use crate::plot::{ChartText, FrontPoint, search_front};
use crate::search::fitness::{DEFAULT_EVAL_BATCH, Score};
use crate::search::{
    Budget, Progress, SEARCH_FILE, Sampling, SearchSettings, ValidationFitness, check_budget,
    format_param_count, parse_param_count, search, write_search_record,
};
use crate::supernet::Supernet;
use crate::train::prepare::prepare_data;

/// Name of the search-front charts (`.svg` and `.png`).
pub const FRONT_CHART: &str = "search_front";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The supernet directory, trained with `glora train` (it needs its head); the
    /// chosen config is stored in its glora.json.
    pub supernet: PathBuf,
    // The data and carve of training: the search scores configs on the validation
    // split, which only matches training's when every data flag does.
    #[command(flatten)]
    pub data: common::DataFlags,
    /// Most adapter parameters a config may have (the head is not counted): an
    /// integer or a count with a k or M suffix, e.g. 5000, 5k, 0.5M.
    #[arg(long, value_name = "PARAMS", value_parser = parse_param_count)]
    pub budget: usize,
    /// Fewest adapter parameters a config may have (same notation as --budget).
    #[arg(long, value_name = "PARAMS", value_parser = parse_param_count, default_value = "0")]
    pub min_budget: usize,
    /// Genomes (configs) in the initial population and in each generation.
    #[arg(long, default_value_t = 50, value_name = "GENOMES")]
    pub population: usize,
    /// Rounds of mutation and crossover after the initial population.
    #[arg(long, default_value_t = 20, value_name = "ROUNDS")]
    pub generations: usize,
    /// Best genomes of each generation that parents are drawn from.
    #[arg(long, default_value_t = 10, value_name = "GENOMES")]
    pub parents: usize,
    /// Mutated children per generation.
    #[arg(long, default_value_t = 25, value_name = "GENOMES")]
    pub mutations: usize,
    /// Crossover children per generation.
    #[arg(long, default_value_t = 25, value_name = "GENOMES")]
    pub crossovers: usize,
    /// Probability (0–1) that mutation re-draws one term of one layer.
    #[arg(long, default_value_t = 0.2)]
    pub mutation_prob: f64,
    /// Genomes in the ranked archive recorded in search.json.
    #[arg(long, default_value_t = 50, value_name = "GENOMES")]
    pub top_k: usize,
    /// Seed of every random choice of the search.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub device: super::common::DeviceFlags,
    /// Images per validation batch.
    #[arg(long, default_value_t = DEFAULT_EVAL_BATCH, value_name = "IMAGES")]
    pub eval_batch: usize,
    /// Folder for search.json and the charts (default: the supernet directory).
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

impl Args {
    fn settings(&self) -> SearchSettings {
        SearchSettings {
            population: self.population,
            generations: self.generations,
            parents: self.parents,
            mutations: self.mutations,
            crossovers: self.crossovers,
            mutation_prob: self.mutation_prob,
            top_k: self.top_k,
            seed: self.seed,
        }
    }
}

fn describe_sampling(sampling: &Sampling) -> Option<String> {
    match sampling {
        Sampling::Uniform { .. } => None,
        Sampling::Tilted {
            lambda,
            target_params,
            acceptance,
            uniform_acceptance,
        } => Some(format!(
            "uniform random configs meet this budget {:.2}% of the time; drawing options tilted by cost instead (λ = {lambda:.3e}, mean {} parameters, {:.0}% within budget)",
            100.0 * uniform_acceptance,
            format_param_count(target_params.round() as usize),
            100.0 * acceptance
        )),
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let settings = a.settings();
    settings.check()?;
    let sp = common::spinner(format!("loading {}", a.supernet.display()));
    let net = Supernet::load(&a.supernet);
    sp.finish_and_clear();
    let mut net = net?;
    let head_params = match &net.head {
        Some(head) => head.weight.numel() + head.bias.numel(),
        // A language model scores configs with its own head.
        None if net.is_decoder() => 0,
        None => bail!(
            "{} has no classification head; train it first (glora train {} --data ...)",
            a.supernet.display(),
            a.supernet.display()
        ),
    };
    let budget = Budget {
        min: a.min_budget,
        max: a.budget,
    };
    check_budget(&net, budget).with_context(|| a.supernet.display().to_string())?;
    if a.data.val_fraction <= 0.0 {
        bail!("the search scores configs on a validation split; --val-fraction must be above 0");
    }
    let data = prepare_data(&a.data.data, &net, &a.data.plan(net.is_decoder())?)?;
    for w in &data.warnings {
        eprintln!("warning: {w}");
    }
    let val = data.val.with_context(|| {
        format!(
            "{}: no validation split was carved; raise --val-fraction",
            a.data.data.display()
        )
    })?;
    let mut fitness = ValidationFitness::new(&net, &val, a.eval_batch, &a.device.open()?)?;
    let score = fitness.score();
    println!(
        "searching {} ({} layers) within {}..={} adapter parameters; validating on {} samples ({})",
        a.supernet.display(),
        net.layers.len(),
        format_param_count(budget.min),
        format_param_count(budget.max),
        val.n,
        match score {
            Score::Accuracy => format!("{} classes", val.num_classes),
            Score::NegativeLoss => "fitness: the negative loss per target token".to_string(),
        }
    );
    let bar = common::bar(settings.max_evaluations() as u64, "searching");
    let outcome = search(
        &net,
        budget,
        &settings,
        &mut fitness,
        &mut |p: &Progress| {
            bar.set_message(format!("gen {} best {:.4}", p.generation, p.best_accuracy));
            bar.inc(1);
        },
    );
    bar.finish_and_clear();
    let outcome = outcome?;
    if let Some(note) = describe_sampling(&outcome.sampling) {
        println!("{note}");
    }
    let best = outcome
        .best()
        .context("the search evaluated no genome")?
        .clone();
    let best_config = outcome.config_of(&best.genome);

    let out_dir = a.output.clone().unwrap_or_else(|| a.supernet.clone());
    std::fs::create_dir_all(&out_dir).with_context(|| out_dir.display().to_string())?;
    let record = out_dir.join(SEARCH_FILE);
    write_search_record(&record, &outcome, Some(head_params), score)?;
    let points: Vec<FrontPoint> = outcome
        .evaluated
        .iter()
        .map(|e| FrontPoint {
            params: e.params as f64,
            accuracy: e.accuracy,
            generation: e.generation,
        })
        .collect();
    let text = ChartText::new(
        &format!("Search front, budget {}", format_param_count(budget.max)),
        "adapter parameters",
        score.describe(),
    );
    let [svg, png] = search_front(
        &out_dir.join(FRONT_CHART),
        &points,
        Some((best.params as f64, best.accuracy)),
        Some(budget.max as f64),
        &text,
    )?;

    net.config = Some(best_config);
    crate::supernet::artifact::write_manifest(&a.supernet, &net.manifest()?)?;

    let head_note = if head_params > 0 {
        format!("; head {} more", super::compile::group(head_params))
    } else {
        String::new()
    };
    println!(
        "best config: validation {}, {} adapter parameters ({}{head_note}), found in generation {}",
        score.show(best.accuracy),
        super::compile::group(best.params),
        format_param_count(best.params),
        best.generation
    );
    println!(
        "{} genomes evaluated in {:.1} s, {:.3} s per evaluated genome",
        outcome.evaluated.len(),
        outcome.seconds,
        outcome.seconds_per_evaluation()
    );
    println!(
        "wrote {}, {}, {}; stored the config in {}",
        record.display(),
        svg.display(),
        png.display(),
        a.supernet.join(crate::supernet::MANIFEST_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}
