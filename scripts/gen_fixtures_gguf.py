#!/usr/bin/env python3
"""Small GGUF files written the way llama.cpp's converter writes them, with transformers 5's reading of each as
the reference (tests/fixtures/gguf/).

Run: scripts/realref-env.sh && PYTHONPATH=.deps/realref .deps/pyref/bin/python scripts/gen_fixtures_gguf.py

Per architecture (llama, qwen2, gemma3) a seeded random transformers model is written with gguf-py's writer, as
llama.cpp's convert_hf_to_gguf.py would: llama's q/k rows permuted to interleaved rotary order, Gemma's norm
weights stored as 1 + w, llama.cpp tensor names, a tokenizer in the metadata (SentencePiece-style with scores for
llama and gemma3, byte-level BPE with merges for qwen2), and tensors in several block formats (F32, F16, BF16,
Q8_0, Q4_0, Q4_1, Q5_0, Q5_1). The script first checks that transformers reads an all-F32 copy back to the
original model's logits (so the layout written is the one transformers expects), then records for the quantized
file:
  <arch>.gguf            the file
  <arch>.json            {"ids": [[...]], "logits": [[[...]]] (f32, every position), "tokenization": [...]}
"""
import json
import os
import sys
import tempfile

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import gguf  # noqa: E402
import transformers  # noqa: E402
from gguf import GGMLQuantizationType as Q  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.convert_slow_tokenizer import bytes_to_unicode  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "gguf")
HIDDEN = 64
WORDS = ["the", "cat", "sat", "on", "mat", "hello", "world", "dog", "ran", "fast", "big", "red", "is", "a"]
TEXTS = ["the cat sat on the mat", "hello world", "  the  big red dog", "a cat is fast!", "naïve ☃ 42",
         "the\tmat\n"]

ARCHS = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
              dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=10000.0,
                   tie_word_embeddings=False)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
              dict(num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0, tie_word_embeddings=True)),
    "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM,
               # What a Gemma 3 GGUF cannot say is taken as llama.cpp and transformers both take it:
               # query_pre_attn_scalar = head_dim = 256, every sixth layer global (so both of these slide).
               dict(num_attention_heads=2, num_key_value_heads=1, head_dim=256, sliding_window=4,
                    query_pre_attn_scalar=256, rope_theta=1000000.0, rope_local_base_freq=10000.0,
                    layer_types=["sliding_attention", "sliding_attention"])),
}
# Block formats by tensor (cycled over the linear layers); norms stay F32 as llama.cpp keeps them.
FORMATS = [Q.Q8_0, Q.Q4_0, Q.Q5_1, Q.F16, Q.Q4_1, Q.Q5_0, Q.BF16]


# --------------------------------------------------------------------------- tokenizers
def sentencepiece_vocab(gemma):
    """Specials, 256 byte tokens, letters and words with and without the word-boundary marker."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"] if gemma else ["<unk>", "<s>", "</s>"]
    types = [3] * len(specials)
    if not gemma:
        types[0] = 2
    tokens = list(specials)
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    letters = sorted(set("".join(WORDS)))
    pieces = ["\u2581"] + letters + ["\u2581" + c for c in letters]
    for w in WORDS:  # every prefix, so merges can build the words
        for end in range(2, len(w) + 1):
            pieces += [w[:end], "\u2581" + w[:end]]
    seen = set()
    for p in pieces:
        if p not in seen:
            seen.add(p)
            tokens.append(p)
            types.append(1)
    if gemma:
        tokens += ["  ", "   "]  # runs of spaces, stored with real spaces as Gemma's files do
        types += [4, 4]
    scores = [0.0] * len(specials) + [0.0] * 256 + [-float(i) for i in range(len(tokens) - len(specials) - 256)]
    return tokens, scores, types


def byte_level_vocab():
    """The 256 byte characters and merges building the words (with and without a leading space, Ġ)."""
    spelling = bytes_to_unicode()
    tokens = [spelling[b] for b in range(256)]
    merges = []
    for w in WORDS:
        for word in (w, "\u0120" + w):
            current = word[0]
            for c in word[1:]:
                merge = f"{current} {c}"
                if merge not in merges:
                    merges.append(merge)
                current += c
                if current not in tokens:
                    tokens.append(current)
    tokens += ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [1] * (len(tokens) - 3) + [3, 3, 3]
    return tokens, merges, types


# --------------------------------------------------------------------------- models
def build(arch, vocab, seed):
    config_class, model_class, kwargs = ARCHS[arch]
    layers = 2
    config = config_class(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=layers,
                          max_position_embeddings=128, rms_norm_eps=1e-6, attn_implementation="eager", **kwargs)
    torch.manual_seed(seed)
    model = model_class(config)
    g = torch.Generator().manual_seed(seed)
    gemma = arch.startswith("gemma")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((0.0 if gemma else 1.0) + torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if "embed" in name else 0.1))
    return model.eval()


def permute(w, heads):
    """llama.cpp's q/k permutation (rotate-half pairs to interleaved pairs)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "post_feedforward_layernorm": "post_ffw_norm", "pre_feedforward_layernorm": "ffn_norm",
}


