//! Opening a dataset from a path the user gives, whatever its format: the digits CSV
//! (`.csv`, `.csv.gz`), a safetensors file with `x` and `y` (or a folder with
//! `train.safetensors` and `test.safetensors`), a folder of IDX files
//! (`train-images-idx3-ubyte[.gz]` …, with the `t10k-` files as the test split), a
//! folder of class subfolders of images (with `train/` and `test/` inside when the
//! data comes split); or texts: a CSV (whose header names the text column), TSV or
//! JSONL table, or a folder of class subfolders of text files, tokenised as a
//! [`TextSource`] says. [`Preprocess`] then shapes images for a model: resize, grey →
//! RGB, normalise.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::{
    Dataset, Features, FolderOptions, LabelSet, LmOptions, TableFormat, TextColumns, TextData,
    TextTokenizer, Tokens,
};

/// The splits a dataset comes with.
#[derive(Clone, Debug)]
pub struct DataSplits {
    pub train: Dataset,
    /// The held-out test split, when the data has one.
    pub test: Option<Dataset>,
    /// Counted warnings about what was skipped while reading, for the user.
    pub warnings: Vec<String>,
}

/// How text data is read and tokenised: the columns of a table, the class map of a
/// folder, and the tokenizer with the length texts are cut to.
#[derive(Clone, Copy, Debug)]
pub struct TextSource<'a> {
    pub columns: &'a TextColumns,
    pub folder: &'a FolderOptions,
    /// `None` when the model brings no tokenizer: text data is then an error that
    /// says how to give one.
    pub tokenizer: Option<&'a TextTokenizer>,
    pub max_length: usize,
    /// Causal language modelling: the data are JSONL texts, prompt/response pairs
    /// or chats with next-token targets, not labelled texts.
    pub lm: Option<LmOptions<'a>>,
}

/// Whether `path` holds texts rather than images: a TSV or JSONL table, a CSV whose
/// header has the text column, or a folder of class folders without image files.
fn is_text(path: &Path, columns: &TextColumns) -> bool {
    if path.is_file() {
        return match TableFormat::from_path(path) {
            Some(TableFormat::Csv) => csv_header_has(path, &columns.text),
            Some(_) => true,
            None => false,
        };
    }
    let classes = path.join("train");
    let root = if classes.is_dir() {
        classes
    } else {
        path.to_path_buf()
    };
    let Ok(entries) = std::fs::read_dir(&root) else {
        return false;
    };
    let mut saw_files = false;
    for class in entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
        for f in std::fs::read_dir(&class).into_iter().flatten().flatten() {
            let p = f.path();
            if super::images::is_image_file(&p) {
                return false;
            }
            saw_files |= p.is_file();
        }
    }
    saw_files
}

/// Whether a CSV file is a table of texts rather than the digits CSV: its header
/// names `column`, or it has a header (a field that is not a number) with another
/// field count than the digits' 65.
fn csv_header_has(path: &Path, column: &str) -> bool {
    use std::io::BufRead;
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut first = String::new();
    if std::io::BufReader::new(f).read_line(&mut first).is_err() {
        return false;
    }
    let fields: Vec<&str> = first
        .trim_start_matches('\u{feff}')
        .trim_end()
        .split(',')
        .map(|f| f.trim().trim_matches('"'))
        .collect();
    let header = fields.iter().any(|f| f.parse::<f64>().is_err());
    fields.contains(&column) || (header && fields.len() != 65)
}

/// The texts at `path`: one table, or a folder of class folders.
fn read_texts(path: &Path, text: &TextSource<'_>) -> anyhow::Result<TextData> {
    Ok(if path.is_file() {
        super::read_table(path, text.columns)?
    } else {
        super::read_text_folder(path, text.folder)?
    })
}

/// The warnings a read's report carries.
fn report_warnings(path: &Path, data: &TextData) -> Vec<String> {
    let r = &data.report;
    let mut out = Vec::new();
    if r.skipped_empty_text > 0 {
        out.push(format!(
            "{}: skipped {} example{} with an empty text (the first at {})",
            path.display(),
            r.skipped_empty_text,
            if r.skipped_empty_text == 1 { "" } else { "s" },
            r.first_empty_text.as_deref().unwrap_or("?")
        ));
    }
    out
}

/// Tokenised records labelled by `labels`; a label outside the set is an error
/// naming the record's file and line.
fn encode(
    data: &TextData,
    labels: &LabelSet,
    text: &TextSource<'_>,
    path: &Path,
) -> anyhow::Result<Dataset> {
    let tokenizer = text.tokenizer.with_context(|| {
        format!(
            "{}: text data needs a tokenizer; the model has no tokenizer.json beside it, so pass --tokenizer DIR",
            path.display()
        )
    })?;
    if data.records.is_empty() {
        bail!("{}: no examples", path.display());
    }
    let indices = labels.indices_of(&data.records)?;
    let encoded = tokenizer.encode_records(&data.records, text.max_length)?;
    let (ids, type_ids) = encoded
        .into_iter()
        .map(|e| (e.input_ids, e.token_type_ids))
        .unzip();
    let features = Features::Tokens(Tokens {
        ids,
        type_ids: Some(type_ids),
        targets: None,
        pad_id: tokenizer.pad_id().unwrap_or(0),
        max_length: text.max_length,
    });
    let labels_u32 = indices.iter().map(|&i| i as u32).collect::<Vec<u32>>();
    Ok(Dataset {
        features,
        n: labels_u32.len(),
        labels: labels_u32,
        num_classes: labels.len(),
        label_names: labels.names().to_vec(),
    })
}

