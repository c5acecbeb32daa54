//! Opening a dataset from a path the user gives, whatever its format: the digits CSV
//! (`.csv`, `.csv.gz`), a safetensors file with `x` and `y` (or a folder with
//! `train.safetensors` and `test.safetensors`), a folder of IDX files
//! (`train-images-idx3-ubyte[.gz]` …, with the `t10k-` files as the test split), or a
//! folder of class subfolders of images (with `train/` and `test/` inside when the
//! data comes split). [`Preprocess`] then shapes images for a model: resize, grey →
//! RGB, normalise.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::Dataset;

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
        let [_, height, width] = out.images()?.dims();
        if let Some((h, w)) = self.size
            && (h, w) != (height, width)
        {
            out = out.resized(h, w)?;
        }
        let channels = out.images()?.channels;
        match self.channels {
            Some(3) if channels == 1 => out = out.to_rgb()?,
            Some(c) if c != channels => {
                bail!("the model reads {c}-channel images but the data has {channels} channels")
            }
            _ => {}
        }
        if let Some((mean, std)) = &self.normalize {
            let channels = out.images()?.channels;
            let (mean, std) = if mean.len() != channels && mean.len() == 3 && channels == 1 {
                (vec![mean[0]], vec![std[0]])
            } else {
                (mean.clone(), std.clone())
            };
            out = out.normalized(&mean, &std)?;
        }
        Ok(out)
    }
}
