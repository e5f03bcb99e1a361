#!/usr/bin/env bash
# The GPU check: vene's pyvene reference cases run on CUDA (f32 and bf16) and compared with the committed
# expectations, then the study commands on the demo GPT-2 run on CPU and on CUDA side by side.
#
# Usage: [DEVICE=cuda] [ONLY=studies] scripts/cuda_check.sh BIN_DIR DEMO_MODEL_DIR OUT_DIR
#   DEVICE=cpu checks the script itself; ONLY=studies skips the reference cases.
#   BIN_DIR         the `vene` binary and the plugin libraries (a release build)
#   DEMO_MODEL_DIR  a built demo GPT-2 (`~/.cache/vene/demo/v2/gpt2-facts`)
# Needs the CUDA build of the libtorch vene was built against (VENE_LIBRARY_PATH=its lib dir, and
# VENE_PRELOAD=.../libtorch_cuda.so when the binary does not link it) and python3 with torch and safetensors for the
# comparisons. Prints one line per check and writes the full numbers to OUT_DIR/cuda_check.json.
set -uo pipefail

bin=$1
demo=$2
out=$3
device=${DEVICE:-cuda}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fixtures="$repo/tests/fixtures"
mkdir -p "$out/runs"
# VENE_LIBRARY_PATH / VENE_PRELOAD: where vene alone (not the comparing python, which has its own torch) finds
# libtorch, and libraries preloaded into it (libtorch_cuda.so when the binary does not link it).
vene=(env LD_LIBRARY_PATH="${VENE_LIBRARY_PATH:-${LD_LIBRARY_PATH:-}}" LD_PRELOAD="${VENE_PRELOAD:-}" "$bin/vene")
plugins=(--plugin-dir "$bin")

echo "== device"
python3 - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

# Reference cases: the model directory that belongs to each case directory, and its config.
cases=()
for inputs in $(find "$fixtures" -name inputs.json | sort); do
  case_dir=$(dirname "$inputs")
  family=$(echo "${case_dir#"$fixtures"/}" | cut -d/ -f1)
  group=$(echo "${case_dir#"$fixtures"/}" | cut -d/ -f2)
  if [ "$family" = das ]; then
    model="$fixtures/$group/model"
  elif [ "$family" = llama ]; then
    model="$fixtures/llama/$group/model"  # tests/fixtures/llama/<family>/cases/<case>
  else
    model="$fixtures/$family/${group/cases/model}"
  fi
  # A case saved by pyvene's IntervenableModel.save() is a directory; the others are vene config files.
  if [ -f "$case_dir/config.json" ]; then config="$case_dir/config.json"; else config="$case_dir/pyvene_saved"; fi
  cases+=("$case_dir|$model|$config")
done

if [ "${ONLY:-}" = studies ]; then cases_to_run=(); else cases_to_run=("${cases[@]}"); fi
echo "== reference cases on $device (${#cases_to_run[@]})"
for entry in "${cases_to_run[@]}"; do
  IFS='|' read -r case_dir model config <<<"$entry"
  name=$(echo "${case_dir#"$fixtures"/}" | tr / _)
  for dtype in f32 bf16; do
    if ! "${vene[@]}" run "${plugins[@]}" --model "$model" --config "$config" --inputs "$case_dir/inputs.json" \
      --device "$device" --dtype "$dtype" --out "$out/runs/${name}_$dtype.safetensors" >"$out/runs/${name}_$dtype.log" 2>&1; then
      echo "FAILED to run $name ($dtype): $(tail -3 "$out/runs/${name}_$dtype.log")"
    fi
  done
done

