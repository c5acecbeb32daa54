//! `glora search` end to end on the digits data: a tiny ViT supernet trained for a
//! few steps, searched under a 5k budget; the record, the charts and the stored
//! config are checked, and `glora export` then uses the stored config. Impossible
//! budgets and supernets without a head fail with one line.

mod common;

use std::path::{Path, PathBuf};

use common::{
    assert_one_line_error, fixture, glora, glora_ok as ok, path_str as s, stderr, tiny_vit_onnx,
};
use serde_json::Value;

const BUDGET: u64 = 5000;

/// A tiny ViT supernet; trained for 60 steps (which gives it its head) unless
/// `train` is false.
fn supernet(dir: &Path, data: &Path, train: bool) -> PathBuf {
    let onnx = tiny_vit_onnx(dir, "tiny");
    let net = dir.join("tiny.glora");
    ok(&["compile", s(&onnx), "-o", s(&net)]);
    if train {
        ok(&["train", s(&net), "--data", s(data), "--steps", "60"]);
    }
    net
}

fn search_args<'a>(net: &'a Path, data: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "search",
        s(net),
        "--data",
        s(data),
        "--budget",
        "5k",
        "--population",
        "8",
        "--generations",
        "3",
        "--parents",
        "4",
        "--mutations",
        "4",
        "--crossovers",
        "4",
    ];
    args.extend_from_slice(extra);
    args
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn search_records_plots_and_stores_a_config_that_export_uses() {
    let Some(data) = fixture("data/digits.csv.gz") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let net = supernet(tmp.path(), &data, true);
    let out = ok(&search_args(&net, &data, &[]));
    assert!(out.contains("per evaluated genome"), "{out}");
    assert!(out.contains("best config: validation accuracy"), "{out}");

    let record = read_json(&net.join("search.json"));
    let evaluated = record["evaluated"].as_array().expect("evaluated genomes");
    assert_eq!(
        record["total_evaluations"].as_u64(),
        Some(evaluated.len() as u64)
    );
    // 8 random genomes, then at most 8 children per generation for 3 generations.
    assert!(
        evaluated.len() >= 8 && evaluated.len() <= 8 + 3 * 8,
        "{}",
        evaluated.len()
    );
    let layers = record["layers"].as_array().unwrap().len();
    assert_eq!(layers, 8);
    for e in evaluated {
        let params = e["params"].as_u64().unwrap();
        assert!(
            params <= BUDGET,
            "a genome of {params} parameters was evaluated"
        );
        assert_eq!(e["config"].as_array().unwrap().len(), layers);
        let acc = e["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
    }
    let top: Vec<f64> = record["top_k"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["accuracy"].as_f64().unwrap())
        .collect();
    assert!(top.windows(2).all(|w| w[0] >= w[1]), "{top:?}");
    let best = &record["best"];
    assert_eq!(best["accuracy"].as_f64(), top.first().copied());
    let best_params = best["params"].as_u64().unwrap();
    assert!(best_params <= BUDGET);
    assert_eq!(record["generations"].as_array().unwrap().len(), 4);
    assert!(record["seconds_per_evaluation"].as_f64().unwrap() > 0.0);

    // The chosen config is the one glora.json now holds.
    let manifest = read_json(&net.join("glora.json"));
    assert_eq!(manifest["config"], best["config"]);

    for chart in ["search_front.svg", "search_front.png"] {
        let bytes = std::fs::read(net.join(chart)).unwrap();
        assert!(bytes.len() > 1000, "{chart} is {} bytes", bytes.len());
    }
    let png = std::fs::read(net.join("search_front.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(net.join("search_front.svg")).unwrap();
    assert!(svg.contains("validation accuracy"));

    let onnx = tmp.path().join("chosen.onnx");
    let exported = ok(&["export", s(&net), "-o", s(&onnx)]);
    // "8 layers, 3,866 adapter parameters in this config"
    let counted: u64 = exported
        .lines()
        .find_map(|l| {
            l.split(" adapter parameters")
                .next()
                .filter(|_| l.contains("adapter"))
        })
        .and_then(|head| head.rsplit(' ').next())
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no parameter count in: {exported}"));
    assert_eq!(counted, best_params, "{exported}");
    assert!(onnx.is_file());
}

#[test]
fn the_same_seed_repeats_the_search_into_another_folder() {
    let Some(data) = fixture("data/digits.csv.gz") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let net = supernet(tmp.path(), &data, true);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&search_args(&net, &data, &["--seed", "3", "-o", s(&a)]));
    ok(&search_args(&net, &data, &["--seed", "3", "-o", s(&b)]));
    let (ra, rb) = (
        read_json(&a.join("search.json")),
        read_json(&b.join("search.json")),
    );
    assert_eq!(ra["evaluated"], rb["evaluated"]);
    assert_eq!(ra["best"], rb["best"]);
    assert!(a.join("search_front.png").is_file() && b.join("search_front.svg").is_file());
    assert!(!net.join("search.json").exists(), "-o was not honoured");
}

#[test]
fn an_impossible_budget_fails_with_one_line_before_searching() {
    let Some(data) = fixture("data/digits.csv.gz") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let net = supernet(tmp.path(), &data, true);
    let before = std::fs::read_to_string(net.join("glora.json")).unwrap();
    let o = glora(&search_args(&net, &data, &["--min-budget", "10M"]));
    assert_one_line_error(&o, &["minimum budget", "feasible range", "0..=8352"]);
    assert_eq!(
        std::fs::read_to_string(net.join("glora.json")).unwrap(),
        before
    );
    assert!(!net.join("search.json").exists());

    let o = glora(&search_args(&net, &data, &["--min-budget", "6k"]));
    assert_one_line_error(&o, &["minimum budget", "above the budget"]);
}

#[test]
fn a_supernet_without_a_head_is_refused() {
    let Some(data) = fixture("data/digits.csv.gz") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let net = supernet(tmp.path(), &data, false);
    let o = glora(&search_args(&net, &data, &[]));
    assert_one_line_error(&o, &["no classification head", "glora train"]);
}

#[test]
fn a_malformed_budget_is_a_usage_error() {
    let o = glora(&["search", "x.glora", "--data", "d.csv", "--budget", "5q"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a parameter count"),
        "{}",
        stderr(&o)
    );
}
