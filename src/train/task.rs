//! What a run trains a model for: classification (a head on the model's features,
//! one label per example) or causal language modelling (the decoder's own logits,
//! a next-token target per position). The data reader, the training graph's loss
//! and the search's fitness follow from it; `--task` picks it, by default from the
//! model.

use anyhow::bail;

/// The task of a training run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    /// One label per example, from a classification head.
    Classify,
    /// Next-token prediction with the model's language-model head.
    CausalLm,
}

impl Task {
    /// The task `asked` for, else the model's own: causal-LM for a decoder,
    /// classification for anything else. A task the model cannot do is an error.
    pub fn resolve(asked: Option<Task>, is_decoder: bool) -> anyhow::Result<Task> {
        match (asked, is_decoder) {
            (None, true) | (Some(Task::CausalLm), true) => Ok(Task::CausalLm),
            (None, false) | (Some(Task::Classify), false) => Ok(Task::Classify),
            (Some(Task::Classify), true) => bail!(
                "--task classify: the model is a decoder, which trains as a language model here (--task causal-lm); sequence classification with a decoder is not supported"
            ),
            (Some(Task::CausalLm), false) => bail!(
                "--task causal-lm needs a decoder (a llama, mistral or qwen2 family checkpoint or GGUF file); this model is not one"
            ),
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Task::Classify => "classify",
            Task::CausalLm => "causal-lm",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_follows_the_model_and_mismatches_are_refused() {
        assert_eq!(Task::resolve(None, true).unwrap(), Task::CausalLm);
        assert_eq!(Task::resolve(None, false).unwrap(), Task::Classify);
        assert_eq!(
            Task::resolve(Some(Task::CausalLm), true).unwrap(),
            Task::CausalLm
        );
        let e = Task::resolve(Some(Task::Classify), true).unwrap_err();
        assert!(e.to_string().contains("decoder"), "{e}");
        let e = Task::resolve(Some(Task::CausalLm), false).unwrap_err();
        assert!(e.to_string().contains("needs a decoder"), "{e}");
    }
}
