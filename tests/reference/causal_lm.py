"""transformers' view of causal-LM data, for `tests/causal_lm.rs`: each JSONL line of
DATA (`text`, `prompt` + `response`, or `messages`) tokenised by the checkpoint's own
tokenizer and chat template, with the label of every token that is trained (the
text, the response, the assistant's turns) and -100 elsewhere, as a user of
transformers would build them; then the model's mean loss on those labels
(`model(input_ids, labels=labels).loss`, which shifts them itself). Prints JSON: per
line the ids, the labels and the loss summed over the predicted tokens, with their
count.

usage: causal_lm.py MODEL_DIR DATA.jsonl
"""

import json
import sys

import torch
import transformers as tf


def spans_of_chat(tok, messages):
    """The full rendering and the character spans of each assistant turn."""
    full = tok.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(tok.apply_chat_template(messages[:i], tokenize=False,
                                            add_generation_prompt=True)) if i else 0
        end = len(tok.apply_chat_template(messages[: i + 1], tokenize=False))
        spans.append((start, end))
    return full, spans


def example(tok, line):
    if "messages" in line:
        text, spans = spans_of_chat(tok, line["messages"])
        special, eos = False, False
    elif "prompt" in line:
        text = line["prompt"] + line["response"]
        spans, special, eos = [(len(line["prompt"]), len(text))], True, True
    else:
        text = line["text"]
        spans, special, eos = [(0, len(text))], True, True
    enc = tok(text, add_special_tokens=special, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [t if a < b and any(s <= a < e for s, e in spans) else -100
              for t, (a, b) in zip(ids, enc["offset_mapping"])]
    if eos:
        ids.append(tok.eos_token_id)
        labels.append(tok.eos_token_id)
    return ids, labels


def main():
    folder, data = sys.argv[1], sys.argv[2]
    tok = tf.AutoTokenizer.from_pretrained(folder)
    model = tf.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    out = []
    with open(data, encoding="utf-8") as f:
        for raw in f:
            if not raw.strip():
                continue
            ids, labels = example(tok, json.loads(raw))
            predicted = sum(1 for l in labels[1:] if l != -100)
            with torch.no_grad():
                loss = model(torch.tensor([ids]), labels=torch.tensor([labels])).loss
            out.append({"ids": ids, "labels": labels,
                        "loss_sum": float(loss) * predicted, "count": predicted})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
