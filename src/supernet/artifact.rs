//! The on-disk form of a supernet: a directory `NAME.glora/` holding `glora.json` (the
//! base model's path and SHA-256, the rank set, the adapted layers, the search space
//! and, once chosen, the config) and `adapters.safetensors` (`<layer>.Ad` … `<layer>.E`).
//!
//! [`Manifest`] is `glora.json` in memory. Reading checks the file against
//! `schemas/glora.schema.json` before anything else looks at it, so a malformed file is
//! reported with the JSON path at fault. Writing builds the whole directory under a
//! temporary sibling name and renames it into place: a failure leaves either the old
//! artifact or nothing, never a mix.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::glora::{AdapterTensors, LayerShape, ModelConfig, SearchSpace, Slot, tensor_names};
use crate::ir::Tensor;
use crate::passes::HeadSpec;

/// The manifest's file name inside the artifact directory.
pub const MANIFEST_FILE: &str = "glora.json";
/// The adapter tensors' file name inside the artifact directory.
pub const ADAPTERS_FILE: &str = "adapters.safetensors";
/// The head's weights inside the artifact directory, when the manifest has a head.
pub const HEAD_FILE: &str = "head.safetensors";
/// Base weights changed by full fine-tuning, by value name, when there are any.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// The layout version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;

const SCHEMA: &str = include_str!("../../schemas/glora.schema.json");

/// `glora.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub base_model: BaseModel,
    pub ranks: Vec<usize>,
    pub layers: Vec<LayerEntry>,
    pub search_space: SpaceLists,
    pub config: Option<ModelConfig>,
    /// The classification head training attached, if any; its weights are in
    /// [`HEAD_FILE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadSpec>,
    /// The `[height, width]` the image input was re-declared to before
    /// simplification, when it differs from the base model's declaration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<[usize; 2]>,
}

/// The model the adapters were inserted into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseModel {
    /// Absolute, or relative to the artifact directory.
    pub path: String,
    /// Lowercase hex.
    pub sha256: String,
}

/// How the base layer computed its product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerKind {
    MatMul,
    Gemm,
}

/// One adapted layer as the manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerEntry {
    pub name: String,
    pub d_in: usize,
    pub d_out: usize,
    pub has_bias: bool,
    pub kind: LayerKind,
}

/// The option strings of each term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceLists {
    #[serde(rename = "A")]
    pub a: Vec<String>,
    #[serde(rename = "B")]
    pub b: Vec<String>,
    #[serde(rename = "C")]
    pub c: Vec<String>,
    #[serde(rename = "D")]
    pub d: Vec<String>,
    #[serde(rename = "E")]
    pub e: Vec<String>,
}

impl SpaceLists {
    pub fn of(space: &SearchSpace) -> SpaceLists {
        SpaceLists {
            a: space.option_names(Slot::A),
            b: space.option_names(Slot::B),
            c: space.option_names(Slot::C),
            d: space.option_names(Slot::D),
            e: space.option_names(Slot::E),
        }
    }
}

impl Manifest {
    /// The search space the manifest's rank set defines, checked against the option
    /// lists it records: a file whose lists were edited by hand would otherwise offer
    /// options the adapters were never trained for.
    pub fn search_space(&self, file: &Path) -> anyhow::Result<SearchSpace> {
        let space = SearchSpace::new(self.ranks.iter().copied())
            .with_context(|| format!("{}: ranks", file.display()))?;
        if SpaceLists::of(&space) != self.search_space {
            bail!(
                "{}: search_space does not match the option lists of ranks {:?} ({:?})",
                file.display(),
                self.ranks,
                SpaceLists::of(&space)
            );
        }
        Ok(space)
    }

