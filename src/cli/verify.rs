//! `glora verify A.onnx [B.onnx | --ours | --against NAME.glora --config C.json]`: runs
//! A in tract and compares it with B in tract, with glora's own executor on A, or with
//! glora's executor on a supernet's adapted graph under a config (the check that an
//! exported model is the adapted model); exit code 1 when any output differs by more
//! than the tolerance.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use super::common::{self, InputFlags};
use crate::glora::ModelConfig;
use crate::ir::{Graph, Shape, Tensor};
use crate::supernet::Supernet;
use crate::verify::{Comparison, TractModel, compare_outputs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The reference model, run in tract.
    pub model: PathBuf,
    /// A second model to run in tract on the same inputs and compare with the first.
    #[arg(
        conflicts_with_all = ["ours", "against"],
        required_unless_present_any = ["ours", "against"]
    )]
    pub other: Option<PathBuf>,
    /// Compare tract on MODEL with glora's executor on MODEL.
    #[arg(long, conflicts_with = "against")]
    pub ours: bool,
    /// Compare tract on MODEL (an exported model) with glora's executor on this
    /// supernet's adapted graph under --config; also prints MODEL's op histogram beside
    /// the base model's.
    #[arg(long, value_name = "NAME.glora", requires = "config")]
    pub against: Option<PathBuf>,
    /// The config MODEL was exported with (for --against).
    #[arg(long, value_name = "CONFIG.json", requires = "against")]
    pub config: Option<PathBuf>,
    /// Largest allowed absolute difference of any output element; above it the exit
    /// code is 1.
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f64,
    #[command(flatten)]
    pub inputs: InputFlags,
    /// Where `--ours` runs glora's executor.
    #[command(flatten)]
    pub device: super::common::DeviceFlags,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let adapted = match (&a.against, &a.config) {
        (Some(dir), Some(config)) => Some(load_adapted(dir, config)?),
        _ => None,
    };
    let g = common::import(&a.model, &a.inputs.shapes)?;
    if let Some((net, _)) = &adapted {
        let mut simplified = g.clone();
        common::optimize(&mut simplified, &a.model)?;
        print_histograms(&simplified, net);
    }
    let inputs = common::inputs(&g, &a.inputs)?;
    for (n, t) in &inputs {
        println!("input  {n:<24} {}{:?}", t.dtype(), t.shape());
    }
    let sp = common::spinner(format!("running {} in tract", a.model.display()));
    let reference = TractModel::load(&a.model, &inputs)?;
    let expected = reference.run(&inputs)?;
    sp.finish_and_clear();
    let names = reference.output_names().to_vec();

    let (label, got, got_names) = match (&a.other, &adapted) {
        (_, Some((net, config))) => {
            let sp = common::spinner("running glora's executor on the adapted graph".into());
            let (y, n) = net.run_adapted(config, &inputs)?;
            sp.finish_and_clear();
            (
                format!(
                    "glora's executor on {} (adapted)",
                    a.against.as_deref().unwrap_or(a.model.as_path()).display()
                ),
                y,
                n,
            )
        }
        (Some(other), None) => {
            let sp = common::spinner(format!("running {} in tract", other.display()));
            let m = TractModel::load(other, &inputs)?;
            let y = m.run(&inputs)?;
            sp.finish_and_clear();
            (
                format!("tract on {}", other.display()),
                y,
                m.output_names().to_vec(),
            )
        }
        (None, None) => {
            let (y, n) = run_ours(g, &inputs, &a)?;
            ("glora's executor".to_string(), y, n)
        }
    };
    let got = align(&names, &got_names, got);
    let rows = compare_outputs(&names, &got, &expected);
    println!("{label} against tract on {}:", a.model.display());
    print_rows(&rows, a.tolerance);
    let worst = rows.iter().map(|r| r.max_abs).fold(0.0, f64::max);
    if rows.iter().all(|r| r.within(a.tolerance)) && rows.len() == names.len() {
        println!("OK: max abs error {worst:.3e} <= {:.0e}", a.tolerance);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("FAILED: max abs error {worst:.3e} > {:.0e}", a.tolerance);
        Ok(ExitCode::from(1))
    }
}

