//! The search on a tiny ViT supernet with synthetic fitness functions, whose values
//! depend only on the config (or on the order of calls), so that every property is
//! checked against something the search itself did not compute.

use std::collections::HashSet;
use std::time::Instant;

use serde_json::Value;

use super::*;
use crate::glora::{AbOption, COption, DeOption, layer_params};
use crate::search::fitness::Score;
use crate::search::record::search_record;
use crate::search::testing::tiny_supernet;

/// A deterministic score in [0, 1) from the options alone: each term's option has a
/// fixed worth that depends on the layer, so genomes differ in fitness.
fn option_score(config: &ModelConfig) -> f64 {
    let mut total = 0.0;
    let mut terms = 0.0;
    for (layer, (_, c)) in config.iter().enumerate() {
        let worth = [
            match c.a {
                AbOption::Lora(r) => r as f64,
                AbOption::Vector => 1.5,
                AbOption::Constant => 0.5,
                AbOption::None => 0.0,
            },
            match c.b {
                AbOption::Lora(_) => 1.0,
                AbOption::Vector => 2.0,
                AbOption::Constant => 0.25,
                AbOption::None => 0.0,
            },
            match c.c {
                COption::Lora(_) => 0.5,
                COption::Vector => 1.0,
                COption::None => 0.0,
            },
            match c.d {
                DeOption::Vector => 1.0,
                DeOption::Constant => 0.5,
                DeOption::None => 0.0,
            },
            match c.e {
                DeOption::Vector => 0.75,
                DeOption::Constant => 1.0,
                DeOption::None => 0.0,
            },
        ];
        for (slot, w) in worth.iter().enumerate() {
            // Layers weigh the terms differently, so no layer is like another.
            total += w * (1.0 + ((layer * 5 + slot) % 7) as f64) / 7.0;
            terms += 2.0;
        }
    }
    total / terms
}

/// Records every config it is asked about.
struct Recorder<F: FnMut(&ModelConfig, usize) -> f64> {
    score: F,
    seen: Vec<ModelConfig>,
}

impl<F: FnMut(&ModelConfig, usize) -> f64> Recorder<F> {
    fn new(score: F) -> Self {
        Recorder {
            score,
            seen: Vec::new(),
        }
    }
}

impl<F: FnMut(&ModelConfig, usize) -> f64> Fitness for Recorder<F> {
    fn evaluate(&mut self, config: &ModelConfig) -> anyhow::Result<f64> {
        let s = (self.score)(config, self.seen.len());
        self.seen.push(config.clone());
        Ok(s)
    }
}

fn small_settings(seed: u64) -> SearchSettings {
    SearchSettings {
        population: 12,
        generations: 4,
        parents: 4,
        mutations: 6,
        crossovers: 6,
        mutation_prob: 0.2,
        top_k: 10,
        seed,
    }
}

/// Adapter parameters counted directly from the layer shapes and the options.
fn counted_params(net: &Supernet, genome: &Genome) -> usize {
    net.layers
        .iter()
        .zip(genome)
        .map(|(l, c)| layer_params(l.shape, c))
        .sum()
}

fn run_search(budget: Budget, settings: &SearchSettings) -> (SearchOutcome, Vec<ModelConfig>) {
    let net = tiny_supernet();
    let mut fitness = Recorder::new(|c: &ModelConfig, _| option_score(c));
    let outcome = search(net, budget, settings, &mut fitness, &mut |_| {}).unwrap();
    (outcome, fitness.seen)
}

/// The record without its wall-clock fields, which no seed can fix.
fn timeless(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("seconds");
        o.remove("seconds_per_evaluation");
    }
    if let Some(gens) = v["generations"].as_array_mut() {
        for g in gens {
            if let Some(o) = g.as_object_mut() {
                o.remove("seconds");
            }
        }
    }
    v
}

