"""Reference checkpoints and outputs for glora's Hugging Face front end.

For each family glora builds, makes a small, freshly initialised model with
transformers (`from_config`, seeded; biases and LayerNorm parameters moved off their
0/1 start so that every path is exercised), saves it as a checkpoint folder, runs it
on fixed inputs in eval mode and writes inputs and outputs to
`FOLDER/reference.safetensors` (decoders: their `logits`). Variants cover a task model's prefixed weights, a
sharded checkpoint with an index, f16 and bf16 weights. With `--minilm DIR`, also
writes the outputs of that real checkpoint (without copying it) to OUT/minilm; with
`--smollm DIR`, the logits of that decoder folder on a chat prompt and a padded
sentence to OUT/smollm.

usage: hf_checkpoints.py OUT [--minilm DIR] [--smollm DIR]
"""

import argparse
import json
import os

import torch
import transformers as tf
from safetensors.torch import save_file

torch.manual_seed(0)

TEXT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64)
DECODER = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, intermediate_size=37, max_position_embeddings=64)
VISION = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
              num_attention_heads=4, num_channels=3)


def configs():
    yield "bert", tf.BertConfig(**TEXT, type_vocab_size=2), tf.BertModel
    yield "bert-relu-nopooler", tf.BertConfig(**TEXT, hidden_act="relu"), \
        lambda c: tf.BertModel(c, add_pooling_layer=False)
    yield "bert-gelu-new", tf.BertConfig(**TEXT, hidden_act="gelu_new"), tf.BertModel
    yield "bert-task", tf.BertConfig(**TEXT, num_labels=3), tf.BertForSequenceClassification
    yield "bert-sharded", tf.BertConfig(**TEXT), tf.BertModel
    yield "bert-f16", tf.BertConfig(**TEXT), tf.BertModel
    yield "bert-bf16", tf.BertConfig(**TEXT), tf.BertModel
    yield "roberta", tf.RobertaConfig(**{**TEXT, "max_position_embeddings": 66},
                                      type_vocab_size=1, pad_token_id=1), tf.RobertaModel
    yield "xlm-roberta", tf.XLMRobertaConfig(**{**TEXT, "max_position_embeddings": 66},
                                             type_vocab_size=1, pad_token_id=1), tf.XLMRobertaModel
    yield "distilbert", tf.DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4,
                                            hidden_dim=37, max_position_embeddings=64), tf.DistilBertModel
    yield "vit", tf.ViTConfig(**VISION, intermediate_size=37), tf.ViTModel
    yield "deit", tf.DeiTConfig(**VISION, intermediate_size=37), tf.DeiTModel
    yield "dinov2", tf.Dinov2Config(**VISION, mlp_ratio=2, layerscale_value=0.5), tf.Dinov2Model
    # Decoders: grouped-query attention (4 query heads on 2 key/value heads), tied and
    # separate heads, biases, an explicit head_dim, each RoPE type, sliding windows
    # shorter than the 7-token inputs.
    yield "llama", tf.LlamaConfig(**DECODER, tie_word_embeddings=True, rope_theta=500.0), \
        tf.LlamaForCausalLM
    yield "llama-bias-headdim", tf.LlamaConfig(**{**DECODER, "num_key_value_heads": 1},
                                                head_dim=12, attention_bias=True, mlp_bias=True,
                                                tie_word_embeddings=False), tf.LlamaForCausalLM
    yield "llama-linear-rope", tf.LlamaConfig(**DECODER, rope_scaling={
        "rope_type": "linear", "factor": 2.0, "rope_theta": 300.0}), tf.LlamaForCausalLM
    yield "llama3-rope", tf.LlamaConfig(**DECODER, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16, "rope_theta": 10000.0}), tf.LlamaForCausalLM
    yield "mistral", tf.MistralConfig(**DECODER, sliding_window=3), tf.MistralForCausalLM
    yield "qwen2", tf.Qwen2Config(**{**DECODER, "num_hidden_layers": 3}, use_sliding_window=True,
                                  sliding_window=2, max_window_layers=1,
                                  tie_word_embeddings=True), tf.Qwen2ForCausalLM
    yield "dinov2-swiglu", tf.Dinov2Config(**VISION, mlp_ratio=2, use_swiglu_ffn=True), tf.Dinov2Model


