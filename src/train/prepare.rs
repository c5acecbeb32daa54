//! A run's data: the dataset a user names, opened by [`crate::data::open_data`],
//! carved into training, validation and test splits as the run's [`DataPlan`] says,
//! and shaped for the supernet's input. Training, search and the pipeline all carve
//! through here, so that validation examples are never trained on.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::data::chat::ChatTemplate;
use crate::data::{
    Dataset, Features, FolderOptions, LmOptions, Preprocess, TextColumns, TextSource,
    TextTokenizer, imagenet_stats, open_data, open_test_data,
};
use crate::supernet::Supernet;

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
    /// The test split, given apart from the training data (instead of carving one).
    pub test_data: Option<PathBuf>,
    /// How text data is read and tokenised.
    pub text: TextPlan,
}

/// How a run reads and tokenises text data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TextPlan {
    pub columns: TextColumns,
    pub folder: FolderOptions,
    /// The folder (or file) of the `tokenizer.json` (default: the model's folder).
    pub tokenizer: Option<PathBuf>,
    /// Tokens a text is cut to, special tokens included (default: the model's
    /// limit, at most 512).
    pub max_length: Option<usize>,
    /// Causal language modelling: JSONL texts, prompt/response pairs or chats.
    pub causal_lm: bool,
    /// Causal-LM examples are packed end to end into sequences of the maximum
    /// length.
    pub pack: bool,
}

/// The longest text a run feeds by default.
const DEFAULT_MAX_LENGTH: usize = 512;

/// A file held in memory: its name and bytes.
type NamedFile = (String, Vec<u8>);

/// The tokenizer files a GGUF model's metadata holds, when `model` is a GGUF file
/// without a `tokenizer.json` beside it and no `--tokenizer` is given.
fn gguf_tokenizer_files(plan: &TextPlan, model: &Path) -> anyhow::Result<Option<Vec<NamedFile>>> {
    let is_gguf = model
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let beside = model.with_file_name("tokenizer.json");
    if plan.tokenizer.is_some() || !is_gguf || beside.is_file() {
        return Ok(None);
    }
    let file = crate::models::gguf::GgufFile::open(model)?;
    Ok(Some(file.tokenizer_files()?))
}

/// The tokenizer a run uses: `--tokenizer`, else the one in the model's folder (or
/// beside its ONNX file), else a GGUF file's own; `None` when there is none.
pub fn find_tokenizer(plan: &TextPlan, model: &Path) -> anyhow::Result<Option<TextTokenizer>> {
    if let Some(files) = gguf_tokenizer_files(plan, model)? {
        return Ok(Some(TextTokenizer::from_memory(model, &files)?));
    }
    if let Some(t) = &plan.tokenizer {
        let tok = if t.is_dir() {
            TextTokenizer::from_dir(t)?
        } else {
            TextTokenizer::from_file(t)?
        };
        return Ok(Some(tok));
    }
    let dir = if model.is_dir() {
        model.to_path_buf()
    } else {
        model.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    if dir.join("tokenizer.json").is_file() {
        return Ok(Some(TextTokenizer::from_dir(&dir)?));
    }
    Ok(None)
}

/// The folder the tokenizer files come from: `--tokenizer` (or its folder), else
/// the model's folder (or the folder of its file).
fn tokenizer_dir(plan: &TextPlan, model: &Path) -> PathBuf {
    match &plan.tokenizer {
        Some(t) if t.is_dir() => t.clone(),
        Some(t) => t.parent().map(Path::to_path_buf).unwrap_or_default(),
        None if model.is_dir() => model.to_path_buf(),
        None => model.parent().map(Path::to_path_buf).unwrap_or_default(),
    }
}

/// The length texts are cut to: `--max-length`, else the smallest of the tokenizer's
/// and the model's limits and 512.
pub fn max_length(plan: &TextPlan, tokenizer: Option<&TextTokenizer>, model: &Path) -> usize {
    if let Some(m) = plan.max_length {
        return m;
    }
    let model_limit = crate::models::max_positions(model);
    [
        Some(DEFAULT_MAX_LENGTH),
        tokenizer.and_then(TextTokenizer::model_max_length),
        model_limit,
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(DEFAULT_MAX_LENGTH)
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
            test_data: None,
            text: TextPlan::default(),
        }
    }
}

/// A run's data, shaped for its model.
#[derive(Clone, Debug)]
pub struct PreparedData {
    pub train: Dataset,
    pub val: Option<Dataset>,
    pub test: Option<Dataset>,
    /// What reading skipped, counted, for the user to see.
    pub warnings: Vec<String>,
}

/// Opens `path`, shapes the images for `net`'s input and carves the validation split
/// and the training subset as `plan` says.
pub fn prepare_data(path: &Path, net: &Supernet, plan: &DataPlan) -> anyhow::Result<PreparedData> {
    let tokenizer = find_tokenizer(&plan.text, &net.base_path)?;
    let template = if !plan.text.causal_lm {
        None
    } else if let Some(files) = gguf_tokenizer_files(&plan.text, &net.base_path)? {
        ChatTemplate::from_memory(&net.base_path, &files)?
    } else {
        ChatTemplate::find(&tokenizer_dir(&plan.text, &net.base_path))?
    };
    let text = TextSource {
        columns: &plan.text.columns,
        folder: &plan.text.folder,
        tokenizer: tokenizer.as_ref(),
        max_length: max_length(&plan.text, tokenizer.as_ref(), &net.base_path),
        lm: plan.text.causal_lm.then_some(LmOptions {
            template: template.as_ref(),
            pack: plan.text.pack,
        }),
    };
    let splits = open_data(path, &text)?;
    let mut warnings = splits.warnings;
    // Every carve picks by label only, so it runs on the stored images and only what
    // is kept is resized: resizing all of a large dataset first can take gigabytes.
    let mut all = splits.train;
    let mut test = splits.test;
    if let Some(t) = &plan.test_data {
        let (given, w) = open_test_data(t, &all, &text)?;
        warnings.extend(w);
        test = Some(given);
    }
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
    if !matches!(train.features, Features::Images(_)) {
        return Ok(PreparedData {
            train,
            val,
            test,
            warnings,
        });
    }
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
        warnings,
    })
}

/// A class-stratified pick of at most `n` samples.
fn keep_at_most(d: Dataset, n: usize, seed: u64) -> anyhow::Result<Dataset> {
    if n >= d.n {
        return Ok(d);
    }
    Ok(d.split(1.0 - n as f64 / d.n as f64, seed)?.0)
}
