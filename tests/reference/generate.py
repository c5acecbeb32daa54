"""transformers' greedy answer of a decoder checkpoint folder, for `glora generate`'s
tests: the chat template applied to one user message (with the assistant's turn
opened), then `generate(do_sample=False)`. Prints the new token ids as JSON.

usage: generate.py MODEL_DIR PROMPT MAX_NEW_TOKENS
"""

import json
import sys

import torch
import transformers as tf


def main():
    folder, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tok = tf.AutoTokenizer.from_pretrained(folder)
    model = tf.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                  add_generation_prompt=True, return_tensors="pt")
    ids = ids if torch.is_tensor(ids) else ids["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                             do_sample=False)
    print(json.dumps(out[0, ids.shape[1]:].tolist()))


if __name__ == "__main__":
    main()
