//! A labelled dataset, whatever its examples are: [`Features`] hold the inputs of
//! every example (images as f32 planes, or token sequences), and the dataset adds a
//! class label per example and the names of the classes. The carving every run does
//! (seeded shuffles, stratified splits, k-shot subsets, class selection) works on
//! labels and indices alone, so it is the same for pixels and tokens; format-specific
//! loading lives in `images` and the text readers, batching in `batch`.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::DataError;

/// Images of one size: `n × channels × height × width` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    pub values: Vec<f32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Images {
    /// Values per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// `[channels, height, width]`.
    pub fn dims(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    fn count(&self) -> Option<usize> {
        let len = self.image_len();
        if len == 0 {
            return Some(0);
        }
        self.values
            .len()
            .is_multiple_of(len)
            .then(|| self.values.len() / len)
    }

    fn subset(&self, indices: &[usize]) -> Images {
        let len = self.image_len();
        let mut values = Vec::with_capacity(indices.len().saturating_mul(len));
        for &i in indices {
            values.extend_from_slice(&self.values[i * len..(i + 1) * len]);
        }
        Images {
            values,
            ..self.shape()
        }
    }

    /// No images, this size.
    pub fn shape(&self) -> Images {
        Images {
            values: Vec::new(),
            channels: self.channels,
            height: self.height,
            width: self.width,
        }
    }
}

/// Tokenised texts: the ids of each example (special tokens included, not padded),
/// its token type ids where the tokenizer makes them, and for language modelling
/// the target of every position.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    pub ids: Vec<Vec<u32>>,
    pub type_ids: Option<Vec<Vec<u32>>>,
    /// Causal-LM data: for each position of each example, the id the model is to
    /// predict there (the next token), or [`IGNORE_INDEX`] where no loss is taken
    /// (prompts, the last position). `None` for classification data.
    pub targets: Option<Vec<Vec<i32>>>,
    /// The id padding positions get.
    pub pad_id: u32,
    /// The length the texts were truncated to, which padding never exceeds.
    pub max_length: usize,
}

impl Tokens {
    fn subset(&self, indices: &[usize]) -> Tokens {
        let pick = |v: &Vec<Vec<u32>>| indices.iter().map(|&i| v[i].clone()).collect();
        Tokens {
            ids: pick(&self.ids),
            type_ids: self.type_ids.as_ref().map(pick),
            targets: self
                .targets
                .as_ref()
                .map(|t| indices.iter().map(|&i| t[i].clone()).collect()),
            pad_id: self.pad_id,
            max_length: self.max_length,
        }
    }

    /// The longest example, in tokens.
    pub fn longest(&self) -> usize {
        self.ids.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// The target of a position that takes no part in the loss (PyTorch's default
/// `ignore_index`); the loss leaves out every row with a negative label.
pub const IGNORE_INDEX: i32 = -100;

/// The inputs of every example of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    Images(Images),
    Tokens(Tokens),
}

impl Features {
    /// How many examples the features hold, when they are consistent.
    fn count(&self) -> Option<usize> {
        match self {
            Features::Images(im) => im.count(),
            Features::Tokens(t) => {
                let aligned = |lens: Vec<usize>| {
                    lens.len() == t.ids.len() && lens.iter().zip(&t.ids).all(|(a, b)| *a == b.len())
                };
                let lens = |v: &Vec<Vec<u32>>| v.iter().map(Vec::len).collect();
                let ok = t.type_ids.as_ref().is_none_or(|v| aligned(lens(v)))
                    && t.targets
                        .as_ref()
                        .is_none_or(|v| aligned(v.iter().map(Vec::len).collect()));
                ok.then_some(t.ids.len())
            }
        }
    }

    fn subset(&self, indices: &[usize]) -> Features {
        match self {
            Features::Images(im) => Features::Images(im.subset(indices)),
            Features::Tokens(t) => Features::Tokens(t.subset(indices)),
        }
    }

    /// What kind of examples these are, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Features::Images(_) => "images",
            Features::Tokens(_) => "texts",
        }
    }
}

/// Examples and their class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub features: Features,
    pub labels: Vec<u32>,
    pub n: usize,
    pub num_classes: usize,
    /// The name of each class, in label order (`num_classes` of them).
    pub label_names: Vec<String>,
}

/// `"0"`, `"1"`, …: the names of classes known only by number.
pub fn numbered_labels(num_classes: usize) -> Vec<String> {
    (0..num_classes).map(|i| i.to_string()).collect()
}

fn num_classes_of(labels: &[u32]) -> usize {
    labels.iter().max().map_or(0, |&m| m as usize + 1)
}

impl Dataset {
    /// A dataset of `features` labelled `labels`, its classes numbered `0..` up to the
    /// largest label.
    pub fn numbered(features: Features, labels: Vec<u32>) -> Dataset {
        let num_classes = num_classes_of(&labels);
        Dataset {
            features,
            n: labels.len(),
            labels,
            num_classes,
            label_names: numbered_labels(num_classes),
        }
    }

    /// The images, or an error naming what the dataset holds instead.
    pub fn images(&self) -> Result<&Images, DataError> {
        match &self.features {
            Features::Images(im) => Ok(im),
            other => Err(DataError::Invalid(format!(
                "the dataset holds {}, not images",
                other.kind()
            ))),
        }
    }

