import Foundation
import XCTest
import VoxArchive
import VoxCore
import VoxTestSupport

/// Real FUSE mounts of a packed tree through the `voxfs` binary (root and /dev/fuse; CI has
/// both). The data: a DICOM series (real CT pixels, headers written by
/// scripts/make_test_series.py), real pydicom test files (big-endian, multi-frame, JPEG 2000),
/// a raw CT crop with its sidecar, a NIfTI written by nibabel from the same real CT, a symlink.
final class MountTests: ScratchTestCase {
    var mounts: [String] = []

    override func setUpWithError() throws {
        guard getuid() == 0, FileManager.default.fileExists(atPath: "/dev/fuse") else {
            if ProcessInfo.processInfo.environment["VOXFS_REQUIRE_DATA"] == "1" { XCTFail("mount tests need root and /dev/fuse"); return }
            throw XCTSkip("mount tests need root and /dev/fuse")
        }
        try super.setUpWithError()
    }

    override func tearDownWithError() throws {
        for m in mounts { _ = try? run("/bin/fusermount3", ["-u", "-z", m]) }
        try super.tearDownWithError()
    }

    func voxfs(_ args: [String]) throws -> (status: Int32, out: String, err: String) { try run(CLITests.binary, args) }
    var python: String { RealData.cache + "/venv/bin/python" }
    static var scripts: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("scripts").path
    }

    func makeTree() throws -> String {
        let cache = RealData.cache
        for p in ["series/gap", "dicom/pydicom", "dicom/pydicom-data/emri_small.dcm", "volumes/ct_lung1.raw", "venv/bin/python"] { _ = try RealData.require(p) }
        let fm = FileManager.default
        let src = path("study")
        try fm.createDirectory(atPath: src + "/misc", withIntermediateDirectories: true)
        try fm.copyItem(atPath: cache + "/series/gap", toPath: src + "/ct")
        for n in ["CT_small.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm"] { try fm.copyItem(atPath: cache + "/dicom/pydicom/" + n, toPath: src + "/misc/" + n) }
        try fm.copyItem(atPath: cache + "/dicom/pydicom-data/emri_small.dcm", toPath: src + "/misc/emri_small.dcm")
        let all = try FileIO.read(cache + "/volumes/ct_lung1.raw")
        try FileIO.writeAtomically(src + "/misc/crop.raw", Array(all[(512 * 512 * 2 * 10)..<(512 * 512 * 2 * 30)]))
        try FileIO.writeAtomically(src + "/misc/crop.json", Array("{\"shape\":[512,512,20],\"dtype\":\"int16\"}".utf8))
        let nii = try run(python, ["-c", """
            import nibabel, numpy, sys
            v = numpy.fromfile(sys.argv[1], dtype='<i2').reshape(20, 512, 512).transpose(2, 1, 0)
            nibabel.save(nibabel.Nifti1Image(v, numpy.diag([0.7, 0.7, 2.5, 1])), sys.argv[2])
            """, src + "/misc/crop.raw", src + "/misc/crop.nii"])
        XCTAssertEqual(nii.status, 0, "nibabel: \(nii.err)")
        try FileIO.writeAtomically(src + "/notes ünïcødé.txt", Array("real data, see MountTests\n".utf8))
        chmod(src + "/notes ünïcødé.txt", 0o640)
        symlink("misc/CT_small.dcm", src + "/link.dcm")
        return src
    }

    func packAndMount(_ src: String, options: [String] = []) throws -> (archive: String, mnt: String) {
        let archive = path("a.voxfs")
        var r = try voxfs(["pack", src, archive, "--preset", "classical-par", "-q"])
        XCTAssertEqual(r.status, 0, r.err)
        let mnt = path("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        r = try voxfs(["mount", archive, mnt, "--log", path("mount.log")] + options)
        XCTAssertEqual(r.status, 0, r.err)
        mounts.append(mnt)
        return (archive, mnt)
    }

    func testMountedTreeReadsLikeTheOriginalInEveryTool() throws {
        let src = try makeTree()
        let (_, mnt) = try packAndMount(src, options: ["-o", "cache_size=32M,workers=2"])
        // usable as soon as mount returns
        let r = try run(python, [MountTests.scripts + "/check_mount.py", src, mnt + "/study"])
        XCTAssertEqual(r.status, 0, r.out + r.err)
        XCTAssertTrue(r.out.contains(" 0 failed"), r.out)
        // user.voxfs.* attributes and statfs
        let x = try run(python, ["-c", """
            import os, sys, hashlib
            p = sys.argv[1] + '/study/ct/' + sorted(os.listdir(sys.argv[1] + '/study/ct'))[0]
            names = os.listxattr(p)
            assert 'user.voxfs.stored_size' in names and 'user.voxfs.ratio' in names, names
            assert os.getxattr(p, 'user.voxfs.sha256').decode() == hashlib.sha256(open(p, 'rb').read()).hexdigest()
            assert float(os.getxattr(p, 'user.voxfs.ratio')) > 1.5
            assert int(os.getxattr(sys.argv[1], 'user.voxfs.stored_bytes')) > 0
            assert os.getxattr(sys.argv[1], 'user.voxfs.integrity') == b'sound'
            # an archive from elsewhere: no setuid programs or devices unless -o suid / -o dev
            opts = [l.split()[3].split(',') for l in open('/proc/self/mounts') if l.split()[1] == sys.argv[1]][0]
            assert 'nosuid' in opts and 'nodev' in opts and 'ro' in opts, opts
            # the daemon is named after its binary (ps, top, systemd), not 'exe'
            comms = [open(f'/proc/{p}/comm').read().strip() for p in os.listdir('/proc') if p.isdigit() and p != str(os.getpid()) and
                     os.path.exists(f'/proc/{p}/cmdline') and b'--daemon-child' in open(f'/proc/{p}/cmdline', 'rb').read()
                     and sys.argv[1].encode() in open(f'/proc/{p}/cmdline', 'rb').read()]
            assert comms and all(c == 'voxfs' for c in comms), comms
            st = os.statvfs(sys.argv[1])
            assert st.f_blocks * st.f_frsize >= int(os.getxattr(sys.argv[1], 'user.voxfs.original_bytes'))
            print('xattrs ok')
            """, mnt])
        XCTAssertEqual(x.status, 0, x.out + x.err)
        // read-only
        XCTAssertThrowsError(try FileIO.writeAtomically(mnt + "/study/new.txt", [1]))
        XCTAssertEqual(try run("/bin/fusermount3", ["-u", mnt]).status, 0)
        mounts.removeAll()
        Thread.sleep(forTimeInterval: 0.3)
        XCTAssertFalse(FileManager.default.fileExists(atPath: mnt + "/study"), "still mounted after fusermount3 -u")
    }

    func testDamagedSlabIsEIOWithALogLineAndOtherFilesRead() throws {
        let src = try makeTree()
        let archive = path("a.voxfs")
        XCTAssertEqual(try voxfs(["pack", src, archive, "--preset", "classical-par", "-q"]).status, 0)
        // damage slab 1 of the raw crop's volume (slices 8-15) in the archive file
        let ls = try voxfs(["ls", "-l", archive, "study/misc/crop.raw"]).out
        guard let r = ls.range(of: #"\[volume (\d+)\]"#, options: .regularExpression) else { return XCTFail(ls) }
        let vol = ls[r].dropFirst(8).dropLast()
        try corruptSlab(archive: archive, volume: String(vol), slab: 1)
        let mnt = path("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        XCTAssertEqual(try voxfs(["mount", archive, mnt, "--log", path("mount.log")]).status, 0)
        mounts.append(mnt)
        let sliceBytes = 512 * 512 * 2
        let fd = open(mnt + "/study/misc/crop.raw", O_RDONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        var buf = [UInt8](repeating: 0, count: sliceBytes)
        XCTAssertEqual(pread(fd, &buf, sliceBytes, 0), sliceBytes)
        XCTAssertEqual(buf, Array(try FileIO.read(src + "/misc/crop.raw").prefix(sliceBytes)))
        XCTAssertEqual(pread(fd, &buf, 4096, off_t(9 * sliceBytes)), -1)
        XCTAssertEqual(errno, EIO)
        close(fd)
        XCTAssertEqual(try FileIO.read(mnt + "/study/misc/CT_small.dcm"), try FileIO.read(src + "/misc/CT_small.dcm"))
        let log = String(decoding: try FileIO.read(path("mount.log")), as: UTF8.self)
        XCTAssertTrue(log.contains("misc/crop.raw") && log.contains("slab 1") && log.contains("EIO"), log)
    }

    /// Flips bytes of one slab record inside the archive file (found by its content).
    func corruptSlab(archive: String, volume: String, slab: Int) throws {
        let rec = try Archive(path: archive, create: false).slabRecord(volume: UInt64(volume)!, index: slab)!
        let needle = Array(rec[100..<164])
        // every copy: the NIfTI of the same voxels codes to the same slab bytes
        var file = try FileIO.read(archive)
        let hits = (0..<(file.count - needle.count)).filter { file[$0] == needle[0] && Array(file[$0..<($0 + needle.count)]) == needle }
        XCTAssertFalse(hits.isEmpty, "slab record not found in the archive file")
        for at in hits { for k in 0..<16 { file[at + k] ^= 0x5A } }
        try FileIO.writeAtomically(archive, file)
    }

    func testBadMountsAreClearErrors() throws {
        let src = try makeTree()
        let (archive, mnt) = try packAndMount(src)
        // mounting twice on one mountpoint
        var r = try voxfs(["mount", archive, mnt])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("already a mount point"), r.err)
        // unknown options, a missing mountpoint, a foreign archive
        let other = path("other")
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        r = try voxfs(["mount", archive, other, "-o", "bogus=1"])
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.err.contains("unknown mount option 'bogus=1'"), r.err)
        r = try voxfs(["mount", archive, path("missing")])
        XCTAssertTrue(r.err.contains("does not exist"), r.err)
        // a folder with files in it would have them hidden
        try FileIO.writeAtomically(other + "/keep.txt", [1, 2, 3])
        r = try voxfs(["mount", archive, other])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("not empty"), r.err)
        XCTAssertEqual(try FileIO.read(other + "/keep.txt"), [1, 2, 3])
        try FileManager.default.removeItem(atPath: other + "/keep.txt")
        // the archive and the mount point swapped
        r = try voxfs(["mount", mnt, archive])
        XCTAssertTrue(r.err.contains("the archive comes first") || r.err.contains("already a mount point"), r.err)
        try FileIO.writeAtomically(path("junk.voxfs"), [UInt8](repeating: 7, count: 8192))
        r = try voxfs(["mount", path("junk.voxfs"), other])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("not a VoxFS archive"), r.err)
        // read-only commands leave nothing beside what they were given (no LMDB lock file)
        for cmd in [["ls"], ["stats"], ["verify"]] {
            r = try voxfs(cmd + [path("junk.voxfs")])
            XCTAssertTrue(r.err.contains("not a VoxFS archive"), r.err)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("junk.voxfs-lock")))
        // a pack while the archive is mounted is refused (the mount holds the shared lock)
        r = try voxfs(["pack", src, archive])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("in use"), r.err)
        // unmount with a file held open: fusermount3 -u refuses (busy) and the mount keeps
        // working; a lazy unmount detaches it and the daemon exits once the file is closed
        let fd = open(mnt + "/study/misc/crop.raw", O_RDONLY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        r = try run("/bin/fusermount3", ["-u", mnt])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("busy"), r.err)
        var b = [UInt8](repeating: 0, count: 4096)
        XCTAssertEqual(pread(fd, &b, 4096, 1 << 20), 4096)
        XCTAssertEqual(try run("/bin/fusermount3", ["-u", "-z", mnt]).status, 0)
        XCTAssertEqual(pread(fd, &b, 4096, 2 << 20), 4096, "an open file keeps reading after a lazy unmount")
        close(fd)
        mounts.removeAll()
        // the daemon has gone: the archive can be packed into again
        var gone = false
        for _ in 0..<50 where !gone {
            Thread.sleep(forTimeInterval: 0.1)
            let lk = open(archive, O_RDONLY)
            gone = flock(lk, LOCK_EX | LOCK_NB) == 0
            close(lk)
        }
        XCTAssertTrue(gone, "the mount daemon still holds the archive after unmount")
    }

    func testSIGTERMUnmountsCleanly() throws {
        let src = try makeTree()
        let archive = path("a.voxfs")
        XCTAssertEqual(try voxfs(["pack", src, archive, "--preset", "classical", "-q"]).status, 0)
        let mnt = path("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLITests.binary)
        p.arguments = ["mount", "-f", archive, mnt]
        p.standardError = FileHandle.nullDevice
        try p.run()
        mounts.append(mnt)
        var up = false
        for _ in 0..<100 where !up { Thread.sleep(forTimeInterval: 0.05); up = FileManager.default.fileExists(atPath: mnt + "/study/notes ünïcødé.txt") }
        XCTAssertTrue(up)
        XCTAssertEqual(try FileIO.read(mnt + "/study/notes ünïcødé.txt"), Array("real data, see MountTests\n".utf8))
        p.terminate()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: mnt + "/study"), "still mounted after SIGTERM")
        mounts.removeAll()
    }

    /// The mount(8) helper (as `mount -t fuse.voxfs` and fstab run it) and the systemd unit's
    /// own command lines (ExecStartPre, ExecStart, ExecStop with the instance's values).
    func testMountHelperAndSystemdUnitCommands() throws {
        let src = try makeTree()
        let archive = path("a.voxfs")
        XCTAssertEqual(try voxfs(["pack", src, archive, "--preset", "classical", "-q"]).status, 0)
        let root = URL(fileURLWithPath: MountTests.scripts).deletingLastPathComponent().path
        let mnt = path("helper mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        var r = try run(root + "/systemd/mount.fuse.voxfs", [archive, mnt, "-o", "rw,nofail,x-systemd.automount,cache_size=16M,allow_other"], env: ["VOXFS": CLITests.binary])
        XCTAssertEqual(r.status, 0, r.err)
        mounts.append(mnt)
        XCTAssertEqual(try FileIO.read(mnt + "/study/misc/crop.raw"), try FileIO.read(src + "/misc/crop.raw"))
        XCTAssertTrue(try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8).contains("fuse.voxfs"), "subtype voxfs in /proc/mounts")
        XCTAssertEqual(try run("/bin/fusermount3", ["-u", mnt]).status, 0)
        mounts.removeAll()

        // the unit: Environment= defaults, then the Exec lines with them substituted
        let unit = try String(contentsOfFile: root + "/systemd/voxfs@.service", encoding: .utf8)
        func line(_ key: String) -> String? { unit.split(separator: "\n").first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) } }
        let unitMnt = path("unit/study-mnt")
        let vars = ["${ARCHIVE}": archive, "${MOUNTPOINT}": unitMnt, "$OPTIONS": "-o cache_size=8M", "%i": "study", "/usr/local/bin/voxfs": CLITests.binary]
        func expand(_ s: String) -> [String] {
            s.split(separator: " ").flatMap { w -> [String] in
                var t = String(w)
                for (k, v) in vars { t = t.replacingOccurrences(of: k, with: v) }
                return w == "$OPTIONS" ? t.split(separator: " ").map(String.init) : [t]
            }
        }
        XCTAssertEqual(line("Type"), "forking")
        XCTAssertEqual(line("Environment"), "ARCHIVE=/var/lib/voxfs/%i.voxfs MOUNTPOINT=/mnt/voxfs/%i OPTIONS=")
        for key in ["ExecStartPre", "ExecStart"] {
            let argv = expand(try XCTUnwrap(line(key)))
            r = try run(argv[0], Array(argv.dropFirst()))
            XCTAssertEqual(r.status, 0, "\(key): \(argv) \(r.err)")
        }
        mounts.append(unitMnt)
        // Type=forking: ready when ExecStart returns
        XCTAssertEqual(try FileIO.read(unitMnt + "/study/notes ünïcødé.txt"), Array("real data, see MountTests\n".utf8))
        let stop = expand(try XCTUnwrap(line("ExecStop")))
        XCTAssertEqual(try run(stop[0], Array(stop.dropFirst())).status, 0)
        mounts.removeAll()
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertFalse(FileManager.default.fileExists(atPath: unitMnt + "/study"))
    }
}
