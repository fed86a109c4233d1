#!/usr/bin/env python3
"""Run pjdfstest (the POSIX filesystem test suite) against a read-write VoxFS mount.

Mounts a new, empty archive with `voxfs mount -o rw,allow_other`, runs the suite inside it
through ../shared/tools/pjdfstest.sh (which builds pjdfstest on first use), and compares the
failed subtests with Tests/pjdfstest/known-failures.txt: an unlisted failure fails the run, and
so does a listed subtest that now passes. Then unmounts and runs `voxfs verify` on the archive
the suite left behind.

  usage: pjdfstest_rw.py --voxfs .build/release/voxfs --suite ../shared/tools/pjdfstest.sh [TEST...]
Prints "N checks ok, M failed" (the line `make test` counts).
"""
import argparse, os, re, shutil, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
KNOWN = os.path.join(HERE, "..", "Tests", "pjdfstest", "known-failures.txt")


def parse_ranges(s):
    out = set()
    for part in s.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def known_failures():
    known = {}
    for line in open(KNOWN):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        f = line.split()
        known[f[0]] = (parse_ranges(f[1]), " ".join(f[2:]))
    return known


def parse_prove(text):
    """{test file under tests/: (subtests run, set of failed subtests that are not TODO)}"""
    results, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^\S*/tests/(\S+\.t) \.+", line)
        if m:
            cur = m.group(1)
            results[cur] = [0, set()]
            continue
        m = re.match(r"^(not )?ok (\d+)(.*)", line)
        if m and cur:
            results[cur][0] += 1
            if m.group(1) and "# TODO" not in m.group(3):
                results[cur][1].add(int(m.group(2)))
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxfs", required=True)
    ap.add_argument("--suite", required=True, help="pjdfstest.sh")
    ap.add_argument("--log", default=None, help="keep prove's full output here")
    ap.add_argument("tests", nargs="*", help="e.g. tests/rename (default: all)")
    a = ap.parse_args()
    voxfs = os.path.abspath(a.voxfs)
    if os.geteuid() != 0:
        sys.exit("pjdfstest needs root (it changes owners and modes)")
    work = tempfile.mkdtemp(prefix="voxfs-pjdfstest-", dir="/var/tmp")
    arch, mnt, log = os.path.join(work, "a.voxfs"), os.path.join(work, "mnt"), os.path.join(work, "mount.log")
    os.makedirs(mnt)
    os.chmod(work, 0o755)
    r = subprocess.run([voxfs, "mount", arch, mnt, "-o", "rw,allow_other", "--log", log], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"mount failed: {r.stderr.strip()}")
    t0 = time.time()
    try:
        # the suite runs in a folder of the mount, as its README asks
        os.makedirs(os.path.join(mnt, "pjd"))
        p = subprocess.run([a.suite, os.path.join(mnt, "pjd")] + a.tests, env=dict(os.environ, PROVE_ARGS="-rv"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = p.stdout
    finally:
        u = subprocess.run(["fusermount3", "-u", mnt], capture_output=True, text=True)
        if u.returncode != 0:
            time.sleep(1)
            subprocess.run(["fusermount3", "-u", "-z", mnt])
    secs = time.time() - t0
    if a.log:
        with open(a.log, "w") as f:
            f.write(out)
    results = parse_prove(out)
    known = known_failures()
    ok, bad = 0, []
    if not results:
        bad.append("prove ran no test files:\n" + out[-3000:])
    for name, (n, failed) in sorted(results.items()):
        expect = known.get(name, (set(), ""))[0]
        new, fixed = failed - expect, expect - failed
        if n == 0:
            bad.append(f"{name}: no subtests ran")
        if new:
            bad.append(f"{name}: unexpected failures {sorted(new)}")
        if fixed:
            bad.append(f"{name}: listed as failing but passed {sorted(fixed)}: take them off {KNOWN}")
        if not new and not fixed and n:
            ok += 1
    nsub = sum(n for n, _ in results.values())
    nfail = sum(len(f) for _, f in results.values())
    print(f"pjdfstest: {len(results)} files, {nsub} subtests, {nfail} failed "
          f"({sum(len(k[0]) for k in known.values())} listed as not applying), {secs:.0f} s")
    # the archive the suite leaves behind must verify
    v = subprocess.run([voxfs, "verify", arch], capture_output=True, text=True)
    if v.returncode != 0:
        bad.append(f"voxfs verify after the suite: {v.stdout.strip()} {v.stderr.strip()}")
    else:
        ok += 1
    if subprocess.run(["grep", "-q", "EIO\\|damaged\\|error", log]).returncode == 0:
        print("mount log:\n" + open(log).read()[-2000:])
    for b in bad:
        print("FAIL " + b)
    print(f"{ok} checks ok, {len(bad)} failed")
    if not bad:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"(kept {work}; prove's output in --log)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
