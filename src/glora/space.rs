//! The per-layer search space: which options each term may take.
//!
//! The space is fixed by a set of LoRA ranks (default: {4}). Every layer shares the
//! same option lists, in the reference's order: A and B offer `LoRA_r` for each rank,
//! then `vector`, `constant`, `none`; C offers `LoRA_r`…, `vector`, `none`; D and E
//! offer `constant`, `none`, `vector`. The supernet trainer samples from it, the search
//! enumerates and mutates within it, and configs loaded from disk are checked against
//! it.

use rand::{Rng, RngExt};

use super::config::LayerConfig;
use super::options::{AbOption, COption, DeOption, Slot};

/// A set of ranks that cannot define a search space.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpaceError {
    #[error("the search space needs at least one LoRA rank")]
    NoRanks,
    #[error("LoRA rank 0 is not allowed; ranks must be at least 1")]
    ZeroRank,
}

/// The options every adapted layer may choose from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchSpace {
    /// Ascending, distinct, all at least 1.
    ranks: Vec<usize>,
}

impl Default for SearchSpace {
    fn default() -> SearchSpace {
        SearchSpace {
            ranks: vec![SearchSpace::DEFAULT_RANK],
        }
    }
}

const DE_OPTIONS: [DeOption; 3] = [DeOption::Constant, DeOption::None, DeOption::Vector];

impl SearchSpace {
    pub const DEFAULT_RANK: usize = 4;

    /// A space over the given ranks; they are sorted and duplicates dropped, so the
    /// LoRA options are listed from the smallest rank up.
    pub fn new(ranks: impl IntoIterator<Item = usize>) -> Result<SearchSpace, SpaceError> {
        let mut ranks: Vec<usize> = ranks.into_iter().collect();
        if ranks.is_empty() {
            return Err(SpaceError::NoRanks);
        }
        if ranks.contains(&0) {
            return Err(SpaceError::ZeroRank);
        }
        ranks.sort_unstable();
        ranks.dedup();
        Ok(SearchSpace { ranks })
    }

    pub fn ranks(&self) -> &[usize] {
        &self.ranks
    }

    /// The rank the supernet's factors are stored at: the largest in the set.
    pub fn max_rank(&self) -> usize {
        self.ranks.iter().copied().max().unwrap_or(0)
    }

    /// Options of A (and of B): `LoRA_r` for each rank, `vector`, `constant`, `none`.
    pub fn ab_options(&self) -> Vec<AbOption> {
        let lora = self.ranks.iter().map(|&r| AbOption::Lora(r));
        lora.chain([AbOption::Vector, AbOption::Constant, AbOption::None])
            .collect()
    }

    /// Options of C: `LoRA_r` for each rank, `vector`, `none`.
    pub fn c_options(&self) -> Vec<COption> {
        let lora = self.ranks.iter().map(|&r| COption::Lora(r));
        lora.chain([COption::Vector, COption::None]).collect()
    }

    /// Options of D (and of E): `constant`, `none`, `vector`.
    pub fn de_options(&self) -> Vec<DeOption> {
        DE_OPTIONS.to_vec()
    }

    /// The string forms of one term's options, in list order.
    pub fn option_names(&self, slot: Slot) -> Vec<String> {
        match slot {
            Slot::A | Slot::B => self.ab_options().iter().map(|o| o.to_string()).collect(),
            Slot::C => self.c_options().iter().map(|o| o.to_string()).collect(),
            Slot::D | Slot::E => DE_OPTIONS.iter().map(|o| o.to_string()).collect(),
        }
    }

    /// How many options each term has, in the order A, B, C, D, E.
    fn radices(&self) -> [usize; 5] {
        let ab = self.ranks.len() + 3;
        let c = self.ranks.len() + 2;
        let de = DE_OPTIONS.len();
        [ab, ab, c, de, de]
    }

    /// Number of distinct layer configs (432 for one rank).
    pub fn len(&self) -> usize {
        self.radices().iter().product()
    }

    /// Always false: every space holds at least the all-`none` config.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The config at `index` in `0..len()`, with A the most significant digit and E
    /// the least; `None` past the end.
    pub fn config_at(&self, index: usize) -> Option<LayerConfig> {
        if index >= self.len() {
            return None;
        }
        let radices = self.radices();
        let mut digits = [0usize; 5];
        let mut rest = index;
        for (digit, radix) in digits.iter_mut().zip(radices).rev() {
            *digit = rest % radix;
            rest /= radix;
        }
        Some(self.config_from_digits(digits))
    }

    fn config_from_digits(&self, [a, b, c, d, e]: [usize; 5]) -> LayerConfig {
        let ab = self.ab_options();
        let cs = self.c_options();
        LayerConfig {
            a: ab[a],
            b: ab[b],
            c: cs[c],
            d: DE_OPTIONS[d],
            e: DE_OPTIONS[e],
        }
    }

