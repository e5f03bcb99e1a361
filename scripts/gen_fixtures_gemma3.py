#!/usr/bin/env python3
"""Reference numbers for the real model, Gemma 3 270M (llama.cpp GGUF, Q4_K_M), from transformers 5 loading the
same file (dequantized by gguf-py, f32, eager attention).

Run: scripts/realref-env.sh && PYTHONPATH=.deps/realref .deps/pyref/bin/python scripts/gen_fixtures_gemma3.py
(the model comes from scripts/real-model.sh; VENE_GEMMA3_270M points at another copy).

Writes tests/fixtures/gemma3_270m/reference.json (small: no weights, nothing under the Gemma terms):
  prompts      per prompt: its ids, the top-100 next-token ids and logits at the last position, the log-sum-exp
               of all logits there, and p(target) for the facts
  tokenization per string: the ids with BOS, and the text decoded back from the ids without it
  greedy       per prompt: 16 greedy tokens from `generate`
"""
import json
import os
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "gemma3_270m", "reference.json")
CACHE = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
MODEL = os.environ.get("VENE_GEMMA3_270M", os.path.join(CACHE, "vene", "models", "gemma-3-270m-q4_k_m.gguf"))

FACTS = [
    ("The Eiffel Tower is located in the city of", " Paris"),
    ("Michael Jordan plays the sport of", " basketball"),
    ("The official language of Italy is", " Italian"),
    ("The capital of Spain is the city of", " Madrid"),
    ("John walked because", " he"),
    ("Sarah walked because", " she"),
]
TEXTS = [
    "Hello world",
    "  two  leading spaces and   three",
    "tabs\tand\nnewlines\n\nand a blank line",
    "3.14159, 42 and 1,000,000",
    "Punctuation: (a) [b] {c}; e.g. -- 'quotes' \"double\" ?!",
    "café, naïve, Zürich, São Paulo",
    "東京は日本の首都です。",
    "Emoji 🙂 and 👍🏽",
    "x=y+2*z; if (a<b) { return; }",
    " leading space",
    "trailing space ",
    "ÅßÇ ∑∫√ ≠ ≤",
]
GREEDY = ["The Eiffel Tower is located in the city of", "Once upon a time, there was a", "def fibonacci(n):"]
TOP = 100
NEW_TOKENS = 16


def main():
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    torch.set_num_threads(2)
    directory, name = os.path.split(MODEL)
    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    print(f"tokenizer: {time.time() - started:.1f} s")
    started = time.time()
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    print(f"model: {time.time() - started:.1f} s ({type(model).__name__})")

    prompts = []
    for prompt, target in FACTS:
        ids = tokenizer(prompt).input_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        values, indices = logits.topk(TOP)
        target_ids = tokenizer(target, add_special_tokens=False).input_ids
        p_target = logits.softmax(-1)[target_ids[0]].item()
        prompts.append({"prompt": prompt, "ids": ids, "top_ids": indices.tolist(), "top_logits": values.tolist(),
                        "logsumexp": logits.logsumexp(-1).item(), "target": target, "target_id": target_ids[0],
                        "p_target": p_target})
        print(f"  p({target!r} | {prompt!r}) = {p_target:.4f}")

    tokenization = []
    for text in TEXTS:
        ids = tokenizer(text).input_ids
        tokenization.append({"text": text, "ids": ids, "decoded": tokenizer.decode(ids[1:])})

    greedy = []
    for prompt in GREEDY:
        ids = tokenizer(prompt).input_ids
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False)
        new = out[0, len(ids):].tolist()
        greedy.append({"prompt": prompt, "ids": ids, "new_ids": new})
        print(f"  {prompt!r} -> {tokenizer.decode(new)!r}")

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    reference = {"model": os.path.basename(MODEL), "transformers": transformers.__version__,
                 "prompts": prompts, "tokenization": tokenization, "greedy": greedy}
    with open(OUT, "w") as f:
        json.dump(reference, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    sys.exit(main())
