//! `glora pipeline` and `glora demo` end to end: reports, tract verification, op
//! histograms, plots, and continuing after `kill -9`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_one_line_error, fixture, glora, glora_ok as ok, path_str as s, tiny_vit_onnx};

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

fn pipeline_args<'a>(
    model: &'a Path,
    data: &'a Path,
    out: &'a Path,
    method: &'a str,
) -> Vec<&'a str> {
    vec![
        "pipeline",
        s(model),
        "--data",
        s(data),
        "-o",
        s(out),
        "--method",
        method,
        "--batch",
        "32",
        "--lr",
        "2e-3",
        "--seed",
        "1",
    ]
}

/// Checks a run's report; the base model here has no head, so the merged model has
/// the base's ops plus the head's class-token Gather, MatMul and bias Add.
fn check_report(out: &Path, min_accuracy: f64) -> serde_json::Value {
    let r = json(&out.join("report.json"));
    let err = r["tract_max_abs_error"].as_f64().expect("tract error");
    assert!(err <= 1e-4, "tract differs by {err}");
    let mut expected = r["base_ops"].clone();
    for op in ["Gather", "MatMul", "Add"] {
        let n = expected[op].as_u64().unwrap_or(0);
        expected[op] = serde_json::json!(n + 1);
    }
    assert_eq!(
        expected, r["merged_ops"],
        "merged ops differ from the base's plus a head"
    );
    let acc = r["test_accuracy"].as_f64().expect("test accuracy");
    assert!(
        acc >= min_accuracy,
        "test accuracy {acc} is below {min_accuracy}"
    );
    for f in [
        "model.onnx",
        "report.md",
        "report.html",
        "config.json",
        "loss.svg",
        "loss.png",
        "val_accuracy.png",
    ] {
        assert!(out.join(f).is_file(), "{f} is missing");
    }
    // The chosen config is a table in the report and a file beside it.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("## Chosen adapters") && !md.contains("```json"),
        "{md}"
    );
    assert!(
        md.contains("| **total** |") && md.contains("![Training loss"),
        "{md}"
    );
    let config = json(&out.join("config.json"));
    assert_eq!(config, r["config"]);
    let rows = r["layers"].as_array().expect("per-layer rows");
    assert_eq!(rows.len(), r["adapted_layers"].as_u64().unwrap() as usize);
    let summed: u64 = rows
        .iter()
        .flat_map(|row| row["params"].as_array().unwrap().iter())
        .map(|p| p.as_u64().unwrap())
        .sum();
    assert_eq!(summed, r["adapter_params"].as_u64().unwrap());
    r
}

#[test]
fn glora_and_lora_pipelines_report_verified_models() {
    let Some(data) = fixture("data/digits.csv.gz") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_vit_onnx(tmp.path(), "vit");
    let lora = tmp.path().join("lora");
    let mut args = pipeline_args(&model, &data, &lora, "lora");
    args.extend(["--epochs", "10"]);
    ok(&args);
    let r = check_report(&lora, 0.5);
    let lora_params = r["adapter_params"].as_u64().unwrap();
    assert!(lora_params > 0);

    let run = tmp.path().join("glora");
    let budget = lora_params.to_string();
    let mut args = pipeline_args(&model, &data, &run, "glora");
    args.extend([
        "--epochs",
        "10",
        "--budget",
        &budget,
        "--population",
        "8",
        "--generations",
        "2",
        "--retrain-epochs",
        "1",
    ]);
    let first = ok(&args);
    assert!(!first.contains("reusing"), "a new run reuses: {first}");
    // The backbone is random: a supernet that trains every config at random learns
    // slowly from it, so only the plumbing is checked here (the demo checks learning).
    let r = check_report(&run, 0.0);
    assert!(r["adapter_params"].as_u64().unwrap() <= lora_params);
    assert!(run.join("search.json").is_file() && run.join("search_front.png").is_file());
    assert!(run.join("config.png").is_file() && run.join("config.svg").is_file());
    // inspect prints the chosen config as the same per-layer table.
    let inspected = ok(&["inspect", s(&run.join("supernet.glora"))]);
    assert!(inspected.contains("chosen config"), "{inspected}");
    let total_line = inspected
        .lines()
        .find(|l| l.trim_start().starts_with("total "))
        .expect("a total row");
    let adapter = r["adapter_params"].as_u64().unwrap().to_string();
    assert!(
        total_line.trim_end().ends_with(&adapter),
        "{total_line} vs {adapter}"
    );
    let search = json(&run.join("search.json"));
    for e in search["evaluated"].as_array().unwrap() {
        assert!(
            e["params"].as_u64().unwrap() <= lora_params,
            "a genome over budget"
        );
    }

    // A rerun reuses every stage's result, and says so first.
    let again = ok(&args);
    assert!(again.contains("test accuracy"), "{again}");
    assert_eq!(
        again.lines().next(),
        Some(
            "reusing compile (supernet.glora), train (train.json), search (search.json), retrain (retrain.json), export (model.onnx)"
        ),
        "{again}"
    );
    assert!(!again.contains("resuming"), "{again}");
    let r2 = json(&run.join("report.json"));
    assert_eq!(r["config"], r2["config"]);
    assert_eq!(r["test_accuracy"], r2["test_accuracy"]);

    // A search killed after scoring every genome but before writing its record is
    // run again from its journal: the same choice, nothing evaluated twice.
    assert_eq!(search["replayed_evaluations"], 0);
    std::fs::remove_file(run.join("search.json")).unwrap();
    let rerun = ok(&args);
    assert_eq!(
        rerun.lines().next(),
        Some(
            "reusing compile (supernet.glora), train (train.json), retrain (retrain.json), export (model.onnx)"
        ),
        "{rerun}"
    );
    let replayed = json(&run.join("search.json"));
    assert_eq!(replayed["best"], search["best"]);
    assert_eq!(
        replayed["replayed_evaluations"],
        search["total_evaluations"]
    );
}

