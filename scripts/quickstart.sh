#!/usr/bin/env bash
# vene's main job on the bundled model: installs libtorch (idempotent), builds vene and its plugins, lists the
# plugins, shows the model's hook sites, and runs an interchange intervention (source position 1 into base
# position 4 at GPT-2's block_output, layer 1), printing the top-5 next tokens before and after.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
cargo build --release --workspace
model=tests/fixtures/gpt2/model
example=examples/gpt2-interchange
./target/release/vene plugins
./target/release/vene sites --model "$model"
mkdir -p target/quickstart
./target/release/vene run --model "$model" --config "$example/config.json" --inputs "$example/inputs.json" \
  --out target/quickstart/output.safetensors --repeat 20
