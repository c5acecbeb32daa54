//! Opening a dataset from a path the user gives, whatever its format: the digits CSV
//! (`.csv`, `.csv.gz`), a safetensors file with `x` and `y` (or a folder with
//! `train.safetensors` and `test.safetensors`), a folder of IDX files
//! (`train-images-idx3-ubyte[.gz]` …, with the `t10k-` files as the test split), or a
//! folder of class subfolders of images (with `train/` and `test/` inside when the
//! data comes split). Then shaping it for a model: resize, grey → RGB, normalise.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::data::Dataset;
use crate::supernet::Supernet;

/// The splits a dataset comes with.
#[derive(Clone, Debug)]
pub struct DataSplits {
    pub train: Dataset,
    /// The held-out test split, when the data has one.
    pub test: Option<Dataset>,
}

fn idx_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

fn ends_with(path: &Path, suffix: &str) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.to_ascii_lowercase().ends_with(suffix))
}

/// Reads the dataset at `path`.
pub fn open_data(path: &Path) -> anyhow::Result<DataSplits> {
    let ctx = || path.display().to_string();
    if path.is_file() {
        let train = if ends_with(path, ".csv") || ends_with(path, ".csv.gz") {
            Dataset::load_digits_csv(path).with_context(ctx)?
        } else if ends_with(path, ".safetensors") {
            Dataset::load_safetensors(path).with_context(ctx)?
        } else {
            bail!(
                "{}: unknown data format (expected .csv, .csv.gz, .safetensors, a folder of IDX files or a folder of class folders)",
                path.display()
            );
        };
        return Ok(DataSplits { train, test: None });
    }
    if !path.is_dir() {
        bail!("{}: no such file or folder", path.display());
    }
    if let (Some(xi), Some(yi)) = (
        idx_file(path, "train-images-idx3-ubyte"),
        idx_file(path, "train-labels-idx1-ubyte"),
    ) {
        let train = Dataset::load_idx(&xi, &yi).with_context(ctx)?;
        let test = match (
            idx_file(path, "t10k-images-idx3-ubyte"),
            idx_file(path, "t10k-labels-idx1-ubyte"),
        ) {
            (Some(xt), Some(yt)) => Some(Dataset::load_idx(&xt, &yt).with_context(ctx)?),
            _ => None,
        };
        return Ok(DataSplits { train, test });
    }
    let (train_st, test_st) = (
        path.join("train.safetensors"),
        path.join("test.safetensors"),
    );
    if train_st.is_file() {
        let train = Dataset::load_safetensors(&train_st).with_context(ctx)?;
        let test = if test_st.is_file() {
            Some(Dataset::load_safetensors(&test_st).with_context(ctx)?)
        } else {
            None
        };
        return Ok(DataSplits { train, test });
    }
    let (train_dir, test_dir) = (path.join("train"), path.join("test"));
    if train_dir.is_dir() {
        let train = Dataset::load_image_folder(&train_dir, None).with_context(ctx)?;
        let test = if test_dir.is_dir() {
            Some(Dataset::load_image_folder(&test_dir, None).with_context(ctx)?)
        } else {
            None
        };
        return Ok(DataSplits { train, test });
    }
    let train = Dataset::load_image_folder(path, None).with_context(ctx)?;
    Ok(DataSplits { train, test: None })
}

/// How images are brought to what a model reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Preprocess {
    /// Target `(height, width)`; `None` keeps the data's size.
    pub size: Option<(usize, usize)>,
    /// Target channel count: 3 turns grey images into RGB.
    pub channels: Option<usize>,
    /// Per-channel mean and standard deviation.
    pub normalize: Option<(Vec<f32>, Vec<f32>)>,
}

