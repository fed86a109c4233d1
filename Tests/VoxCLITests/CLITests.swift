import Foundation
import XCTest
import VoxCore
import VoxTestSupport

/// Runs the real `voxfs` binary, as a user would.
final class CLITests: ScratchTestCase {
    static var binary: String {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("voxfs").path
        if FileManager.default.isExecutableFile(atPath: beside) { return beside }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/release/voxfs").path
    }

    @discardableResult
    func voxfs(_ args: [String]) throws -> (status: Int32, out: String, err: String) { try run(CLITests.binary, args) }

    /// A real CT crop written as raw + sidecar.
    func writeCrop() throws -> String {
        let src = try RealData.require("volumes/ct_lung1.raw")
        let all = try FileIO.read(src)
        // 96 x 80 x 10 crop around the mediastinum, slices 20..29
        var out = [UInt8]()
        for z in 20..<30 { for y in 200..<280 { let o = ((z * 512 + y) * 512 + 200) * 2; out += all[o..<(o + 96 * 2)] } }
        let raw = path("crop.raw")
        try FileIO.writeAtomically(raw, out)
        try FileIO.writeAtomically(path("crop.json"), Array("{\"shape\":[96,80,10],\"dtype\":\"int16\",\"source\":\"crop of pyradiomics lung1\"}".utf8))
        return raw
    }

