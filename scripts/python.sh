#!/usr/bin/env bash
# Installs vene's Python package into .venv (beside the build): a virtual environment with the full torch 2.13.0
# wheel (`import torch` needs its CUDA libraries even on a CPU machine), maturin, and what the Python tests and
# notebooks use; then builds the extension (vene-python, the same release profile and target dir as the rest)
# into an abi3 wheel carrying the plugins, and installs it. Idempotent: the environment is made once (stamped) and
# the wheel reinstalled only when it changed. Expects the workspace built (`cargo build --release --workspace`).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
python="$venv/bin/python"
pip=("$python" -m pip --disable-pip-version-check --quiet)
wants="torch==2.13.0 maturin==1.16.0 pytest==9.2.0 nbformat==5.11.1 nbclient==0.11.0 ipykernel==7.4.0 safetensors==0.8.0 numpy==2.4.6"
stamp="$venv/.vene-requirements"

if [ ! -x "$python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wants" ]; then
  echo "vene setup: making $venv (torch 2.13.0 with its CUDA libraries, maturin, pytest, nbclient)" >&2
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "${pip[@]}" install $wants
  echo "$wants" > "$stamp"
fi

# The plugins ship inside the package: the ones this build made, nothing else.
plugins="$repo/python/vene/plugins"
rm -rf "$plugins"
mkdir -p "$plugins"
cp "$repo"/target/release/libvene_*.so "$plugins"/

wheels="$repo/target/wheels"
rm -f "$wheels"/vene-*.whl
(cd "$repo/python" && "$venv/bin/maturin" build --quiet --release --out "$wheels" --interpreter "$python" >&2)
wheel=$(ls "$wheels"/vene-*.whl)
hash=$(sha256sum "$wheel" | cut -d' ' -f1)
if [ "$(cat "$venv/.vene-wheel" 2>/dev/null)" != "$hash" ]; then
  "${pip[@]}" install --force-reinstall --no-deps "$wheel"
  echo "$hash" > "$venv/.vene-wheel"
fi
"$python" -c 'import vene' >/dev/null