#[test]
fn an_infeasible_budget_is_one_line() {
    let Some(data) = fixture("data/digits.csv.gz") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_vit_onnx(tmp.path(), "vit");
    let run = tmp.path().join("run");
    let mut args = pipeline_args(&model, &data, &run, "glora");
    args.extend(["--epochs", "1", "--budget", "10", "--min-budget", "20"]);
    let o = glora(&args);
    assert_one_line_error(&o, &["budget"]);
}

#[test]
fn a_pipeline_killed_during_training_continues_on_rerun() {
    let Some(data) = fixture("data/digits.csv.gz") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_vit_onnx(tmp.path(), "vit");
    let run = tmp.path().join("run");
    let mut args = pipeline_args(&model, &data, &run, "lora");
    args.extend(["--epochs", "6"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_glora"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = run.join("supernet.glora").join("metrics.jsonl");
    let deadline = Instant::now() + Duration::from_secs(300);
    // Kill once the first epoch's checkpoint is written.
    loop {
        let steps = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count();
        if steps > 60 || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "training never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let killed = !child.wait().unwrap().success();
    let rerun = ok(&args);
    check_report(&run, 0.3);
    let train = json(&run.join("train.json"));
    let total = train["steps"].as_u64().unwrap();
    // The rerun says first what it takes as done and, for training cut short, where
    // it resumes.
    let lines: Vec<&str> = rerun.lines().collect();
    if killed && lines.first() == Some(&"reusing compile (supernet.glora)") {
        let step: u64 = lines
            .get(1)
            .and_then(|l| l.strip_prefix("resuming at step "))
            .and_then(|r| r.split(' ').next())
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("no resume line second: {rerun}"));
        let checkpoint = run.join("supernet.glora").join("checkpoint.safetensors");
        assert_eq!(
            lines[1],
            format!(
                "resuming at step {step} of {total} from {}",
                checkpoint.display()
            )
        );
        // Checkpoints are written once an epoch (6 here).
        assert!(
            (1..total).contains(&step) && step.is_multiple_of(total / 6),
            "{rerun}"
        );
        assert_eq!(rerun.matches("resuming").count(), 1, "{rerun}");
    } else {
        // Killed after training, or not killed at all: training is reused.
        assert!(
            lines.first().is_some_and(
                |l| l.starts_with("reusing compile (supernet.glora), train (train.json)")
            ),
            "{rerun}"
        );
        assert!(!rerun.contains("resuming"), "{rerun}");
    }
    let steps: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .filter_map(|v| v["step"].as_u64())
        .collect();
    assert_eq!(
        steps,
        (1..=total).collect::<Vec<_>>(),
        "each step once (killed: {killed})"
    );
}

#[test]
fn the_demo_compares_four_methods_and_verifies_every_export() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let printed = ok(&["demo", "-o", s(&out)]);
    for method in ["head-only", "lora", "glora", "full"] {
        assert!(printed.contains(&format!("| {method} |")), "{printed}");
    }
    let r = json(&out.join("report.json"));
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let lora = rows[1]["adapter_params"].as_u64().unwrap();
    let glora = rows[2]["adapter_params"].as_u64().unwrap();
    assert!(
        glora <= lora,
        "GLoRA's {glora} parameters exceed LoRA's {lora}"
    );
    for row in rows {
        assert!(
            row["tract_max_abs_error"].as_f64().unwrap() <= 1e-4,
            "{row}"
        );
    }
    let glora_report = json(&out.join("glora").join("report.json"));
    assert_eq!(glora_report["base_ops"], glora_report["merged_ops"]);
    assert!(out.join("report.md").is_file());

    // The comparison page links every method's page, and every page opens in a
    // browser with no console error and every chart drawn.
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    for method in ["pretrain", "head-only", "lora", "glora", "full"] {
        let link = format!("href=\"{method}/report.html\"");
        assert!(page.contains(&link), "{link} missing");
        assert!(out.join(method).join("report.html").is_file(), "{method}");
    }
    let glora_page = std::fs::read_to_string(out.join("glora").join("report.html")).unwrap();
    // Loss, validation, search front and chosen adapters, all inline.
    assert_eq!(glora_page.matches("<svg").count(), 4, "charts inline");
    // Nothing is loaded from elsewhere (an SVG's xmlns names a namespace, loads nothing).
    for loads in ["<img", "src=", "href=\"http", "url(", "@import", "<link"] {
        assert!(
            !glora_page.contains(loads),
            "the page loads something: {loads}"
        );
    }
    let Some(browser) = common::chromium() else {
        return;
    };
    for (page, charts) in [
        (out.join("report.html"), 4),
        (out.join("glora").join("report.html"), 4),
        (out.join("lora").join("report.html"), 3),
    ] {
        let shot = page.with_extension("png");
        let view = common::open_in_browser(&browser, &page, &shot);
        assert!(
            view.console.is_empty(),
            "{}: {:?}",
            page.display(),
            view.console
        );
        assert_eq!(view.charts, charts, "{}", page.display());
        let image = image::open(&shot).expect("a screenshot").to_rgb8();
        let inked = image.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(
            inked * 200 > image.pixels().len(),
            "{}: the screenshot is nearly blank",
            page.display()
        );
    }
}
