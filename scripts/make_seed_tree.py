#!/usr/bin/env python3
"""Writes the small tree behind the committed seed archives (Tests/Fixtures/seed-*.voxfs), from
the real data in the cache. Deterministic: the same cache gives the same bytes.

  seed/ct/IM000k.dcm   a 6-slice DICOM series: real pixels (pyradiomics' lung1 chest CT, a 64x64
                       crop of slices 20-25), written headers (every attribute made up here)
  seed/mr/MR_small.dcm, MR_small_bigendian.dcm   pydicom's real MR test files, as shipped
  seed/mr/brain.nii    a 40x40x4 int16 crop of pyradiomics' brain1 MR as a NIfTI-1 file
  seed/notes/README.txt, seed/notes/empty, seed/latest -> ct/IM0000.dcm (a symlink)

usage: make_seed_tree.py CACHE OUTDIR [MANIFEST] [--compressed]   (OUTDIR/seed is replaced;
MANIFEST: write the tree's manifest, which scripts/fuzz_archive.py checks every read path against)

--compressed writes the tree of the schema 3 seed archive instead (compressed volumes, issue 15):
  seed/gz/brain.nii.gz        the brain.nii crop above, gzip-compressed by CPython's gzip module
                              (zlib) at level 1, nibabel's default, with mtime 0
  seed/gz/breast1_image.nrrd  pyradiomics' real breast MR, a gzip-encoded NRRD written by ITK
  seed/notes/README.txt"""
import hashlib, json, os, shutil, stat, struct, sys
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

compressed = "--compressed" in sys.argv
sys.argv = [a for a in sys.argv if a != "--compressed"]
cache, outdir = sys.argv[1], sys.argv[2]
root = os.path.join(outdir, "seed")
shutil.rmtree(root, ignore_errors=True)
for d in (("gz", "notes") if compressed else ("ct", "mr", "notes")):
    os.makedirs(os.path.join(root, d))

def volume(name):
    meta = json.load(open(os.path.join(cache, "volumes", name + ".json")))
    nx, ny, nz = meta["shape"]
    return np.fromfile(os.path.join(cache, "volumes", name + ".raw"), dtype="<i2").reshape(nz, ny, nx), meta

if not compressed:
    ct, meta = volume("ct_lung1")
    sx, sy, sz = meta["spacing"]
    for k, z in enumerate(range(20, 26)):
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        fm.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.10.1001.{z}"
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = fm
        ds.SOPClassUID, ds.SOPInstanceUID = fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "VoxFS^Seed", "VOXFS-SEED"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1001.1", "1.2.826.0.1.3680043.10.1001.2"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(z) * sz]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [sy, sx], sz
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = 64, 64
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = ct[z, 200:264, 220:284].astype("<i2").tobytes()
        ds.save_as(os.path.join(root, "ct", f"IM{k:04d}.dcm"), enforce_file_format=True)

    import pydicom.data
    for n in ("MR_small.dcm", "MR_small_bigendian.dcm"):
        shutil.copyfile(pydicom.data.get_testdata_file(n), os.path.join(root, "mr", n))

mr, _ = volume("mr_brain1")
crop = mr[10:14, 100:140, 100:140].astype("<i2")
hdr = bytearray(348)
struct.pack_into("<i", hdr, 0, 348)
struct.pack_into("<8h", hdr, 40, 3, 40, 40, 4, 1, 1, 1, 1)       # dim
struct.pack_into("<hh", hdr, 70, 4, 16)                            # datatype int16, bitpix
struct.pack_into("<8f", hdr, 76, 1, 0.78125, 0.78125, 6.5, 0, 0, 0, 0)
struct.pack_into("<f", hdr, 108, 352.0)                            # vox_offset
hdr[344:348] = b"n+1\0"
nii = bytes(hdr) + bytes(4) + crop.tobytes()
if compressed:
    import gzip
    with open(os.path.join(root, "gz", "brain.nii.gz"), "wb") as f:
        f.write(gzip.compress(nii, compresslevel=1, mtime=0))
    shutil.copyfile(os.path.join(cache, "src", "pyradiomics-3.0.1", "data", "breast1_image.nrrd"), os.path.join(root, "gz", "breast1_image.nrrd"))
else:
    with open(os.path.join(root, "mr", "brain.nii"), "wb") as f:
        f.write(nii)

open(os.path.join(root, "notes", "README.txt"), "w").write(
    "Seed tree for VoxFS's archive fuzzing: real pixels (pyradiomics lung1 CT, brain1 MR; pydicom MR_small), written headers.\n")
if not compressed:
    open(os.path.join(root, "notes", "empty"), "w").close()
    os.symlink("ct/IM0000.dcm", os.path.join(root, "latest"))
os.chmod(os.path.join(root, "notes", "README.txt"), 0o640)
# fixed times, so the archive bytes do not depend on when the tree was written
for dirpath, dirs, files in os.walk(root, topdown=False):
    for n in files + dirs:
        os.utime(os.path.join(dirpath, n), ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000), follow_symlinks=False)
os.utime(root, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
if len(sys.argv) > 3:
    man = {}
    for dirpath, dirs, files in os.walk(root):
        for p in [dirpath] + [os.path.join(dirpath, n) for n in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]]:
            st = os.lstat(p)
            t = stat.S_IFMT(st.st_mode)
            kind = "dir" if t == stat.S_IFDIR else "link" if t == stat.S_IFLNK else "file"
            man[os.path.relpath(p, outdir)] = {"type": kind, "mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid,
                                               "mtime_ns": st.st_mtime_ns, "link": os.readlink(p) if kind == "link" else None,
                                               "sha256": hashlib.sha256(open(p, "rb").read()).hexdigest() if kind == "file" else None}
    json.dump(dict(sorted(man.items())), open(sys.argv[3], "w"), indent=1)
print(root)
