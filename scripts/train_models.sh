#!/usr/bin/env bash
# `make model`: retrains the shipped models from the real volumes with a fixed recipe,
# writes models/NAME.vxm and embeds them (scripts/embed_models.py). Deterministic for the
# seed on one machine (single-threaded BLAS). Old model files that streams may still name
# belong in models/ too: move a replaced default to models/retired/NAME-OLDHASH.vxm, not away
# (the table-activation models of model format 1 are there since the quadratic ones replaced them).
set -euo pipefail
VOXFS="${1:-.build/release/voxfs}"
CACHE="${VOXFS_CACHE:-$HOME/.cache/voxfs}"
V="$CACHE/volumes"
DATA=("$V/ct_lung1.raw" "$V/ct_lung2.raw" "$V/mr_brain1.raw" "$V/mr_brain2.raw")
RECIPE=(--epochs 8 --samples 100000 --lr 1e-3 --lambda 0 --norm-shift 7 --seed 1 --activation quadratic)
mkdir -p models
for preset in fast parallel default large; do
  echo "== training models/$preset.vxm"
  "$VOXFS" train --data "${DATA[@]}" --preset "$preset" "${RECIPE[@]}" --out "models/$preset.vxm"
done
python3 scripts/embed_models.py
