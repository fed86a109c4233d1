#!/usr/bin/env python3
"""Damaged-archive corpus run (make test, make fuzz-archive): N deterministic mutations of a
committed seed archive (random byte flips, truncations, zeroed 4 KiB pages, flips in the middle,
flips aimed at tree entries, part records, stored contents and LMDB's meta pages), each read
through `voxfs verify`, `voxfs unpack` and, every MOUNT_EVERY-th case, a real mount reading every
file. Every outcome must be a clean error or exact bytes and metadata: a crash, a run over 10 s,
or a wrong byte or field that no error named is a failure (the case is kept in OUT/keep/).

The expected tree comes from the manifest beside the archive (NAME.manifest.json: per path its
type, mode, owner, mtime, link target and SHA-256), so no source tree is needed.
Derived from ../shared/tools/mutate_archive.py.

usage: fuzz_archive.py ARCHIVE OUT [N] [MOUNT_EVERY] [--voxfs PATH] [--seed S]"""
import argparse, json, os, random, shutil, signal, stat, subprocess, sys, time
from voxdata import sha256_file as sha

ap = argparse.ArgumentParser()
ap.add_argument("archive"); ap.add_argument("out")
ap.add_argument("n", nargs="?", type=int, default=1000)
ap.add_argument("mount_every", nargs="?", type=int, default=10)
ap.add_argument("--voxfs", default=".build/release/voxfs")
ap.add_argument("--seed", type=int, default=1000)
ap.add_argument("--hang", type=float, default=10.0, help="seconds after which a command counts as hung")
args = ap.parse_args()
V, OUT, HANG = os.path.abspath(args.voxfs), args.out, args.hang
base = open(args.archive, "rb").read()
SIZE = len(base)
manifest = json.load(open(os.path.splitext(args.archive)[0] + ".manifest.json"))
ROOT = os.geteuid() == 0
can_mount = ROOT and os.path.exists("/dev/fuse") and shutil.which("fusermount3")
os.makedirs(OUT + "/keep", exist_ok=True)

# targets: each stored file's distinctive bytes, the bytes after every path key (tree entries,
# and the entry records that follow them), LMDB's two meta pages
targets = [("meta0", 0, 160), ("meta1", 4096, 160)]
for rel, m in manifest.items():
    k = rel.encode()
    i = base.find(k)
    while i >= 0:
        targets.append(("entry:" + rel, i + len(k), 96))
        i = base.find(k, i + 1)

def mutate(i):
    rng = random.Random(args.seed + i)
    d = bytearray(base)
    kinds = ["flip"] * 5 + ["trunc"] * 2 + ["zeropage"] * 2 + ["middle"] + ["targeted"] * 3
    kind = kinds[i % len(kinds)]
    desc = {"case": i, "kind": kind, "edits": []}
    if kind == "flip":
        for _ in range(rng.choice([1, 1, 1, 2, 4, 16])):
            o = rng.randrange(SIZE); x = rng.randrange(1, 256)
            desc["edits"].append(("xor", o, x)); d[o] ^= x
    elif kind == "trunc":
        L = rng.choice([rng.randrange(SIZE), rng.randrange(8192), SIZE - rng.randrange(1, min(SIZE, 65536))])
        desc["edits"].append(("truncate", L)); d = d[:L]
    elif kind == "zeropage":
        for _ in range(rng.choice([1, 1, 2, 3])):
            p = rng.randrange(SIZE // 4096)
            desc["edits"].append(("zero4k", p * 4096)); d[p * 4096:(p + 1) * 4096] = bytes(4096)
    elif kind == "middle":
        for _ in range(rng.choice([1, 2, 8])):
            o = SIZE // 2 + rng.randrange(-min(SIZE // 2, 65536), min(SIZE // 2, 65536)); x = rng.randrange(1, 256)
            desc["edits"].append(("xor", o, x)); d[o] ^= x
    else:
        name, o0, ln = rng.choice(targets)
        desc["target"] = name
        for _ in range(rng.choice([1, 1, 2])):
            o = o0 + rng.randrange(ln); x = rng.randrange(1, 256)
            if o < len(d):
                desc["edits"].append(("xor", o, x)); d[o] ^= x
    return bytes(d), desc

def run(cmd, timeout):
    t = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        o, e = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); o, e = p.communicate(); rc = "TIMEOUT"
    return rc, time.time() - t, (o + e).decode("utf-8", "replace")

def crashed(rc, dt):
    return rc == "TIMEOUT" or (isinstance(rc, int) and (rc < 0 or rc >= 128)) or dt > HANG

def observe(p):
    st = os.lstat(p)
    t = stat.S_IFMT(st.st_mode)
    kind = "dir" if t == stat.S_IFDIR else "link" if t == stat.S_IFLNK else "file" if t == stat.S_IFREG else "other"
    return kind, st

