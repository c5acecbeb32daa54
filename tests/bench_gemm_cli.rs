//! `glora bench gemm` end to end: on a given shape and on a tiny ViT's training-step
//! shapes, the binary prints the CPU, the peak with its factors and one row per
//! product with a positive rate, and `--json` writes the same rows. Speed itself is
//! never asserted.

mod common;

use common::{glora, path_str, stderr, stdout, tiny_vit_onnx};

/// Checks the machine lines and returns the JSON rows after checking that each has
/// a positive rate and a line in the table.
fn check_output(out: &std::process::Output, json: &std::path::Path) -> Vec<serde_json::Value> {
    let text = stdout(out);
    assert!(out.status.success(), "{text}\n{}", stderr(out));
    assert!(
        text.lines().any(|l| l.starts_with("cpu: ")),
        "no cpu line: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("peak: ") && l.contains("FMA units") && l.contains("GFLOP/s")),
        "no peak line: {text}"
    );
    assert!(text.contains("fma units: 2 per core (assumed"), "{text}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let rows = doc["rows"].as_array().unwrap().clone();
    // The table's rows, in order, between its header and the summary.
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("shape "))
        .skip(1)
        .take_while(|l| !l.starts_with("summary: "))
        .collect();
    assert_eq!(table.len(), rows.len(), "{text}");
    for (r, line) in rows.iter().zip(&table) {
        let shape = r["shape"].as_str().unwrap();
        assert!(r["gflops"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            line.starts_with(&format!("{shape} ")),
            "{line} is not {shape}"
        );
        // The GFLOP/s column (second-to-last field) is the JSON's rate to one decimal.
        let fields: Vec<&str> = line.split_whitespace().collect();
        let rate: f64 = fields[fields.len() - 2].parse().unwrap();
        let json_rate = r["gflops"].as_f64().unwrap();
        assert!(
            (rate - json_rate).abs() <= 0.05 + 1e-9,
            "{line} vs {json_rate}"
        );
    }
    assert!(text.contains("summary: "), "{text}");
    rows
}

#[test]
fn a_given_shape_gets_one_row_with_a_positive_rate() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("gemm.json");
    let out = glora(&[
        "bench",
        "gemm",
        "--shape",
        "64x32x48",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
        path_str(&json),
    ]);
    let rows = check_output(&out, &json);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["shape"], "64x32x48");
    assert_eq!(
        (
            rows[0]["m"].as_u64(),
            rows[0]["k"].as_u64(),
            rows[0]["n"].as_u64()
        ),
        (Some(64), Some(32), Some(48))
    );
}

/// The tiny ViT (dim 32, 2 blocks, 2 heads, MLP 64, 17 tokens) at batch 2: four
/// linear shapes × three products, and the two attention products over 2·2 entries.
#[test]
fn a_tiny_vit_gets_a_row_per_training_step_product() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_vit_onnx(dir.path(), "vit");
    let json = dir.path().join("gemm.json");
    let out = glora(&[
        "bench",
        "gemm",
        path_str(&model),
        "--batch",
        "2",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--json",
        path_str(&json),
    ]);
    let text = stdout(&out);
    let rows = check_output(&out, &json);
    assert!(text.contains("tokens T 17 (M = B·T = 34)"), "{text}");
    let shapes: Vec<&str> = rows.iter().map(|r| r["shape"].as_str().unwrap()).collect();
    assert_eq!(
        shapes,
        [
            "34x32x96",
            "34x96x32",
            "96x34x32", // qkv
            "34x32x32",
            "34x32x32",
            "32x34x32", // proj
            "34x32x64",
            "34x64x32",
            "64x34x32", // fc1
            "34x64x32",
            "34x32x64",
            "32x34x64", // fc2
            "4×17x16x17",
            "4×17x17x16", // attention
        ]
    );
}

#[test]
fn a_bad_shape_is_a_one_line_error() {
    let out = glora(&["bench", "gemm", "--shape", "64x32"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("MxKxN"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `GLORA_SIMD` caps the level the executor runs at, and the bench says which
/// kernels ran: `base` keeps the `gemm` crate at any width, `avx2` (on a CPU that
/// has it) runs our packed AVX2 product, as a CPU without AVX-512 does.
#[test]
fn glora_simd_chooses_the_kernels_the_bench_reports() {
    let run = |level: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_glora"))
            .env("GLORA_SIMD", level)
            .args([
                "bench", "gemm", "--shape", "64x48x80", "--iters", "1", "--warmup", "0",
            ])
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(out.status.success(), "{text}\n{}", stderr(&out));
        text.lines()
            .find(|l| l.starts_with("vector width: "))
            .unwrap_or_else(|| panic!("no vector width line: {text}"))
            .to_string()
    };
    let base = run("base");
    assert!(
        base.contains("SSE2") && base.contains("gemm crate"),
        "{base}"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        let avx2 = run("avx2");
        assert!(
            avx2.starts_with("vector width: 256-bit") && avx2.contains("glora packed"),
            "{avx2}"
        );
    } else {
        eprintln!("notice: this CPU has no AVX2 + FMA; GLORA_SIMD=avx2 is not tested");
    }
}
