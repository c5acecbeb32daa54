//! Tests of the text data layer: hand-written tables and folders in temporary
//! directories, the real corpora from the fixtures (skipped when absent), token ids
//! against transformers, and a mutation fuzzer over every loader.

mod folder;
mod fuzz;
mod labels;
mod tables;
mod tokenizer;

use std::path::{Path, PathBuf};

/// The fixtures folder: `$GLORA_FIXTURES` or `~/.cache/glora/fixtures`.
fn fixtures() -> Option<PathBuf> {
    std::env::var_os("GLORA_FIXTURES")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/glora/fixtures"))
        })
}

/// A fixture path that exists, or `None` after printing why the test skips.
fn fixture(relative: &str) -> Option<PathBuf> {
    let path = fixtures()?.join(relative);
    if path.exists() {
        Some(path)
    } else {
        println!("SKIP: fixture {} not found", path.display());
        None
    }
}

/// Writes `bytes` to `dir/relative`, making folders on the way.
fn write(dir: &Path, relative: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}
