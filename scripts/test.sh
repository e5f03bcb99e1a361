#!/usr/bin/env bash
# Runs vene's whole test suite on a fresh machine: installs libtorch (idempotent), builds every crate
# (the plugins are cdylibs the tests dlopen), starts a one-node Slurm cluster for the sharding test, runs the Rust
# tests, installs the Python package into .venv (scripts/python.sh) and runs its pytest suite (python/tests, the
# notebooks in examples/notebooks included), then a short fuzz run. Everything is built in the release profile, the one scripts/quickstart.sh builds `vene demo` in, so the two
# commands share one build of libtorch's C++ wrapper.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
./scripts/speech.sh
./scripts/browser.sh
# A one-node Slurm cluster for the sharding test, stopped (by the pids it wrote) however the tests end.
slurm_dir="${TMPDIR:-/tmp}/vene-slurm-test"
./scripts/slurm.sh start "$slurm_dir"
trap './scripts/slurm.sh stop "$slurm_dir"' EXIT
export SLURM_CONF="$slurm_dir/slurm.conf"
cargo build --release --workspace --all-targets
cargo test --release --workspace
./scripts/python.sh
.venv/bin/python -m pytest python/tests
./scripts/fuzz.sh 20