def gguf_name(arch, name):
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = name.split(".", 3)
    module, leaf = rest.rsplit(".", 1)
    if module == "post_attention_layernorm":
        target = "post_attention_norm" if arch == "gemma3" else "ffn_norm"
    else:
        target = GGUF_NAMES[module]
    return f"blk.{layer}.{target}.{leaf}"


def write_gguf(path, arch, model, tokenizer_meta, quantize):
    c = model.config
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(ARCHS[arch][2]["rope_theta"])
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    if arch == "llama":
        w.add_rope_dimension_count(head_dim)
    if arch == "gemma3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_sliding_window(c.sliding_window)
    tokenizer_meta(w)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    if c.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    linear = 0
    for name, tensor in state.items():
        if arch == "llama" and ".q_proj." in name:
            tensor = permute(tensor, c.num_attention_heads)
        if arch == "llama" and ".k_proj." in name:
            tensor = permute(tensor, c.num_key_value_heads)
        if arch == "gemma3" and name.endswith("norm.weight"):
            tensor = tensor + 1.0
        if tensor.ndim == 2 and quantize:
            qtype = FORMATS[linear % len(FORMATS)]
            linear += 1
            w.add_tensor(gguf_name(arch, name), gguf.quants.quantize(tensor, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gguf_name(arch, name), tensor)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def sentencepiece_meta(gemma):
    tokens, scores, types = sentencepiece_vocab(gemma)

    def meta(w):
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(2 if gemma else 1)
        w.add_eos_token_id(1 if gemma else 2)
        w.add_unk_token_id(3 if gemma else 0)
        if gemma:
            w.add_pad_token_id(0)
        w.add_add_bos_token(True)
        w.add_add_space_prefix(not gemma)
    return len(tokens), meta


def byte_level_meta():
    tokens, merges, types = byte_level_vocab()

    def meta(w):
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("qwen2")
        w.add_token_list(tokens)
        w.add_token_merges(merges)
        w.add_token_types(types)
        w.add_eos_token_id(tokens.index("<|endoftext|>"))
        w.add_pad_token_id(tokens.index("<|endoftext|>"))
        w.add_add_bos_token(False)
    return len(tokens), meta


def read_back(path):
    directory, name = os.path.split(path)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    return model, tokenizer


def main():
    print(f"transformers {transformers.__version__}, gguf {gguf.__version__ if hasattr(gguf, '__version__') else ''}")
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.RandomState(77)
    for index, arch in enumerate(ARCHS):
        vocab, meta = byte_level_meta() if arch == "qwen2" else sentencepiece_meta(arch == "gemma3")
        model = build(arch, vocab, seed=300 + index)
        ids = rng.randint(0, vocab, size=(2, 9))
        with torch.no_grad():
            original = model(torch.tensor(ids)).logits
        with tempfile.TemporaryDirectory() as scratch:
            exact = os.path.join(scratch, f"{arch}.gguf")
            write_gguf(exact, arch, model, meta, quantize=False)
            with torch.no_grad():
                gap = (read_back(exact)[0](torch.tensor(ids)).logits - original).abs().max().item()
        assert gap < 1e-4, f"{arch}: transformers reads the F32 file back {gap} away from the model"
        path = os.path.join(OUT, f"{arch}.gguf")
        write_gguf(path, arch, model, meta, quantize=True)
        read, tokenizer = read_back(path)
        with torch.no_grad():
            logits = read(torch.tensor(ids)).logits
        tokenization = [{"text": t, "ids": tokenizer(t).input_ids} for t in TEXTS]
        with open(os.path.join(OUT, f"{arch}.json"), "w") as f:
            json.dump({"ids": ids.tolist(), "logits": logits.tolist(), "tokenization": tokenization}, f)
        print(f"{arch}: F32 copy read back within {gap:.2g}; quantized file moves logits by "
              f"{(logits - original).abs().max().item():.3g}; {os.path.getsize(path)} bytes")
        for t in tokenization:
            print(f"   {t['text']!r:28s} {t['ids']}")


if __name__ == "__main__":
    sys.exit(main())
