//! Labelled image datasets from files on disk: IDX as used by MNIST and
//! Fashion-MNIST (raw or gzip), the UCI digits CSV, safetensors with `x` and `y`, and
//! a folder of PNG/JPEG files with one subfolder per class. Transforms (bilinear
//! resize, grey to RGB, per-channel normalisation) bring images to what a model
//! reads; [`Dataset::batches`] hands out `[B, C, H, W]` tensors with their labels.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DataError, Dataset, Features, Images};
use crate::ir::Tensor;

fn file_error(path: &Path, what: impl Into<String>) -> DataError {
    DataError::File {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const IDX_IMAGES_MAGIC: u32 = 2051;
const IDX_LABELS_MAGIC: u32 = 2049;
const DIGITS_SIDE: usize = 8;
const DIGITS_MAX: f32 = 16.0;

/// Reads a whole file, inflating it when it starts with the gzip magic.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| file_error(path, format!("corrupt gzip data: {e}")))?;
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Checks an IDX header and returns its dimensions and the payload after it.
fn parse_idx<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    rank: usize,
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(file_error(
            path,
            format!("truncated IDX header: {} bytes, need {header}", bytes.len()),
        ));
    }
    let found = be_u32(bytes, 0).unwrap_or(0);
    if found != magic {
        return Err(file_error(
            path,
            format!("IDX magic is {found}, expected {magic}"),
        ));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| be_u32(bytes, 4 + 4 * i).unwrap_or(0) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| file_error(path, "IDX dimensions overflow"))?;
    let payload = &bytes[header..];
    if payload.len() != expected {
        return Err(file_error(
            path,
            format!(
                "IDX dimensions {dims:?} need {expected} data bytes, file has {}",
                payload.len()
            ),
        ));
    }
    Ok((dims, payload))
}

/// A dataset of images, classes numbered up to the largest label.
fn image_dataset(images: Images, labels: Vec<u32>) -> Dataset {
    Dataset::numbered(Features::Images(images), labels)
}

impl Dataset {
    /// Loads IDX images (magic 2051, u8) and labels (magic 2049), raw or gzip; pixel
    /// values are scaled to 0..1.
    pub fn load_idx(images: &Path, labels: &Path) -> Result<Dataset, DataError> {
        let image_bytes = read_maybe_gzip(images)?;
        let (dims, pixels) = parse_idx(images, &image_bytes, IDX_IMAGES_MAGIC, 3)?;
        let label_bytes = read_maybe_gzip(labels)?;
        let (label_dims, label_data) = parse_idx(labels, &label_bytes, IDX_LABELS_MAGIC, 1)?;
        if label_dims[0] != dims[0] {
            return Err(file_error(
                labels,
                format!(
                    "{} labels but {} has {} images",
                    label_dims[0],
                    images.display(),
                    dims[0]
                ),
            ));
        }
        let labels: Vec<u32> = label_data.iter().map(|&l| u32::from(l)).collect();
        let images = Images {
            values: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
            channels: 1,
            height: dims[1],
            width: dims[2],
        };
        Ok(image_dataset(images, labels))
    }

