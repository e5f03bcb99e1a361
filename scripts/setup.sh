#!/usr/bin/env bash
# Installs libtorch 2.13.0 for vene from the PyPI torch wheel into .deps/libtorch-py (git-ignored), then the real
# pretrained models (scripts/real-model.sh: Gemma 3 270M; scripts/real-assets.sh: the CRNN, EfficientNet-Lite0,
# Silero VAD and photographs) into the user's cache.
# Idempotent: a second run checks a stamp and does nothing. Wheels are cached in the user's cache dir
# so fresh clones and CI reuse the download. VENE_CUDA=1 installs the full CUDA set instead of the lean CPU one.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$repo/.deps/libtorch-py"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/vene/wheels"
torch_version=2.13.0
if [ "${VENE_CUDA:-0}" = 1 ]; then flavour=cuda; else flavour=cpu; fi
stamp="$dest/.vene-installed"
want="torch==$torch_version $flavour"

# Two set-ups at once (the demo and the tests, say) would unpack into the same staging directory: take turns.
mkdir -p "$repo/.deps"
exec 9>"$repo/.deps/.setup.lock"
flock 9

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$dest/torch/lib/libtorch_cpu.so" ]; then
  "$repo/scripts/real-model.sh" >/dev/null
  "$repo/scripts/real-assets.sh" >/dev/null
  exit 0
fi

python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
  echo "vene setup: python3 with pip is needed to fetch the torch wheel (libtorch)" >&2
  exit 1
fi

echo "vene setup: installing libtorch $torch_version ($flavour) into $dest" >&2
rm -rf "$dest.partial"
mkdir -p "$cache" "$dest.partial"
if [ "$flavour" = cuda ]; then
  "$python" -m pip install --quiet --disable-pip-version-check --target "$dest.partial" "torch==$torch_version"
else
  wheels=("torch==$torch_version" "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cupti==13.0.85")
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$cache" "${wheels[@]}"
  "$python" -m pip install --quiet --disable-pip-version-check --no-deps --no-index --find-links "$cache" \
    --target "$dest.partial" "${wheels[@]}"
fi
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "$want" > "$stamp"
"$repo/scripts/real-model.sh" >/dev/null
"$repo/scripts/real-assets.sh" >/dev/null
