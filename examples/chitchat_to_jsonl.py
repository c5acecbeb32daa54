#!/usr/bin/env python3
"""Turns the chitchat fixture (a JSON map id -> {"messages": [[utterance, ...], ...]},
one list of utterances per turn, the two speakers taking turns) into the JSONL chats
`glora train --task causal-lm` reads: one line {"messages": [{"role", "content"}]}
per conversation, the first speaker as the user and the second as the assistant.

    python3 examples/chitchat_to_jsonl.py CHITCHAT.json -o chats.jsonl --limit 2000
"""
import argparse
import json


def conversations(data, max_turns):
    for key in sorted(data):
        turns = data[key].get("messages") or []
        messages = []
        for i, turn in enumerate(turns[:max_turns]):
            text = "\n".join(u["text"].strip() for u in turn if u.get("text", "").strip())
            if not text:
                break
            messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
        # A chat must end with the assistant for its last turn to be trained on.
        if messages and messages[-1]["role"] == "user":
            messages.pop()
        if len(messages) >= 2:
            yield {"messages": messages}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("chitchat", help="the chitchat.json fixture")
    ap.add_argument("-o", "--output", required=True, help="JSONL file to write")
    ap.add_argument("--limit", type=int, default=None, help="at most this many conversations")
    ap.add_argument("--max-turns", type=int, default=6, help="turns kept per conversation")
    a = ap.parse_args()
    with open(a.chitchat, encoding="utf-8") as f:
        data = json.load(f)
    n = 0
    with open(a.output, "w", encoding="utf-8") as out:
        for chat in conversations(data, a.max_turns):
            out.write(json.dumps(chat, ensure_ascii=False) + "\n")
            n += 1
            if a.limit is not None and n >= a.limit:
                break
    print(f"wrote {n} chats to {a.output}")


if __name__ == "__main__":
    main()