[ ${#cases_to_run[@]} -gt 0 ] && python3 - "$out" "${cases_to_run[@]}" <<'EOF'
import json, os, sys
import torch
from safetensors.torch import load_file
out, entries = sys.argv[1], sys.argv[2:]
fixtures = os.path.commonpath([e.split("|")[0] for e in entries])
results, worst = {}, {"f32": 0.0, "bf16": 0.0}
for entry in entries:
    case_dir = entry.split("|")[0]
    name = "_".join(os.path.relpath(case_dir, fixtures).split("/"))
    expected = load_file(os.path.join(case_dir, "expected.safetensors"))
    for dtype in ("f32", "bf16"):
        path = os.path.join(out, "runs", f"{name}_{dtype}.safetensors")
        if not os.path.exists(path):
            results[f"{name}/{dtype}"] = "missing"
            continue
        got = load_file(path)
        diffs = {}
        for key, want in expected.items():
            if key not in got:
                diffs[key] = "missing"
                continue
            have = got[key].float()
            if have.shape != want.shape:
                diffs[key] = f"shape {list(have.shape)} vs {list(want.shape)}"
                continue
            scale = want.abs().max().item() or 1.0
            diffs[key] = (have - want.float()).abs().max().item() / scale
        numeric = [v for v in diffs.values() if isinstance(v, float)]
        worst[dtype] = max([worst[dtype]] + numeric)
        results[f"{name}/{dtype}"] = diffs
        flag = "ok" if len(numeric) == len(diffs) and max(numeric, default=0) < (1e-4 if dtype == "f32" else 5e-2) else "CHECK"
        print(f"{flag:5} {name:45} {dtype:5} max relative difference {max(numeric, default=float('nan')):.2e}")
print("worst relative difference: f32 %.2e, bf16 %.2e" % (worst["f32"], worst["bf16"]))
json.dump({"cases": results, "worst": worst}, open(os.path.join(out, "cuda_check.json"), "w"), indent=1)
EOF

echo "== demo studies, CPU against $device"
study() {
  local on=$1 label=$2
  shift 2
  "${vene[@]}" "$@" "${plugins[@]}" --model "$demo" --device "$on" --out "$out/$label" >"$out/$label-$1.log" 2>&1 ||
    echo "FAILED: $* on $on: $(tail -3 "$out/$label-$1.log")"
}
for run in "cpu cpu" "$device checked"; do
  read -r on label <<<"$run"
  study $on $label interchange --mode serial --base "the capital of spain is" \
    --source "the language of spain is@1" --source "the capital of italy is@4" --hop 0:block_input --hop 3:block_output
  study $on $label steer --prompt "the capital of spain is" --word italy --coefficient 3 --max-new-tokens 8
  study $on $label trace --prompt "the capital of tor vel mar is" --subject "tor vel mar" --target dunmar --samples 20 --window 2
  study $on $label das-probe --template "{name} walked because" --class "he=john,james,peter,david" \
    --class "she=mary,sarah,anna,emma"
done
python3 - "$out" <<'EOF'
import json, os, sys
out = sys.argv[1]
for name in ("interchange.json", "steer.json", "trace.json", "das_probe.json"):
    try:
        cpu, checked = (json.load(open(os.path.join(out, d, name))) for d in ("cpu", "checked"))
    except OSError as error:
        print("missing", name, error)
        continue
    same = cpu == checked
    print(f"{name:18} {'identical' if same else 'differs'}")
    if not same:
        for key in cpu:
            if cpu.get(key) != checked.get(key):
                print(f"   {key}: cpu     {json.dumps(cpu.get(key))[:300]}")
                print(f"   {key}: checked {json.dumps(checked.get(key))[:300]}")
EOF

echo "== timing: one reference case, 200 repeats"
for on in cpu "$device"; do
  entry=${cases[0]}
  IFS='|' read -r case_dir model config <<<"$entry"
  "${vene[@]}" run "${plugins[@]}" --model "$model" --config "$config" --inputs "$case_dir/inputs.json" \
    --device "$on" --repeat 200 --out "$out/runs/timing_$on.safetensors" 2>&1 | tail -1 | sed "s/^/$on: /"
done
