//! `glora generate MODEL.onnx --prompt "…"`: continues a prompt (or answers it as a
//! chat turn, `--chat`) with an exported decoder and its KV cache in tract, printing
//! the text as it comes and the speed at the end.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::data::TextTokenizer;
use crate::data::chat::{ChatTemplate, Message};
use crate::verify::generate::{CachedDecoder, Sampling};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The exported decoder (`glora export` of a decoder supernet writes it with a KV
    /// cache and a genai_config.json beside it).
    pub model: PathBuf,
    /// The folder with tokenizer.json (and tokenizer_config.json, chat_template.jinja
    /// for --chat). Default: the model's folder.
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
    /// The text to continue, or with --chat the user's message.
    #[arg(long)]
    pub prompt: String,
    /// Render the prompt as one user turn through the model's chat template, with
    /// the assistant's turn opened.
    #[arg(long)]
    pub chat: bool,
    /// A system message before the user's turn (with --chat).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// New tokens at most.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_new_tokens: usize,
    /// The longest prompt accepted, in tokens (default: the model's context length).
    #[arg(long, value_name = "TOKENS")]
    pub max_length: Option<usize>,
    /// Sampling temperature; 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0, value_name = "T")]
    pub temperature: f32,
    /// Sample among the K likeliest tokens only (0: all).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub top_k: usize,
    /// Sample among the likeliest tokens whose probabilities add up to P.
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub top_p: f32,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the generated token ids too.
    #[arg(long)]
    pub ids: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        bail!("--top-p {} must lie in (0, 1]", a.top_p);
    }
    let dir = match &a.tokenizer {
        Some(d) => d.clone(),
        None => a
            .model
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let tokenizer = TextTokenizer::from_dir(&dir).with_context(|| {
        format!(
            "no tokenizer for {}; pass --tokenizer DIR",
            a.model.display()
        )
    })?;
    let sp = super::common::spinner(format!("loading {} in tract", a.model.display()));
    let decoder = CachedDecoder::load(&a.model);
    sp.finish_and_clear();
    let decoder = decoder?;
    let (text, special) = if a.chat {
        let template = ChatTemplate::from_dir(&dir)?;
        let mut messages = Vec::new();
        if let Some(s) = &a.system {
            messages.push(Message::new("system", s));
        }
        messages.push(Message::new("user", &a.prompt));
        // The template writes the special tokens itself.
        (template.render(&messages, true)?, false)
    } else {
        (a.prompt.clone(), true)
    };
    let enc = tokenizer
        .inner()
        .encode(text.as_str(), special)
        .map_err(|e| anyhow::anyhow!("{}: {e}", tokenizer.path().display()))?;
    let prompt: Vec<u32> = enc.get_ids().to_vec();
    let limit = a.max_length.unwrap_or(decoder.shape.context_length);
    if prompt.len() > limit {
        bail!(
            "the prompt is {} tokens, longer than --max-length {limit}",
            prompt.len()
        );
    }
    let sampling = Sampling {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    let mut shown = String::new();
    let mut so_far: Vec<u32> = Vec::new();
    let mut out = std::io::stdout();
    let inner = tokenizer.inner();
    let generated = decoder.generate(&prompt, a.max_new_tokens, &sampling, |t| {
        so_far.push(t);
        // Decoding the whole answer each time keeps multi-token characters whole.
        if let Ok(now) = inner.decode(&so_far, true)
            && now.starts_with(&shown)
        {
            let _ = write!(out, "{}", &now[shown.len()..]);
            let _ = out.flush();
            shown = now;
        }
    })?;
    println!();
    if a.ids {
        println!("ids: {:?}", generated.tokens);
    }
    eprintln!(
        "{} prompt tokens, {} new ({}); prefill {:.2} s, {:.1} tokens/s",
        prompt.len(),
        generated.tokens.len(),
        if generated.stopped {
            "end of sequence"
        } else {
            "--max-new-tokens reached"
        },
        generated.prefill_seconds,
        generated.tokens_per_second()
    );
    Ok(ExitCode::SUCCESS)
}
