#!/usr/bin/env bash
# vene's main job: installs libtorch and the real model (Gemma 3 270M; idempotent), builds vene and its plugins, then
# `vene demo` runs the paper's studies on Gemma 3 270M (causal tracing of known facts, the multi-source interchange,
# steering story continuations, DAS versus a probe) and, on toy models it trains once and caches under ~/.cache/vene,
# the GRU, Backpack and CNN studies, writing vene-demo/report.html with figures, tables and the commands. The Python
# package is installed into .venv on the way (`source .venv/bin/activate && python -c "import vene"`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
./scripts/datasets.sh
cargo build --release --workspace
./scripts/python.sh
./target/release/vene demo --out vene-demo
