#!/usr/bin/env bash
# Creates .deps/pyref: a Python environment with pyvene 0.1.8 + transformers beside torch 2.13.0 (CPU),
# used only to regenerate the committed reference fixtures (tests never need it).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/scripts/setup.sh"
env="$repo/.deps/pyref"
[ -x "$env/bin/python" ] && "$env/bin/python" -c 'import pyvene, transformers, gguf' 2>/dev/null && exit 0
python3 -m venv "$env"
pip="$env/bin/python -m pip --disable-pip-version-check --quiet"
# Python torch imports the CUDA libraries, so the full wheel set is needed here (not the lean one).
$pip install torch==2.13.0 numpy safetensors
$pip install transformers==4.57.1 tokenizers matplotlib seaborn datasets protobuf sentencepiece ipywidgets gguf==0.19.0 accelerate
$pip install --no-deps pyvene==0.1.8
