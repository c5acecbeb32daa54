"""Reference weights of a GGUF file for glora's GGUF loader, made by the gguf package's
own dequantisation (independent of candle-core's) and with LLaMA's query and key rows
put back in transformers' order the way transformers' GGUF reader does it. Writes every
tensor under its Hugging Face name to OUT (safetensors, f32).

usage: gguf_dequantize.py MODEL.gguf OUT.safetensors
"""

import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def field(reader, key):
    f = reader.fields[key]
    return f.contents()


def hf_name(name):
    parts = name.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{NAMES[parts[2]]}.{parts[3]}"
    return f"{NAMES[parts[0]]}.{parts[1]}"


def reverse_permute(w, n_head):
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def main():
    path, out = sys.argv[1], sys.argv[2]
    r = GGUFReader(path)
    arch = field(r, "general.architecture")
    heads = int(field(r, f"{arch}.attention.head_count"))
    kv_heads = int(field(r, f"{arch}.attention.head_count_kv"))
    tensors = {}
    for t in r.tensors:
        shape = [int(d) for d in reversed(t.shape)]
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        if arch == "llama" and ".attn_q." in t.name:
            w = reverse_permute(w, heads)
        if arch == "llama" and ".attn_k." in t.name:
            w = reverse_permute(w, kv_heads)
        tensors[hf_name(t.name)] = np.ascontiguousarray(w)
    save_file(tensors, out)


if __name__ == "__main__":
    main()
