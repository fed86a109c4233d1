#!/usr/bin/env python3
"""One-thread decode speed of voxfs classical/fast/default beside JPEG XL e7, one run (docs/benchmarks.md,
"Model format 2 and the AVX2 coder"). Run with the data cache venv: ~/.cache/voxfs/venv/bin/python scripts/quick_decode_bench.py"""
import subprocess, time, json, os, sys
import numpy as np, imagecodecs as ic
V=os.path.expanduser("~/.cache/voxfs/volumes"); B=os.environ.get("VOXFS", ".build/release/voxfs")
def best(f, n=3):
    t=[]
    for _ in range(n):
        t0=time.perf_counter(); f(); t.append(time.perf_counter()-t0)
    return min(t)
for vol in ["ct_lung1","mr_brain1","mr_icbm152_t1"]:
    meta=json.load(open(f"{V}/{vol}.json")); sx,sy,sz=meta["shape"]; dt={"int16":np.int16,"uint16":np.uint16,"uint8":np.uint8}[meta["dtype"]]
    a=np.fromfile(f"{V}/{vol}.raw",dtype=dt).reshape(sz,sy,sx); nv=a.size
    if dt==np.int16: u=(a.astype(np.int32)-a.min()).astype(np.uint16)
    else: u=a
    bits=int(u.max()).bit_length()
    enc=[ic.jpegxl_encode(s,lossless=True,distance=0.0,effort=7,bitspersample=bits,numthreads=1) for s in u]
    jb=sum(len(e) for e in enc)*8/nv
    tj=best(lambda: [ic.jpegxl_decode(e,numthreads=1) for e in enc])
    print(f"{vol}: JPEG XL e7 {jb:.3f} bpp, decode {nv/tj/1e6:.2f} Mvox/s (1 thread)")
    for p in ["classical","fast","default"]:
        c=f"/tmp/qb.{vol}.{p}.vxz"
        subprocess.run([B,"compress",f"{V}/{vol}.raw",c,"--preset",p,"-q"],check=True)
        bpp=os.path.getsize(c)*8/nv
        td=best(lambda: subprocess.run([B,"decompress",c,"/tmp/qb.out","--threads","1","-q"],check=True))
        assert open("/tmp/qb.out","rb").read()==open(f"{V}/{vol}.raw","rb").read()
        print(f"  voxfs {p}: {bpp:.3f} bpp, decode {nv/td/1e6:.2f} Mvox/s = {tj/td:.2f}x JPEG XL e7 (whole process, 1 thread)")
