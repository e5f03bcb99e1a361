#!/usr/bin/env bash
# vene's main job: installs libtorch and the real models (Gemma 3 270M, EasyOCR's CRNN, EfficientNet-Lite0, Silero
# VAD; idempotent) and espeak-ng, builds vene and its plugins, then `vene demo` runs the paper's studies on Gemma 3 270M
# (causal tracing of known facts, the multi-source interchange, steering story continuations, DAS versus a probe,
# path patching), on the real CNN and recurrent models (reading text step by step, where a CNN keeps the class, a
# stateful model's memory) and, on a toy Backpack it trains once and caches under ~/.cache/vene, the sense-vector
# study, writing vene-demo/report.html with figures, tables and the commands. The Python
# package is installed into .venv on the way (`source .venv/bin/activate && python -c "import vene"`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
./scripts/speech.sh
cargo build --release --workspace
./scripts/python.sh
./target/release/vene demo --out vene-demo
