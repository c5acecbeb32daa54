#!/usr/bin/env python3
"""Turns the Brown corpus fixture (NLTK `word/TAG` files) into plain-text JSONL for
`glora train --task causal-lm`: the tags stripped, one line {"text": ...} per
paragraph of at least --min-words words.

    python3 examples/brown_to_jsonl.py BROWN_DIR -o brown.jsonl
"""
import argparse
import json
import os
import re

# Brown writes quotes as `` and '' and keeps punctuation as separate tokens.
_QUOTES = {"``": '"', "''": '"'}


def untag(line):
    words = []
    for item in line.split():
        word = item.rsplit("/", 1)[0] if "/" in item else item
        words.append(_QUOTES.get(word, word))
    text = " ".join(words)
    text = re.sub(r" ([.,;:!?)'])", r"\1", text)
    return re.sub(r"([($]) ", r"\1", text)


def paragraphs(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for block in f.read().split("\n\n"):
            text = " ".join(untag(l) for l in block.splitlines() if l.strip())
            if text:
                yield text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("brown", help="the folder of Brown files (ca01 ... cr09)")
    ap.add_argument("-o", "--output", required=True, help="JSONL file to write")
    ap.add_argument("--min-words", type=int, default=20)
    a = ap.parse_args()
    names = sorted(n for n in os.listdir(a.brown) if re.fullmatch(r"c[a-r]\d\d", n))
    n = 0
    with open(a.output, "w", encoding="utf-8") as out:
        for name in names:
            for p in paragraphs(os.path.join(a.brown, name)):
                if len(p.split()) >= a.min_words:
                    out.write(json.dumps({"text": p}) + "\n")
                    n += 1
    print(f"wrote {n} paragraphs from {len(names)} files to {a.output}")


if __name__ == "__main__":
    main()
