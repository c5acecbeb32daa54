"""Reference token ids from transformers, for the Rust tokenizer tests.

Reads {"dir": TOKENIZER_DIR, "items": [{"text": ..., "pair": ... or null,
"max_length": N}, ...]} as JSON on stdin and prints a JSON list with
{"input_ids": [...], "token_type_ids": [...]} per item, from
transformers.AutoTokenizer.from_pretrained(TOKENIZER_DIR) called with
truncation=True, max_length=N. Exits with status 3 when transformers is missing,
so the caller can skip rather than fail.
"""

import json
import sys

try:
    from transformers import AutoTokenizer
except ImportError as e:
    print(f"transformers is not importable: {e}", file=sys.stderr)
    sys.exit(3)


def main():
    request = json.load(sys.stdin)
    tokenizer = AutoTokenizer.from_pretrained(request["dir"])
    out = []
    for item in request["items"]:
        args = [item["text"]]
        if item.get("pair") is not None:
            args.append(item["pair"])
        enc = tokenizer(*args, truncation=True, max_length=item["max_length"])
        out.append(
            {
                "input_ids": list(enc["input_ids"]),
                "token_type_ids": list(enc["token_type_ids"]),
            }
        )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
