//! `glora inspect MODEL.onnx`: what a model takes and gives, what it is made of, and
//! which linear layers glora can adapt.

use std::path::PathBuf;
use std::process::ExitCode;

use super::common;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model.
    pub model: PathBuf,
    /// Also print the whole graph after simplification, one node per line.
    #[arg(long)]
    pub dump: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut g = common::import(&a.model, &[])?;
    println!("model: {}", a.model.display());
    println!("inputs:");
    for &i in &g.inputs {
        let v = &g.node(i).outputs[0];
        println!("  {:<28} {}", v.name, ty(&v.ty));
    }
    println!("outputs:");
    for &o in &g.outputs {
        let v = g.value(o);
        println!("  {:<28} {}", v.name, ty(&v.ty));
    }
    println!("parameters: {}", g.weight_count());
    let before = g.op_histogram();
    common::optimize(&mut g, &a.model)?;
    let after = g.op_histogram();
    println!("ops (as imported -> simplified):");
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    for n in names {
        let (b, f) = (
            before.get(n).copied().unwrap_or(0),
            after.get(n).copied().unwrap_or(0),
        );
        println!("  {n:<22} {b:>6} -> {f:<6}");
    }
    let layers = crate::passes::find_linear_layers(&g);
    println!("linear layers: {}", layers.len());
    if !layers.is_empty() {
        let w = layers
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        println!("  {:<w$}  {:>6}  {:>6}  bias", "name", "in", "out");
        for l in &layers {
            println!(
                "  {:<w$}  {:>6}  {:>6}  {}",
                l.name,
                l.d_in,
                l.d_out,
                if l.bias.is_some() { "yes" } else { "no" }
            );
        }
    }
    if a.dump {
        println!("{}", crate::ir::print::dump(&g));
    }
    Ok(ExitCode::SUCCESS)
}

fn ty(t: &Option<crate::ir::TensorType>) -> String {
    t.as_ref()
        .map(|t| t.to_string())
        .unwrap_or_else(|| "?".into())
}
