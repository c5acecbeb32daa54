//! A small supernet for the search's unit tests: a two-block ViT on 4×4 grey
//! images, built in memory, written to a temporary ONNX file and compiled with LoRA
//! ranks {2}. Compiled once per test binary.

use std::sync::OnceLock;

use crate::models::{VitConfig, build_vit};
use crate::supernet::Supernet;

fn tiny_vit() -> VitConfig {
    VitConfig {
        image: 4,
        channels: 1,
        patch: 2,
        dim: 8,
        depth: 2,
        heads: 2,
        mlp: 16,
        classes: None,
    }
}

fn compile_tiny() -> Supernet {
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("tiny.onnx");
    let g = build_vit(&tiny_vit(), 3).expect("tiny ViT builds");
    crate::onnx::export_file(&g, &path, &Default::default()).expect("tiny ViT exports");
    Supernet::compile(&path, None, None, &[2], 5, None).expect("tiny ViT compiles")
}

/// The tiny supernet (eight adapted layers, no head).
pub fn tiny_supernet() -> &'static Supernet {
    static NET: OnceLock<Supernet> = OnceLock::new();
    NET.get_or_init(compile_tiny)
}