#[test]
fn defaults_are_the_reference_settings() {
    let s = SearchSettings::default();
    assert_eq!(
        (
            s.population,
            s.generations,
            s.parents,
            s.mutations,
            s.crossovers
        ),
        (50, 20, 10, 25, 25)
    );
    assert_eq!((s.mutation_prob, s.top_k, s.seed), (0.2, 50, 1));
    assert_eq!(s.max_evaluations(), 50 + 20 * 50);
}

#[test]
fn every_evaluated_genome_is_within_budget() {
    let net = tiny_supernet();
    let max = (0.8 * uniform_mean_params(net)) as usize;
    let min = max / 4;
    let budget = Budget { min, max };
    let (outcome, seen) = run_search(budget, &small_settings(1));
    assert!(!outcome.evaluated.is_empty());
    for e in &outcome.evaluated {
        let counted = counted_params(net, &e.genome);
        assert_eq!(e.params, counted);
        assert!(
            (min..=max).contains(&counted),
            "{counted} outside {min}..={max}"
        );
    }
    for config in &seen {
        let params = net.config_params(config).unwrap();
        assert!((min..=max).contains(&params));
    }
    for &i in &outcome.archive {
        assert!(outcome.evaluated[i].params <= max);
    }
    let best = outcome.best().unwrap();
    assert!(best.params <= max);
}

#[test]
fn no_genome_is_evaluated_twice() {
    let budget = Budget::at_most(usize::MAX);
    let (outcome, seen) = run_search(budget, &small_settings(2));
    assert_eq!(seen.len(), outcome.evaluated.len());
    let distinct: HashSet<String> = seen.iter().map(|c| c.to_json()).collect();
    assert_eq!(distinct.len(), seen.len(), "a config was evaluated twice");
    // The fitness saw exactly the recorded genomes, in order.
    for (config, e) in seen.iter().zip(&outcome.evaluated) {
        assert_eq!(config, &outcome.config_of(&e.genome));
        assert_eq!(option_score(config), e.accuracy);
    }
}

#[test]
fn the_same_seed_gives_the_same_record_and_another_seed_does_not() {
    let net = tiny_supernet();
    let budget = Budget::at_most(uniform_mean_params(net) as usize);
    let (a, _) = run_search(budget, &small_settings(7));
    let (b, _) = run_search(budget, &small_settings(7));
    let (c, _) = run_search(budget, &small_settings(8));
    let ra = timeless(search_record(&a, None, Score::Accuracy));
    let rb = timeless(search_record(&b, None, Score::Accuracy));
    let rc = timeless(search_record(&c, None, Score::Accuracy));
    assert_eq!(
        serde_json::to_string(&ra).unwrap(),
        serde_json::to_string(&rb).unwrap()
    );
    assert_ne!(ra["evaluated"], rc["evaluated"]);
}

#[test]
fn the_last_generation_is_ranked() {
    // Each new genome scores above every earlier one, so the archive must hold the
    // last `top_k` genomes evaluated, which belong to the last generation.
    let net = tiny_supernet();
    let settings = small_settings(3);
    let mut fitness = Recorder::new(|_: &ModelConfig, n| n as f64);
    let outcome = search(
        net,
        Budget::at_most(usize::MAX),
        &settings,
        &mut fitness,
        &mut |_| {},
    )
    .unwrap();
    let n = outcome.evaluated.len();
    let expected: Vec<usize> = (n - settings.top_k..n).rev().collect();
    assert_eq!(outcome.archive, expected);
    let best = outcome.best().unwrap();
    assert_eq!(best.generation, settings.generations);
    assert_eq!(best.accuracy, (n - 1) as f64);
}

#[test]
fn the_archive_ranks_everything_evaluated() {
    let net = tiny_supernet();
    let (outcome, _) = run_search(
        Budget::at_most(uniform_mean_params(net) as usize),
        &small_settings(4),
    );
    // Stable sort of all genomes by accuracy, ties in evaluation order.
    let mut all: Vec<usize> = (0..outcome.evaluated.len()).collect();
    all.sort_by(|&x, &y| {
        outcome.evaluated[y]
            .accuracy
            .partial_cmp(&outcome.evaluated[x].accuracy)
            .unwrap()
    });
    all.truncate(outcome.settings.top_k);
    assert_eq!(outcome.archive, all);
}