    func testCompressDecompressInfoRoundTrip() throws {
        let raw = try writeCrop()
        var r = try voxfs(["compress", raw, path("c.vxz")])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("bpp"), r.out)
        XCTAssertTrue(r.out.contains("Mvox/s"), r.out)
        r = try voxfs(["decompress", path("c.vxz"), path("back.raw"), "--threads", "1"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try FileIO.read(path("back.raw")), try FileIO.read(raw))
        r = try voxfs(["info", path("c.vxz"), "--slabs"])
        XCTAssertEqual(r.status, 0, r.err)
        for s in ["96x80x10", "int16", "preset:        default", "model:", "slabs:", "bpp", "slab    1"] { XCTAssertTrue(r.out.contains(s), "info lacks \(s):\n\(r.out)") }
        // explicit flags override the sidecar; classical preset
        r = try voxfs(["compress", raw, path("k.vxz"), "--shape", "96x80x10", "--dtype", "int16", "--preset", "classical", "--slab", "3", "-q"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(r.out, "")
        r = try voxfs(["decompress", path("k.vxz"), path("k.raw"), "-q"])
        XCTAssertEqual(try FileIO.read(path("k.raw")), try FileIO.read(raw))
    }

    func testBadInputGivesOneLineErrors() throws {
        let raw = try writeCrop()
        func expectError(_ args: [String], _ fragment: String, file: StaticString = #filePath, line: UInt = #line) throws {
            let r = try voxfs(args)
            XCTAssertNotEqual(r.status, 0, "\(args) should fail", file: file, line: line)
            XCTAssertTrue(r.err.contains(fragment), "\(args): stderr was \(r.err)", file: file, line: line)
            XCTAssertLessThanOrEqual(r.err.split(separator: "\n").count, 2, "one-line error expected: \(r.err)", file: file, line: line)
            XCTAssertFalse(r.err.contains("Fatal error"), file: file, line: line)
        }
        try expectError(["compress", raw, path("x.vxz"), "--shape", "96x80x11"], "needs")
        try expectError(["compress", raw, path("x.vxz"), "--shape", "96x80"], "bad --shape")
        try expectError(["compress", raw, path("x.vxz"), "--dtype", "float32"], "bad --dtype")
        try expectError(["compress", raw, path("x.vxz"), "--preset", "nope"], "unknown preset")
        try expectError(["compress", path("missing.raw"), path("x.vxz"), "--shape", "2x2x2", "--dtype", "uint8"], "no such file")
        try expectError(["decompress", raw, path("y.raw")], "not a VoxFS .vxz stream")
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("y.raw")), "no output on failure")

        XCTAssertEqual(try voxfs(["compress", raw, path("c.vxz"), "-q"]).status, 0)
        let full = try FileIO.read(path("c.vxz"))
        try FileIO.writeAtomically(path("t.vxz"), Array(full.prefix(full.count - 100)))
        try expectError(["decompress", path("t.vxz"), path("t.raw")], "truncated")
        var flipped = full
        flipped[full.count - 50] ^= 0x01
        try FileIO.writeAtomically(path("f.vxz"), flipped)
        try expectError(["decompress", path("f.vxz"), path("f.raw")], "slab")
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("f.raw")))
    }

    func testMissingModelNamesTheHash() throws {
        let raw = try writeCrop()
        // export the default model, code with it as an explicit file; decoding finds the
        // built-in one by hash; a model the binary does not know must be passed with --model
        var r = try voxfs(["model", "export", "--preset", "large", path("large.vxm")])
        XCTAssertEqual(r.status, 0, r.err)
        r = try voxfs(["model", "show", path("large.vxm")])
        XCTAssertTrue(r.out.contains("hidden:        32"), r.out)
        var bytes = try FileIO.read(path("large.vxm"))
        // a different model: flip one weight, then fix the trailing CRC
        bytes[200] ^= 0x01
        let body = Array(bytes.dropLast(4))
        let crc = Checksum.crc32c(body)
        bytes = body + [UInt8(crc & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8((crc >> 16) & 0xFF), UInt8(crc >> 24)]
        try FileIO.writeAtomically(path("other.vxm"), bytes)
        r = try voxfs(["compress", raw, path("m.vxz"), "--preset", "large", "--model", path("other.vxm"), "-q"])
        XCTAssertEqual(r.status, 0, r.err)
        r = try voxfs(["decompress", path("m.vxz"), path("m.raw")])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("not installed"), r.err)
        r = try voxfs(["model", "show", path("other.vxm")])
        let hash = r.out.split(separator: "\n").first!.split(separator: " ").last!
        XCTAssertTrue(try voxfs(["decompress", path("m.vxz"), path("m.raw")]).err.contains(String(hash)))
        r = try voxfs(["decompress", path("m.vxz"), path("m.raw"), "--model", path("other.vxm")])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try FileIO.read(path("m.raw")), try FileIO.read(raw))
    }

    func testAdaptEmbedsTheModel() throws {
        let raw = try writeCrop()
        var r = try voxfs(["compress", raw, path("a.vxz"), "--adapt", "1"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("adapted model"), r.out)
        r = try voxfs(["info", path("a.vxz")])
        XCTAssertTrue(r.out.contains("embedded in the stream"), r.out)
        r = try voxfs(["decompress", path("a.vxz"), path("a.raw")])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try FileIO.read(path("a.raw")), try FileIO.read(raw))
        // small volumes are not adapted by default; classical presets refuse --adapt
        r = try voxfs(["compress", raw, path("b.vxz")])
        XCTAssertFalse(r.out.contains("adapted"), r.out)
        r = try voxfs(["compress", raw, path("c.vxz"), "--preset", "classical", "--adapt", "2"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("LSTM preset"), r.err)
    }

    /// OpenBLAS is loaded only where a model is trained or adapted: with the library missing,
    /// coding without adaptation and decoding work, and adaptation fails with one clear line.
    func testBLASIsLoadedOnlyToTrain() throws {
        let raw = try writeCrop()
        let env = ["VOXFS_BLAS_LIBRARY": path("no-such-dir/libopenblas.so.0")]
        var r = try run(CLITests.binary, ["compress", raw, path("n.vxz"), "--adapt", "0", "-q"], env: env)
        XCTAssertEqual(r.status, 0, r.err)
        r = try run(CLITests.binary, ["decompress", path("n.vxz"), path("n.raw"), "-q"], env: env)
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try FileIO.read(path("n.raw")), try FileIO.read(raw))
        r = try run(CLITests.binary, ["compress", raw, path("m.vxz"), "--adapt", "1", "-q"], env: env)
        XCTAssertEqual(r.status, 1, r.err)
        XCTAssertTrue(r.err.contains("cannot load OpenBLAS"), r.err)
        XCTAssertTrue(r.err.contains("no-such-dir"), r.err)
        XCTAssertEqual(r.err.split(separator: "\n").count, 1, r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("m.vxz")))
        // a pack that would adapt says so before it packs anything; without adaptation it packs
        try FileManager.default.createDirectory(atPath: path("tree"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: raw, toPath: path("tree/crop.raw"))
        try FileManager.default.copyItem(atPath: path("crop.json"), toPath: path("tree/crop.json"))
        r = try run(CLITests.binary, ["pack", path("tree"), path("p.voxfs"), "-q"], env: env)
        XCTAssertEqual(r.status, 1, r.err)
        XCTAssertTrue(r.err.contains("cannot load OpenBLAS") && r.err.contains("--adapt 0"), r.err)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("p.voxfs")))
        r = try run(CLITests.binary, ["pack", "--adapt", "0", path("tree"), path("p.voxfs"), "-q"], env: env)
        XCTAssertEqual(r.status, 0, r.err)
        // and with the library there, adaptation runs
        r = try voxfs(["compress", raw, path("m.vxz"), "--adapt", "1", "-q"])
        XCTAssertEqual(r.status, 0, r.err)
    }

    func testProbeRecognisesFormats() throws {
        let ct = try RealData.require("dicom/pydicom/CT_small.dcm"), jp = try RealData.require("dicom/pydicom/JPEG2000.dcm")
        try FileIO.writeAtomically(path("notes.txt"), Array("hello".utf8))
        let r = try voxfs(["probe", "--verify", ct, jp, path("notes.txt")])
        XCTAssertEqual(r.status, 0, r.err)
        let lines = r.out.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 3)
        XCTAssertTrue(lines[0].contains("dicom volume 128x128x1 int16") && lines[0].contains("rebuilds exactly"), lines[0])
        XCTAssertTrue(lines[1].contains("opaque") && lines[1].contains("1.2.840.10008.1.2.4.91"), lines[1])
        XCTAssertTrue(lines[2].contains("opaque"), lines[2])
    }

    /// Kill `pack` with SIGKILL at several points: what was committed verifies, and a second
    /// pack completes the archive, which then unpacks byte-identically.
    func testPackSurvivesSIGKILL() throws {
        let cache = RealData.cache
        for n in ["signed", "unsigned", "implicit", "gap"] { _ = try RealData.require("series/" + n) }
        let src = path("src")
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        for n in ["signed", "unsigned", "implicit", "gap"] { try FileManager.default.copyItem(atPath: cache + "/series/" + n, toPath: src + "/" + n) }
        for i in 0..<20 { try FileIO.writeAtomically(src + "/note\(i).txt", Array("note \(i)\n".utf8)) }
        let archive = path("k.voxfs")
        var killedWithArchive = 0
        for delay in [0.4, 1.2, 2.4, 4.0] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CLITests.binary)
            p.arguments = ["pack", src, archive, "-q", "--preset", "parallel", "--adapt", "0"]
            p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
            try p.run()
            Thread.sleep(forTimeInterval: delay)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            if FileManager.default.fileExists(atPath: archive) {
                let v = try voxfs(["verify", archive])
                XCTAssertEqual(v.status, 0, "after SIGKILL at \(delay) s: \(v.out) \(v.err)")
                killedWithArchive += 1
            }
        }
        // not vacuous: at least one kill landed after the archive existed (mid-pack)
        XCTAssertGreaterThan(killedWithArchive, 0, "no SIGKILL landed while an archive existed")
        var r = try voxfs(["pack", src, archive, "--preset", "parallel", "--adapt", "0"])
        XCTAssertEqual(r.status, 0, r.err)
        r = try voxfs(["verify", archive])
        XCTAssertEqual(r.status, 0, r.out)
        r = try voxfs(["unpack", archive, path("restored")])
        XCTAssertEqual(r.status, 0, r.err)
        for sub in ["signed", "unsigned", "implicit", "gap"] {
            for n in try FileManager.default.contentsOfDirectory(atPath: src + "/" + sub) {
                XCTAssertEqual(try FileIO.read(path("restored/src/\(sub)/\(n)")), try FileIO.read(src + "/\(sub)/\(n)"), "\(sub)/\(n)")
            }
        }
        for i in 0..<20 { XCTAssertEqual(try FileIO.read(path("restored/src/note\(i).txt")), Array("note \(i)\n".utf8)) }
    }

    /// A second pack on an archive that is being packed is refused with a clear message, and
    /// special files are skipped with a warning.
    /// Rough edges a new user met: each is one clear line, never a Foundation error domain.
    func testMistakesGetClearMessages() throws {
        let src = path("src")
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        try FileIO.writeAtomically(src + "/a.txt", Array("hello".utf8))
        let archive = path("a.voxfs")
        XCTAssertEqual(try voxfs(["pack", "-q", src, archive]).status, 0)
        try FileIO.writeAtomically(path("afile"), [1])
        var r = try voxfs(["unpack", archive, path("afile")])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("exists and is not a folder"), r.err)
        r = try voxfs(["probe", src])
        XCTAssertTrue(r.out.contains("is a folder"), r.out)
        for t in [r.out, r.err] { XCTAssertFalse(t.contains("NSCocoaErrorDomain"), t) }
        r = try voxfs(["pack", "-q", src, "/proc/voxfs-cannot-be-here.voxfs"])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("cannot create the archive"), r.err)
        XCTAssertFalse(r.err.contains("not a VoxFS archive"), r.err)
        // a truncated archive: one line naming what LMDB expects
        let bytes = try FileIO.read(archive)
        try FileIO.writeAtomically(path("cut.voxfs"), Array(bytes.prefix(bytes.count - 4096)))
        r = try voxfs(["verify", path("cut.voxfs")])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("truncated") && r.err.contains("LMDB expects at least"), r.err)
    }

    func testConcurrentPackIsRefusedAndSpecialFilesWarn() throws {
        let src = path("src")
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        _ = try writeCrop()
        try FileManager.default.moveItem(atPath: path("crop.raw"), toPath: src + "/crop.raw")
        try FileManager.default.moveItem(atPath: path("crop.json"), toPath: src + "/crop.json")
        mkfifo(src + "/pipe", 0o644)
        let archive = path("c.voxfs")
        var r = try voxfs(["pack", src, archive, "--preset", "classical"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains("pipe: special file"), r.err)
        XCTAssertTrue(r.out.contains("ratio"), r.out)
        // hold the writer's lock as another pack would
        let fd = open(archive, O_RDONLY)
        XCTAssertEqual(flock(fd, LOCK_EX | LOCK_NB), 0)
        r = try voxfs(["pack", src, archive])
        close(fd)
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.err.contains("in use by another voxfs process"), r.err)
        r = try voxfs(["ls", "-l", archive, "src/crop.raw"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.out.contains("[volume 1]") && r.out.contains("153600"), r.out)
    }

    /// A full disk aborts the transaction with a message that says so; the archive keeps what
    /// was committed before and verifies. Needs root (a small tmpfs).
    func testDiskFullIsAClearErrorAndTheArchiveStaysSound() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to mount a small tmpfs") }
        let cache = RealData.cache
        _ = try RealData.require("series/signed")
        let mnt = path("small")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let m = Process()
        m.executableURL = URL(fileURLWithPath: "/bin/mount")
        m.arguments = ["-t", "tmpfs", "-o", "size=1200k", "tmpfs", mnt]
        try m.run(); m.waitUntilExit()
        XCTAssertEqual(m.terminationStatus, 0, "mount tmpfs")
        defer { let u = Process(); u.executableURL = URL(fileURLWithPath: "/bin/umount"); u.arguments = [mnt]; try? u.run(); u.waitUntilExit() }
        let src = path("src")
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        for i in 0..<12 { try FileIO.writeAtomically(src + "/note\(i).txt", Array("note \(i)\n".utf8)) }
        // a real DICOM slice (a volume; its folder is packed first) is in before the disk fills
        try FileManager.default.createDirectory(atPath: src + "/a", withIntermediateDirectories: true)
        let slice = try FileManager.default.contentsOfDirectory(atPath: cache + "/series/signed").filter { $0.hasSuffix(".dcm") }.sorted()[0]
        try FileManager.default.copyItem(atPath: cache + "/series/signed/" + slice, toPath: src + "/a/slice.dcm")
        // incompressible opaque files fill the disk after the notes and the slice are in
        var g: UInt64 = 7
        for i in 0..<4 { try FileIO.writeAtomically(src + "/zz-r\(i).bin", (0..<400_000).map { _ in g = g &* 6364136223846793005 &+ 1442695040888963407; return UInt8(truncatingIfNeeded: g >> 33) }) }
        let archive = mnt + "/d.voxfs"
        var r = try voxfs(["pack", src, archive, "--preset", "classical", "-q"])
        XCTAssertEqual(r.status, 1, r.out + r.err)
        XCTAssertTrue(r.err.contains("disk full"), r.err)
        r = try voxfs(["verify", archive])
        XCTAssertEqual(r.status, 0, r.out + r.err)
        r = try voxfs(["ls", "-l", archive])
        XCTAssertTrue(r.out.contains("src/note11.txt") && r.out.contains("src/a/slice.dcm"), r.out)
        r = try voxfs(["unpack", archive, path("back"), "src/a/slice.dcm", "src/note3.txt"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(try FileIO.read(path("back/src/a/slice.dcm")), try FileIO.read(src + "/a/slice.dcm"))
        XCTAssertEqual(try FileIO.read(path("back/src/note3.txt")), Array("note 3\n".utf8))
    }

    /// A command line the parser rejects reads like every other failure: one "voxfs:" line with
    /// the usage in it, status 2 (as an invalid value found later is).
    func testUsageErrorsShareTheOneErrorFormat() throws {
        for (args, fragment) in [(["compress"], "Missing expected argument '<input>'"), (["frob"], "Unexpected argument 'frob'"),
                                 (["decompress", "a", "b", "--threads", "abc"], "'abc' is invalid for '--threads")] {
            let r = try voxfs(args)
            XCTAssertEqual(r.status, 2, "\(args): \(r.err)")
            XCTAssertTrue(r.err.hasPrefix("voxfs: ") && r.err.contains(fragment), "\(args): \(r.err)")
            XCTAssertTrue(r.err.contains("usage: voxfs"), "\(args): \(r.err)")
            XCTAssertEqual(r.err.split(separator: "\n").count, 1, "\(args): \(r.err)")
            XCTAssertEqual(r.out, "")
        }
        // a command that reports its own failures ends with status 1 and adds no line of its own
        let p = try voxfs(["probe", path("no-such-file.dcm")])
        XCTAssertEqual(p.status, 1, p.err)
        XCTAssertTrue(p.out.contains("no-such-file.dcm: unreadable"), p.out)
        XCTAssertEqual(p.err, "", "nothing after the command's own report")
        // help still goes to stdout with status 0
        let h = try voxfs(["compress", "--help"])
        XCTAssertEqual(h.status, 0)
        XCTAssertTrue(h.out.contains("USAGE: voxfs compress"), h.out)
    }

    func testHelpListsSubcommands() throws {
        let r = try voxfs(["--help"])
        XCTAssertEqual(r.status, 0)
        for s in ["compress", "decompress", "info", "presets"] { XCTAssertTrue(r.out.contains(s), r.out) }
    }
}
