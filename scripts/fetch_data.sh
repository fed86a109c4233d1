#!/usr/bin/env bash
# Fetch real medical scans from PyPI packages and convert them into raw volumes
# for VoxFS tests and benchmarks.
#
# Everything lives in a cache dir outside the repo:
#   ${VOXFS_CACHE:-$HOME/.cache/voxfs}
#     venv/                 Python venv (numpy, pynrrd, pydicom, pydicom-data, ...)
#     downloads/            pyradiomics-3.0.1.tar.gz (sdist)
#     src/pyradiomics-3.0.1 unpacked sdist (data/*.nrrd)
#     volumes/NAME.raw      little-endian voxels, x fastest, then y, then z
#     volumes/NAME.json     {"shape":[x,y,z],"dtype":..,"spacing":[..],"source":..,"sha256":..}
#     volumes/.complete     stamp written after a successful run
#     dicom/                copies of pydicom / pydicom-data DICOM test files
#
# Idempotent: a second run only checks stamps and prints the summary.
# Usage: scripts/fetch_data.sh [--force]   (--force re-converts the volumes)
set -euo pipefail

CACHE="${VOXFS_CACHE:-$HOME/.cache/voxfs}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$CACHE/venv"
PY="$VENV/bin/python"
DOWNLOADS="$CACHE/downloads"
SRC="$CACHE/src"
VOLUMES="$CACHE/volumes"
DICOM="$CACHE/dicom"

PYRADIOMICS_VERSION="3.0.1"
PYDICOM_DATA_VERSION="1.0.0"
# Bump this when the package list changes so the venv is re-populated.
REQS_ID="v2 numpy setuptools wheel versioneer pynrrd nibabel pydicom pydicom-data"

FORCE=0
if [[ "${1:-}" == "--force" ]]; then FORCE=1; fi

log() { printf '[fetch_data] %s\n' "$*" >&2; }

start_ts=$(date +%s)
mkdir -p "$CACHE" "$DOWNLOADS" "$SRC" "$VOLUMES" "$DICOM"

# --- 1. venv -----------------------------------------------------------------
make_venv() {
    rm -rf "$VENV"
    python3 -m venv "$VENV"
}

if [[ ! -x "$PY" ]] || ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv at $VENV"
    if ! make_venv; then
        # On Debian, `python3 -m venv` needs python3-venv; it may still be
        # being installed by apt. Wait (up to 15 min) for /tmp/apt.log to say done.
        log "venv creation failed; waiting for apt (python3-venv) to finish (/tmp/apt.log)"
        for _ in $(seq 1 180); do
            if [[ -f /tmp/apt.log ]] && grep -q "done" /tmp/apt.log; then break; fi
            sleep 5
        done
        make_venv
    fi
fi

STAMP="$VENV/.voxfs-installed"
if [[ ! -f "$STAMP" ]] || [[ "$(cat "$STAMP")" != "$REQS_ID" ]]; then
    log "installing Python packages into venv"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet numpy setuptools wheel versioneer pynrrd nibabel
    # pydicom: latest that installs and imports; fall back to the 2.x line.
    if ! { "$PY" -m pip install --quiet --upgrade pydicom && "$PY" -c 'import pydicom'; }; then
        log "latest pydicom failed; trying pydicom<3"
        "$PY" -m pip install --quiet 'pydicom<3'
    fi
    # pydicom-data: want exactly $PYDICOM_DATA_VERSION; check that PyPI has it.
    if "$PY" -m pip download --quiet --no-deps "pydicom-data==$PYDICOM_DATA_VERSION" -d "$DOWNLOADS"; then
        "$PY" -m pip install --quiet --no-deps "pydicom-data==$PYDICOM_DATA_VERSION"
    else
        log "NOTE: pydicom-data==$PYDICOM_DATA_VERSION not on PyPI; installing latest pydicom-data instead"
        "$PY" -m pip install --quiet --no-deps pydicom-data
    fi
    echo "$REQS_ID" > "$STAMP"