    /// A dataset with the same classes holding other examples.
    pub(crate) fn with_contents(&self, features: Features, labels: Vec<u32>) -> Dataset {
        Dataset {
            features,
            n: labels.len(),
            labels,
            num_classes: self.num_classes,
            label_names: self.label_names.clone(),
        }
    }

    /// Checks that the fields agree with each other.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.labels.len() != self.n {
            return Err(DataError::Invalid(format!(
                "{} labels for {} examples",
                self.labels.len(),
                self.n
            )));
        }
        if self.features.count() != Some(self.n) {
            return Err(DataError::Invalid(match &self.features {
                Features::Images(im) => format!(
                    "{} values for {} images of {}×{}×{}",
                    im.values.len(),
                    self.n,
                    im.channels,
                    im.height,
                    im.width
                ),
                Features::Tokens(t) => format!(
                    "{} token sequences (with matching type ids) for {} examples",
                    t.ids.len(),
                    self.n
                ),
            }));
        }
        if let Some(bad) = self
            .labels
            .iter()
            .find(|&&l| l as usize >= self.num_classes)
        {
            return Err(DataError::Invalid(format!(
                "label {bad} not below num_classes {}",
                self.num_classes
            )));
        }
        if self.label_names.len() != self.num_classes {
            return Err(DataError::Invalid(format!(
                "{} label names for {} classes",
                self.label_names.len(),
                self.num_classes
            )));
        }
        Ok(())
    }

    /// The examples at `indices`, in that order, with their labels.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset, DataError> {
        self.validate()?;
        if let Some(&i) = indices.iter().find(|&&i| i >= self.n) {
            return Err(DataError::Invalid(format!(
                "index {i} outside {} examples",
                self.n
            )));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Ok(self.with_contents(self.features.subset(indices), labels))
    }

    /// The examples of the classes in `classes`, relabelled `0..classes.len()` in that
    /// order (a task carved from a larger one).
    pub fn select_classes(&self, classes: &[u32]) -> Result<Dataset, DataError> {
        if let Some(&bad) = classes.iter().find(|&&c| c as usize >= self.num_classes) {
            return Err(DataError::Invalid(format!(
                "class {bad} not below num_classes {}",
                self.num_classes
            )));
        }
        let mut keep = Vec::new();
        let mut labels = Vec::new();
        for (i, &label) in self.labels.iter().enumerate().take(self.n) {
            if let Some(new) = classes.iter().position(|&c| c == label) {
                keep.push(i);
                labels.push(new as u32);
            }
        }
        let picked = self.subset(&keep)?;
        Ok(Dataset {
            labels,
            num_classes: classes.len(),
            label_names: classes
                .iter()
                .map(|&c| self.label_names[c as usize].clone())
                .collect(),
            ..picked
        })
    }

    /// The dataset in a random order fixed by `seed`.
    pub fn shuffled(&self, seed: u64) -> Result<Dataset, DataError> {
        let mut order: Vec<usize> = (0..self.n).collect();
        shuffle(&mut order, &mut StdRng::seed_from_u64(seed));
        self.subset(&order)
    }

    /// Indices of a (train, validation) split: in each class, a seeded random
    /// `val_fraction` of its examples (rounded) goes to validation.
    pub fn split_indices(
        &self,
        val_fraction: f64,
        seed: u64,
    ) -> Result<(Vec<usize>, Vec<usize>), DataError> {
        if !(0.0..=1.0).contains(&val_fraction) {
            return Err(DataError::Invalid(format!(
                "validation fraction {val_fraction} outside 0..1"
            )));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut train = Vec::new();
        let mut val = Vec::new();
        for mut members in self.indices_by_class()? {
            shuffle(&mut members, &mut rng);
            let take = (members.len() as f64 * val_fraction).round() as usize;
            val.extend_from_slice(&members[..take]);
            train.extend_from_slice(&members[take..]);
        }
        train.sort_unstable();
        val.sort_unstable();
        Ok((train, val))
    }

    /// A stratified (train, validation) split; see [`Dataset::split_indices`].
    pub fn split(&self, val_fraction: f64, seed: u64) -> Result<(Dataset, Dataset), DataError> {
        let (train, val) = self.split_indices(val_fraction, seed)?;
        Ok((self.subset(&train)?, self.subset(&val)?))
    }

    /// Exactly `k` seeded random examples of every class, in class order.
    pub fn k_shot(&self, k: usize, seed: u64) -> Result<Dataset, DataError> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut chosen = Vec::with_capacity(k * self.num_classes);
        for (class, mut members) in self.indices_by_class()?.into_iter().enumerate() {
            if members.len() < k {
                return Err(DataError::Invalid(format!(
                    "class {} has {} examples, fewer than k = {k}",
                    self.label_names[class],
                    members.len()
                )));
            }
            shuffle(&mut members, &mut rng);
            chosen.extend_from_slice(&members[..k]);
        }
        self.subset(&chosen)
    }

    fn indices_by_class(&self) -> Result<Vec<Vec<usize>>, DataError> {
        self.validate()?;
        let mut by_class = vec![Vec::new(); self.num_classes];
        for (i, &label) in self.labels.iter().enumerate() {
            by_class[label as usize].push(i);
        }
        Ok(by_class)
    }

    /// Examples per class, in label order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }
}

/// Fisher–Yates shuffle.
pub(crate) fn shuffle<T>(items: &mut [T], rng: &mut StdRng) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}
