//! The evolutionary search over genomes (one [`LayerConfig`] per adapted layer, in
//! layer order), after the reference (glora-spec §5):
//!
//! 1. Draw random genomes until `population` legal ones have been evaluated
//!    (generation 0).
//! 2. For each generation g = 1..=`generations`: merge the previous generation into
//!    the elitist archive (sorted by fitness, best first, ties keep the older
//!    genome first); take its top `parents` as parents; make up to `mutations`
//!    children by copying a random parent and re-drawing each gene (one term of one
//!    layer) with probability `mutation_prob`, and up to `crossovers` children by
//!    taking each gene from one of two random parents with probability ½, each
//!    with at most ten attempts per child wanted; top up with random genomes to
//!    `population`.
//! 3. Merge the last generation too, and answer the archive's first entry.
//!
//! A genome is legal when its adapter parameters ([`Supernet::config_params`], head
//! not counted) lie in `budget.min..=budget.max` and it has not been evaluated
//! before; only legal genomes are evaluated, each exactly once. Where we depart from
//! the reference: fitness is whatever [`Fitness`] answers (validation accuracy in
//! practice); the last generation's children are ranked (the reference evaluates
//! but never merges them); random draws stop after [`DRAWS_PER_GENOME`] attempts per
//! genome wanted, with an error naming the feasible range when the initial
//! population cannot be filled; a budget no config meets fails before anything is
//! evaluated; and a feasible budget that uniform draws rarely meet is sampled with a
//! cost tilt ([`super::sampler`]). Everything random comes from one `StdRng` seeded
//! with `settings.seed`, so a seed fixes the whole run.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::sampler::{OptionSampler, Sampling, UNIFORM_MIN_ACCEPTANCE};
use super::{Fitness, format_param_count};
use crate::glora::{LayerConfig, ModelConfig, ParamRange, Slot, layer_param_mean};
use crate::supernet::Supernet;

/// One config per adapted layer, in layer order.
pub type Genome = Vec<LayerConfig>;

/// Random draws allowed per genome a random fill wants.
pub const DRAWS_PER_GENOME: usize = 100;
/// Attempts allowed per child that mutation or crossover wants (the reference's).
pub const ATTEMPTS_PER_CHILD: usize = 10;

/// Settings of a search; the defaults are the reference's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchSettings {
    /// Genomes in the initial population, and the size each generation is topped
    /// up to.
    pub population: usize,
    /// Rounds of mutation and crossover after the initial population.
    pub generations: usize,
    /// Best genomes of the archive that parents are drawn from.
    pub parents: usize,
    /// Mutated children wanted per generation.
    pub mutations: usize,
    /// Crossover children wanted per generation.
    pub crossovers: usize,
    /// Probability that mutation re-draws a gene.
    pub mutation_prob: f64,
    /// Size of the ranked archive that is reported.
    pub top_k: usize,
    pub seed: u64,
}

impl Default for SearchSettings {
    fn default() -> SearchSettings {
        SearchSettings {
            population: 50,
            generations: 20,
            parents: 10,
            mutations: 25,
            crossovers: 25,
            mutation_prob: 0.2,
            top_k: 50,
            seed: 1,
        }
    }
}

impl SearchSettings {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.population == 0 {
            bail!("the population must be at least 1");
        }
        if self.parents == 0 {
            bail!("the number of parents must be at least 1");
        }
        if self.top_k == 0 {
            bail!("the archive size (top-k) must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.mutation_prob) {
            bail!(
                "the mutation probability must lie in [0, 1], not {}",
                self.mutation_prob
            );
        }
        Ok(())
    }

    /// The most genomes a search with these settings evaluates.
    pub fn max_evaluations(&self) -> usize {
        let per_generation = self.population.max(self.mutations + self.crossovers);
        self.population + self.generations * per_generation
    }
}

/// The legal window of adapter parameters, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub min: usize,
    pub max: usize,
}

impl Budget {
    pub fn at_most(max: usize) -> Budget {
        Budget { min: 0, max }
    }

    pub fn contains(&self, params: usize) -> bool {
        (self.min..=self.max).contains(&params)
    }
}

/// One evaluated genome.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluated {
    pub genome: Genome,
    pub accuracy: f64,
    /// Adapter parameters (the head not counted).
    pub params: usize,
    /// 0 for the initial population, g for the children of round g.
    pub generation: usize,
}

/// What one generation evaluated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GenerationStats {
    pub generation: usize,
    pub evaluated: usize,
    /// Over this generation's genomes; `None` when it evaluated none.
    pub best_accuracy: Option<f64>,
    pub mean_accuracy: Option<f64>,
    pub min_accuracy: Option<f64>,
    /// Parameters of this generation's best genome.
    pub best_params: Option<usize>,
    /// The archive's best after this generation was merged.
    pub archive_best_accuracy: f64,
    /// Wall time spent making and evaluating this generation.
    pub seconds: f64,
}

