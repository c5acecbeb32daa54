#!/usr/bin/env python3
"""Times transformers' greedy `generate` on a decoder checkpoint folder, for
`glora generate`'s tokens per second.

Both sides answer the same chat prompt greedily with the same thread count:

    python3 examples/generate_reference.py smollm2-135m-instruct/ --threads 1 \
        --prompt "What is the capital of France?" --max-new-tokens 64
    glora generate smol.onnx --chat --prompt "What is the capital of France?" \
        --max-new-tokens 64

`glora generate` runs tract on one thread, so `--threads 1` is the like-for-like
figure.

Prints the new tokens, the prefill time (one forward of the prompt) and the decode
rate: new tokens after the first, divided by the time after the prefill, as
`glora generate` counts it. The median of `--runs` runs is reported.
"""

import argparse
import statistics
import time

import torch
import transformers as tf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt", default="What is the capital of France?")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok = tf.AutoTokenizer.from_pretrained(a.model)
    model = tf.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": a.prompt}],
                                  add_generation_prompt=True, return_tensors="pt")
    ids = ids if torch.is_tensor(ids) else ids["input_ids"]
    mask = torch.ones_like(ids)
    rates, prefills = [], []
    for _ in range(a.runs):
        with torch.no_grad():
            t0 = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            prefill = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, max_new_tokens=a.max_new_tokens,
                                 do_sample=False)
            total = time.perf_counter() - t0
        new = out.shape[1] - ids.shape[1]
        rates.append((new - 1) / max(total - prefill, 1e-9))
        prefills.append(prefill)
    text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    print(f"transformers {tf.__version__}, torch {torch.__version__}, {a.threads} threads")
    print(f"{ids.shape[1]} prompt tokens, {new} new: {text!r}")
    print(f"prefill {statistics.median(prefills):.3f} s; decode {statistics.median(rates):.1f} tokens/s "
          f"(median of {a.runs})")


if __name__ == "__main__":
    main()
