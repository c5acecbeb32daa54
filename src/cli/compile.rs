//! `glora compile MODEL -o NAME.glora`: adapts a model's linear layers with GLoRA
//! and writes the supernet directory; prints the adapted layers and the parameter
//! counts of the supernet and of its smallest and largest config.

use std::path::PathBuf;
use std::process::ExitCode;

use super::common;
use crate::glora::supernet_params;
use crate::supernet::Supernet;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model to adapt: an ONNX file or a Hugging Face checkpoint folder (config.json + safetensors).
    pub model: PathBuf,
    /// The supernet directory to write (conventionally NAME.glora); an earlier
    /// supernet there is replaced.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub layers: super::common::LayerFlags,
    /// LoRA ranks the search space offers, e.g. `--ranks 2,4,8`; factors are stored at
    /// the largest.
    #[arg(long, value_delimiter = ',', default_value = "4")]
    pub ranks: Vec<usize>,
    /// Seed of the adapters' initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fill every adapter tensor with random non-zero values instead of the reference
    /// initialisation (whose zero factors make every config equal to the base model),
    /// so that export and verification are exercised on adapters that change the model.
    #[arg(long)]
    pub random_adapters: bool,
    /// Re-declare the image input as N×N pixels before simplifying the model, for
    /// models that resample their position embeddings to the input's size (DINOv2
    /// exports, for example); recorded in glora.json so that training, export and
    /// verification use the same size.
    #[arg(long, value_name = "N")]
    pub image_size: Option<usize>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let sp = common::spinner(format!("adapting {}", a.model.display()));
    let net = Supernet::compile(
        &a.model,
        a.layers.targets.as_deref(),
        a.layers.exclude.as_deref(),
        &a.ranks,
        a.seed,
        a.image_size.map(|s| [s, s]),
    );
    sp.finish_and_clear();
    let mut net = net?;
    if a.random_adapters {
        net.randomize_adapters(a.seed)?;
    }
    let sp = common::spinner(format!("writing {}", a.output.display()));
    let saved = net.save(&a.output);
    sp.finish_and_clear();
    saved?;

    print_layers(&net);
    let counts = net.param_counts();
    println!("adapted layers: {}", net.layers.len());
    println!("ranks: {:?}", net.space.ranks());
    println!("adapter parameters:");
    println!("  full supernet   {:>12}", group(counts.supernet));
    println!("  smallest config {:>12}", group(counts.configs.min));
    println!("  largest config  {:>12}", group(counts.configs.max));
    println!(
        "wrote {}{}",
        a.output.display(),
        if a.random_adapters {
            " (random adapters)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn print_layers(net: &Supernet) {
    let rank = net.space.max_rank();
    let w = net
        .layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "  {:<w$}  {:>6}  {:>6}  {:<4}  {:>10}",
        "name", "in", "out", "bias", "params"
    );
    for l in &net.layers {
        println!(
            "  {:<w$}  {:>6}  {:>6}  {:<4}  {:>10}",
            l.name,
            l.shape.d_in,
            l.shape.d_out,
            if l.shape.has_bias { "yes" } else { "no" },
            group(supernet_params(l.shape, rank))
        );
    }
}

/// `912672` as `912,672`.
pub fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::group(0), "0");
        assert_eq!(super::group(999), "999");
        assert_eq!(super::group(1000), "1,000");
        assert_eq!(super::group(912672), "912,672");
        assert_eq!(super::group(1603776), "1,603,776");
    }
}
