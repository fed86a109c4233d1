#!/usr/bin/env python3
"""Writes DICOM series from the real CT volume for the format tests (scripts/fetch_data.sh
runs it). Real pixels (pyradiomics' lung1 chest CT), written headers: every attribute here is
made up by this script, so these files test grouping and rebuilding, not real scanner headers.

  $CACHE/series/unsigned/   16 slices, uint16 stored = HU + 1024, RescaleIntercept -1024
  $CACHE/series/signed/     16 slices, int16 HU, explicit VR little endian
  $CACHE/series/implicit/   8 slices, implicit VR little endian
  $CACHE/series/gap/        15 slices: slice 8 missing (must split into two volumes)
  $CACHE/series-full/lung1/ all 48 slices of lung1, int16 (make bench-mount's whole CT series)
File names are shuffled (not in slice order)."""
import json, os, random, sys
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

cache = sys.argv[1]
out = os.path.join(cache, "series")
stamp = os.path.join(out, ".complete-v1")
full_stamp = os.path.join(cache, "series-full", ".complete-v1")
if os.path.exists(stamp) and os.path.exists(full_stamp):
    sys.exit(0)
meta = json.load(open(os.path.join(cache, "volumes", "ct_lung1.json")))
nx, ny, nz = meta["shape"]
vol = np.fromfile(os.path.join(cache, "volumes", "ct_lung1.raw"), dtype="<i2").reshape(nz, ny, nx)
sx, sy, sz = meta["spacing"]
rng = random.Random(7)

def write_series(name, zs, unsigned, implicit=False, root=out):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    series = generate_uid(entropy_srcs=[name])
    study = generate_uid(entropy_srcs=["study"])
    names = list(range(len(zs)))
    rng.shuffle(names)
    for k, z in enumerate(zs):
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        sop = generate_uid(entropy_srcs=[name, str(z)])
        fm.MediaStorageSOPInstanceUID = sop
        fm.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = fm
        ds.SOPClassUID = fm.MediaStorageSOPClassUID
        ds.SOPInstanceUID = sop
        ds.Modality = "CT"
        ds.PatientName = "VoxFS^Test"
        ds.PatientID = "VOXFS-TEST"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SeriesNumber = 1
        ds.InstanceNumber = z + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(z) * sz]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [sy, sx]
        ds.SliceThickness = sz
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated = 16
        ds.BitsStored = 12 if unsigned else 16
        ds.HighBit = ds.BitsStored - 1
        if unsigned:
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = -1024
            ds.RescaleSlope = 1
            px = (vol[z].astype(np.int32) + 1024).clip(0, 4095).astype("<u2")
        else:
            ds.PixelRepresentation = 1
            ds.RescaleIntercept = 0
            ds.RescaleSlope = 1
            px = vol[z].astype("<i2")
        ds.PixelData = px.tobytes()
        ds.is_little_endian = True
        ds.is_implicit_VR = implicit
        ds.save_as(os.path.join(d, f"IM{names[k]:04d}.dcm"), enforce_file_format=True)

if not os.path.exists(stamp):
    write_series("unsigned", list(range(10, 26)), True)
    write_series("signed", list(range(10, 26)), False)
    write_series("implicit", list(range(30, 38)), False, implicit=True)
    write_series("gap", [z for z in range(10, 26) if z != 18], False)
    open(stamp, "w").write("ok\n")
    print(f"wrote test series under {out} (real lung1 pixels, written headers)")
if not os.path.exists(full_stamp):
    write_series("lung1", list(range(nz)), False, root=os.path.join(cache, "series-full"))
    open(full_stamp, "w").write("ok\n")
    print(f"wrote the whole lung1 series under {cache}/series-full (real pixels, written headers)")
