#!/usr/bin/env bash
# Runs each cargo-fuzz target in fuzz/ for SECONDS seconds (default 20; the CI's short run). A longer run, e.g. an
# hour each: scripts/fuzz.sh 3600. Crashes are written to fuzz/artifacts/<target>/ and fail the script. The
# mutations start from a fixed seed (FUZZ_SEED, default 1), so a short run repeats the same search: a failure in CI
# comes from the change under test, not from where the dice fell; set FUZZ_SEED=0 for a fresh one each run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-20}"
./scripts/setup.sh
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export LD_LIBRARY_PATH="$PWD/.deps/libtorch-py/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# cargo-fuzz passes flags that only a nightly rustc takes; RUSTC_BOOTSTRAP lets the one stable toolchain take them.
export RUSTC_BOOTSTRAP=1
# Seeds from the test fixtures: real configs and inputs, a real safetensors file, real pickled checkpoints.
seeds=fuzz/seeds
rm -rf "$seeds" && mkdir -p "$seeds"/{config,unit_locations,safetensors,pickle,gguf}
for case in tests/fixtures/gpt2/cases/*/; do
  name=$(basename "$case")
  cp "$case/config.json" "$seeds/config/$name.json" 2>/dev/null || true
  cp "$case/inputs.json" "$seeds/unit_locations/$name.json" 2>/dev/null || true
done
cp tests/fixtures/gpt2/model/model.safetensors "$seeds/safetensors/gpt2.safetensors"
cp tests/fixtures/checkpoints/pickles/*.bin tests/fixtures/checkpoints/pickles/*.pth "$seeds/pickle/"
cp tests/fixtures/gguf/*.gguf "$seeds/gguf/"
for target in config unit_locations safetensors pickle gguf; do
  mkdir -p "fuzz/corpus/$target"
  cargo fuzz run --sanitizer none "$target" "fuzz/corpus/$target" "$seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=262144 -seed="${FUZZ_SEED:-1}"
done