    /// Every config of the space, each once.
    pub fn all_configs(&self) -> impl Iterator<Item = LayerConfig> + '_ {
        (0..self.len()).filter_map(|index| self.config_at(index))
    }

    /// A config with each of the five terms drawn independently and uniformly from its
    /// list, which is the same as drawing uniformly over all configs.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> LayerConfig {
        let mut digits = [0usize; 5];
        for (digit, radix) in digits.iter_mut().zip(self.radices()) {
            *digit = rng.random_range(0..radix);
        }
        self.config_from_digits(digits)
    }

    /// Whether every term of `config` is an option of this space.
    pub fn contains(&self, config: &LayerConfig) -> bool {
        self.ab_options().contains(&config.a)
            && self.ab_options().contains(&config.b)
            && self.c_options().contains(&config.c)
            && DE_OPTIONS.contains(&config.d)
            && DE_OPTIONS.contains(&config.e)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn single_rank_space_has_432_configs() {
        let space = SearchSpace::default();
        assert_eq!(space.ranks(), &[4]);
        assert_eq!(space.len(), 4 * 4 * 3 * 3 * 3);
        assert_eq!(space.len(), 432);
        assert_eq!(space.max_rank(), 4);
    }

    #[test]
    fn three_rank_space_has_1620_configs() {
        let space = SearchSpace::new([8, 2, 4, 4]).unwrap();
        assert_eq!(space.ranks(), &[2, 4, 8]);
        assert_eq!(space.len(), 1620);
        assert_eq!(space.max_rank(), 8);
    }

    #[test]
    fn option_lists_follow_the_reference_order() {
        let space = SearchSpace::new([2, 4]).unwrap();
        assert_eq!(
            space.option_names(Slot::A),
            ["LoRA_2", "LoRA_4", "vector", "constant", "none"]
        );
        assert_eq!(space.option_names(Slot::B), space.option_names(Slot::A));
        assert_eq!(
            space.option_names(Slot::C),
            ["LoRA_2", "LoRA_4", "vector", "none"]
        );
        assert_eq!(space.option_names(Slot::D), ["constant", "none", "vector"]);
        assert_eq!(space.option_names(Slot::E), ["constant", "none", "vector"]);
    }

    #[test]
    fn bad_rank_sets_are_rejected() {
        assert_eq!(SearchSpace::new([]), Err(SpaceError::NoRanks));
        assert_eq!(SearchSpace::new([4, 0]), Err(SpaceError::ZeroRank));
    }

    fn check_enumeration(space: &SearchSpace) {
        let all: Vec<LayerConfig> = space.all_configs().collect();
        assert_eq!(all.len(), space.len());
        let distinct: HashSet<LayerConfig> = all.iter().copied().collect();
        assert_eq!(distinct.len(), space.len());
        assert!(all.iter().all(|c| space.contains(c)));
        assert!(distinct.contains(&LayerConfig::NONE));
        assert_eq!(space.config_at(space.len()), None);
    }

    #[test]
    fn all_configs_yields_each_config_once() {
        check_enumeration(&SearchSpace::default());
        check_enumeration(&SearchSpace::new([2, 4, 8]).unwrap());
    }

    #[test]
    fn contains_rejects_ranks_outside_the_set() {
        let space = SearchSpace::new([2, 8]).unwrap();
        let inside = LayerConfig {
            b: AbOption::Lora(8),
            ..LayerConfig::NONE
        };
        let outside = LayerConfig {
            c: COption::Lora(4),
            ..LayerConfig::NONE
        };
        assert!(space.contains(&inside));
        assert!(!space.contains(&outside));
    }

    #[test]
    fn sampling_is_deterministic_and_covers_every_option() {
        let space = SearchSpace::new([2, 4]).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let draws: Vec<LayerConfig> = (0..4000).map(|_| space.sample(&mut rng)).collect();
        let mut again = StdRng::seed_from_u64(7);
        assert!(draws.iter().all(|d| *d == space.sample(&mut again)));
        assert!(draws.iter().all(|d| space.contains(d)));

        // Each term is uniform over its list: with 4000 draws and at most 5 options,
        // every option's share lies well within ±5 points of its expectation.
        for slot in Slot::ALL {
            let names = space.option_names(slot);
            let mut counts: HashMap<String, usize> = HashMap::new();
            for d in &draws {
                *counts.entry(d.option_string(slot)).or_default() += 1;
            }
            assert_eq!(counts.len(), names.len(), "slot {slot}");
            let expected = 1.0 / names.len() as f64;
            for (name, n) in counts {
                let share = n as f64 / draws.len() as f64;
                assert!((share - expected).abs() < 0.05, "{slot} {name}: {share}");
            }
        }
    }
}
