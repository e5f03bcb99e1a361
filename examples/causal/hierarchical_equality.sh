#!/usr/bin/env bash
# pyvene's hierarchical-equality DAS tutorial with vene's CLI: a causal model, an MLP trained on its task, DAS on the
# trained MLP, and interchange intervention training (IIT) against the plain-trained control.
# Usage: examples/causal/hierarchical_equality.sh [WORK_DIR]   (about 3 minutes on 2 cores)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
vene="${VENE:-$here/../../target/release/vene}"
work="${1:-${TMPDIR:-/tmp}/vene-hierarchical-equality}"
mkdir -p "$work"
spec="$here/hierarchical_equality.json"

"$vene" causal-model show "$spec"
"$vene" causal-model factual "$spec" --count 100000 --seed 0 --out "$work/factual.jsonl"
"$vene" causal-model counterfactual "$spec" --variables WX,YZ --subspaces --count 100000 --seed 1 --out "$work/train.jsonl"
"$vene" causal-model counterfactual "$spec" --variables WX,YZ --subspaces --count 10000 --seed 2 --out "$work/test.jsonl"

"$vene" new-model mlp --h-dim 16 --layers 3 --classes 2 --activation relu --seed 1 --out "$work/fresh"
echo "== the MLP trained on the task alone"
"$vene" train --model "$work/fresh" --data "$work/factual.jsonl" --train-model "$work/plain" \
  --epochs 20 --batch-size 128 --lr 2e-3 --warmup 0
echo "== DAS on it: WX in rotated dims 0-7, YZ in 8-15 of block_output, layer 0"
"$vene" train --model "$work/plain" --config "$here/das.json" --data "$work/train.jsonl" --out "$work/das" \
  --epochs 10 --batch-size 256 --lr 1e-2
"$vene" eval --model "$work/plain" --config "$work/das" --data "$work/test.jsonl"
echo "== IIT: the same MLP trained so that dims 0-7 hold WX and 8-15 hold YZ"
"$vene" train --model "$work/fresh" --config "$here/iit.json" --data "$work/train.jsonl" --train-model "$work/iit" \
  --epochs 8 --batch-size 128 --lr 2e-3 --warmup 0
echo "== plain interchanges at those dims: IIT-trained, then the plain-trained control"
"$vene" eval --model "$work/iit" --config "$here/iit.json" --data "$work/test.jsonl"
"$vene" eval --model "$work/plain" --config "$here/iit.json" --data "$work/test.jsonl"
