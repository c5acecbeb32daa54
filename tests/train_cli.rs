//! `glora train` end to end with real child processes: a tiny ViT pre-trained on the
//! digits data in full mode, exported, adapted in supernet mode and validated with a
//! fixed LoRA config; exact resume after `kill -9`; a diverging run stopped at its
//! first non-finite loss with the last checkpoint intact.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_one_line_error, fixture, glora, glora_ok as ok, path_str as s, stderr, tiny_vit_onnx,
};

fn digits() -> Option<PathBuf> {
    fixture("data/digits.csv.gz")
}

/// Metrics lines as JSON values.
fn metrics(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A compiled tiny ViT supernet (features only, no head yet).
fn tiny_supernet(dir: &Path, name: &str) -> PathBuf {
    let onnx = tiny_vit_onnx(dir, name);
    let net = dir.join(format!("{name}.glora"));
    ok(&["compile", s(&onnx), "-o", s(&net)]);
    net
}

#[test]
fn pretrain_full_then_adapt_the_supernet_on_digits() {
    let Some(data) = digits() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pre = tiny_supernet(tmp.path(), "pre");
    ok(&[
        "train",
        s(&pre),
        "--data",
        s(&data),
        "--mode",
        "full",
        "--epochs",
        "8",
        "--batch",
        "32",
        "--lr",
        "3e-3",
        "--seed",
        "1",
    ]);
    let pre_metrics = metrics(&pre.join("metrics.jsonl"));
    let pre_acc = pre_metrics
        .iter()
        .filter_map(|v| v["val_acc"].as_f64())
        .next_back()
        .expect("validation lines");
    assert!(pre_acc > 0.6, "full pre-training reached only {pre_acc}");

    let pretrained = tmp.path().join("pretrained.onnx");
    ok(&["export", s(&pre), "-o", s(&pretrained)]);
    let adapted = tmp.path().join("adapted.glora");
    ok(&[
        "compile",
        s(&pretrained),
        "-o",
        s(&adapted),
        "--targets",
        "blocks",
    ]);
    let out = ok(&[
        "train",
        s(&adapted),
        "--data",
        s(&data),
        "--mode",
        "supernet",
        "--features",
        "features",
        "--epochs",
        "3",
        "--batch",
        "32",
        "--lr",
        "2e-3",
        "--seed",
        "1",
    ]);
    let lines = metrics(&adapted.join("metrics.jsonl"));
    let losses: Vec<f64> = lines.iter().filter_map(|v| v["loss"].as_f64()).collect();
    let accs: Vec<f64> = lines.iter().filter_map(|v| v["val_acc"].as_f64()).collect();
    assert!(losses.len() > 50, "{out}");
    assert_eq!(accs.len(), 3, "one validation per epoch");
    let first: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = losses[losses.len() - 10..].iter().sum::<f64>() / 10.0;
    assert!(last < first, "loss did not fall: {first} → {last}");
    // Validated with the all-LoRA config; chance is 0.1.
    assert!(
        accs[2] > 0.5,
        "validation accuracy with LoRA only {}",
        accs[2]
    );
}

/// Runs `train` with the given extra flags on a copy of `net`.
fn train_args<'a>(net: &'a Path, data: &'a Path, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        s(net),
        "--data",
        s(data),
        "--mode",
        "supernet",
        "--steps",
        steps,
        "--epochs",
        "100",
        "--batch",
        "16",
        "--checkpoint-every",
        "10",
        "--seed",
        "5",
        "--val-fraction",
        "0",
    ]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn resume_after_kill_9_is_bit_identical() {
    let Some(data) = digits() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny_supernet(tmp.path(), "base");
    let straight = tmp.path().join("straight.glora");
    let killed = tmp.path().join("killed.glora");
    copy_dir(&base, &straight);
    copy_dir(&base, &killed);
    let fresh = ok(&train_args(&straight, &data, "40"));
    assert!(
        !fresh.contains("resuming"),
        "a fresh run says it resumes: {fresh}"
    );

    let mut args = train_args(&killed, &data, "40");
    args.extend(["--throttle-ms", "100"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_glora"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = killed.join("metrics.jsonl");
    let deadline = Instant::now() + Duration::from_secs(300);
    // Kill during step 23, after the checkpoint at step 20.
    while metrics(&log)
        .iter()
        .filter_map(|v| v["step"].as_u64())
        .max()
        < Some(22)
    {
        assert!(Instant::now() < deadline, "the run never reached step 22");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before it was killed");
    let mut resume = train_args(&killed, &data, "40");
    resume.push("--resume");
    let printed = ok(&resume);
    // One line, before any step's output, names the step, the total and the file.
    let said: Vec<&str> = printed.lines().filter(|l| l.contains("resuming")).collect();
    assert_eq!(said.len(), 1, "expected one resume line: {printed}");
    let step: u64 = said[0]
        .strip_prefix("resuming at step ")
        .and_then(|r| r.split(' ').next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("no step in '{}'", said[0]));
    assert!(
        (20..40).contains(&step) && step.is_multiple_of(10),
        "resumed at step {step}, not at a checkpoint after step 20"
    );
    let checkpoint = killed.join("checkpoint.safetensors");
    assert_eq!(
        said[0],
        format!(
            "resuming at step {step} of 40 from {}",
            checkpoint.display()
        )
    );
    let first_step_line = printed.lines().position(|l| l.starts_with("steps "));
    assert!(
        printed.lines().position(|l| l == said[0]) < first_step_line,
        "the resume line comes after the summary: {printed}"
    );

    let a = std::fs::read(straight.join("adapters.safetensors")).unwrap();
    let b = std::fs::read(killed.join("adapters.safetensors")).unwrap();
    assert!(a == b, "adapters differ after resume");
    let ha = std::fs::read(straight.join("head.safetensors")).unwrap();
    let hb = std::fs::read(killed.join("head.safetensors")).unwrap();
    assert!(ha == hb, "head differs after resume");
    let steps: Vec<u64> = metrics(&log)
        .iter()
        .filter_map(|v| v["step"].as_u64())
        .collect();
    assert_eq!(
        steps,
        (1..=40).collect::<Vec<_>>(),
        "metrics hold each step once"
    );
}

#[test]
fn a_huge_learning_rate_stops_at_the_first_non_finite_loss() {
    let Some(data) = digits() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let net = tiny_supernet(tmp.path(), "net");
    let o = glora(&[
        "train",
        s(&net),
        "--data",
        s(&data),
        "--mode",
        "lora",
        "--lr",
        "1e6",
        "--warmup-epochs",
        "0",
        "--epochs",
        "5",
        "--batch",
        "16",
        "--checkpoint-every",
        "1",
        "--val-fraction",
        "0",
    ]);
    assert_one_line_error(&o, &["non-finite loss at step"]);
    let err = stderr(&o);
    let k: u64 = err
        .split("non-finite loss at step ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("the step number");
    let ck = net.join("checkpoint.safetensors");
    if k > 1 {
        let tensors = glora::io::read_safetensors(&ck).expect("the last checkpoint reads");
        let step = tensors
            .iter()
            .find(|(n, _)| n == "state/step")
            .map(|(_, t)| t.to_i64_vec()[0])
            .expect("a step");
        assert_eq!(step as u64, k - 1, "the checkpoint is the last good step");
        for (n, t) in &tensors {
            if n.starts_with("param/") {
                assert!(
                    t.to_f32_vec().iter().all(|v| v.is_finite()),
                    "{n} is not finite"
                );
            }
        }
    } else {
        assert!(!ck.exists(), "no good step, so no checkpoint");
    }
}

/// A model with its own classifier, compiled with that classifier adapted too, gets
/// a new head on its features: the old classifier's GLoRA layer is then dead code in
/// the training and validation graphs, and the configs that name it still apply to
/// the layers that remain.
#[test]
fn a_model_with_its_own_classifier_trains_a_new_head_on_its_features() {
    let Some(data) = digits() else { return };
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("classifier.onnx");
    ok(&[
        "model",
        "vit",
        "--dim",
        "32",
        "--depth",
        "1",
        "--heads",
        "2",
        "--mlp",
        "64",
        "--classes",
        "10",
        "-o",
        s(&onnx),
    ]);
    let net = dir.path().join("c.glora");
    let out = ok(&["compile", s(&onnx), "-o", s(&net)]);
    assert!(out.contains("adapted layers: 5"), "{out}");
    let out = ok(&[
        "train",
        s(&net),
        "--data",
        s(&data),
        "--mode",
        "supernet",
        "--steps",
        "3",
        "--batch",
        "8",
        "--limit",
        "64",
    ]);
    assert!(out.contains("validation accuracy"), "{out}");
}