def check_tree(root, text, mounted):
    """wrong bytes or metadata under root that `text` (the command's output) does not name"""
    bad, seen = [], set()
    for r, ds, fs in os.walk(root):
        for n in ds + fs:
            p = os.path.join(r, n); rel = os.path.relpath(p, root); seen.add(rel)
            want = manifest.get(rel)
            if want is None:
                bad.append(("extra", rel)); continue
            kind, st = observe(p)
            fields = [kind == want["type"], (st.st_mode & 0o7777) == want["mode"]]
            if ROOT or mounted:
                fields += [st.st_uid == want["uid"], st.st_gid == want["gid"]]
            if kind != "dir":
                fields.append(st.st_mtime_ns == want["mtime_ns"])
            if kind == "link":
                fields.append(os.readlink(p) == want["link"])
            if not all(fields):
                bad.append(("metadata", rel)); continue
            if kind == "file":
                try:
                    h = sha(p)
                except OSError:
                    continue                      # a read error is a reported error
                if h != want["sha256"]:
                    bad.append(("named-but-written" if rel in text else "bytes", rel))
    missing = [rel for rel in manifest if rel not in seen]
    return bad, missing

C, U, M = OUT + "/case.voxfs", OUT + "/u", OUT + "/m"
os.makedirs(M, exist_ok=True)
log = open(OUT + "/results.jsonl", "w")
counts, failures = {}, 0
t_start = time.time()
for i in range(args.n):
    data, desc = mutate(i)
    with open(C, "wb") as f:
        f.write(data)
    flags = []
    rc, dt, out = run([V, "verify", C], HANG * 3)
    desc["verify"] = (rc, round(dt, 2), out.strip()[-300:])
    if crashed(rc, dt): flags.append("CRASH_OR_HANG_VERIFY")
    shutil.rmtree(U, ignore_errors=True)
    rc2, dt2, out2 = run([V, "unpack", C, U], HANG * 3)
    desc["unpack"] = (rc2, round(dt2, 2), out2.strip()[-300:])
    if crashed(rc2, dt2): flags.append("CRASH_OR_HANG_UNPACK")
    bad, missing = check_tree(U, out2, False) if os.path.isdir(U) else ([], list(manifest))
    desc["unpack_bad"] = bad[:5]
    if bad: flags.append("WRONG_UNPACK")
    if rc2 == 0 and missing: flags.append("SILENT_MISSING_UNPACK")
    if rc == 0 and (rc2 != 0 or bad or missing): flags.append("VERIFY_SAID_SOUND_BUT_UNPACK_BAD")
    if can_mount and i % args.mount_every == 0:
        t = time.time()
        p = subprocess.Popen([V, "mount", C, M, "-f", "--log", OUT + "/mount.log"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
        while time.time() - t < HANG and p.poll() is None and not os.path.ismount(M):
            time.sleep(0.05)
        if os.path.ismount(M):
            # every file read whole (cat -> sha), every entry stat'ed; a read error is a reported error
            rc3, dt3, _ = run(["find", M, "-type", "f", "-exec", "sha256sum", "{}", "+"], HANG * 3)
            if rc3 == "TIMEOUT" or dt3 > HANG: flags.append("HANG_MOUNT_READ")
            mbad, _ = check_tree(M, "", True)
            desc["mount_bad"] = mbad[:5]
            if mbad: flags.append("WRONG_MOUNT")
            subprocess.run(["fusermount3", "-u", M], capture_output=True)
            if os.path.ismount(M):
                time.sleep(0.2); subprocess.run(["fusermount3", "-uz", M], capture_output=True)
        elif p.poll() is None:
            flags.append("HANG_MOUNT_START")
        try:
            drc = p.wait(timeout=HANG)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL); drc = "TIMEOUT"; flags.append("HANG_DAEMON_EXIT")
        if isinstance(drc, int) and (drc < 0 or drc >= 128): flags.append("CRASH_MOUNT_DAEMON")
        desc["mount_rc"] = drc
    desc["flags"] = flags
    for f in flags:
        counts[f] = counts.get(f, 0) + 1
    if flags:
        failures += 1
        shutil.copy(C, OUT + "/keep/case%04d.voxfs" % i)
        print(f"case {i} ({desc['kind']}{' ' + desc.get('target', '') if 'target' in desc else ''}): {' '.join(flags)}", flush=True)
    log.write(json.dumps(desc) + "\n")
subprocess.run(["fusermount3", "-u", M], capture_output=True)
mounts = (args.n + args.mount_every - 1) // args.mount_every if can_mount else 0
print(f"fuzz-archive: {args.n} mutated archives ({mounts} mounted) in {time.time() - t_start:.0f} s: "
      f"{args.n - failures} checks ok, {failures} failed" + (": " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if counts else ""))
sys.exit(1 if failures else 0)
