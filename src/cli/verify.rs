//! `glora verify A.onnx [B.onnx | --ours]`: runs A in tract and compares it with B in
//! tract, or with glora's own executor on A; exit code 1 when any output differs by more
//! than the tolerance.

use std::path::PathBuf;
use std::process::ExitCode;

use super::common::{self, InputFlags};
use crate::ir::{Shape, Tensor};
use crate::verify::{Comparison, TractModel, compare_outputs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The reference model, run in tract.
    pub model: PathBuf,
    /// A second model to run in tract on the same inputs and compare with the first.
    #[arg(conflicts_with = "ours", required_unless_present = "ours")]
    pub other: Option<PathBuf>,
    /// Compare tract on MODEL with glora's executor on MODEL.
    #[arg(long)]
    pub ours: bool,
    /// Largest allowed absolute difference of any output element.
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f64,
    #[command(flatten)]
    pub inputs: InputFlags,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let g = common::import(&a.model, &a.inputs.shapes)?;
    let inputs = common::inputs(&g, &a.inputs)?;
    for (n, t) in &inputs {
        println!("input  {n:<24} {}{:?}", t.dtype(), t.shape());
    }
    let sp = common::spinner(format!("running {} in tract", a.model.display()));
    let reference = TractModel::load(&a.model, &inputs)?;
    let expected = reference.run(&inputs)?;
    sp.finish_and_clear();
    let names = reference.output_names().to_vec();

    let (label, got, got_names) = match &a.other {
        Some(other) => {
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
        None => {
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
    let s = crate::exec::Session::new(&g, crate::exec::CpuBackend)?;
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
