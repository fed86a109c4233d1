"""The data cache as the benchmark scripts see it (standard library only): the real volumes
(NAME.raw with a NAME.json sidecar) and hard-linked copies of cached trees."""

import glob
import hashlib
import json
import os
import sys

DTYPE_BYTES = {"uint8": 1, "int8": 1, "int16": 2, "uint16": 2}


def sha256_file(path):
    """Hex SHA-256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def find_volumes(cache, pattern=None, min_voxels=0):
    """The raw volumes with a valid sidecar under CACHE/volumes (or matching PATTERN): dicts
    with name, raw, shape [x, y, z], dtype, voxels, bytes, source. Others are skipped with a log line."""
    vol_dir = os.path.join(cache, "volumes")
    if pattern is None:
        paths = glob.glob(os.path.join(vol_dir, "*.raw"))
    else:
        pat = os.path.expanduser(pattern)
        if not os.path.isabs(pat) and os.sep not in pat:
            pat = os.path.join(vol_dir, pat)
        paths = glob.glob(pat)
    vols = []
    for raw in sorted(paths):
        if not raw.endswith(".raw"):
            continue
        name = os.path.basename(raw)[:-4]
        side = raw[:-4] + ".json"
        if not os.path.isfile(side):
            log(f"skip {name}: no .json sidecar")
            continue
        try:
            with open(side) as f:
                meta = json.load(f)
            shape = [int(s) for s in meta["shape"]]
            dtype = str(meta["dtype"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            log(f"skip {name}: bad sidecar ({e})")
            continue
        if len(shape) != 3 or dtype not in DTYPE_BYTES:
            log(f"skip {name}: unsupported shape {shape} / dtype {dtype}")
            continue
        voxels = shape[0] * shape[1] * shape[2]
        size = os.path.getsize(raw)
        if size != voxels * DTYPE_BYTES[dtype]:
            log(f"skip {name}: {size} bytes, sidecar says {voxels} x {dtype}")
            continue
        if voxels < min_voxels:
            log(f"skip {name}: {voxels:,} voxels (< {min_voxels:,})")
            continue
        vols.append({"name": name, "raw": raw, "shape": shape, "dtype": dtype,
                     "voxels": voxels, "bytes": size, "source": meta.get("source", "")})
    return vols


def link_tree(src, dst, skip_hidden=False):
    """Hard-links every regular file under SRC into the same place under DST (nothing is
    copied); skip_hidden leaves out dot files (the cache's stamps)."""
    for d, _, fs in os.walk(src):
        rel = os.path.relpath(d, src)
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for f in fs:
            s = os.path.join(d, f)
            if os.path.isfile(s) and not os.path.islink(s) and not (skip_hidden and f.startswith(".")):
                os.link(s, os.path.join(dst, rel, f))
