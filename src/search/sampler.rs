//! Random genomes for the search, and random re-draws of single genes.
//!
//! The reference draws every gene (one term of one layer) uniformly from its option
//! list, and so does [`OptionSampler::uniform`]. That fails when the budget is
//! feasible but far from what uniform draws cost: a budget well below the mean of a
//! uniformly random config (or a minimum well above it) lets almost no draw through,
//! and the reference would loop for ever.
//!
//! [`OptionSampler::for_budget`] first measures, on a few thousand draws that are
//! only counted and never evaluated, the share of uniform draws inside the budget
//! window. When at least [`UNIFORM_MIN_ACCEPTANCE`] of them fit, it samples
//! uniformly, as the reference does. Otherwise it *tilts* every gene's distribution
//! by its parameter cost: option `o` of a gene is drawn with probability
//! proportional to `exp(-λ · params(o))`. One λ serves every gene; λ > 0 favours
//! cheaper options, λ < 0 dearer ones, λ = 0 is uniform. Genes are independent, so
//! a genome's expected count is the sum of the genes' expected counts, which falls
//! monotonically as λ grows; λ is found by bisection so that this expectation hits a
//! target inside the window (three-quarters of the way up first, then halfway, then
//! a quarter), and the first target whose draws land in the window often enough
//! ([`TILTED_GOOD_ACCEPTANCE`]) is kept. The tilted sampler serves both the initial
//! population and the genes that mutation re-draws, so children stay near the
//! window too. What was chosen is recorded as [`Sampling`].

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use serde::Serialize;

use super::evolution::Genome;
use crate::glora::{
    AbOption, COption, DeOption, LayerConfig, LayerShape, SearchSpace, Slot, ab_params, c_params,
    d_params, e_params, layer_params,
};

/// Uniform sampling is kept when at least this share of its draws meets the budget.
pub const UNIFORM_MIN_ACCEPTANCE: f64 = 0.05;
/// A tilted sampler whose draws meet the budget this often is taken at once.
pub const TILTED_GOOD_ACCEPTANCE: f64 = 0.25;
/// Draws used to measure a sampler's acceptance (counted, never evaluated).
pub const PROBE_DRAWS: usize = 2000;
/// Where, between the window's bounds, a tilted sampler's mean is aimed, in the order
/// tried: near the top first, since more parameters usually buy accuracy.
const TARGET_FRACTIONS: [f64; 3] = [0.75, 0.5, 0.25];
/// Bisection bounds of λ. A unit cost difference already weighs `e^-40` at the
/// bound, so every gene is then at its cheapest (or dearest) option.
const LAMBDA_LIMIT: f64 = 40.0;
const BISECTION_STEPS: usize = 200;

/// How random genomes were drawn, as `search.json` records it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sampling {
    /// Every gene uniform over its options (the reference).
    Uniform {
        /// Share of probe draws inside the budget window (1 when not measured).
        acceptance: f64,
    },
    /// Option `o` drawn with probability ∝ `exp(-lambda · params(o))`.
    Tilted {
        lambda: f64,
        /// Expected adapter parameters of a drawn genome.
        target_params: f64,
        acceptance: f64,
        /// What uniform draws would have reached.
        uniform_acceptance: f64,
    },
}

impl Sampling {
    pub fn acceptance(&self) -> f64 {
        match self {
            Sampling::Uniform { acceptance } | Sampling::Tilted { acceptance, .. } => *acceptance,
        }
    }
}

/// The option lists of the five terms, indexable.
#[derive(Clone, Debug)]
struct SlotOptions {
    ab: Vec<AbOption>,
    c: Vec<COption>,
    de: Vec<DeOption>,
}

impl SlotOptions {
    fn new(space: &SearchSpace) -> SlotOptions {
        SlotOptions {
            ab: space.ab_options(),
            c: space.c_options(),
            de: space.de_options(),
        }
    }

    fn count(&self, slot: Slot) -> usize {
        match slot {
            Slot::A | Slot::B => self.ab.len(),
            Slot::C => self.c.len(),
            Slot::D | Slot::E => self.de.len(),
        }
    }

    fn set(&self, config: &mut LayerConfig, slot: Slot, index: usize) {
        match slot {
            Slot::A => config.a = self.ab[index],
            Slot::B => config.b = self.ab[index],
            Slot::C => config.c = self.c[index],
            Slot::D => config.d = self.de[index],
            Slot::E => config.e = self.de[index],
        }
    }

