#!/usr/bin/env bash
# Runs vene's whole test suite on a fresh machine: installs libtorch (idempotent), builds every crate
# (the plugins are cdylibs the tests dlopen), then runs the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
./scripts/datasets.sh
cargo build --workspace --all-targets
cargo test --workspace
./scripts/fuzz.sh 20
