//! Whole real models on the CPU backend beside tract: outputs compared, times and a
//! per-op breakdown printed, never asserted. Ignored by default (slow in debug
//! builds); run with
//! `cargo test --lib exec::tests::speed -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::exec::{Backend, CpuValue, ExecError, Session};

/// The CPU backend with the time spent in each op accumulated.
#[derive(Clone, Default)]
struct Timed {
    per_op: Arc<Mutex<BTreeMap<String, (usize, Duration)>>>,
}

impl Backend for Timed {
    type Value = CpuValue;

    fn name(&self) -> &'static str {
        "timed-cpu"
    }

    fn upload(&self, t: &Tensor) -> Result<CpuValue, ExecError> {
        CpuBackend.upload(t)
    }

    fn download(&self, v: &CpuValue) -> Result<Tensor, ExecError> {
        CpuBackend.download(v)
    }

    fn run_node(
        &self,
        node: &Node,
        inputs: &[Option<&CpuValue>],
    ) -> Result<Vec<CpuValue>, ExecError> {
        let start = Instant::now();
        let out = CpuBackend.run_node(node, inputs);
        let spent = start.elapsed();
        if let Ok(mut m) = self.per_op.lock() {
            let e = m.entry(node.op.name().to_string()).or_default();
            e.0 += 1;
            e.1 += spent;
            if matches!(node.op, Op::MatMul) {
                let shapes: Vec<String> = inputs
                    .iter()
                    .flatten()
                    .map(|v| {
                        let (_, layout) = v.tensor().storage_and_layout();
                        format!("{:?}/{:?}", v.dims(), layout.stride())
                    })
                    .collect();
                let e = m
                    .entry(format!("  MatMul {}", shapes.join(" × ")))
                    .or_default();
                e.0 += 1;
                e.1 += spent;
            }
        }
        out
    }
}

/// Minor page faults of this process so far (0 where /proc is unavailable).
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_string();
            after.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

fn time_runs(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    for _ in 0..runs {
        f();
    }
    start.elapsed() / runs as u32
}

fn compare_with_tract(path: &Path, batch: usize, runs: usize) {
    let mut g = crate::onnx::import_file(path).unwrap();
    crate::passes::optimize(&mut g, &CpuBackend).unwrap();
    let shapes = crate::verify::concrete_input_shapes(&g, &[], batch, 128).unwrap();
    let inputs = crate::verify::random_inputs(&shapes, 1);
    let timed = Timed::default();
    let session = Session::new(&g, timed.clone()).unwrap();
    let mut ours = Vec::new();
    let faults = minor_faults();
    let t_ours = time_runs(runs, || ours = session.run(&inputs).unwrap());
    println!(
        "  page faults per glora run: {}",
        (minor_faults() - faults) / (runs as u64 + 1)
    );
    let tract = crate::verify::TractModel::load(path, &inputs).unwrap();
    let mut theirs = Vec::new();
    let t_tract = time_runs(runs, || theirs = tract.run(&inputs).unwrap());
    println!(
        "{} batch {batch}: glora {:.1} ms, tract {:.1} ms ({:.2}x)",
        path.display(),
        t_ours.as_secs_f64() * 1e3,
        t_tract.as_secs_f64() * 1e3,
        t_ours.as_secs_f64() / t_tract.as_secs_f64()
    );
    for (a, b) in ours.iter().zip(&theirs) {
        let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
        let diff = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max);
        let scale = y.iter().map(|v| v.abs()).fold(0.0, f64::max);
        println!(
            "  output {:?}: max |glora − tract| = {diff:.3e} (max |tract| {scale:.3e})",
            a.shape()
        );
    }
    let per_op = timed.per_op.lock().map(|m| m.clone()).unwrap_or_default();
    let mut rows: Vec<_> = per_op.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.1));
    for (op, (n, d)) in rows {
        println!(
            "  {op:40} {n:6} calls {:9.2} ms/run",
            d.as_secs_f64() * 1e3 / (runs + 1) as f64
        );
    }
}

#[test]
#[ignore]
fn real_models_beside_tract() {
    for (p, batch) in [
        ("fixtures:models/torch-vit-s.onnx", 8),
        ("fixtures:models/dinov2-vits14-focus.onnx", 2),
        ("fixtures:models/paraphrase-minilm-l3.onnx", 4),
    ] {
        match model_path(p) {
            Some(path) => compare_with_tract(&path, batch, 3),
            None => println!("{p}: not found, skipped"),
        }
    }
}