    fn cost(&self, shape: LayerShape, slot: Slot, index: usize) -> usize {
        match slot {
            Slot::A | Slot::B => ab_params(shape, self.ab[index]),
            Slot::C => c_params(shape, self.c[index]),
            Slot::D => d_params(shape, self.de[index]),
            Slot::E => e_params(shape, self.de[index]),
        }
    }
}

/// The probabilities of one gene's options under tilt `lambda`.
fn tilted_probabilities(costs: &[usize], lambda: f64) -> Vec<f64> {
    // Measuring from the option the tilt favours keeps every exponent ≤ 0.
    let reference = if lambda >= 0.0 {
        costs.iter().copied().min()
    } else {
        costs.iter().copied().max()
    }
    .unwrap_or(0) as f64;
    let weights: Vec<f64> = costs
        .iter()
        .map(|&c| (-lambda * (c as f64 - reference)).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    weights.iter().map(|w| w / total).collect()
}

fn cumulative(probabilities: &[f64]) -> Vec<f64> {
    let mut acc = 0.0;
    probabilities
        .iter()
        .map(|p| {
            acc += p;
            acc
        })
        .collect()
}

/// Draws genomes and genes, uniformly or tilted by cost.
#[derive(Clone, Debug)]
pub struct OptionSampler {
    options: SlotOptions,
    shapes: Vec<LayerShape>,
    /// Per layer, per term (A to E): each option's parameter count.
    costs: Vec<[Vec<usize>; 5]>,
    /// Per layer and term, cumulative option probabilities; `None` when uniform.
    cumulative: Option<Vec<[Vec<f64>; 5]>>,
    lambda: f64,
    sampling: Sampling,
}

impl OptionSampler {
    /// Every gene uniform over its options, as the reference draws.
    pub fn uniform(space: &SearchSpace, shapes: &[LayerShape]) -> OptionSampler {
        let options = SlotOptions::new(space);
        let costs = shapes
            .iter()
            .map(|&shape| {
                Slot::ALL.map(|slot| {
                    (0..options.count(slot))
                        .map(|i| options.cost(shape, slot, i))
                        .collect()
                })
            })
            .collect();
        OptionSampler {
            options,
            shapes: shapes.to_vec(),
            costs,
            cumulative: None,
            lambda: 0.0,
            sampling: Sampling::Uniform { acceptance: 1.0 },
        }
    }

    /// Option `o` of every gene drawn with probability ∝ `exp(-lambda · params(o))`.
    pub fn tilted(space: &SearchSpace, shapes: &[LayerShape], lambda: f64) -> OptionSampler {
        let mut s = OptionSampler::uniform(space, shapes);
        s.cumulative = Some(
            s.costs
                .iter()
                .map(|layer| {
                    layer
                        .clone()
                        .map(|c| cumulative(&tilted_probabilities(&c, lambda)))
                })
                .collect(),
        );
        s.lambda = lambda;
        s
    }

    /// The sampler for the window `lo..=hi` of adapter parameters: uniform when
    /// enough uniform draws fit, otherwise tilted (see the module documentation).
    /// `seed` drives the probe draws only.
    pub fn for_budget(
        space: &SearchSpace,
        shapes: &[LayerShape],
        lo: usize,
        hi: usize,
        seed: u64,
    ) -> OptionSampler {
        let mut uniform = OptionSampler::uniform(space, shapes);
        let uniform_acceptance = uniform.acceptance(lo, hi, PROBE_DRAWS, seed);
        uniform.sampling = Sampling::Uniform {
            acceptance: uniform_acceptance,
        };
        if uniform_acceptance >= UNIFORM_MIN_ACCEPTANCE {
            return uniform;
        }
        let base = uniform.clone();
        let mut best = uniform;
        for fraction in TARGET_FRACTIONS {
            let target = lo as f64 + fraction * (hi - lo) as f64;
            let lambda = base.lambda_for_mean(target);
            let mut tilted = OptionSampler::tilted(space, shapes, lambda);
            let acceptance = tilted.acceptance(lo, hi, PROBE_DRAWS, seed);
            tilted.sampling = Sampling::Tilted {
                lambda,
                target_params: tilted.expected_params(),
                acceptance,
                uniform_acceptance,
            };
            if acceptance > best.sampling.acceptance() {
                best = tilted;
            }
            if acceptance >= TILTED_GOOD_ACCEPTANCE {
                break;
            }
        }
        best
    }

    pub fn sampling(&self) -> &Sampling {
        &self.sampling
    }

    /// The expected adapter parameters of a genome this sampler draws.
    pub fn expected_params(&self) -> f64 {
        self.mean_at(self.lambda)
    }

    fn mean_at(&self, lambda: f64) -> f64 {
        self.costs
            .iter()
            .flat_map(|layer| layer.iter())
            .map(|costs| {
                tilted_probabilities(costs, lambda)
                    .iter()
                    .zip(costs)
                    .map(|(p, &c)| p * c as f64)
                    .sum::<f64>()
            })
            .sum()
    }

    /// The tilt whose expected count is `target`, clamped to what the limits of λ
    /// reach. The expectation falls monotonically in λ (its derivative is minus
    /// the variance), so bisection finds it.
    fn lambda_for_mean(&self, target: f64) -> f64 {
        let (mut lo, mut hi) = (-LAMBDA_LIMIT, LAMBDA_LIMIT);
        if self.mean_at(lo) <= target {
            return lo;
        }
        if self.mean_at(hi) >= target {
            return hi;
        }
        for _ in 0..BISECTION_STEPS {
            let mid = 0.5 * (lo + hi);
            if self.mean_at(mid) > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }

    /// Share of `draws` genomes, drawn with a generator seeded by `seed`, whose
    /// adapter parameters lie in `lo..=hi`.
    pub fn acceptance(&self, lo: usize, hi: usize, draws: usize, seed: u64) -> f64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let fits = (0..draws)
            .filter(|_| {
                let params = self.genome_params(&self.genome(&mut rng));
                (lo..=hi).contains(&params)
            })
            .count();
        fits as f64 / draws.max(1) as f64
    }

    /// Adapter parameters of a genome over this sampler's layers.
    pub fn genome_params(&self, genome: &Genome) -> usize {
        self.shapes
            .iter()
            .zip(genome)
            .map(|(&shape, config)| layer_params(shape, config))
            .sum()
    }

    fn draw_index<R: Rng + ?Sized>(&self, layer: usize, slot: Slot, rng: &mut R) -> usize {
        let n = self.options.count(slot);
        match &self.cumulative {
            None => rng.random_range(0..n),
            Some(tables) => {
                let table = &tables[layer][slot_index(slot)];
                let u: f64 = rng.random();
                table.iter().position(|&c| u < c).unwrap_or(n - 1)
            }
        }
    }

    /// A genome with every gene drawn independently, terms in the order A to E.
    pub fn genome<R: Rng + ?Sized>(&self, rng: &mut R) -> Genome {
        (0..self.shapes.len())
            .map(|layer| {
                let mut config = LayerConfig::NONE;
                for slot in Slot::ALL {
                    let i = self.draw_index(layer, slot, rng);
                    self.options.set(&mut config, slot, i);
                }
                config
            })
            .collect()
    }

    /// Re-draws one gene of `genome`; the draw may return its current option.
    pub fn redraw<R: Rng + ?Sized>(
        &self,
        genome: &mut Genome,
        layer: usize,
        slot: Slot,
        rng: &mut R,
    ) {
        let i = self.draw_index(layer, slot, rng);
        if let Some(config) = genome.get_mut(layer) {
            self.options.set(config, slot, i);
        }
    }
}

fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
        Slot::C => 2,
        Slot::D => 3,
        Slot::E => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glora::{layer_param_mean, model_param_range};

    fn shape(d_in: usize, d_out: usize) -> LayerShape {
        LayerShape {
            d_in,
            d_out,
            has_bias: true,
        }
    }

    /// Twelve 64-wide layers and a few wider ones.
    fn shapes() -> Vec<LayerShape> {
        let mut s = vec![shape(64, 64); 12];
        s.extend([shape(64, 256), shape(256, 64)]);
        s
    }

    #[test]
    fn tilted_probabilities_follow_the_exponential_weights() {
        // costs 0, 1, 3 at λ = ln 2: weights 1, 1/2, 1/8, total 13/8.
        let p = tilted_probabilities(&[0, 1, 3], std::f64::consts::LN_2);
        let expected = [8.0 / 13.0, 4.0 / 13.0, 1.0 / 13.0];
        for (a, b) in p.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{p:?}");
        }
        // λ = 0 is uniform; a negative λ favours the dearest option.
        assert!(
            tilted_probabilities(&[0, 5, 9], 0.0)
                .iter()
                .all(|&q| (q - 1.0 / 3.0).abs() < 1e-12)
        );
        // At λ = -ln 2 the weights are 2^cost: 1, 2, 8, total 11.
        let dear = tilted_probabilities(&[0, 1, 3], -std::f64::consts::LN_2);
        assert!((dear[2] - 8.0 / 11.0).abs() < 1e-12, "{dear:?}");
    }

    #[test]
    fn uniform_mean_matches_the_per_layer_means() {
        let space = SearchSpace::new([2, 4]).unwrap();
        let s = OptionSampler::uniform(&space, &shapes());
        let expected: f64 = shapes().iter().map(|&l| layer_param_mean(&space, l)).sum();
        assert!((s.expected_params() - expected).abs() < 1e-6);
    }

    #[test]
    fn uniform_draws_are_uniform_per_gene() {
        let space = SearchSpace::default();
        let s = OptionSampler::uniform(&space, &[shape(8, 8)]);
        let mut rng = StdRng::seed_from_u64(3);
        let n = 6000;
        let none_a = (0..n)
            .filter(|_| s.genome(&mut rng)[0].a == AbOption::None)
            .count();
        // A has four options: a quarter of 6000 is 1500, σ ≈ 34.
        assert!((none_a as i64 - 1500).abs() < 200, "{none_a}");
    }

    #[test]
    fn bisection_hits_the_target_mean() {
        let space = SearchSpace::default();
        let s = OptionSampler::uniform(&space, &shapes());
        let uniform_mean = s.expected_params();
        for target in [0.1 * uniform_mean, 0.5 * uniform_mean, 1.5 * uniform_mean] {
            let lambda = s.lambda_for_mean(target);
            let t = OptionSampler::tilted(&space, &shapes(), lambda);
            let got = t.expected_params();
            assert!(
                (got - target).abs() < 1e-6 * target.max(1.0),
                "{target}: {got}"
            );
            assert_eq!(lambda > 0.0, target < uniform_mean);
        }
    }

    #[test]
    fn tilted_draws_average_the_expected_count() {
        let space = SearchSpace::default();
        let s = OptionSampler::uniform(&space, &shapes());
        let target = 0.2 * s.expected_params();
        let t = OptionSampler::tilted(&space, &shapes(), s.lambda_for_mean(target));
        let mut rng = StdRng::seed_from_u64(9);
        let n = 3000;
        let mean = (0..n)
            .map(|_| t.genome_params(&t.genome(&mut rng)) as f64)
            .sum::<f64>()
            / n as f64;
        assert!((mean - target).abs() < 0.05 * target, "{mean} vs {target}");
    }

    #[test]
    fn a_loose_budget_keeps_uniform_sampling() {
        let space = SearchSpace::default();
        let range = model_param_range(&space, shapes());
        let s = OptionSampler::for_budget(&space, &shapes(), 0, range.max, 1);
        assert_eq!(s.sampling(), &Sampling::Uniform { acceptance: 1.0 });
    }

    #[test]
    fn a_tight_budget_tilts_towards_cheap_options() {
        let space = SearchSpace::default();
        let uniform = OptionSampler::uniform(&space, &shapes());
        let budget = (0.15 * uniform.expected_params()) as usize;
        assert!(uniform.acceptance(0, budget, PROBE_DRAWS, 1) < UNIFORM_MIN_ACCEPTANCE);
        let s = OptionSampler::for_budget(&space, &shapes(), 0, budget, 1);
        match s.sampling() {
            Sampling::Tilted {
                lambda, acceptance, ..
            } => {
                assert!(*lambda > 0.0);
                assert!(*acceptance >= TILTED_GOOD_ACCEPTANCE, "{acceptance}");
            }
            other => panic!("expected a tilted sampler, got {other:?}"),
        }
    }

    #[test]
    fn a_high_minimum_tilts_towards_dear_options() {
        let space = SearchSpace::default();
        let range = model_param_range(&space, shapes());
        let min = (0.85 * range.max as f64) as usize;
        let s = OptionSampler::for_budget(&space, &shapes(), min, range.max, 1);
        match s.sampling() {
            Sampling::Tilted {
                lambda, acceptance, ..
            } => assert!(*lambda < 0.0 && *acceptance > 0.25, "{lambda} {acceptance}"),
            other => panic!("expected a tilted sampler, got {other:?}"),
        }
    }

    #[test]
    fn redraw_changes_only_the_named_gene() {
        let space = SearchSpace::default();
        let s = OptionSampler::uniform(&space, &shapes());
        let mut rng = StdRng::seed_from_u64(5);
        let original = s.genome(&mut rng);
        for _ in 0..50 {
            let mut g = original.clone();
            s.redraw(&mut g, 3, Slot::C, &mut rng);
            for (i, (a, b)) in g.iter().zip(&original).enumerate() {
                if i == 3 {
                    assert_eq!((a.a, a.b, a.d, a.e), (b.a, b.b, b.d, b.e));
                } else {
                    assert_eq!(a, b);
                }
            }
        }
    }
}