/// Reads the texts at `path` (a table or class folder, or a folder with `train` and
/// `test` inside); the labels are those of the training split.
fn open_texts(path: &Path, text: &TextSource<'_>) -> anyhow::Result<DataSplits> {
    let (train_path, test_path) = if path.is_dir() && path.join("train").is_dir() {
        let t = path.join("test");
        (path.join("train"), t.is_dir().then_some(t))
    } else {
        (path.to_path_buf(), None)
    };
    let train_texts = read_texts(&train_path, text)?;
    let labels = LabelSet::from_records(&train_texts.records);
    let mut warnings = report_warnings(&train_path, &train_texts);
    let train = encode(&train_texts, &labels, text, &train_path)?;
    let test = match test_path {
        Some(p) => {
            let t = read_texts(&p, text)?;
            warnings.extend(report_warnings(&p, &t));
            Some(encode(&t, &labels, text, &p)?)
        }
        None => None,
    };
    Ok(DataSplits {
        train,
        test,
        warnings,
    })
}

/// The causal-LM examples of the JSONL file `path`, and what reading left out.
fn open_lm(
    path: &Path,
    text: &TextSource<'_>,
    opts: LmOptions<'_>,
) -> anyhow::Result<(Dataset, Vec<String>)> {
    let tokenizer = text.tokenizer.with_context(|| {
        format!(
            "{}: language-model data needs a tokenizer; the model has none beside it, so pass --tokenizer DIR",
            path.display()
        )
    })?;
    if !path.is_file() || TableFormat::from_path(path) != Some(TableFormat::Jsonl) {
        bail!(
            "{}: language-model data is a JSONL file (.jsonl) whose lines hold \"text\", \"prompt\" and \"response\", or \"messages\"",
            path.display()
        );
    }
    let data = super::read_lm_data(path, tokenizer, text.max_length, opts)?;
    let r = &data.report;
    let mut warnings = Vec::new();
    if r.skipped_untrained > 0 {
        warnings.push(format!(
            "{}: skipped {} example{} with no token to train on within {} tokens (the first at line {})",
            path.display(),
            r.skipped_untrained,
            if r.skipped_untrained == 1 { "" } else { "s" },
            text.max_length,
            r.first_untrained.unwrap_or(0)
        ));
    }
    Ok((data.dataset, warnings))
}

/// Reads the test split at `path`, given apart from the training data (`--test-data`),
/// in the classes of `train`: a label `train` does not have is an error naming its
/// file and line.
pub fn open_test_data(
    path: &Path,
    train: &Dataset,
    text: &TextSource<'_>,
) -> anyhow::Result<(Dataset, Vec<String>)> {
    if let Some(opts) = text.lm {
        return open_lm(path, text, opts);
    }
    if matches!(train.features, Features::Tokens(_)) {
        let texts = read_texts(path, text)?;
        let labels = LabelSet::from_labels(train.label_names.iter().map(String::as_str));
        let warnings = report_warnings(path, &texts);
        return Ok((encode(&texts, &labels, text, path)?, warnings));
    }
    let splits = open_data(path, text)?;
    let test = splits.train;
    if test.num_classes > train.num_classes {
        bail!(
            "{}: the test data has label {} but the training data only {} classes",
            path.display(),
            test.num_classes - 1,
            train.num_classes
        );
    }
    let test = Dataset {
        num_classes: train.num_classes,
        label_names: train.label_names.clone(),
        ..test
    };
    Ok((test, splits.warnings))
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

/// Reads the dataset at `path`; texts are read and tokenised as `text` says.
pub fn open_data(path: &Path, text: &TextSource<'_>) -> anyhow::Result<DataSplits> {
    let ctx = || path.display().to_string();
    if let Some(opts) = text.lm {
        let (train, warnings) = open_lm(path, text, opts)?;
        return Ok(DataSplits {
            train,
            test: None,
            warnings,
        });
    }
    if path.exists() && is_text(path, text.columns) {
        return open_texts(path, text);
    }
    if path.is_file() {
        let train = if ends_with(path, ".csv") || ends_with(path, ".csv.gz") {
            Dataset::load_digits_csv(path).with_context(ctx)?
        } else if ends_with(path, ".safetensors") {
            Dataset::load_safetensors(path).with_context(ctx)?
        } else {
            bail!(
                "{}: unknown data format (expected .csv, .csv.gz, .safetensors, .tsv, .jsonl, a folder of IDX files or a folder of class folders)",
                path.display()
            );
        };
        return Ok(DataSplits {
            train,
            test: None,
            warnings: Vec::new(),
        });
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
        return Ok(DataSplits {
            train,
            test,
            warnings: Vec::new(),
        });
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
        return Ok(DataSplits {
            train,
            test,
            warnings: Vec::new(),
        });
    }
    let (train_dir, test_dir) = (path.join("train"), path.join("test"));
    if train_dir.is_dir() {
        let train = Dataset::load_image_folder(&train_dir, None).with_context(ctx)?;
        let test = if test_dir.is_dir() {
            Some(Dataset::load_image_folder(&test_dir, None).with_context(ctx)?)
        } else {
            None
        };
        return Ok(DataSplits {
            train,
            test,
            warnings: Vec::new(),
        });
    }
    let train = Dataset::load_image_folder(path, None).with_context(ctx)?;
    Ok(DataSplits {
        train,
        test: None,
        warnings: Vec::new(),
    })
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