/// The supernet and the config to run it under; the config is checked first, so a bad
/// one stops the command before any model runs.
fn load_adapted(
    dir: &std::path::Path,
    config: &std::path::Path,
) -> anyhow::Result<(Supernet, ModelConfig)> {
    let sp = common::spinner(format!("loading {}", dir.display()));
    let net = Supernet::load(dir);
    sp.finish_and_clear();
    let net = net?;
    let config = super::export::read_config(&net, config)?;
    Ok((net, config))
}

/// The op histogram of the model under test beside the base model's, both simplified.
/// A merged model has the base's ops plus one bias Add per adapted layer that had no
/// bias.
fn print_histograms(model: &Graph, net: &Supernet) {
    let got = model.op_histogram();
    let base = net.base.op_histogram();
    let mut names: Vec<&String> = got.keys().chain(base.keys()).collect();
    names.sort();
    names.dedup();
    println!("{:<22} {:>8} {:>8}", "op", "model", "base");
    let count = |h: &BTreeMap<String, usize>, n: &String| h.get(n).copied().unwrap_or(0);
    for n in names {
        let (m, b) = (count(&got, n), count(&base, n));
        let mark = if m == b { "" } else { "  differs" };
        println!("{n:<22} {m:>8} {b:>8}{mark}");
    }
    let biasless = net.layers.iter().filter(|l| !l.shape.has_bias).count();
    let mut with_bias_adds = base.clone();
    if biasless > 0 {
        *with_bias_adds.entry("Add".to_string()).or_default() += biasless;
    }
    if got == base {
        println!("op histograms: identical");
    } else if got == with_bias_adds {
        println!(
            "op histograms: identical but for {biasless} bias Add(s) of adapted layers without a bias"
        );
    } else {
        println!("op histograms: differ");
    }
}

/// Runs glora's executor with the inputs' shapes fixed, so that shape plumbing folds.
fn run_ours(
    mut g: crate::ir::Graph,
    inputs: &[(String, Tensor)],
    a: &Args,
) -> anyhow::Result<(Vec<Tensor>, Vec<String>)> {
    for (n, t) in inputs {
        g.set_input_shape(n, Shape::known(t.shape()))?;
    }
    crate::ir::infer::infer_types(&mut g)?;
    common::optimize(&mut g, &a.model)?;
    let sp = common::spinner("running glora's executor".into());
    let s = a.device.open()?.session(&g)?;
    let y = s.run(inputs)?;
    sp.finish_and_clear();
    Ok((y, s.output_names()))
}

/// Puts `got` into the order of `names` when every name is found; otherwise keeps
/// positions (models whose outputs were renamed).
fn align(names: &[String], got_names: &[String], got: Vec<Tensor>) -> Vec<Tensor> {
    let idx: Option<Vec<usize>> = names
        .iter()
        .map(|n| got_names.iter().position(|g| g == n))
        .collect();
    match idx {
        Some(idx) => idx.into_iter().map(|i| got[i].clone()).collect(),
        None => got,
    }
}

fn print_rows(rows: &[Comparison], tol: f64) {
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
    println!(
        "  {:<w$}  {:<20}  {:>11}  {:>11}",
        "output", "shape", "max abs", "max rel"
    );
    for r in rows {
        let shape = if r.shape_a == r.shape_b {
            format!("{:?}", r.shape_a)
        } else {
            format!("{:?} vs {:?}", r.shape_a, r.shape_b)
        };
        println!(
            "  {:<w$}  {:<20}  {:>11.3e}  {:>11.3e}  {}",
            r.name,
            shape,
            r.max_abs,
            r.max_rel,
            if r.within(tol) { "ok" } else { "FAIL" }
        );
    }
}
