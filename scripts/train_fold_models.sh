#!/usr/bin/env bash
# Held-out models for honest benchmarks: for each real volume, the default preset's model
# trained (same recipe as scripts/train_models.sh) on the OTHER volumes only, written to
# $VOXFS_CACHE/models/heldout/VOLUME.vxm. `make compare` codes each volume with its
# held-out model (the shipped models have seen every one of these volumes).
set -euo pipefail
VOXFS="${1:-.build/release/voxfs}"
CACHE="${VOXFS_CACHE:-$HOME/.cache/voxfs}"
V="$CACHE/volumes"
OUT="$CACHE/models/heldout"
VOLS=(ct_lung1 ct_lung2 mr_brain1 mr_brain2)
RECIPE=(--preset default --epochs 8 --samples 100000 --lr 1e-3 --lambda 0 --norm-shift 7 --seed 1 --activation quadratic)
mkdir -p "$OUT"
stamp="$OUT/.recipe-$( ("$VOXFS" presets; echo "${RECIPE[@]}") | sha256sum | cut -c1-16)"
for v in "${VOLS[@]}"; do
  if [ -f "$OUT/$v.vxm" ] && [ -f "$stamp" ]; then continue; fi
  train=()
  for o in "${VOLS[@]}"; do [ "$o" = "$v" ] || train+=("$V/$o.raw"); done
  echo "== $OUT/$v.vxm (trained without $v)"
  "$VOXFS" train --data "${train[@]}" "${RECIPE[@]}" --out "$OUT/$v.vxm" -q
done
touch "$stamp"
