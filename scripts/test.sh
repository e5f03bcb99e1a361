#!/usr/bin/env bash
# Runs vene's whole test suite on a fresh machine: installs libtorch (idempotent), builds every crate
# (the plugins are cdylibs the tests dlopen), then runs the tests. Everything is built in the release profile, the
# one scripts/quickstart.sh builds `vene demo` in, so the two commands share one build of libtorch's C++ wrapper.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/setup.sh
./scripts/datasets.sh
./scripts/browser.sh
cargo build --release --workspace --all-targets
cargo test --release --workspace
./scripts/fuzz.sh 20
