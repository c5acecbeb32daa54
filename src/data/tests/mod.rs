//! Tests of the text data layer: hand-written tables in temporary directories.

mod labels;
mod tables;

use std::path::{Path, PathBuf};

/// Writes `bytes` to `dir/relative`, making folders on the way.
fn write(dir: &Path, relative: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}
