"""Small int16 volume files written around given voxel bytes (x fastest), for the fuzzers' seeds
(scripts/fuzz_formats.py, scripts/fuzz_seeds.py): a NIfTI-1 single file, MetaImage with or
without CompressedData, NRRD raw or gzip. Headers hold only what each format requires."""
import gzip, struct, zlib


def nifti1(nx, ny, nz, raw):
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, nx, ny, nz, 1, 1, 1, 1)
    struct.pack_into("<hh", hdr, 70, 4, 16)  # datatype int16, 16 bits per voxel
    struct.pack_into("<f", hdr, 108, 352.0)  # vox_offset
    hdr[344:348] = b"n+1\0"
    return bytes(hdr) + bytes(4) + raw


def metaimage(nx, ny, nz, raw, compressed=False):
    head = f"ObjectType = Image\nNDims = 3\nDimSize = {nx} {ny} {nz}\nElementType = MET_SHORT\n".encode()
    if compressed:
        return head + b"CompressedData = True\nElementDataFile = LOCAL\n" + zlib.compress(raw, 6)
    return head + b"ElementDataFile = LOCAL\n" + raw


def nrrd(nx, ny, nz, raw, gz=False):
    head = f"NRRD0004\ntype: short\ndimension: 3\nsizes: {nx} {ny} {nz}\nendian: little\nencoding: {'gzip' if gz else 'raw'}\n\n".encode()
    return head + (gzip.compress(raw, 6, mtime=0) if gz else raw)
