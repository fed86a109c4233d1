#!/usr/bin/env bash
# Installs what scripts/compare_codecs.py (make compare) needs. Idempotent: a second run
# only checks and prints what is there.
#
#   Debian packages (apt-get, only when missing): ffmpeg (with libx265 and FFV1), xz-utils,
#     zstd, python3-venv
#   Python packages in the project venv ${VOXFS_CACHE:-~/.cache/voxfs}/venv (created when
#     missing): numpy, matplotlib, imagecodecs (CharLS, OpenJPEG, OpenJPH, libjxl),
#     pyjpegls (CharLS with a chosen bit depth); a stamp file records the list installed.
#
# Usage: scripts/compare_setup.sh [--force]     (--force reinstalls the Python packages)
set -euo pipefail

CACHE="${VOXFS_CACHE:-$HOME/.cache/voxfs}"
VENV="$CACHE/venv"
PY="$VENV/bin/python"
STAMP="$VENV/.compare-installed"
# Bump REQS_ID when PIP_PACKAGES changes so that the venv is re-populated.
PIP_PACKAGES=("numpy" "matplotlib" "imagecodecs>=2024.1.1" "pyjpegls>=1.2")
REQS_ID="v1 ${PIP_PACKAGES[*]}"
DEB_PACKAGES=(ffmpeg xz-utils zstd python3 python3-venv)

FORCE=0
if [[ "${1:-}" == "--force" ]]; then FORCE=1; fi

log() { printf '[compare_setup] %s\n' "$*" >&2; }
SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi

# --- 1. Debian packages --------------------------------------------------------------
if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for p in "${DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing Debian packages: ${missing[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
            "${missing[@]}"
    else
        log "Debian packages present: ${DEB_PACKAGES[*]}"
    fi
else
    log "no apt-get/dpkg here: install ffmpeg (with libx265), xz, zstd and python3-venv yourself"
fi

for t in ffmpeg xz zstd; do
    command -v "$t" >/dev/null 2>&1 || log "WARNING: $t not on PATH; its codecs will be skipped"
done
if command -v ffmpeg >/dev/null 2>&1; then
    encs="$(ffmpeg -hide_banner -encoders 2>/dev/null || true)"
    grep -qw libx265 <<<"$encs" || log "WARNING: this ffmpeg has no libx265: HEVC will be skipped"
    grep -qw ffv1 <<<"$encs" || log "WARNING: this ffmpeg has no ffv1: FFV1 will be skipped"
    if grep -qw libx265 <<<"$encs" \
        && ! ffmpeg -hide_banner -h encoder=libx265 2>/dev/null | grep -q gray12le; then
        log "WARNING: this libx265 has no 12-bit grey (gray12le): HEVC will fail"
    fi
fi

# --- 2. venv and Python packages -----------------------------------------------------
mkdir -p "$CACHE"
if [[ ! -x "$PY" ]] || ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv at $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi

imports_ok() {
    "$PY" - <<'EOF' >/dev/null 2>&1
import numpy, matplotlib, imagecodecs, jpeg_ls
EOF
}

if [[ $FORCE == 1 ]] || [[ ! -f "$STAMP" ]] || [[ "$(cat "$STAMP")" != "$REQS_ID" ]] || ! imports_ok; then
    log "installing Python packages into $VENV: ${PIP_PACKAGES[*]}"
    "$PY" -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
    imports_ok || { log "ERROR: the packages installed but do not import"; exit 1; }
    echo "$REQS_ID" > "$STAMP"
else
    log "Python packages already installed (stamp $STAMP)"
fi

# --- 3. what the harness will find ---------------------------------------------------
"$PY" - <<'EOF'
import imagecodecs as ic
from importlib.metadata import version
libs = dict(item.strip().rpartition("-")[::2] for item in ic.version().split(","))
have = {n: bool(getattr(getattr(ic, n, None), "available", False))
        for n in ("JPEGLS", "JPEG2K", "HTJ2K", "JPEGXL")}
print(f"[compare_setup] imagecodecs {ic.__version__}: "
      + ", ".join(f"{n} {'yes' if ok else 'NO'}" for n, ok in have.items())
      + f" (charls {libs.get('charls')}, openjpeg {libs.get('openjpeg')}, "
        f"openjph {libs.get('openjph')}, libjxl {libs.get('libjxl')}); "
        f"pyjpegls {version('pyjpegls')}")
for n, ok in have.items():
    if not ok:
        print(f"[compare_setup] WARNING: imagecodecs has no {n}: that codec will be skipped")
EOF
log "done; run: $PY scripts/compare_codecs.py --selftest"