    /// Loads the UCI optical digits CSV (optionally gzip): each row holds 64 pixel
    /// values 0..16 of an 8×8 grey image, then the label. Values are scaled to 0..1.
    /// A first line that is not numeric is taken as a header and skipped.
    pub fn load_digits_csv(path: &Path) -> Result<Dataset, DataError> {
        let bytes = read_maybe_gzip(path)?;
        let text =
            std::str::from_utf8(&bytes).map_err(|e| file_error(path, format!("not UTF-8: {e}")))?;
        let pixels_per_row = DIGITS_SIDE * DIGITS_SIDE;
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let numeric = fields.iter().all(|f| f.parse::<f64>().is_ok());
            if index == 0 && !numeric {
                continue;
            }
            let row = index + 1;
            if fields.len() != pixels_per_row + 1 {
                return Err(file_error(
                    path,
                    format!(
                        "line {row} has {} fields, expected {}",
                        fields.len(),
                        pixels_per_row + 1
                    ),
                ));
            }
            for field in &fields[..pixels_per_row] {
                let v: f32 = field
                    .parse()
                    .map_err(|_| file_error(path, format!("line {row}: bad pixel {field:?}")))?;
                if !(0.0..=DIGITS_MAX).contains(&v) {
                    return Err(file_error(
                        path,
                        format!("line {row}: pixel {v} outside 0..16"),
                    ));
                }
                images.push(v / DIGITS_MAX);
            }
            let label_field = fields[pixels_per_row];
            let label: u32 = label_field
                .parse()
                .map_err(|_| file_error(path, format!("line {row}: bad label {label_field:?}")))?;
            labels.push(label);
        }
        if labels.is_empty() {
            return Err(file_error(path, "no data rows"));
        }
        let images = Images {
            values: images,
            channels: 1,
            height: DIGITS_SIDE,
            width: DIGITS_SIDE,
        };
        Ok(image_dataset(images, labels))
    }

    /// Loads a safetensors file with `x` of shape [N,C,H,W] or [N,H,W] (f32 taken as
    /// is, u8 scaled to 0..1) and `y` of shape [N] (i64, i32 or u8).
    pub fn load_safetensors(path: &Path) -> Result<Dataset, DataError> {
        use safetensors::Dtype;
        let bytes =
            std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))?;
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| file_error(path, format!("not a safetensors file: {e}")))?;
        let x = file
            .tensor("x")
            .map_err(|e| file_error(path, format!("tensor `x`: {e}")))?;
        let y = file
            .tensor("y")
            .map_err(|e| file_error(path, format!("tensor `y`: {e}")))?;
        let (n, channels, height, width) = match *x.shape() {
            [n, c, h, w] => (n, c, h, w),
            [n, h, w] => (n, 1, h, w),
            ref other => {
                return Err(file_error(
                    path,
                    format!("tensor `x` has shape {other:?}, expected [N,C,H,W] or [N,H,W]"),
                ));
            }
        };
        let images: Vec<f32> = match x.dtype() {
            Dtype::F32 => x
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::U8 => x.data().iter().map(|&p| f32::from(p) / 255.0).collect(),
            other => {
                return Err(file_error(
                    path,
                    format!("tensor `x` has dtype {other:?}, expected F32 or U8"),
                ));
            }
        };
        let labels_signed: Vec<i64> = match y.dtype() {
            Dtype::I64 => y
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
            Dtype::I32 => y
                .data()
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            Dtype::U8 => y.data().iter().map(|&l| i64::from(l)).collect(),
            other => {
                return Err(file_error(
                    path,
                    format!("tensor `y` has dtype {other:?}, expected I64, I32 or U8"),
                ));
            }
        };
        if y.shape() != [n] {
            return Err(file_error(
                path,
                format!("tensor `y` has shape {:?}, expected [{n}]", y.shape()),
            ));
        }
        let labels = labels_signed
            .iter()
            .map(|&l| {
                u32::try_from(l)
                    .map_err(|_| file_error(path, format!("label {l} in `y` is not a class index")))
            })
            .collect::<Result<Vec<u32>, DataError>>()?;
        if images.len() != n * channels * height * width {
            return Err(file_error(
                path,
                "tensor `x` holds fewer bytes than its shape",
            ));
        }
        let images = Images {
            values: images,
            channels,
            height,
            width,
        };
        Ok(image_dataset(images, labels))
    }

    /// Loads a folder with one subfolder per class (classes numbered in name order),
    /// each holding PNG or JPEG images. Images are grey when every one is grey, RGB
    /// otherwise. With `size`, each image is resized to (height, width) as it loads;
    /// without it, all images must share one size.
    pub fn load_image_folder(
        root: &Path,
        size: Option<(usize, usize)>,
    ) -> Result<Dataset, DataError> {
        let classes = sorted_entries(root, |p| p.is_dir())?;
        if classes.is_empty() {
            return Err(file_error(root, "no class subfolders"));
        }
        let mut decoded = Vec::new();
        for (class, dir) in classes.iter().enumerate() {
            for file in sorted_entries(dir, is_image_file)? {
                let image = image::ImageReader::open(&file)
                    .map_err(|e| file_error(&file, format!("cannot open: {e}")))?
                    .with_guessed_format()
                    .map_err(|e| file_error(&file, format!("cannot read: {e}")))?
                    .decode()
                    .map_err(|e| file_error(&file, format!("cannot decode image: {e}")))?;
                decoded.push((file, class as u32, image));
            }
        }
        if decoded.is_empty() {
            return Err(file_error(
                root,
                "no PNG or JPEG images in the class subfolders",
            ));
        }
        let rgb = decoded.iter().any(|(_, _, img)| img.color().has_color());
        let channels = if rgb { 3 } else { 1 };
        let (height, width) = match size {
            Some(hw) => hw,
            None => {
                let first = &decoded[0].2;
                (first.height() as usize, first.width() as usize)
            }
        };
        if height == 0 || width == 0 {
            return Err(file_error(
                root,
                format!("cannot load images as {height}×{width}"),
            ));
        }
        let mut images = Vec::with_capacity(decoded.len() * channels * height * width);
        let mut labels = Vec::with_capacity(decoded.len());
        for (file, label, image) in &decoded {
            let (h, w) = (image.height() as usize, image.width() as usize);
            if h == 0 || w == 0 {
                return Err(file_error(file, "image is empty"));
            }
            if size.is_none() && (h, w) != (height, width) {
                return Err(file_error(
                    file,
                    format!("image is {h}×{w}, others are {height}×{width}; give a size to resize"),
                ));
            }
            let planes = if rgb {
                interleaved_to_planes(image.to_rgb32f().as_raw(), 3)
            } else {
                image.to_luma32f().into_raw()
            };
            for plane in planes.chunks_exact(h * w) {
                images.extend(resize_plane(plane, h, w, height, width));
            }
            labels.push(*label);
        }
        let label_names = classes
            .iter()
            .map(|c| {
                c.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        Ok(Dataset {
            features: Features::Images(Images {
                values: images,
                channels,
                height,
                width,
            }),
            n: labels.len(),
            labels,
            num_classes: classes.len(),
            label_names,
        })
    }

    /// Writes `x` (f32 `[N, C, H, W]`) and `y` (i64 `[N]`), as
    /// [`Dataset::load_safetensors`] reads them, atomically.
    pub fn save_safetensors(&self, path: &Path) -> anyhow::Result<()> {
        self.validate()?;
        let im = self.images()?;
        let x = Tensor::from_f32(
            vec![self.n, im.channels, im.height, im.width],
            im.values.clone(),
        )?;
        let y = Tensor::from_i64(
            vec![self.n],
            self.labels.iter().map(|&l| l as i64).collect(),
        )?;
        crate::io::write_safetensors(path, &[("x".into(), x), ("y".into(), y)])
    }

    /// The same dataset with its images replaced.
    fn with_images(&self, images: Images) -> Dataset {
        self.with_contents(Features::Images(images), self.labels.clone())
    }

    /// Every image resized to `height`×`width` by bilinear interpolation with
    /// half-pixel centres (the convention of PyTorch's `align_corners=False`).
    pub fn resized(&self, height: usize, width: usize) -> Result<Dataset, DataError> {
        self.validate()?;
        let im = self.images()?;
        if height == 0 || width == 0 {
            return Err(DataError::Invalid(format!(
                "cannot resize to {height}×{width}"
            )));
        }
        let plane = im.height * im.width;
        let values = if plane == 0 {
            vec![0.0; self.n * im.channels * height * width]
        } else {
            im.values
                .chunks_exact(plane)
                .flat_map(|p| resize_plane(p, im.height, im.width, height, width))
                .collect()
        };
        Ok(self.with_images(Images {
            values,
            height,
            width,
            ..im.shape()
        }))
    }

    /// Grey images repeated into three channels; RGB images unchanged.
    pub fn to_rgb(&self) -> Result<Dataset, DataError> {
        self.validate()?;
        let im = self.images()?;
        match im.channels {
            3 => Ok(self.clone()),
            1 => {
                let plane = im.height * im.width;
                let mut values = Vec::with_capacity(im.values.len() * 3);
                for p in im.values.chunks_exact(plane.max(1)) {
                    for _ in 0..3 {
                        values.extend_from_slice(p);
                    }
                }
                Ok(self.with_images(Images {
                    values,
                    channels: 3,
                    ..im.shape()
                }))
            }
            c => Err(DataError::Invalid(format!(
                "cannot make RGB from {c} channels"
            ))),
        }
    }

    /// `(value - mean[c]) / std[c]` for each channel `c`.
    pub fn normalized(&self, mean: &[f32], std: &[f32]) -> Result<Dataset, DataError> {
        self.validate()?;
        let im = self.images()?;
        if mean.len() != im.channels || std.len() != im.channels {
            return Err(DataError::Invalid(format!(
                "{} means and {} stds for {} channels",
                mean.len(),
                std.len(),
                im.channels
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::Invalid(format!("std {s} is not positive")));
        }
        let plane = (im.height * im.width).max(1);
        let channels = im.channels;
        let values = im
            .values
            .chunks_exact(plane)
            .enumerate()
            .flat_map(|(i, p)| {
                let c = i % channels;
                p.iter().map(move |v| (v - mean[c]) / std[c])
            })
            .collect();
        Ok(self.with_images(Images {
            values,
            ..im.shape()
        }))
    }

    /// Consecutive batches of `[B, C, H, W]` f32 images with their labels; the last,
    /// smaller batch is left out when `drop_last`. Yields nothing for `batch == 0` and
    /// stops early if the fields disagree (see [`Dataset::validate`]).
    pub fn batches(
        &self,
        batch: usize,
        drop_last: bool,
    ) -> impl Iterator<Item = (Tensor, Vec<u32>)> + '_ {
        let im = match &self.features {
            Features::Images(im) => Some(im),
            Features::Tokens(_) => None,
        };
        let len = im.map_or(0, Images::image_len);
        let count = match (batch, drop_last) {
            (0, _) => 0,
            (b, true) => self.n / b,
            (b, false) => self.n.div_ceil(b),
        };
        (0..count).map_while(move |i| {
            let im = im?;
            let start = i * batch;
            let end = (start + batch).min(self.n);
            let images = im.values.get(start * len..end * len)?;
            let labels = self.labels.get(start..end)?;
            let shape = vec![end - start, im.channels, im.height, im.width];
            let tensor = Tensor::from_f32(shape, images.to_vec()).ok()?;
            Some((tensor, labels.to_vec()))
        })
    }
}

pub(super) fn is_image_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Entries of `dir` passing `keep`, sorted by file name.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>, DataError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| file_error(dir, format!("cannot list: {e}")))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| file_error(dir, format!("cannot list: {e}")))?
            .path();
        if keep(&path) {
            paths.push(path);
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(paths)
}

