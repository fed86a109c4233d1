import Foundation
import XCTest
import VoxArchive
import VoxIngest
import VoxCodec
import VoxCore
import VoxFS
import VoxTestSupport

/// The read-write filesystem core (`voxfs mount -o rw` without FUSE), in-process on an LMDB
/// archive: every change is checked against a plain in-memory model of the tree, and again
/// after the archive is closed and opened by a fresh filesystem (what a remount sees).
final class WritableTests: ScratchTestCase {

    func options(writable: Bool = true) -> VoxFileSystem.Options {
        var o = VoxFileSystem.Options(cacheBytes: 64 << 20, workers: 1)
        o.writable = writable
        return o
    }

    /// A fresh filesystem on the archive at `path` (the previous one must be gone: LMDB opens
    /// an environment once per process).
    func open(_ path: String, writable: Bool = true) throws -> VoxFileSystem {
        try VoxFileSystem(archive: try Archive(path: path, create: writable), options: options(writable: writable))
    }

    func readAll(_ fs: VoxFileSystem, _ path: String) throws -> [UInt8] {
        try FileSystemTests.readAll(fs, try fs.resolve(path), chunk: 100_000)
    }

    func write(_ fs: VoxFileSystem, _ fh: UInt64, at off: UInt64, _ b: [UInt8]) throws {
        let n = try b.withUnsafeBytes { try fs.write(fh, offset: off, $0) }
        XCTAssertEqual(n, b.count)
    }

    func create(_ fs: VoxFileSystem, _ dir: String, _ name: String, kind: VoxFileSystem.FileKind = .file, mode: UInt32 = 0o644) throws -> UInt64 {
        try fs.create(parent: try fs.resolve(dir), name: name, kind: kind, mode: mode, uid: 1000, gid: 1000).ino
    }

    func blobCount(_ path: String) throws -> Int {
        let a = try Archive(path: path, create: false)
        return try a.rawRecords(.blobs).records.count
    }