#[test]
fn generation_statistics_add_up() {
    let settings = small_settings(5);
    let (outcome, _) = run_search(Budget::at_most(usize::MAX), &settings);
    let stats = &outcome.generations;
    assert_eq!(stats.len(), settings.generations + 1);
    assert_eq!(stats[0].evaluated, settings.population);
    let total: usize = stats.iter().map(|g| g.evaluated).sum();
    assert_eq!(total, outcome.evaluated.len());
    assert!(total <= settings.max_evaluations());
    for g in stats {
        let members: Vec<f64> = outcome
            .evaluated
            .iter()
            .filter(|e| e.generation == g.generation)
            .map(|e| e.accuracy)
            .collect();
        let max = members.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = members.iter().copied().fold(f64::INFINITY, f64::min);
        assert_eq!(g.best_accuracy, Some(max));
        assert_eq!(g.min_accuracy, Some(min));
        let mean = members.iter().sum::<f64>() / members.len() as f64;
        assert!((g.mean_accuracy.unwrap() - mean).abs() < 1e-12);
    }
    // The archive is elitist: its best never falls.
    for pair in stats.windows(2) {
        assert!(pair[1].archive_best_accuracy >= pair[0].archive_best_accuracy);
    }
    let calls = std::cell::Cell::new(0usize);
    let net = tiny_supernet();
    let mut fitness = Recorder::new(|c: &ModelConfig, _| option_score(c));
    search(
        net,
        Budget::at_most(usize::MAX),
        &settings,
        &mut fitness,
        &mut |p| {
            calls.set(calls.get() + 1);
            assert_eq!(p.evaluated, calls.get());
        },
    )
    .unwrap();
    assert_eq!(
        calls.get(),
        total,
        "one progress report per evaluated genome"
    );
}