def perturb(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def text_inputs(cfg):
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    ids = torch.randint(3, cfg.vocab_size, (2, 7), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    ids[1, 5:] = pad
    mask[1, 5:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if getattr(cfg, "type_vocab_size", 1) > 1:
        types = torch.zeros_like(ids)
        types[:, 4:] = 1
        inputs["token_type_ids"] = types
    return inputs


def decoder_inputs(cfg):
    """Three rows: all real tokens, right padding, left padding."""
    ids = torch.randint(3, cfg.vocab_size, (3, 7), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, :2] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def run_decoder(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
    tensors = {k: v.contiguous() for k, v in inputs.items()}
    tensors["logits"] = out.logits.contiguous()
    return tensors


def run(model, inputs):
    if hasattr(model, "lm_head"):
        return run_decoder(model, inputs)
    base = getattr(model, model.base_model_prefix, model) if hasattr(model, "base_model_prefix") else model
    with torch.no_grad():
        out = base(**inputs)
    tensors = {k: v.contiguous() for k, v in inputs.items()}
    tensors["last_hidden_state"] = out.last_hidden_state.contiguous()
    if getattr(out, "pooler_output", None) is not None:
        tensors["pooler_output"] = out.pooler_output.contiguous()
    return tensors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--minilm")
    ap.add_argument("--smollm")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    made = []
    for name, cfg, cls in configs():
        cfg._attn_implementation = "eager"
        model = cls(cfg).eval()
        perturb(model)
        folder = os.path.join(a.out, name)
        if name == "bert-sharded":
            model.save_pretrained(folder, max_shard_size="20KB")
        elif name in ("bert-f16", "bert-bf16"):
            dtype = torch.float16 if name == "bert-f16" else torch.bfloat16
            model.to(dtype).save_pretrained(folder)
            model = model.to(torch.float32)
        else:
            model.save_pretrained(folder)
        if hasattr(cfg, "image_size"):
            g = torch.Generator().manual_seed(3)
            inputs = {"pixel_values": torch.randn(2, cfg.num_channels, cfg.image_size,
                                                  cfg.image_size, generator=g)}
        elif hasattr(model, "lm_head"):
            inputs = decoder_inputs(cfg)
        else:
            inputs = text_inputs(cfg)
        save_file(run(model, inputs), os.path.join(folder, "reference.safetensors"))
        made.append(name)
    if a.minilm:
        model = tf.AutoModel.from_pretrained(a.minilm, attn_implementation="eager").eval()
        tok = tf.AutoTokenizer.from_pretrained(a.minilm)
        enc = tok(["GLoRA folds its adapters back into the weights.",
                   "A second, longer sentence about spam filters and ham."],
                  padding=True, return_tensors="pt")
        inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        folder = os.path.join(a.out, "minilm")
        os.makedirs(folder, exist_ok=True)
        save_file(run(model, inputs), os.path.join(folder, "reference.safetensors"))
        made.append("minilm")
    if a.smollm:
        model = tf.AutoModelForCausalLM.from_pretrained(a.smollm, attn_implementation="eager").eval()
        tok = tf.AutoTokenizer.from_pretrained(a.smollm)
        chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                       add_generation_prompt=True, tokenize=False)
        tok.padding_side = "right"
        enc = tok([chat, "GLoRA folds its adapters back into the weights."],
                  padding=True, return_tensors="pt", add_special_tokens=False)
        inputs = {k: enc[k] for k in ("input_ids", "attention_mask")}
        folder = os.path.join(a.out, "smollm")
        os.makedirs(folder, exist_ok=True)
        tensors = run_decoder(model, inputs)
        # Thirty f32 layers round by about 1e-4 on logits of about 40: the f64 logits
        # tell how far each f32 implementation is from exact.
        with torch.no_grad():
            exact = model.to(torch.float64)(**inputs).logits
        tensors["logits_f64"] = exact.to(torch.float32).contiguous()
        save_file(tensors, os.path.join(folder, "reference.safetensors"))
        made.append("smollm")
    print(json.dumps(made))


if __name__ == "__main__":
    main()