/// GFLOP/s of the matrix products a ViT-S at batch 8 runs.
#[test]
#[ignore]
fn matmul_throughput() {
    let cases: [(&str, Vec<usize>, Vec<usize>); 4] = [
        ("qkv 1576×384×1152", vec![8, 197, 384], vec![384, 1152]),
        ("fc2 1576×1536×384", vec![8, 197, 1536], vec![1536, 384]),
        (
            "attn 48×197×64×197",
            vec![8, 6, 197, 64],
            vec![8, 6, 64, 197],
        ),
        (
            "attn·v 48×197×197×64",
            vec![8, 6, 197, 197],
            vec![8, 6, 197, 64],
        ),
    ];
    for (name, a, b) in cases {
        let ta = f32t(&a, &noise(a.iter().product(), 1));
        let tb = f32t(&b, &noise(b.iter().product(), 2));
        let k = a[a.len() - 1];
        let n = b[b.len() - 1];
        let mrows: usize = a[..a.len() - 1].iter().product();
        let flops = 2.0 * (mrows * k * n) as f64;
        let n = node(Op::MatMul, 2, 1);
        let (va, vb) = (
            CpuBackend.upload(&ta).unwrap(),
            CpuBackend.upload(&tb).unwrap(),
        );
        let faults = minor_faults();
        let t = time_runs(5, || {
            CpuBackend.run_node(&n, &[Some(&va), Some(&vb)]).unwrap();
        });
        println!(
            "{name}: {:.1} ms, {:.0} GFLOP/s, {} page faults per call",
            t.as_secs_f64() * 1e3,
            flops / t.as_secs_f64() / 1e9,
            (minor_faults() - faults) / 6
        );
    }
}

/// Throughput of the elementwise and row kernels at ViT-S batch-8 sizes.
#[test]
#[ignore]
fn row_kernel_throughput() {
    let big = f32t(&[1576, 1536], &noise(1576 * 1536, 3));
    let scores = f32t(&[48, 197, 197], &noise(48 * 197 * 197, 4));
    let tokens = f32t(&[1576, 384], &noise(1576 * 384, 5));
    let row = f32t(&[384], &noise(384, 6));
    let report = |name: &str, elems: usize, op: Op, inputs: &[Tensor]| {
        let n = node(op, inputs.len(), 1);
        let values: Vec<CpuValue> = inputs
            .iter()
            .map(|t| CpuBackend.upload(t).unwrap())
            .collect();
        let refs: Vec<Option<&CpuValue>> = values.iter().map(Some).collect();
        let t = time_runs(10, || {
            CpuBackend.run_node(&n, &refs).unwrap();
        });
        println!(
            "{name}: {:.2} ms, {:.2} ns/element",
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e9 / elems as f64
        );
    };
    report(
        "gelu 2.4M",
        1576 * 1536,
        Op::Gelu {
            approximate: crate::ir::GeluApprox::None,
        },
        std::slice::from_ref(&big),
    );
    report(
        "softmax 1.86M",
        48 * 197 * 197,
        Op::Softmax { axis: -1 },
        std::slice::from_ref(&scores),
    );
    report(
        "add bias 0.6M",
        1576 * 384,
        Op::Binary(crate::ir::BinaryOp::Add),
        &[tokens.clone(), row.clone()],
    );
    report(
        "add same 0.6M",
        1576 * 384,
        Op::Binary(crate::ir::BinaryOp::Add),
        &[tokens.clone(), tokens.clone()],
    );
    report(
        "div scalar 1.86M",
        48 * 197 * 197,
        Op::Binary(crate::ir::BinaryOp::Div),
        &[scores, Tensor::scalar_f32(8.0)],
    );
    report(
        "layernorm 0.6M",
        1576 * 384,
        Op::LayerNorm {
            axis: -1,
            epsilon: 1e-6,
        },
        &[tokens, row.clone(), row],
    );
}

/// candle's own matmul on the qkv shape, as a yardstick for `matmul_throughput`.
#[test]
#[ignore]
fn candle_matmul_yardstick() {
    let dev = candle_core::Device::Cpu;
    let a = candle_core::Tensor::from_vec(noise(1576 * 384, 1), (1576, 384), &dev).unwrap();
    let b = candle_core::Tensor::from_vec(noise(384 * 1152, 2), (384, 1152), &dev).unwrap();
    let t = time_runs(5, || {
        a.matmul(&b).unwrap();
    });
    let flops = 2.0 * 1576.0 * 384.0 * 1152.0;
    println!(
        "candle qkv: {:.1} ms, {:.0} GFLOP/s",
        t.as_secs_f64() * 1e3,
        flops / t.as_secs_f64() / 1e9
    );
}