/// The ImageNet statistics most pretrained vision backbones expect.
pub fn imagenet_stats() -> (Vec<f32>, Vec<f32>) {
    (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
}

impl Preprocess {
    pub fn apply(&self, d: &Dataset) -> anyhow::Result<Dataset> {
        let mut out = d.clone();
        if let Some((h, w)) = self.size
            && (h, w) != (out.height, out.width)
        {
            out = out.resized(h, w)?;
        }
        match self.channels {
            Some(3) if out.channels == 1 => out = out.to_rgb()?,
            Some(c) if c != out.channels => bail!(
                "the model reads {c}-channel images but the data has {} channels",
                out.channels
            ),
            _ => {}
        }
        if let Some((mean, std)) = &self.normalize {
            let (mean, std) = if mean.len() != out.channels && mean.len() == 3 && out.channels == 1
            {
                (vec![mean[0]], vec![std[0]])
            } else {
                (mean.clone(), std.clone())
            };
            out = out.normalized(&mean, &std)?;
        }
        Ok(out)
    }
}

/// How a run carves and shapes its data.
#[derive(Clone, Debug, PartialEq)]
pub struct DataPlan {
    /// Side to resize images to (default: the model's input size when fixed).
    pub image_size: Option<usize>,
    pub imagenet_norm: bool,
    /// Fraction of the training data held out for validation (0: none).
    pub val_fraction: f64,
    /// Fraction carved off as the test split when the data comes without one (0: no
    /// test split).
    pub test_fraction: f64,
    /// Seed of the validation carve; training, search and the pipeline use the same
    /// one so that validation samples are never trained on.
    pub split_seed: u64,
    /// Keep K training samples per class.
    pub k_shot: Option<usize>,
    /// Keep at most N training samples (class-stratified).
    pub limit: Option<usize>,
    /// Keep at most N test samples (class-stratified).
    pub test_limit: Option<usize>,
}

impl Default for DataPlan {
    fn default() -> DataPlan {
        DataPlan {
            image_size: None,
            imagenet_norm: false,
            val_fraction: 0.1,
            test_fraction: 0.0,
            split_seed: 0,
            k_shot: None,
            limit: None,
            test_limit: None,
        }
    }
}

/// A run's data, shaped for its model.
#[derive(Clone, Debug)]
pub struct PreparedData {
    pub train: Dataset,
    pub val: Option<Dataset>,
    pub test: Option<Dataset>,
}

/// Opens `path`, shapes the images for `net`'s input and carves the validation split
/// and the training subset as `plan` says.
pub fn prepare_data(path: &Path, net: &Supernet, plan: &DataPlan) -> anyhow::Result<PreparedData> {
    let splits = open_data(path)?;
    // Every carve picks by label only, so it runs on the stored images and only what
    // is kept is resized: resizing all of a large dataset first can take gigabytes.
    let mut all = splits.train;
    let mut test = splits.test;
    if test.is_none() && plan.test_fraction > 0.0 {
        // A different stream from the validation carve's, so the two are independent.
        let (rest, carved) = all
            .split(plan.test_fraction, plan.split_seed ^ 0x7E57)
            .with_context(|| path.display().to_string())?;
        all = rest;
        test = Some(carved);
    }
    let (train, val) = if plan.val_fraction > 0.0 {
        let (t, v) = all
            .split(plan.val_fraction, plan.split_seed)
            .with_context(|| path.display().to_string())?;
        (t, Some(v))
    } else {
        (all, None)
    };
    let train = match (plan.k_shot, plan.limit) {
        (Some(k), _) => train.k_shot(k, plan.split_seed)?,
        (None, Some(n)) if n < train.n => {
            let frac = 1.0 - n as f64 / train.n as f64;
            train.split(frac, plan.split_seed)?.0
        }
        _ => train,
    };
    // A cut-down training set keeps the validation split in proportion, so that a
    // search over a few hundred images does not score every genome on thousands.
    let val = match (val, plan.k_shot.is_some() || plan.limit.is_some()) {
        (Some(v), true) if plan.val_fraction < 1.0 => {
            let keep = ((train.n as f64 * plan.val_fraction / (1.0 - plan.val_fraction)).ceil()
                as usize)
                .max(v.num_classes)
                .min(v.n);
            Some(keep_at_most(v, keep, plan.split_seed)?)
        }
        (v, _) => v,
    };
    let test = match (test, plan.test_limit) {
        (Some(t), Some(n)) => Some(keep_at_most(t, n, plan.split_seed)?),
        (t, _) => t,
    };
    let [c, h, w] = net.image_dims();
    let size = match (plan.image_size, h, w) {
        (Some(s), _, _) => Some((s, s)),
        (None, Some(h), Some(w)) => Some((h, w)),
        _ => None,
    };
    let prep = Preprocess {
        size,
        channels: c,
        normalize: plan.imagenet_norm.then(imagenet_stats),
    };
    Ok(PreparedData {
        train: prep.apply(&train)?,
        val: val.map(|v| prep.apply(&v)).transpose()?,
        test: test.map(|t| prep.apply(&t)).transpose()?,
    })
}

/// A class-stratified pick of at most `n` samples.
fn keep_at_most(d: Dataset, n: usize, seed: u64) -> anyhow::Result<Dataset> {
    if n >= d.n {
        return Ok(d);
    }
    Ok(d.split(1.0 - n as f64 / d.n as f64, seed)?.0)
}