    /// The base model's location: `path` as written when absolute, else under `dir`.
    pub fn base_path(&self, dir: &Path) -> PathBuf {
        let p = Path::new(&self.base_model.path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    }

    pub fn to_json(&self) -> String {
        // Plain strings, numbers and maps: serialising into a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// SHA-256 of a file's bytes, lowercase hex, read in chunks so large models do not sit
/// in memory twice.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut hasher = Sha256::new();
    hash_into(&mut hasher, path)?;
    Ok(hex(&hasher.finalize()))
}

fn hash_into(hasher: &mut Sha256, path: &Path) -> anyhow::Result<()> {
    let mut f = fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| path.display().to_string())?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

/// SHA-256 of a model: an ONNX file's bytes, or for a checkpoint folder the names and
/// bytes of the files that define the network (`config.json`, the safetensors files
/// and their index), in name order. Tokenizer files do not change the model.
pub fn sha256_model(path: &Path) -> anyhow::Result<String> {
    if !path.is_dir() {
        return sha256_file(path);
    }
    let mut names: Vec<String> = fs::read_dir(path)
        .with_context(|| path.display().to_string())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n == "config.json"
                || n.ends_with(".safetensors")
                || n.ends_with(".safetensors.index.json")
        })
        .collect();
    names.sort();
    let mut hasher = Sha256::new();
    for n in &names {
        hasher.update(n.as_bytes());
        hasher.update([0u8]);
        hash_into(&mut hasher, &path.join(n))?;
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that the base model still is the file the artifact was built from.
pub fn check_base(manifest: &Manifest, dir: &Path) -> anyhow::Result<PathBuf> {
    let path = manifest.base_path(dir);
    if !path.exists() {
        bail!(
            "base model {} (named in {}) does not exist",
            path.display(),
            dir.join(MANIFEST_FILE).display()
        );
    }
    let actual = sha256_model(&path)?;
    if actual != manifest.base_model.sha256 {
        bail!(
            "base model {}: sha256 {actual} differs from {} recorded in {}; the file changed since the supernet was compiled",
            path.display(),
            manifest.base_model.sha256,
            dir.join(MANIFEST_FILE).display()
        );
    }
    Ok(path)
}

/// Where a JSON value failed the schema: a JSON pointer, or `(root)` for the document.
fn pointer_or_root(pointer: String) -> String {
    if pointer.is_empty() {
        "(root)".to_string()
    } else {
        pointer
    }
}

/// Checks a parsed `glora.json` against the embedded schema; the error names the first
/// failing JSON path.
pub fn validate_manifest_json(value: &serde_json::Value, file: &Path) -> anyhow::Result<()> {
    let schema: serde_json::Value =
        serde_json::from_str(SCHEMA).context("the embedded glora.json schema is not JSON")?;
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| anyhow::anyhow!("the embedded glora.json schema is invalid: {e}"))?;
    if let Some(err) = validator.iter_errors(value).next() {
        bail!(
            "{}: does not match the glora.json schema at {}: {}",
            file.display(),
            pointer_or_root(err.instance_path().to_string()),
            one_line(&err.to_string())
        );
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads and validates `DIR/glora.json`.
pub fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    if !dir.is_dir() {
        bail!("{}: not a supernet directory", dir.display());
    }
    let file = dir.join(MANIFEST_FILE);
    let text = fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not valid JSON: {e}", file.display()))?;
    validate_manifest_json(&value, &file)?;
    serde_json::from_value(value).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// Reads `DIR/adapters.safetensors`.
pub fn read_adapters(dir: &Path) -> anyhow::Result<Vec<(String, Tensor)>> {
    crate::io::read_safetensors(&dir.join(ADAPTERS_FILE))
}

impl LayerEntry {
    pub fn shape(&self) -> LayerShape {
        LayerShape {
            d_in: self.d_in,
            d_out: self.d_out,
            has_bias: self.has_bias,
        }
    }
}

/// Reads `DIR/adapters.safetensors` and splits it into each layer's eight tensors at
/// rank `rank`: every layer must find its tensors at their expected shapes, and no
/// tensor may be left over. Errors name the file, the layer and the tensor.
pub fn layer_adapters(
    dir: &Path,
    layers: &[LayerEntry],
    rank: usize,
) -> anyhow::Result<Vec<AdapterTensors>> {
    let file = dir.join(ADAPTERS_FILE);
    let mut stored: HashMap<String, Tensor> = read_adapters(dir)?.into_iter().collect();
    let mut out = Vec::with_capacity(layers.len());
    for layer in layers {
        let tensors = tensor_names(&layer.name)
            .into_iter()
            .map(|n| {
                stored.remove(&n).with_context(|| {
                    format!(
                        "{}: tensor {n} of layer {:?} is missing",
                        file.display(),
                        layer.name
                    )
                })
            })
            .collect::<anyhow::Result<Vec<Tensor>>>()?;
        let tensors: [Tensor; 8] = tensors
            .try_into()
            .map_err(|_| anyhow::anyhow!("eight tensors per layer"))?;
        let adapters = AdapterTensors::from_tensors(&layer.name, layer.shape(), rank, tensors)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        out.push(adapters);
    }
    let mut extra: Vec<&String> = stored.keys().collect();
    extra.sort();
    if let Some(name) = extra.first() {
        bail!(
            "{}: tensor {name} belongs to no adapted layer",
            file.display()
        );
    }
    Ok(out)
}

/// Writes a complete artifact to `dir`, replacing one that is there. `dir` must not
/// be an existing directory of something else.
pub fn write_artifact(
    dir: &Path,
    manifest: &Manifest,
    adapters: &[(String, Tensor)],
    extras: &[(&str, Vec<(String, Tensor)>)],
) -> anyhow::Result<()> {
    if dir.exists() && !is_replaceable(dir) {
        bail!(
            "{}: exists and is not a supernet directory; refusing to replace it",
            dir.display()
        );
    }
    let staging = sibling(dir, "tmp")?;
    let _ = fs::remove_dir_all(&staging);
    let written =
        fill(&staging, manifest, adapters, extras).and_then(|()| swap_into_place(&staging, dir));
    if written.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    written
}

/// Rewrites only `glora.json` of an existing artifact, atomically.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let file = dir.join(MANIFEST_FILE);
    crate::io::write_atomic(&file, manifest.to_json().as_bytes())
        .with_context(|| file.display().to_string())
}

fn fill(
    staging: &Path,
    manifest: &Manifest,
    adapters: &[(String, Tensor)],
    extras: &[(&str, Vec<(String, Tensor)>)],
) -> anyhow::Result<()> {
    fs::create_dir_all(staging).with_context(|| staging.display().to_string())?;
    crate::io::write_safetensors(&staging.join(ADAPTERS_FILE), adapters)?;
    for (file, tensors) in extras {
        crate::io::write_safetensors(&staging.join(file), tensors)?;
    }
    write_manifest(staging, manifest)
}

/// An empty directory or an earlier artifact may be replaced.
fn is_replaceable(dir: &Path) -> bool {
    if !dir.is_dir() {
        return false;
    }
    dir.join(MANIFEST_FILE).is_file()
        || fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false)
}

/// `.NAME.<what>-<pid>` beside `dir`.
fn sibling(dir: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: the path has no UTF-8 file name", dir.display()))?;
    Ok(dir.with_file_name(format!(".{name}.{what}-{}", std::process::id())))
}

/// Renames the staged directory to `dir`; an old artifact is moved aside first and
/// removed only once the new one is in place.
fn swap_into_place(staging: &Path, dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return fs::rename(staging, dir).with_context(|| dir.display().to_string());
    }
    let old = sibling(dir, "old")?;
    let _ = fs::remove_dir_all(&old);
    fs::rename(dir, &old).with_context(|| dir.display().to_string())?;
    if let Err(e) = fs::rename(staging, dir) {
        let _ = fs::rename(&old, dir);
        return Err(e).with_context(|| dir.display().to_string());
    }
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let space = SearchSpace::new([2, 4]).unwrap();
        Manifest {
            format_version: FORMAT_VERSION,
            base_model: BaseModel {
                path: "/models/m.onnx".into(),
                sha256: "ab".repeat(32),
            },
            ranks: space.ranks().to_vec(),
            layers: vec![LayerEntry {
                name: "fc1".into(),
                d_in: 3,
                d_out: 4,
                has_bias: true,
                kind: LayerKind::MatMul,
            }],
            search_space: SpaceLists::of(&space),
            config: None,
            head: None,
            image_size: None,
        }
    }

    fn value(m: &Manifest) -> serde_json::Value {
        serde_json::from_str(&m.to_json()).unwrap()
    }

    #[test]
    fn a_written_manifest_passes_the_schema() {
        let m = manifest();
        validate_manifest_json(&value(&m), Path::new("x/glora.json")).unwrap();
        let back: Manifest = serde_json::from_value(value(&m)).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn schema_errors_name_the_file_and_the_json_path() {
        let mut v = value(&manifest());
        v["ranks"] = serde_json::json!("four");
        let msg = validate_manifest_json(&v, Path::new("x/glora.json"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("x/glora.json") && msg.contains("/ranks"),
            "{msg}"
        );

        let mut v = value(&manifest());
        v["layers"][0]["kind"] = serde_json::json!("Conv");
        let msg = validate_manifest_json(&v, Path::new("g.json"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/layers/0/kind"), "{msg}");

        let mut v = value(&manifest());
        v["base_model"]["sha256"] = serde_json::json!("XYZ");
        assert!(validate_manifest_json(&v, Path::new("g.json")).is_err());
    }

    #[test]
    fn edited_option_lists_are_rejected() {
        let mut m = manifest();
        m.search_space.a.pop();
        let msg = m.search_space(Path::new("g.json")).unwrap_err().to_string();
        assert!(msg.contains("search_space"), "{msg}");
        let mut m = manifest();
        m.search_space.a.reverse();
        assert!(m.search_space(Path::new("g.json")).is_err());
        assert_eq!(
            manifest()
                .search_space(Path::new("g.json"))
                .unwrap()
                .ranks(),
            &[2, 4]
        );
    }

    #[test]
    fn sha256_of_a_known_string() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn writing_replaces_an_artifact_but_not_other_directories() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.glora");
        let t = Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        write_artifact(&out, &manifest(), &[("fc1.D".into(), t.clone())], &[]).unwrap();
        let mut second = manifest();
        second.config = Some(ModelConfig::new());
        write_artifact(&out, &second, &[("fc1.D".into(), t)], &[]).unwrap();
        assert_eq!(read_manifest(&out).unwrap(), second);
        assert_eq!(read_adapters(&out).unwrap().len(), 1);
        // Only the artifact is left: no staging or backup directories.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let other = dir.path().join("src");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("keep.txt"), b"x").unwrap();
        assert!(write_artifact(&other, &manifest(), &[], &[]).is_err());
        assert!(other.join("keep.txt").is_file());
    }

    #[test]
    fn a_changed_base_model_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.onnx");
        fs::write(&base, b"model bytes").unwrap();
        let mut m = manifest();
        m.base_model.path = "base.onnx".into();
        m.base_model.sha256 = sha256_file(&base).unwrap();
        assert_eq!(check_base(&m, dir.path()).unwrap(), base);
        fs::write(&base, b"other bytes").unwrap();
        let msg = check_base(&m, dir.path()).unwrap_err().to_string();
        assert!(msg.contains("base.onnx") && msg.contains("sha256"), "{msg}");
    }
}