/// Reported after every evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Genomes evaluated so far, this one included.
    pub evaluated: usize,
    pub generation: usize,
    pub accuracy: f64,
    pub params: usize,
    /// The best accuracy evaluated so far.
    pub best_accuracy: f64,
}

/// A finished search.
#[derive(Clone, Debug)]
pub struct SearchOutcome {
    pub layer_names: Vec<String>,
    pub settings: SearchSettings,
    pub budget: Budget,
    /// The smallest and largest adapter parameters any config of the supernet has.
    pub range: ParamRange,
    pub sampling: Sampling,
    /// Every evaluated genome, in evaluation order.
    pub evaluated: Vec<Evaluated>,
    /// The ranked archive after the last merge, best first: indices into
    /// `evaluated`, at most `settings.top_k`.
    pub archive: Vec<usize>,
    pub generations: Vec<GenerationStats>,
    pub seconds: f64,
}

impl SearchOutcome {
    /// The archive's first entry.
    pub fn best(&self) -> Option<&Evaluated> {
        self.archive.first().map(|&i| &self.evaluated[i])
    }

    /// A genome as the config that names its layers.
    pub fn config_of(&self, genome: &Genome) -> ModelConfig {
        genome_config(&self.layer_names, genome)
    }

    pub fn best_config(&self) -> Option<ModelConfig> {
        self.best().map(|e| self.config_of(&e.genome))
    }

    pub fn seconds_per_evaluation(&self) -> f64 {
        self.seconds / self.evaluated.len().max(1) as f64
    }
}

fn genome_config(names: &[String], genome: &Genome) -> ModelConfig {
    names.iter().cloned().zip(genome.iter().copied()).collect()
}

/// `n` adapter parameters, with a short form beside large counts.
fn show(n: usize) -> String {
    if n < 1000 {
        n.to_string()
    } else {
        format!("{n} ({})", format_param_count(n))
    }
}

/// The mean adapter parameters of a config drawn uniformly from `net`'s space.
pub fn uniform_mean_params(net: &Supernet) -> f64 {
    net.layers
        .iter()
        .map(|l| layer_param_mean(&net.space, l.shape))
        .sum()
}

/// Fails when no config of `net` fits `budget`, naming the feasible range. Cheap:
/// it counts, and evaluates nothing.
pub fn check_budget(net: &Supernet, budget: Budget) -> anyhow::Result<()> {
    let range = net.param_counts().configs;
    let feasible = format!(
        "the feasible range of this supernet is {}..={} adapter parameters, and a uniformly random config has {} on average",
        show(range.min),
        show(range.max),
        show(uniform_mean_params(net).round() as usize)
    );
    if budget.max < range.min {
        bail!(
            "budget {} is below the smallest config ({}); {feasible}",
            show(budget.max),
            show(range.min)
        );
    }
    if budget.min > range.max {
        bail!(
            "minimum budget {} is above the largest config ({}); {feasible}",
            show(budget.min),
            show(range.max)
        );
    }
    if budget.min > budget.max {
        bail!(
            "the minimum budget {} is above the budget {}",
            show(budget.min),
            show(budget.max)
        );
    }
    Ok(())
}

/// The state of a running search.
struct Run<'a> {
    net: &'a Supernet,
    names: Vec<String>,
    settings: &'a SearchSettings,
    budget: Budget,
    sampler: OptionSampler,
    rng: StdRng,
    fitness: &'a mut dyn Fitness,
    progress: &'a mut dyn FnMut(&Progress),
    /// Membership only; never iterated, so its order cannot reach the results.
    visited: HashSet<Genome>,
    evaluated: Vec<Evaluated>,
    archive: Vec<usize>,
    archive_size: usize,
    best_accuracy: f64,
}