/// HWC interleaved values to CHW planes.
fn interleaved_to_planes(values: &[f32], channels: usize) -> Vec<f32> {
    let pixels = values.len() / channels;
    let mut out = vec![0.0; values.len()];
    for (p, pixel) in values.chunks_exact(channels).enumerate() {
        for (c, &v) in pixel.iter().enumerate() {
            out[c * pixels + p] = v;
        }
    }
    out
}

/// Source coordinate pairs and weights for one output axis, half-pixel centres.
fn axis_taps(src: usize, dst: usize) -> Vec<(usize, usize, f32)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let x = ((d as f64 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f64);
            let lo = x.floor() as usize;
            let hi = (lo + 1).min(src - 1);
            (lo, hi, (x - lo as f64) as f32)
        })
        .collect()
}

/// Bilinear resize of one `h`×`w` plane to `out_h`×`out_w`.
fn resize_plane(plane: &[f32], h: usize, w: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    if (h, w) == (out_h, out_w) {
        return plane.to_vec();
    }
    let rows = axis_taps(h, out_h);
    let cols = axis_taps(w, out_w);
    let at = |y: usize, x: usize| plane[y * w + x];
    let mut out = Vec::with_capacity(out_h * out_w);
    for &(y0, y1, fy) in &rows {
        for &(x0, x1, fx) in &cols {
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

#[cfg(test)]
mod tests;