else
    log "venv packages already installed (stamp $STAMP)"
fi

# --- 2. pyradiomics sdist ----------------------------------------------------
SDIST="$DOWNLOADS/pyradiomics-$PYRADIOMICS_VERSION.tar.gz"
if [[ ! -s "$SDIST" ]]; then
    log "downloading pyradiomics==$PYRADIOMICS_VERSION sdist"
    # --no-build-isolation: metadata generation uses the venv's setuptools,
    # wheel and versioneer (the sdist's setup.py needs them).
    "$PY" -m pip download --quiet --no-deps --no-build-isolation \
        --no-binary pyradiomics "pyradiomics==$PYRADIOMICS_VERSION" -d "$DOWNLOADS"
fi
[[ -s "$SDIST" ]] || { log "ERROR: $SDIST missing after download"; exit 1; }

SDIST_DIR="$SRC/pyradiomics-$PYRADIOMICS_VERSION"
if [[ ! -f "$SDIST_DIR/.unpacked" ]]; then
    log "unpacking $SDIST"
    rm -rf "$SDIST_DIR"
    tar -xzf "$SDIST" -C "$SRC"
    touch "$SDIST_DIR/.unpacked"
fi

# --- 3/4. convert volumes + copy DICOM test files -----------------------------
if [[ "$FORCE" == 1 ]]; then rm -f "$VOLUMES/.complete"; fi
if [[ ! -f "$VOLUMES/.complete" ]]; then
    log "converting volumes"
    force_arg=()
    [[ "$FORCE" == 1 ]] && force_arg=(--force)
    "$PY" "$SCRIPT_DIR/convert_volumes.py" \
        --cache "$CACHE" \
        --pyradiomics-dir "$SDIST_DIR" \
        --pyradiomics-version "$PYRADIOMICS_VERSION" \
        "${force_arg[@]}"
    # --- 5. stamp ----------------------------------------------------------
    date -u +%Y-%m-%dT%H:%M:%SZ > "$VOLUMES/.complete"
else
    log "volumes already complete (stamp $VOLUMES/.complete); use --force to redo"
fi

# --- 6. an 8-bit MR volume (issue 12): the MNI ICBM 2009a nonlinear symmetric T1 template as
# nilearn's wheel on PyPI ships it (uint8, 1 mm isotropic, skull-stripped). Not Colin27, not one
# of the packages reserved for independent evaluation.
NILEARN_VERSION="0.14.1"
ICBM_MEMBER="nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
if ! "$PY" "$SCRIPT_DIR/convert_volumes.py" --cache "$CACHE" --check mr_icbm152_t1 2>/dev/null; then
    WHEEL="$DOWNLOADS/nilearn-$NILEARN_VERSION-py3-none-any.whl"
    if [[ ! -s "$WHEEL" ]]; then
        log "downloading nilearn==$NILEARN_VERSION wheel (for its ICBM 2009a T1 template)"
        "$PY" -m pip download --quiet --no-deps "nilearn==$NILEARN_VERSION" -d "$DOWNLOADS"
    fi
    [[ -s "$WHEEL" ]] || { log "ERROR: $WHEEL missing after download"; exit 1; }
    "$PY" "$SCRIPT_DIR/convert_volumes.py" --cache "$CACHE" --nifti-from-wheel "$WHEEL" "$ICBM_MEMBER" mr_icbm152_t1 \
        "nilearn $NILEARN_VERSION wheel (PyPI) $ICBM_MEMBER: MNI ICBM 2009a nonlinear symmetric T1 template, uint8, 1 mm"
fi

"$PY" "$SCRIPT_DIR/convert_volumes.py" --cache "$CACHE" --summary-only
# DICOM series from the real CT (real pixels, headers written by the script) for format tests
"$PY" "$SCRIPT_DIR/make_test_series.py" "$CACHE"
log "done in $(( $(date +%s) - start_ts ))s; cache: $CACHE"