impl Run<'_> {
    /// Evaluates `genome` if it is legal; returns its index in `evaluated`.
    fn try_evaluate(&mut self, genome: Genome, generation: usize) -> anyhow::Result<Option<usize>> {
        if self.visited.contains(&genome) {
            return Ok(None);
        }
        let config = genome_config(&self.names, &genome);
        let params = self.net.config_params(&config)?;
        if !self.budget.contains(params) {
            return Ok(None);
        }
        let index = self.evaluated.len();
        let accuracy = self
            .fitness
            .evaluate(&config)
            .with_context(|| format!("evaluating genome {index} (generation {generation})"))?;
        if !accuracy.is_finite() {
            bail!("genome {index} (generation {generation}) scored {accuracy}");
        }
        self.visited.insert(genome.clone());
        self.evaluated.push(Evaluated {
            genome,
            accuracy,
            params,
            generation,
        });
        self.best_accuracy = self.best_accuracy.max(accuracy);
        (self.progress)(&Progress {
            evaluated: index + 1,
            generation,
            accuracy,
            params,
            best_accuracy: self.best_accuracy,
        });
        Ok(Some(index))
    }

    /// Evaluates up to `wanted` new random legal genomes within `wanted ×`
    /// [`DRAWS_PER_GENOME`] draws.
    fn random_fill(&mut self, wanted: usize, generation: usize) -> anyhow::Result<Vec<usize>> {
        let mut added = Vec::with_capacity(wanted);
        let mut draws = 0;
        while added.len() < wanted && draws < wanted * DRAWS_PER_GENOME {
            draws += 1;
            let genome = self.sampler.genome(&mut self.rng);
            if let Some(i) = self.try_evaluate(genome, generation)? {
                added.push(i);
            }
        }
        Ok(added)
    }

    fn random_parent(&mut self, parents: &[usize]) -> Genome {
        let pick = parents[self.rng.random_range(0..parents.len())];
        self.evaluated[pick].genome.clone()
    }

    fn mutation(&mut self, parents: &[usize], generation: usize) -> anyhow::Result<Vec<usize>> {
        let wanted = self.settings.mutations;
        let mut children = Vec::with_capacity(wanted);
        for _ in 0..wanted * ATTEMPTS_PER_CHILD {
            if children.len() >= wanted {
                break;
            }
            let mut child = self.random_parent(parents);
            for layer in 0..child.len() {
                for slot in Slot::ALL {
                    if self.rng.random_bool(self.settings.mutation_prob) {
                        self.sampler.redraw(&mut child, layer, slot, &mut self.rng);
                    }
                }
            }
            if let Some(i) = self.try_evaluate(child, generation)? {
                children.push(i);
            }
        }
        Ok(children)
    }

    fn crossover(&mut self, parents: &[usize], generation: usize) -> anyhow::Result<Vec<usize>> {
        let wanted = self.settings.crossovers;
        let mut children = Vec::with_capacity(wanted);
        for _ in 0..wanted * ATTEMPTS_PER_CHILD {
            if children.len() >= wanted {
                break;
            }
            // The two parents may be the same genome, as in the reference; the child
            // then repeats it and is rejected as visited.
            let first = self.random_parent(parents);
            let second = self.random_parent(parents);
            let child: Genome = first
                .iter()
                .zip(&second)
                .map(|(a, b)| self.cross_layer(a, b))
                .collect();
            if let Some(i) = self.try_evaluate(child, generation)? {
                children.push(i);
            }
        }
        Ok(children)
    }

    /// Each of the five terms from `a` or `b` with probability ½.
    fn cross_layer(&mut self, a: &LayerConfig, b: &LayerConfig) -> LayerConfig {
        let mut pick = || self.rng.random_bool(0.5);
        LayerConfig {
            a: if pick() { a.a } else { b.a },
            b: if pick() { a.b } else { b.b },
            c: if pick() { a.c } else { b.c },
            d: if pick() { a.d } else { b.d },
            e: if pick() { a.e } else { b.e },
        }
    }

    /// Adds `candidates` to the archive: the old entries first, then the new ones,
    /// sorted by accuracy with a stable sort, truncated.
    fn merge(&mut self, candidates: &[usize]) {
        self.archive.extend_from_slice(candidates);
        let evaluated = &self.evaluated;
        self.archive
            .sort_by(|&x, &y| evaluated[y].accuracy.total_cmp(&evaluated[x].accuracy));
        self.archive.truncate(self.archive_size);
    }

    fn archive_best(&self) -> f64 {
        self.archive
            .first()
            .map_or(f64::NEG_INFINITY, |&i| self.evaluated[i].accuracy)
    }

    /// The error when the initial population cannot be filled.
    fn population_error(
        &self,
        found: usize,
        range: ParamRange,
        uniform_mean: f64,
    ) -> anyhow::Error {
        let wanted = self.settings.population;
        let acceptance = self.sampler.sampling().acceptance();
        let why = if acceptance >= UNIFORM_MIN_ACCEPTANCE {
            "the budget admits too few distinct configs".to_string()
        } else {
            format!("random draws met it {:.2}% of the time", 100.0 * acceptance)
        };
        let advice = if budget_is_high(self.budget, uniform_mean) {
            let lower = (uniform_mean * 0.8).round() as usize;
            format!(
                "try a lower --min-budget (e.g. {})",
                format_param_count(lower)
            )
        } else {
            let higher = ((uniform_mean * 1.2).round() as usize).clamp(range.min, range.max);
            format!("try --budget {}", format_param_count(higher))
        };
        anyhow::anyhow!(
            "only {found} of {wanted} legal genomes after {} random draws within budget {}..={} adapter parameters ({why}); the feasible range of this supernet is {}..={} and a uniformly random config has {} on average; {advice} or a smaller --population",
            wanted * DRAWS_PER_GENOME,
            show(self.budget.min),
            show(self.budget.max),
            show(range.min),
            show(range.max),
            show(uniform_mean.round() as usize),
        )
    }
}