    func testWritesAtAnyOffsetAppendsAndTruncatesReadBackExactlyAndAfterReopen() throws {
        let path = dir.appendingPathComponent("w.voxfs").path
        var model: [UInt8] = []
        var g = SplitMix64(seed: 7)
        func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: g.next()) } }
        do {
            let fs = try open(path)
            let d = try fs.create(parent: 1, name: "scans", kind: .directory, mode: 0o755, uid: 1000, gid: 1000)
            XCTAssertEqual(d.kind, .directory)
            let ino = try create(fs, "scans", "a.bin")
            let fh = try fs.open(ino, write: true)
            // appends, each read back while the file is still open and dirty
            for n in [1, 4095, 1 << 20, 3 << 19, 17] {
                let b = bytes(n)
                try write(fs, fh, at: UInt64(model.count), b)
                model += b
                XCTAssertEqual(try fs.attributes(ino).size, UInt64(model.count))
                XCTAssertEqual(try fs.read(fh, offset: 0, length: model.count + 10), model)
            }
            // overwrites at offsets across chunk boundaries, and past the end (a hole reads as zeros)
            for (off, n) in [(10, 100), ((1 << 20) - 5, 10), (3_000_000, 200_000), (model.count + 70_000, 33)] {
                let b = bytes(n)
                if off + n > model.count { model += [UInt8](repeating: 0, count: off + n - model.count) }
                model.replaceSubrange(off..<(off + n), with: b)
                try write(fs, fh, at: UInt64(off), b)
                let probe = max(0, off - 1000)
                XCTAssertEqual(try fs.read(fh, offset: UInt64(probe), length: 300_000), Array(model[probe..<min(model.count, probe + 300_000)]))
            }
            try fs.flush(fh)
            // truncate down into a chunk, then up: the cut bytes do not come back
            _ = try fs.setAttributes(ino, .init(size: 1_500_000))
            model.removeSubrange(1_500_000...)
            _ = try fs.setAttributes(ino, .init(size: 2_600_000))
            model += [UInt8](repeating: 0, count: 1_100_000)
            XCTAssertEqual(try fs.read(fh, offset: 0, length: 4 << 20), model)
            fs.release(fh)
            XCTAssertEqual(try readAll(fs, "scans/a.bin"), model)
            // an empty file and a file written in many small pieces (more than the dirty limit of chunks)
            _ = try create(fs, "scans", "empty")
            let big = try create(fs, "", "big.raw", mode: 0o600)
            let bh = try fs.open(big, write: true)
            var bigModel: [UInt8] = []
            for _ in 0..<40 { let b = bytes(600_000); try write(fs, bh, at: UInt64(bigModel.count), b); bigModel += b }
            fs.release(bh)
            let s = try fs.xattr(big, "user.voxfs.storage")
            XCTAssertTrue(String(decoding: s, as: UTF8.self).hasPrefix("stored as is"), String(decoding: s, as: UTF8.self))
        }
        let fs = try open(path, writable: false)
        XCTAssertEqual(try readAll(fs, "scans/a.bin"), model)
        XCTAssertEqual(try fs.attributes(try fs.resolve("scans/empty")).size, 0)
        let a = try fs.attributes(try fs.resolve("big.raw"))
        XCTAssertEqual(a.size, 24_000_000)
        XCTAssertEqual(a.mode & 0o7777, 0o600)
        XCTAssertEqual(a.uid, 1000)
        XCTAssertEqual(try FileSystemTests.readAll(fs, a.ino, chunk: 1 << 20).count, 24_000_000)
        let v = try Archive(path: path, create: false).verify(quick: false)
        XCTAssertEqual(v.problems.count, 0, "\(v.problems)")
        XCTAssertEqual(v.files, 3)
    }

    func testRenamesUnlinksAndOverwritesReclaimWhatNothingRefersTo() throws {
        let path = dir.appendingPathComponent("r.voxfs").path
        let one = [UInt8](repeating: 1, count: 3 << 20), two = [UInt8](repeating: 2, count: 5000)
        var fs: VoxFileSystem? = try open(path)
        func put(_ dir: String, _ name: String, _ b: [UInt8]) throws {
            let fh = try fs!.open(try create(fs!, dir, name), write: true)
            try write(fs!, fh, at: 0, b)
            fs!.release(fh)
        }
        _ = try fs!.create(parent: 1, name: "in", kind: .directory, mode: 0o755, uid: 0, gid: 0)
        _ = try fs!.create(parent: 1, name: "out", kind: .directory, mode: 0o755, uid: 0, gid: 0)
        try put("in", "one", one)
        try put("in", "two", two)
        try put("", "other", two)       // the same bytes: the chunk is shared
        let shared = try blobCount(path)
        XCTAssertEqual(shared, 2, "3 MiB of ones is one chunk stored once (3 references), 5000 twos another")
        // rename over an existing file: the replaced file's bytes stay while another file shares them
        try fs!.rename(parent: try fs!.resolve("in"), name: "one", newParent: 1, newName: "other")
        XCTAssertEqual(try readAll(fs!, "other"), one)
        XCTAssertThrowsError(try fs!.resolve("in/one"))
        XCTAssertEqual(try blobCount(path), 2)
        // a folder into its own subtree is EINVAL; over a non-empty folder ENOTEMPTY; over an empty one fine
        XCTAssertThrowsError(try fs!.rename(parent: 1, name: "in", newParent: try fs!.resolve("in"), newName: "x")) { XCTAssertEqual($0 as? FSError, .invalid) }
        try put("out", "keep", two)
        XCTAssertThrowsError(try fs!.rename(parent: 1, name: "in", newParent: 1, newName: "out")) { XCTAssertEqual($0 as? FSError, .notEmpty) }
        XCTAssertThrowsError(try fs!.rename(parent: 1, name: "in", newParent: 1, newName: "other")) { XCTAssertEqual($0 as? FSError, .notDirectory) }
        XCTAssertThrowsError(try fs!.rename(parent: 1, name: "other", newParent: 1, newName: "out", noReplace: true)) { XCTAssertEqual($0 as? FSError, .exists) }
        try fs!.remove(parent: try fs!.resolve("out"), name: "keep", directory: false)
        XCTAssertThrowsError(try fs!.remove(parent: 1, name: "in", directory: false)) { XCTAssertEqual($0 as? FSError, .isDirectory) }
        try fs!.rename(parent: 1, name: "in", newParent: 1, newName: "out")
        XCTAssertEqual(try readAll(fs!, "out/two"), two)
        // a file unlinked while open reads on through its handle; its bytes go with the last close
        let fh = try fs!.open(try fs!.resolve("other"))
        try fs!.remove(parent: 1, name: "other", directory: false)
        XCTAssertThrowsError(try fs!.resolve("other"))
        XCTAssertEqual(try fs!.read(fh, offset: 0, length: 10), [1, 1, 1, 1, 1, 1, 1, 1, 1, 1])
        XCTAssertEqual(try blobCount(path), 2)
        fs!.release(fh)
        XCTAssertEqual(try blobCount(path), 1, "the ones had no reference left")
        XCTAssertThrowsError(try fs!.remove(parent: 1, name: "out", directory: true)) { XCTAssertEqual($0 as? FSError, .notEmpty) }
        try fs!.remove(parent: try fs!.resolve("out"), name: "two", directory: false)
        try fs!.remove(parent: 1, name: "out", directory: true)
        XCTAssertEqual(try blobCount(path), 0)
        XCTAssertEqual(try fs!.list(1).map(\.name), [".", ".."])
        fs = nil
        fs = try open(path, writable: false)
        XCTAssertEqual(try fs!.list(1).map(\.name), [".", ".."])
    }

    /// Packed (coded) files are changed like any other: the file gets its new bytes, the other
    /// files of its volume keep theirs, and the volume's records go once no file refers to them.
    func testOverwritingAndDeletingFilesOfACodedVolume() throws {
        _ = try RealData.require("series/signed")
        let src = dir.appendingPathComponent("study").path
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: RealData.cache + "/series/signed", toPath: src + "/ct")
        let path = dir.appendingPathComponent("p.voxfs").path
        do {
            let a = try Archive(path: path, create: true)
            _ = try Packer(preset: try Preset.named("classical-par")).pack([src], into: a, archivePath: path)
        }
        let names = try FileManager.default.contentsOfDirectory(atPath: src + "/ct").sorted()
        XCTAssertGreaterThan(names.count, 3)
        var fs: VoxFileSystem? = try open(path)
        let first = "study/ct/" + names[0], second = "study/ct/" + names[1]
        XCTAssertTrue(String(decoding: try fs!.xattr(try fs!.resolve(first), "user.voxfs.storage"), as: UTF8.self).contains("volume"))
        // patch 16 bytes in the middle of the pixel data of one slice
        var patched = try FileIO.read(src + "/ct/" + names[0])
        let fh = try fs!.open(try fs!.resolve(first), write: true)
        let at = patched.count - 1000
        try write(fs!, fh, at: UInt64(at), [UInt8](repeating: 0xAB, count: 16))
        patched.replaceSubrange(at..<(at + 16), with: [UInt8](repeating: 0xAB, count: 16))
        XCTAssertEqual(try fs!.read(fh, offset: 0, length: patched.count + 1), patched)
        fs!.release(fh)
        XCTAssertEqual(try readAll(fs!, first), patched)
        XCTAssertEqual(try readAll(fs!, second), try FileIO.read(src + "/ct/" + names[1]))
        // truncate the second slice to its header's first 100 bytes
        _ = try fs!.setAttributes(try fs!.resolve(second), .init(size: 100))
        XCTAssertEqual(try readAll(fs!, second), Array(try FileIO.read(src + "/ct/" + names[1]).prefix(100)))
        let volumesBefore = try Archive(path: path, create: false).rawRecords(.volumes).records.count
        XCTAssertGreaterThan(volumesBefore, 0)
        // delete every other slice: the volume's records go with the last one
        let ct = try fs!.resolve("study/ct")
        for n in names.dropFirst(2) {
            XCTAssertEqual(try readAll(fs!, "study/ct/" + n), try FileIO.read(src + "/ct/" + n))
            try fs!.remove(parent: ct, name: n, directory: false)
        }
        let after = try Archive(path: path, create: false)
        XCTAssertEqual(try after.rawRecords(.volumes).records.count, 0, "no file refers to the volume any more")
        XCTAssertEqual(try after.rawRecords(.slabs).records.count, 0)
        fs = nil
        fs = try open(path, writable: false)
        XCTAssertEqual(try readAll(fs!, first), patched)
        XCTAssertEqual(try readAll(fs!, second).count, 100)
        XCTAssertEqual(try fs!.list(ct).map(\.name).sorted(), [".", ".."] + names.prefix(2))
        let v = try Archive(path: path, create: false).verify(quick: false)
        XCTAssertEqual(v.problems.count, 0, "\(v.problems)")
    }

    func testSymlinksSpecialFilesAttributesLongPathsAndShortNamesSurviveReopen() throws {
        let path = dir.appendingPathComponent("m.voxfs").path
        var long = ""
        do {
            let fs = try open(path)
            // one-character names at the top (NSString.deletingLastPathComponent traps on them)
            _ = try fs.create(parent: 1, name: "d", kind: .directory, mode: 0o2775, uid: 5, gid: 77)
            _ = try create(fs, "d", "f")
            XCTAssertEqual(try fs.attributes(try fs.resolve("d/f")).gid, 77, "a set-group-ID folder hands down its group")
            _ = try fs.create(parent: 1, name: "l", kind: .symlink, mode: 0, uid: 0, gid: 0, target: "d/f")
            XCTAssertEqual(try fs.readlink(try fs.resolve("l")), "d/f")
            _ = try fs.create(parent: 1, name: "fifo", kind: .special, mode: 0o600, uid: 0, gid: 0, special: (UInt32(S_IFIFO), 0))
            _ = try fs.create(parent: 1, name: "tty", kind: .special, mode: 0o620, uid: 0, gid: 5, special: (UInt32(S_IFCHR), 0x0401))
            XCTAssertThrowsError(try fs.create(parent: 1, name: "d", kind: .file, mode: 0o644, uid: 0, gid: 0)) { XCTAssertEqual($0 as? FSError, .exists) }
            XCTAssertThrowsError(try fs.create(parent: 1, name: String(repeating: "n", count: 256), kind: .file, mode: 0o644, uid: 0, gid: 0)) { XCTAssertEqual($0 as? FSError, .nameTooLong) }
            // a path past LMDB's 511-byte key limit
            var parent: UInt64 = 1
            for k in 0..<4 {
                let name = String(repeating: Character(String(k)), count: 200)
                parent = try fs.create(parent: parent, name: name, kind: .directory, mode: 0o755, uid: 0, gid: 0).ino
                long += (long.isEmpty ? "" : "/") + name
            }
            let deep = try fs.create(parent: parent, name: "deep.txt", kind: .file, mode: 0o644, uid: 0, gid: 0).ino
            long += "/deep.txt"
            let fh = try fs.open(deep, write: true)
            try write(fs, fh, at: 0, Array("deep\n".utf8))
            fs.release(fh)
            // chmod, chown, utimens
            let f = try fs.resolve("d/f")
            _ = try fs.setAttributes(f, .init(mode: 0o4711, uid: 42, gid: 43, atime: .at(1_000_000_000, 5), mtime: .at(1_234_567_890, 123_456_789)))
            let a = try fs.attributes(f)
            XCTAssertEqual(a.mode, UInt32(S_IFREG) | 0o4711)
            XCTAssertEqual([a.uid, a.gid], [42, 43])
            XCTAssertEqual(a.mtimeSec, 1_234_567_890); XCTAssertEqual(a.mtimeNsec, 123_456_789)
            XCTAssertEqual(a.atimeSec, 1_000_000_000); XCTAssertEqual(a.atimeNsec, 5)
            XCTAssertGreaterThan(a.ctimeSec, 1_600_000_000, "a change sets the change time to now")
        }
        let fs = try open(path, writable: false)
        let a = try fs.attributes(try fs.resolve("d/f"))
        XCTAssertEqual(a.mode, UInt32(S_IFREG) | 0o4711)
        XCTAssertEqual([a.uid, a.gid], [42, 43])
        XCTAssertEqual([a.mtimeSec, a.atimeSec], [1_234_567_890, 1_000_000_000])
        XCTAssertEqual(try fs.attributes(try fs.resolve("d")).mode, UInt32(S_IFDIR) | 0o2775)
        XCTAssertEqual(try fs.readlink(try fs.resolve("l")), "d/f")
        let fifo = try fs.attributes(try fs.resolve("fifo"))
        XCTAssertEqual(fifo.mode, UInt32(S_IFIFO) | 0o600)
        let tty = try fs.attributes(try fs.resolve("tty"))
        XCTAssertEqual(tty.mode, UInt32(S_IFCHR) | 0o620)
        XCTAssertEqual(tty.rdev, 0x0401)
        XCTAssertEqual(try readAll(fs, long), Array("deep\n".utf8))
        XCTAssertEqual(try Archive(path: path, create: false).entry(long)?.size, 5)
        let v = try Archive(path: path, create: false).verify(quick: false)
        XCTAssertEqual(v.problems.count, 0, "\(v.problems)")
    }

    /// `voxfs compact` drops stored data no entry refers to (here a chunk committed without its
    /// entry, as an older writer could leave), and nothing that is referred to.
    func testCompactDropsOnlyUnreferencedData() throws {
        let path = dir.appendingPathComponent("c.voxfs").path
        do {
            let fs = try open(path)
            let fh = try fs.open(try create(fs, "", "kept"), write: true)
            try write(fs, fh, at: 0, Array("kept bytes".utf8))
            fs.release(fh)
        }
        let a = try Archive(path: path, create: true)
        var c = Archive.Change()
        c.blobs = [Archive.chunkRecord(Array("orphan".utf8))]
        try a.apply(c)
        XCTAssertEqual(try a.rawRecords(.blobs).records.count, 2)
        let r = try a.compact()
        XCTAssertEqual(r.blobs, 1); XCTAssertEqual(r.volumes, 0)
        XCTAssertEqual(try a.rawRecords(.blobs).records.count, 1)
        XCTAssertEqual(try a.compact().blobs, 0)
        var cache: [UInt64: Archive.DecodedVolume] = [:]
        XCTAssertEqual(try a.contents(try XCTUnwrap(a.entry("kept")), decoded: &cache), Array("kept bytes".utf8))
        XCTAssertEqual(try a.verify(quick: false).problems.count, 0)
    }

    /// A pack of a compressed volume (a schema 3 feature) into an archive a read-write mount
    /// changed keeps it schema 4: its chunked files stay readable.
    func testPackingAWrappedVolumeIntoASchema4ArchiveKeepsIt4() throws {
        let path = dir.appendingPathComponent("v4.voxfs").path
        do {
            let fs = try open(path)
            let fh = try fs.open(try create(fs, "", "written.txt"), write: true)
            try write(fs, fh, at: 0, Array("written through the mount\n".utf8))
            fs.release(fh)
        }
        let raw = try FileIO.read(try RealData.require("volumes/mr_brain1.raw"))
        let vals = (0..<(256 * 256 * 5)).map { Int16(bitPattern: UInt16(raw[2 * $0]) | UInt16(raw[2 * $0 + 1]) << 8) }
        let src = dir.appendingPathComponent("gz").path
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        let nii = dir.appendingPathComponent("brain.nii").path
        try FileIO.writeAtomically(nii, TestFiles.nifti1(vals, x: 256, y: 256, z: 5, big: false))
        let py = try run("/usr/bin/env", ["python3", "-c", "import gzip,sys; d=open(sys.argv[1],'rb').read(); open(sys.argv[2],'wb').write(gzip.compress(d, compresslevel=6, mtime=0))", nii, src + "/brain.nii.gz"])
        XCTAssertEqual(py.status, 0, py.err)
        do {
            let a = try Archive(path: path, create: true)
            XCTAssertEqual(a.schema, 4)
            let sum = try Packer(preset: try Preset.named("classical-par")).pack([src], into: a, archivePath: path)
            XCTAssertEqual(sum.recompressed, 1, "the .nii.gz is coded as a wrapped volume")
        }
        let a = try Archive(path: path, create: false)
        XCTAssertEqual(a.schema, 4)
        var cache: [UInt64: Archive.DecodedVolume] = [:]
        XCTAssertEqual(try a.contents(try XCTUnwrap(a.entry("written.txt")), decoded: &cache), Array("written through the mount\n".utf8))
        XCTAssertEqual(try a.contents(try XCTUnwrap(a.entry("gz/brain.nii.gz")), decoded: &cache), try FileIO.read(src + "/brain.nii.gz"))
        XCTAssertEqual(try a.verify(quick: false).problems.count, 0)
    }

    func testAReadOnlyMountRefusesEveryChange() throws {
        let path = dir.appendingPathComponent("ro.voxfs").path
        do {
            let fs = try open(path)
            _ = try create(fs, "", "x")
        }
        let fs = try open(path, writable: false)
        let x = try fs.resolve("x")
        for attempt in [
            { _ = try fs.create(parent: 1, name: "y", kind: .file, mode: 0o644, uid: 0, gid: 0) },
            { try fs.remove(parent: 1, name: "x", directory: false) },
            { try fs.rename(parent: 1, name: "x", newParent: 1, newName: "z") },
            { _ = try fs.setAttributes(x, .init(mode: 0o600)) },
            { _ = try fs.open(x, write: true) },
        ] as [() throws -> Void] {
            XCTAssertThrowsError(try attempt()) { XCTAssertEqual($0 as? FSError, .readOnly) }
        }
    }
}