#[test]
fn an_infeasible_budget_fails_at_once_naming_the_range() {
    let net = tiny_supernet();
    let range = net.param_counts().configs;
    let settings = SearchSettings::default();
    for budget in [
        Budget {
            min: range.max + 1,
            max: usize::MAX,
        },
        Budget { min: 10, max: 5 },
    ] {
        let started = Instant::now();
        let mut fitness = Recorder::new(|_: &ModelConfig, _| 0.5);
        let err = search(net, budget, &settings, &mut fitness, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(started.elapsed().as_secs_f64() < 1.0);
        assert!(fitness.seen.is_empty(), "evaluated before failing");
        if budget.min > budget.max {
            assert!(err.contains("above the budget"), "{err}");
        } else {
            assert!(
                err.contains(&format!("{}..={}", range.min, range.max)),
                "{err}"
            );
            assert!(err.contains("largest config"), "{err}");
        }
    }
}

#[test]
fn a_budget_only_the_empty_config_meets_fails_before_evaluating() {
    // Budget 0 admits one genome (every term `none`): the population of 50 cannot
    // be filled, and the error says why and what would work.
    let net = tiny_supernet();
    let mut fitness = Recorder::new(|_: &ModelConfig, _| 0.5);
    let started = Instant::now();
    let err = search(
        net,
        Budget::at_most(0),
        &SearchSettings::default(),
        &mut fitness,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(started.elapsed().as_secs_f64() < 1.0);
    let range = net.param_counts().configs;
    assert!(
        err.contains(&format!("{}..={}", range.min, range.max)),
        "{err}"
    );
    assert!(err.contains("--budget"), "{err}");
    assert!(fitness.seen.len() <= 1, "{}", fitness.seen.len());
}

#[test]
fn a_tight_but_feasible_budget_still_finds_legal_genomes() {
    let net = tiny_supernet();
    let space_shapes: Vec<_> = net.layers.iter().map(|l| l.shape).collect();
    let budget = Budget::at_most((0.06 * uniform_mean_params(net)) as usize);
    // Uniform draws almost never fit this budget.
    let uniform = OptionSampler::uniform(&net.space, &space_shapes);
    assert!(uniform.acceptance(0, budget.max, 2000, 11) < 0.05);
    let settings = small_settings(6);
    let (outcome, _) = run_search(budget, &settings);
    assert!(matches!(outcome.sampling, Sampling::Tilted { lambda, .. } if lambda > 0.0));
    assert_eq!(outcome.generations[0].evaluated, settings.population);
    assert!(outcome.evaluated.iter().all(|e| e.params <= budget.max));
    assert!(outcome.best().is_some());
}

#[test]
fn bad_settings_are_rejected() {
    let net = tiny_supernet();
    let budget = Budget::at_most(usize::MAX);
    for s in [
        SearchSettings {
            population: 0,
            ..SearchSettings::default()
        },
        SearchSettings {
            mutation_prob: 1.5,
            ..SearchSettings::default()
        },
        SearchSettings {
            parents: 0,
            ..SearchSettings::default()
        },
    ] {
        let mut fitness = Recorder::new(|_: &ModelConfig, _| 0.5);
        assert!(search(net, budget, &s, &mut fitness, &mut |_| {}).is_err());
    }
}

#[test]
fn a_failing_fitness_stops_the_search_with_its_error() {
    struct Broken;
    impl Fitness for Broken {
        fn evaluate(&mut self, _: &ModelConfig) -> anyhow::Result<f64> {
            anyhow::bail!("validation data went away")
        }
    }
    let net = tiny_supernet();
    let err = search(
        net,
        Budget::at_most(usize::MAX),
        &small_settings(1),
        &mut Broken,
        &mut |_| {},
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("validation data went away") && msg.contains("genome 0"),
        "{msg}"
    );
}

/// Fails with an error after `limit` calls, as a search killed part-way stops.
struct StopsAfter<F> {
    inner: F,
    limit: usize,
    calls: usize,
}

impl<F: Fitness> Fitness for StopsAfter<F> {
    fn evaluate(&mut self, config: &ModelConfig) -> anyhow::Result<f64> {
        if self.calls == self.limit {
            anyhow::bail!("stopped");
        }
        self.calls += 1;
        self.inner.evaluate(config)
    }
}

#[test]
fn a_search_stopped_part_way_continues_from_its_journal() {
    use crate::search::journal::JournaledFitness;
    let net = tiny_supernet();
    let settings = small_settings(11);
    let budget = Budget::at_most(usize::MAX);
    let (straight, straight_seen) = run_search(budget, &settings);
    assert!(straight_seen.len() > 20);

    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("evaluations.jsonl");
    let first = StopsAfter {
        inner: Recorder::new(|c: &ModelConfig, _| option_score(c)),
        limit: 17,
        calls: 0,
    };
    let mut fitness = JournaledFitness::open(&journal, first).unwrap();
    assert!(search(net, budget, &settings, &mut fitness, &mut |_| {}).is_err());
    // A kill can cut the last line short; the journal drops it on opening.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"config_sha256\": \"ab").unwrap();
    drop(f);

    let second = Recorder::new(|c: &ModelConfig, _| option_score(c));
    let mut fitness = JournaledFitness::open(&journal, second).unwrap();
    let resumed = search(net, budget, &settings, &mut fitness, &mut |_| {}).unwrap();
    assert_eq!(fitness.replayed(), 17);
    let rec = |o: &SearchOutcome| timeless(search_record(o, None, Score::Accuracy));
    assert_eq!(rec(&resumed), rec(&straight));
    // Only the genomes the first run had not scored were evaluated again.
    drop(fitness);
    let lines = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(lines.lines().count(), straight_seen.len());
    assert!(lines.ends_with('\n'));
}
