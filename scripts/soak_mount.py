#!/usr/bin/env python3
"""Soak (make soak): READERS concurrent readers through `voxfs mount` for SECONDS, each reading
random files of real data (the lung1 CT series, real pixels and written headers, and the cache's
raw CT and MR volumes) at random offsets and lengths and checking every byte against the original; the daemon's peak
memory (VmHWM) is reported against its -o cache_size. Run once per cache size.

usage: soak_mount.py --voxfs BIN --cache CACHE [--seconds 600] [--readers 32] [--cache-sizes default,64M] [--out FILE]"""
import argparse, os, random, shutil, subprocess, sys, tempfile, threading, time

ap = argparse.ArgumentParser()
ap.add_argument("--voxfs", required=True); ap.add_argument("--cache", required=True)
ap.add_argument("--seconds", type=float, default=600); ap.add_argument("--readers", type=int, default=32)
ap.add_argument("--cache-sizes", default="default,64M"); ap.add_argument("--out")
args = ap.parse_args()
V = os.path.abspath(args.voxfs)
# the tree: the whole lung1 CT series and every raw volume with its sidecar (more than a 64 MiB
# cache holds, so readers evict each other's slabs)
tree = os.path.join(tempfile.mkdtemp(prefix="voxfs-soak-"), "soak")
work = os.path.dirname(tree)
series, vols = os.path.join(args.cache, "series-full", "lung1"), os.path.join(args.cache, "volumes")
if not os.path.isdir(series) or not os.path.isdir(vols):
    sys.exit(f"soak: {series} or {vols} missing (make data)")
for d, keep in ((series, ".dcm"), (vols, "")):
    os.makedirs(os.path.join(tree, os.path.basename(d)))
    for n in os.listdir(d):
        if n.endswith(keep) and not n.startswith("."):
            os.link(os.path.join(d, n), os.path.join(tree, os.path.basename(d), n))
archive = os.path.join(work, "soak.voxfs")
t = time.time()
subprocess.run([V, "pack", "-q", tree, archive], check=True)
names = sorted(os.path.relpath(os.path.join(r, n), tree) for r, _, fs in os.walk(tree) for n in fs)
orig = {n: open(os.path.join(tree, n), "rb").read() for n in names}
print(f"soak: packed {len(names)} files, {sum(map(len, orig.values())) >> 20} MiB, in {time.time() - t:.0f} s", flush=True)

def status_kb(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0

rows = []
for cs in args.cache_sizes.split(","):
    mnt = os.path.join(work, "m")
    os.makedirs(mnt, exist_ok=True)
    opts = [] if cs == "default" else ["-o", f"cache_size={cs}"]
    # drop the page cache so the first reads are cold
    subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], capture_output=True)
    d = subprocess.Popen([V, "mount", archive, mnt, "-f"] + opts, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(300):
        if os.path.ismount(mnt): break
        time.sleep(0.1)
    if not os.path.ismount(mnt):
        sys.exit("soak: the mount did not come up: " + d.stderr.read().decode())
    stop = time.time() + args.seconds
    lock = threading.Lock()
    stats = {"reads": 0, "bytes": 0, "errors": 0, "wrong": 0, "lat": []}

    def reader(k):
        rng = random.Random(k)
        lat = []
        n = b = err = wrong = 0
        while time.time() < stop:
            name = rng.choice(names)
            data = orig[name]
            off = rng.randrange(len(data)); ln = rng.choice([4096, 65536, 131072, len(data)])
            t0 = time.time()
            try:
                with open(os.path.join(mnt, "soak", name), "rb") as f:
                    got = os.pread(f.fileno(), ln, off)
            except OSError as e:
                err += 1
                if err == 1: print(f"soak: reader {k}: {name}: {e}", flush=True)
                continue
            lat.append(time.time() - t0)
            n += 1; b += len(got)
            if got != data[off:off + ln]: wrong += 1
        with lock:
            stats["reads"] += n; stats["bytes"] += b; stats["errors"] += err; stats["wrong"] += wrong; stats["lat"] += lat

    # where the peak is: the daemon's resident memory sampled 4 times a second, split into
    # anonymous (heap: slabs, decodes) and file-backed (the binary and its shared libraries)
    peak = {"rss": 0, "anon": 0}
    def sampler():
        while time.time() < stop:
            try:
                f = {l.split(":")[0]: int(l.split()[1]) for l in open(f"/proc/{d.pid}/smaps_rollup") if l.split()[-1] == "kB"}
            except (OSError, ValueError, IndexError):
                break
            if f.get("Rss", 0) > peak["rss"]: peak.update(rss=f["Rss"], anon=f.get("Anonymous", 0))
            time.sleep(0.25)
    th = [threading.Thread(target=reader, args=(k,)) for k in range(args.readers)] + [threading.Thread(target=sampler)]
    t0 = time.time()
    for x in th: x.start()
    for x in th: x.join()
    wall = time.time() - t0
    hwm = status_kb(d.pid, "VmHWM") / 1024
    cap = os.getxattr(mnt, "user.voxfs.cache").decode()
    subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
    d.wait(timeout=30)
    lat = sorted(stats["lat"]) or [0]
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
    capacity = int(cap.split("capacity=")[1].split()[0]) / (1 << 20) if "capacity=" in cap else float("nan")
    row = (f"| {cs} | {capacity:.0f} | {args.readers} | {wall:.0f} | {stats['reads']} | {stats['errors']} | {stats['wrong']} | "
           f"{pct(0.5):.1f} | {pct(0.99):.0f} | {lat[-1] * 1000:.0f} | {hwm:.0f} | {hwm - capacity:+.0f} | "
           f"{peak['anon'] / 1024:.0f} / {(peak['rss'] - peak['anon']) / 1024:.0f} |")
    rows.append(row)
    print(row, flush=True)
head = ("| -o cache_size | cache MiB | readers | s | reads | errors | wrong bytes | p50 ms | p99 ms | max ms | peak RSS MiB | RSS - cache MiB | sampled peak: anon / file MiB |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
text = head + "\n" + "\n".join(rows) + "\n"
print(text)
if args.out:
    open(args.out, "w").write(text)
shutil.rmtree(work, ignore_errors=True)
