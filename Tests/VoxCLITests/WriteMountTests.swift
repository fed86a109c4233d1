import Foundation
import XCTest
import VoxArchive
import VoxCore
import VoxTestSupport

/// `voxfs mount -o rw` through the kernel, written by tools no one here wrote (cp -a, rsync -a,
/// tar x, dcmtk's storescu to storescp, dcm2niix, pydicom, nibabel), on MountTests' real tree.
extension MountTests {

    func mountRW(_ archive: String, _ mnt: String) throws {
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let r = try voxfs(["mount", archive, mnt, "-o", "rw", "--log", path("mount-rw.log")])
        XCTAssertEqual(r.status, 0, r.err)
        if !mounts.contains(mnt) { mounts.append(mnt) }
    }

    func unmount(_ mnt: String) throws {
        var r = try run("/bin/fusermount3", ["-u", mnt])
        for _ in 0..<50 where r.status != 0 { Thread.sleep(forTimeInterval: 0.1); r = try run("/bin/fusermount3", ["-u", mnt]) }
        XCTAssertEqual(r.status, 0, r.err)
        // the daemon lets go of the archive's lock once it has stored everything
        for _ in 0..<100 {
            if try run("/usr/bin/pgrep", ["-f", "voxfs mount .*" + mnt]).status != 0 { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// Every file under `a` has the same bytes, mode and (with `times`) mtime under `b`, and
    /// every symlink the same target; `b` has nothing more.
    func assertSameTree(_ a: String, _ b: String, times: Bool = true, _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let fm = FileManager.default
        let left = try fm.subpathsOfDirectory(atPath: a).sorted(), right = try fm.subpathsOfDirectory(atPath: b).sorted()
        XCTAssertEqual(left, right, "\(what): the trees list differently", file: file, line: line)
        for rel in left where right.contains(rel) {
            var s = stat(), t = stat()
            lstat(a + "/" + rel, &s); lstat(b + "/" + rel, &t)
            XCTAssertEqual(s.st_mode, t.st_mode, "\(what): mode of \(rel)", file: file, line: line)
            switch s.st_mode & S_IFMT {
            case S_IFREG:
                XCTAssertEqual(s.st_size, t.st_size, "\(what): size of \(rel)", file: file, line: line)
                if times { XCTAssertEqual([s.st_mtim.tv_sec, s.st_mtim.tv_nsec], [t.st_mtim.tv_sec, t.st_mtim.tv_nsec], "\(what): mtime of \(rel)", file: file, line: line) }
                XCTAssertTrue(try FileIO.read(a + "/" + rel) == FileIO.read(b + "/" + rel), "\(what): bytes of \(rel)", file: file, line: line)
            case S_IFLNK:
                XCTAssertEqual(try fm.destinationOfSymbolicLink(atPath: a + "/" + rel), try fm.destinationOfSymbolicLink(atPath: b + "/" + rel), "\(what): \(rel)", file: file, line: line)
            default: break
            }
        }
    }

    func testToolsWriteRealTreesIntoAReadWriteMountAndEveryByteSurvivesRemountAndUnpack() throws {
        let src = try makeTree()
        for t in ["/usr/bin/rsync", "/usr/bin/storescp", "/usr/bin/storescu", "/usr/bin/dcm2niix"] {
            guard FileManager.default.fileExists(atPath: t) else { XCTFail("\(t) is missing: make deps installs it"); return }
        }
        let archive = path("rw.voxfs"), mnt = path("mnt")
        XCTAssertFalse(FileManager.default.fileExists(atPath: archive))
        try mountRW(archive, mnt)
        XCTAssertTrue(FileManager.default.fileExists(atPath: archive), "a path that does not exist becomes a new archive")
        // cp -a, rsync -a, tar x
        var r = try run("/bin/cp", ["-a", src, mnt + "/cp"])
        XCTAssertEqual(r.status, 0, r.err)
        r = try run("/usr/bin/rsync", ["-a", src + "/", mnt + "/rsync/"])
        XCTAssertEqual(r.status, 0, r.err)
        let tarball = path("study.tar")
        XCTAssertEqual(try run("/bin/tar", ["--format=posix", "-C", src, "-cf", tarball, "."]).status, 0)
        try FileManager.default.createDirectory(atPath: mnt + "/tar", withIntermediateDirectories: true)
        r = try run("/bin/tar", ["-C", mnt + "/tar", "-xpf", tarball])
        XCTAssertEqual(r.status, 0, r.err)
        // a PACS sending a study: storescu to storescp, which writes each instance into the mount
        try FileManager.default.createDirectory(atPath: mnt + "/pacs", withIntermediateDirectories: true)
        let port = String(20000 + Int(getpid() % 20000))
        let scp = Process()
        scp.executableURL = URL(fileURLWithPath: "/usr/bin/storescp")
        scp.arguments = ["--output-directory", mnt + "/pacs", "--accept-all", port]
        scp.standardOutput = FileHandle.nullDevice; scp.standardError = FileHandle.nullDevice
        try scp.run()
        defer { if scp.isRunning { scp.terminate(); scp.waitUntilExit() } }
        let slices = try FileManager.default.contentsOfDirectory(atPath: src + "/ct").sorted().map { src + "/ct/" + $0 }
        var sent = false
        for _ in 0..<50 where !sent {
            Thread.sleep(forTimeInterval: 0.1)
            sent = try run("/usr/bin/storescu", ["-R", "localhost", port] + slices).status == 0
        }
        XCTAssertTrue(sent, "storescu could not send the series")
        scp.terminate(); scp.waitUntilExit()
        let received = try FileManager.default.contentsOfDirectory(atPath: mnt + "/pacs")
        XCTAssertEqual(received.count, slices.count, "one file per instance: \(received)")
        // dcm2niix writing its NIfTI into the mount; pydicom save_as and nibabel save
        r = try run("/usr/bin/dcm2niix", ["-z", "n", "-f", "ct", "-o", mnt + "/pacs", src + "/ct"])
        XCTAssertEqual(r.status, 0, r.out + r.err)
        let nii = path("dcm2niix-local")
        try FileManager.default.createDirectory(atPath: nii, withIntermediateDirectories: true)
        XCTAssertEqual(try run("/usr/bin/dcm2niix", ["-z", "n", "-f", "ct", "-o", nii, src + "/ct"]).status, 0)
        r = try run(python, ["-c", """
            import pydicom, nibabel, sys
            src, mnt = sys.argv[1], sys.argv[2]
            ds = pydicom.dcmread(src + '/misc/CT_small.dcm')
            ds.PatientName = 'Written^Through^Mount'
            ds.save_as(mnt + '/saved.dcm')
            ds.save_as(sys.argv[3] + '/saved.dcm')
            img = nibabel.load(src + '/misc/crop.nii')
            nibabel.save(img, mnt + '/saved.nii.gz')
            back = nibabel.load(mnt + '/saved.nii.gz')
            assert (back.get_fdata() == img.get_fdata()).all()
            assert pydicom.dcmread(mnt + '/saved.dcm').PatientName == 'Written^Through^Mount'
            """, src, mnt, nii])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try FileIO.read(mnt + "/saved.dcm"), try FileIO.read(nii + "/saved.dcm"))
        let storage = try run("/usr/bin/getfattr", ["-n", "user.voxfs.storage", "--only-values", mnt + "/saved.dcm"])
        XCTAssertTrue(storage.out.hasPrefix("stored as is"), storage.out + storage.err)
        // a pack, unpack or verify while it is mounted read-write is refused clearly
        r = try voxfs(["verify", archive])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("read-write") || r.err.contains("in use") || r.err.contains("lock"), r.err)

        func check(_ root: String, _ what: String) throws {
            try assertSameTree(src, root + "/cp", what + " cp -a")
            try assertSameTree(src, root + "/rsync", what + " rsync -a")
            try assertSameTree(src, root + "/tar", what + " tar x")
            for s in slices {
                let sop = try run(python, ["-c", "import pydicom,sys; print(pydicom.dcmread(sys.argv[1]).SOPInstanceUID)", s]).out.trimmingCharacters(in: .whitespacesAndNewlines)
                let got = received.first { $0.hasSuffix(sop) }
                XCTAssertNotNil(got, "\(what): instance \(sop) not received")
                if let got {
                    // storescp writes the dataset it received (its own meta header): the pixels are the sender's
                    let same = try run(python, ["-c", "import pydicom,sys; a,b=(pydicom.dcmread(p) for p in sys.argv[1:]); assert a.PixelData==b.PixelData and a.SOPInstanceUID==b.SOPInstanceUID", s, root + "/pacs/" + got])
                    XCTAssertEqual(same.status, 0, "\(what): \(got): \(same.err)")
                }
            }
            for n in try FileManager.default.contentsOfDirectory(atPath: nii) where n.hasPrefix("ct") {
                XCTAssertTrue(try FileIO.read(root + "/pacs/" + n) == FileIO.read(nii + "/" + n), "\(what): dcm2niix's \(n)")
            }
            XCTAssertEqual(try FileIO.read(root + "/saved.dcm"), try FileIO.read(nii + "/saved.dcm"), what)
        }
        try check(mnt, "through the mount")
        let pacs = try received.map { try FileIO.read(mnt + "/pacs/" + $0) }
        try unmount(mnt)
        let v = try voxfs(["verify", archive])
        XCTAssertEqual(v.status, 0, v.out + v.err)
        // read-only remount, then unpack
        r = try voxfs(["mount", archive, mnt, "--log", path("mount-ro.log")])
        XCTAssertEqual(r.status, 0, r.err)
        try check(mnt, "after remount")
        XCTAssertEqual(try received.map { try FileIO.read(mnt + "/pacs/" + $0) }, pacs)
        XCTAssertNotEqual(try run("/bin/touch", [mnt + "/x"]).status, 0, "read-only stays the default")
        try unmount(mnt)
        let out = path("unpacked")
        r = try voxfs(["unpack", archive, out])
        XCTAssertEqual(r.status, 0, r.err)
        try check(out, "after unpack")
    }

    /// Writes `src`'s bytes to `dst` in 256 KiB writes, then closes it; false when a call fails.
    func copyInPieces(_ src: String, _ dst: String) throws -> Bool {
        let b = try FileIO.read(src)
        let fd = Glibc.open(dst, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
        guard fd >= 0 else { return false }
        var off = 0, ok = true
        while off < b.count && ok {
            let n = b[off..<min(b.count, off + (256 << 10))].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { ok = false } else { off += n }
        }
        return Glibc.close(fd) == 0 && ok
    }

    /// SIGKILL of the daemon at several points of a copy: after each, the archive verifies,
    /// every file whose close returned reads back intact, and the one being copied is absent
    /// or an exact prefix.
    func testSIGKILLDuringACopyLosesNoClosedFile() throws {
        let src = try makeTree()
        var files: [String] = []
        for rel in try FileManager.default.subpathsOfDirectory(atPath: src).sorted() {
            var st = stat()
            lstat(src + "/" + rel, &st)
            if st.st_mode & S_IFMT == S_IFREG { files.append(rel) }
        }
        let archive = path("kill.voxfs"), mnt = path("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        var closed: [(String, String)] = []   // (path in the mount, source)
        for round in 0..<5 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CLITests.binary)
            p.arguments = ["mount", "-f", archive, mnt, "-o", "rw"]
            p.standardError = FileHandle.nullDevice
            try p.run()
            mounts.append(mnt)
            var up = false
            for _ in 0..<100 where !up { Thread.sleep(forTimeInterval: 0.05); up = try run("/bin/mountpoint", ["-q", mnt]).status == 0 }
            XCTAssertTrue(up)
            // everything closed in earlier rounds is there, byte for byte
            for (m, s) in closed { XCTAssertTrue(try FileIO.read(mnt + "/" + m) == FileIO.read(src + "/" + s), "round \(round): \(m)") }
            let delay = [0.05, 0.3, 0.15, 0.6, 0.45][round]
            let killer = Thread { Thread.sleep(forTimeInterval: delay); kill(p.processIdentifier, SIGKILL) }
            killer.start()
            var inFlight: (String, String)?
            copy: for pass in 0..<100 {
                for rel in files {
                    let dst = "r\(round)/\(pass)/" + rel
                    inFlight = (dst, rel)
                    do {
                        try FileManager.default.createDirectory(atPath: mnt + "/" + (dst as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                        guard try copyInPieces(src + "/" + rel, mnt + "/" + dst) else { break copy }
                    } catch { break copy }
                    closed.append((dst, rel))
                    inFlight = nil
                }
            }
            p.waitUntilExit()
            XCTAssertEqual(p.terminationReason, .uncaughtSignal)
            _ = try run("/bin/fusermount3", ["-u", "-z", mnt])
            mounts.removeAll()
            let v = try voxfs(["verify", archive])
            XCTAssertEqual(v.status, 0, "round \(round) (killed after \(delay) s): \(v.out) \(v.err)")
            let a = try Archive(path: archive, create: false)
            for (m, s) in closed.suffix(3) { XCTAssertEqual(try a.entry(m)?.size, UInt64(try FileIO.read(src + "/" + s).count), "round \(round): \(m)") }
            if let (m, s) = inFlight, let e = try a.entry(m) {
                var cache: [UInt64: Archive.DecodedVolume] = [:]
                let got = try a.contents(e, decoded: &cache), want = try FileIO.read(src + "/" + s)
                XCTAssertTrue(got.count <= want.count && Array(want.prefix(got.count)) == got, "round \(round): the file being copied is a prefix")
            }
        }
        XCTAssertGreaterThan(closed.count, 0)
    }
}
