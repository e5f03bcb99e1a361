#!/usr/bin/env bash
# vene's main job on its embedded default model: installs libtorch (idempotent), builds vene and its plugins, then
# `vene demo` trains the small demo GPT-2 once (cached under ~/.cache/vene) and runs causal tracing, the multi-source
# interchange and steering during generation on it, writing vene-demo/report.html with figures and numbers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
./scripts/datasets.sh
cargo build --release --workspace
./target/release/vene demo --out vene-demo