/// Whether the window sits above what uniform draws cost, so that its minimum is
/// what keeps genomes out.
fn budget_is_high(budget: Budget, uniform_mean: f64) -> bool {
    budget.min as f64 > uniform_mean
}

/// Runs the search on `net` within `budget`, scoring genomes with `fitness` and
/// reporting each evaluation to `progress`.
pub fn search(
    net: &Supernet,
    budget: Budget,
    settings: &SearchSettings,
    fitness: &mut dyn Fitness,
    progress: &mut dyn FnMut(&Progress),
) -> anyhow::Result<SearchOutcome> {
    settings.check()?;
    if net.layers.is_empty() {
        bail!("the supernet has no adapted layers to search over");
    }
    check_budget(net, budget)?;
    let shapes: Vec<_> = net.layers.iter().map(|l| l.shape).collect();
    let range = net.param_counts().configs;
    let uniform_mean = uniform_mean_params(net);
    let started = Instant::now();
    let lo = budget.min.max(range.min);
    let hi = budget.max.min(range.max);
    let probe_seed = settings.seed ^ 0x5EA5_C4ED_5A3B_1E5D;
    let sampler = OptionSampler::for_budget(&net.space, &shapes, lo, hi, probe_seed);
    let mut run = Run {
        net,
        names: net.layer_names().iter().map(|s| s.to_string()).collect(),
        settings,
        budget,
        sampler,
        rng: StdRng::seed_from_u64(settings.seed),
        fitness,
        progress,
        visited: HashSet::new(),
        evaluated: Vec::new(),
        archive: Vec::new(),
        archive_size: settings.top_k.max(settings.parents),
        best_accuracy: f64::NEG_INFINITY,
    };
    if run.sampler.sampling().acceptance() == 0.0 {
        // Not one probe draw fitted: filling the population would fail after many
        // evaluations, so fail before the first.
        return Err(run.population_error(0, range, uniform_mean));
    }

    let mut seconds = Vec::with_capacity(settings.generations + 1);
    let mut archive_best = Vec::with_capacity(settings.generations + 1);
    let t0 = Instant::now();
    let mut candidates = run.random_fill(settings.population, 0)?;
    if candidates.len() < settings.population {
        return Err(run.population_error(candidates.len(), range, uniform_mean));
    }
    seconds.push(t0.elapsed().as_secs_f64());
    for generation in 1..=settings.generations {
        run.merge(&candidates);
        archive_best.push(run.archive_best());
        let t = Instant::now();
        let parents: Vec<usize> = run.archive.iter().take(settings.parents).copied().collect();
        candidates = run.mutation(&parents, generation)?;
        candidates.extend(run.crossover(&parents, generation)?);
        let missing = settings.population.saturating_sub(candidates.len());
        candidates.extend(run.random_fill(missing, generation)?);
        seconds.push(t.elapsed().as_secs_f64());
    }
    run.merge(&candidates);
    archive_best.push(run.archive_best());

    let generations = generation_stats(&run.evaluated, &seconds, &archive_best);
    let mut archive = run.archive;
    archive.truncate(settings.top_k);
    Ok(SearchOutcome {
        layer_names: run.names,
        settings: settings.clone(),
        budget,
        range,
        sampling: run.sampler.sampling().clone(),
        evaluated: run.evaluated,
        archive,
        generations,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn generation_stats(
    evaluated: &[Evaluated],
    seconds: &[f64],
    archive_best: &[f64],
) -> Vec<GenerationStats> {
    seconds
        .iter()
        .zip(archive_best)
        .enumerate()
        .map(|(generation, (&seconds, &archive_best_accuracy))| {
            let members: Vec<&Evaluated> = evaluated
                .iter()
                .filter(|e| e.generation == generation)
                .collect();
            let best = members
                .iter()
                .copied()
                .reduce(|a, b| if b.accuracy > a.accuracy { b } else { a });
            let n = members.len();
            let mean = (n > 0).then(|| members.iter().map(|e| e.accuracy).sum::<f64>() / n as f64);
            let min = members.iter().map(|e| e.accuracy).reduce(f64::min);
            GenerationStats {
                generation,
                evaluated: n,
                best_accuracy: best.map(|e| e.accuracy),
                mean_accuracy: mean,
                min_accuracy: min,
                best_params: best.map(|e| e.params),
                archive_best_accuracy,
                seconds,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
