"""Greedy decoding of an exported decoder in onnxruntime, through its KV cache, for
`glora generate`'s tests: reads genai_config.json beside the model, runs a prefill of
the prompt and one step per new token, stops at an end-of-sequence id. Prints the new
token ids as JSON.

usage: ort_generate.py MODEL.onnx PROMPT_IDS_JSON MAX_NEW_TOKENS
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort


def main():
    path, prompt, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    cfg = json.load(open(os.path.join(os.path.dirname(path), "genai_config.json")))["model"]
    d = cfg["decoder"]
    eos = cfg["eos_token_id"]
    eos = eos if isinstance(eos, list) else [eos]
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    past = {f"past_key_values.{i}.{p}": np.zeros((1, d["num_key_value_heads"], 0, d["head_size"]),
                                                  np.float32)
            for i in range(d["num_hidden_layers"]) for p in ("key", "value")}
    pending, start, out = list(prompt), 0, []
    while len(out) < n:
        total = start + len(pending)
        feed = {"input_ids": np.array([pending], np.int64),
                "attention_mask": np.ones((1, total), np.int64),
                "position_ids": np.arange(start, total, dtype=np.int64)[None], **past}
        res = s.run(None, feed)
        past = {k.replace("present", "past_key_values"): v for k, v in zip(names[1:], res[1:])}
        start = total
        nxt = int(np.argmax(res[0][0, -1]))
        if nxt in eos:
            break
        out.append(nxt)
        pending = [nxt]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
