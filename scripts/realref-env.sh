#!/usr/bin/env bash
# Creates .deps/realref: transformers 5 with gguf and sentencepiece, installed (pip --target) on top of the pyref
# environment's torch, for the real-model fixtures (scripts/gen_fixtures_gemma3.py). transformers 5 is the reference
# there: 4.x builds Gemma's GGUF tokenizer as a Unigram over the file's scores, which are not log-probabilities
# (they follow the merge order), and splits "Eiffel" into "▁E iff el". pyvene 0.1.8 needs transformers 4.x, so
# the pyvene fixtures keep .deps/pyref. Run scripts as: PYTHONPATH=.deps/realref .deps/pyref/bin/python SCRIPT.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/scripts/pyref-env.sh"
target="$repo/.deps/realref"
PYTHONPATH="$target" "$repo/.deps/pyref/bin/python" -c 'import transformers, gguf; assert transformers.__version__ == "5.24.0"' \
  2>/dev/null && exit 0
rm -rf "$target"
"$repo/.deps/pyref/bin/python" -m pip --disable-pip-version-check --quiet install --target "$target" \
  transformers==5.24.0 gguf==0.19.0 sentencepiece protobuf accelerate
# pip --target installs dependencies again, accelerate's newest torch among them, which would shadow pyref's pinned
# torch (and bring its CUDA libraries): keep pyref's.
rm -rf "$target"/torch "$target"/torch-* "$target"/nvidia "$target"/nvidia_* "$target"/triton "$target"/triton-*
