//! `glora demo`: pre-train a small ViT on digits 0–4, adapt it few-shot to digits 5–9
//! with head-only, LoRA, GLoRA and full fine-tuning, and print the comparison.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The output folder (an earlier demo there is continued).
    #[arg(short, long, default_value = "runs/demo")]
    pub output: PathBuf,
    #[command(flatten)]
    pub device: super::common::DeviceFlags,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let r = crate::pipeline::demo::run_demo(&a.output, &a.device.open()?)?;
    println!();
    print!("{}", crate::pipeline::demo::table(&r));
    println!(
        "\nsource task (digits 0–4) test accuracy {:.2}%; GLoRA budget = LoRA's {} adapter parameters; {:.1} s in all",
        100.0 * r.source_test_accuracy,
        r.lora_budget,
        r.seconds
    );
    println!(
        "wrote {} (report.html, report.md, report.json, one run folder per method)",
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
