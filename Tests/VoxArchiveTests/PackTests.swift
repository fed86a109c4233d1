import Foundation
import XCTest
import VoxArchive
import VoxIngest
import VoxCodec
import VoxCore
import VoxFormats
import VoxTestSupport

/// pack then unpack a tree of real data: DICOM series (shuffled, with a gap; real CT pixels,
/// headers written by scripts/make_test_series.py), real DICOM test files, a raw volume with
/// its sidecar, opaque files, an empty file, a unicode name, a symlink, nested folders.
final class PackTests: ScratchTestCase {

    func makeTree() throws -> URL {
        let cache = RealData.cache
        for p in ["series/gap", "dicom/pydicom", "dicom/pydicom-data/emri_small.dcm", "volumes/mr_brain1.raw"] { _ = try RealData.require(p) }
        let src = dir.appendingPathComponent("study")
        let fm = FileManager.default
        try fm.createDirectory(at: src.appendingPathComponent("ct/gap"), withIntermediateDirectories: true)
        for n in try fm.contentsOfDirectory(atPath: cache + "/series/gap").filter({ $0.hasSuffix(".dcm") }).prefix(9) {
            try fm.copyItem(atPath: cache + "/series/gap/" + n, toPath: src.appendingPathComponent("ct/gap/" + n).path)
        }
        try fm.createDirectory(at: src.appendingPathComponent("misc/deeper"), withIntermediateDirectories: true)
        for n in ["CT_small.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm"] {
            try fm.copyItem(atPath: cache + "/dicom/pydicom/" + n, toPath: src.appendingPathComponent("misc/" + n).path)
        }
        try fm.copyItem(atPath: cache + "/dicom/pydicom-data/emri_small.dcm", toPath: src.appendingPathComponent("misc/deeper/emri_small.dcm").path)
        // raw crop + sidecar
        let all = try FileIO.read(cache + "/volumes/mr_brain1.raw")
        try FileIO.writeAtomically(src.appendingPathComponent("misc/brain.raw").path, Array(all.prefix(256 * 256 * 2 * 4)))
        try FileIO.writeAtomically(src.appendingPathComponent("misc/brain.json").path, Array("{\"shape\":[256,256,4],\"dtype\":\"int16\"}".utf8))
        // a big-endian NIfTI-1 of the next four real slices (header written here)
        let vals = stride(from: 256 * 256 * 2 * 4, to: 256 * 256 * 2 * 8, by: 2).map { Int16(bitPattern: UInt16(all[$0]) | UInt16(all[$0 + 1]) << 8) }
        try FileIO.writeAtomically(src.appendingPathComponent("misc/deeper/brain.nii").path, TestFiles.nifti1(vals, x: 256, y: 256, z: 4, big: true))
        try FileIO.writeAtomically(src.appendingPathComponent("notes ünïcødé.txt").path, Array("hello".utf8))
        try FileIO.writeAtomically(src.appendingPathComponent("misc/empty").path, [])
        try FileIO.writeAtomically(src.appendingPathComponent("misc/copy-of-notes.txt").path, Array("hello".utf8))
        chmod(src.appendingPathComponent("misc/empty").path, 0o600)
        symlink("misc/CT_small.dcm", src.appendingPathComponent("link.dcm").path)
        return src
    }

    func snapshot(_ root: URL) throws -> [String: (kind: String, bytes: [UInt8], mode: UInt32, mtime: Int)] {
        var out: [String: (kind: String, bytes: [UInt8], mode: UInt32, mtime: Int)] = [:]
        let fm = FileManager.default
        let en = fm.enumerator(atPath: root.path)!
        while let rel = en.nextObject() as? String {
            let p = root.path + "/" + rel
            var st = stat()
            lstat(p, &st)
            let fmt = st.st_mode & S_IFMT
            if fmt == S_IFLNK { out[rel] = ("link", Array((try fm.destinationOfSymbolicLink(atPath: p)).utf8), 0, st.st_mtim.tv_sec) }
            else if fmt == S_IFDIR { out[rel] = ("dir", [], UInt32(st.st_mode & 0o7777), 0) }
            else { out[rel] = ("file", try FileIO.read(p), UInt32(st.st_mode & 0o7777), st.st_mtim.tv_sec * 1_000_000_000 + st.st_mtim.tv_nsec) }
        }
        return out
    }

    func testPackUnpackIsByteIdenticalAndResumes() throws {
        let src = try makeTree()
        let path = dir.appendingPathComponent("a.voxfs").path
        let packer = Packer(preset: try Preset.named("classical"))
        var a: Archive? = try Archive(path: path, create: true)
        let s = try packer.pack([src.path], into: a!, archivePath: path)
        // the 9 slices of the gap series (two runs at most), CT_small, MR_small_bigendian,
        // emri (multi-frame), the raw volume and the NIfTI are volumes; JPEG 2000, the sidecar,
        // the two text files (stored once: content-addressed) and the empty file are opaque
        XCTAssertGreaterThanOrEqual(s.volumes, 6)
        for f in ["study/misc/deeper/brain.nii", "study/misc/brain.raw", "study/misc/deeper/emri_small.dcm", "study/misc/MR_small_bigendian.dcm"] {
            guard case .volume = try a!.entry(f)?.content else { return XCTFail("\(f) is not stored as a volume") }
        }
        XCTAssertEqual(s.opaque, 5, "\(s)")
        XCTAssertEqual(s.symlinks, 1)
        a = nil
        // a second pack skips everything
        let b = try Archive(path: path, create: true)
        XCTAssertEqual(try packer.pack([src.path], into: b, archivePath: path).skipped, s.files)
        let out = dir.appendingPathComponent("out").path
        let n = try Packer.unpack(try Archive(path: path, create: false), to: out)
        XCTAssertEqual(n.restored, s.files)
        XCTAssertTrue(n.failed.isEmpty)
        let before = try snapshot(src), after = try snapshot(URL(fileURLWithPath: out + "/study"))
        XCTAssertEqual(Set(before.keys), Set(after.keys))
        for (k, v) in before {
            let w = after[k]!
            XCTAssertEqual(v.kind, w.kind, k)
            XCTAssertEqual(v.bytes, w.bytes, "\(k) differs")
            if v.kind == "file" { XCTAssertEqual(v.mode, w.mode, k); XCTAssertEqual(v.mtime, w.mtime, "\(k) mtime") }
        }
    }

    func testVerifyFindsADamagedSlabAndUnpackRestoresTheRest() throws {
        let cache = RealData.cache
        _ = try RealData.require("series/signed")
        let src = dir.appendingPathComponent("series")
        try FileManager.default.copyItem(atPath: cache + "/series/signed", toPath: src.path)
        let path = dir.appendingPathComponent("v.voxfs").path
        do {
            let a = try Archive(path: path, create: true)
            _ = try Packer(preset: try Preset.named("classical")).pack([src.path], into: a, archivePath: path)
            XCTAssertTrue(try a.verify(quick: false).problems.isEmpty)
        }
        // flip bytes inside slab 0's record (slices 0-7 of the 16) in the file itself
        let rec = try Archive(path: path, create: false).slabRecord(volume: 1, index: 0)!
        var file = try FileIO.read(path)
        let needle = Array(rec[100..<164])
        guard let at = (0..<(file.count - needle.count)).first(where: { Array(file[$0..<($0 + needle.count)]) == needle }) else {
            return XCTFail("slab bytes not found in the archive file")
        }
        for k in 0..<16 { file[at + k] ^= 0xA5 }
        try FileIO.writeAtomically(path, file)
        let r = try Archive(path: path, create: false).verify(quick: false)
        XCTAssertTrue(r.problems.contains { $0.path == "volume 1" && $0.message.contains("slab 0") }, "\(r.problems)")
        // exactly the 8 files on slab 0 are reported, each naming the slab; the others are sound
        let files = r.problems.filter { $0.path.hasSuffix(".dcm") }
        XCTAssertEqual(files.count, 8, "\(r.problems)")
        XCTAssertTrue(files.allSatisfy { $0.message.contains("slab 0") && $0.message.contains($0.path) }, "\(files)")
        // the quick check only looks at structure
        XCTAssertTrue(try Archive(path: path, create: false).verify(quick: true).problems.isEmpty)
        // unpack restores the 8 files on the sound slab, byte-identical, and names the others
        let out = dir.appendingPathComponent("out").path
        let u = try Packer.unpack(try Archive(path: path, create: false), to: out)
        XCTAssertEqual(u.restored, 8)
        XCTAssertEqual(Set(u.failed.map(\.path)), Set(files.map(\.path)))
        for n in try FileManager.default.contentsOfDirectory(atPath: src.path) where !u.failed.contains(where: { $0.path == "series/" + n }) {
            XCTAssertEqual(try FileIO.read(out + "/series/" + n), try FileIO.read(src.path + "/" + n), n)
        }
    }

    func testForeignFileIsAClearError() throws {
        let junk = dir.appendingPathComponent("junk.voxfs").path
        try FileIO.writeAtomically(junk, [UInt8](repeating: 0x42, count: 10000))
        XCTAssertThrowsError(try Archive(path: junk, create: false)) { e in
            XCTAssertTrue((e as? VoxError)?.message.contains("not a VoxFS archive") ?? false, "\(e)")
        }
    }

    func testUnpackSubsetsStoredSizesAndTheWriterLock() throws {
        let src = try makeTree()
        let path = dir.appendingPathComponent("s.voxfs").path
        let a = try Archive(path: path, create: true)
        try a.lock(exclusive: true)
        let sum = try Packer(preset: try Preset.named("classical")).pack([src.path], into: a, archivePath: path)
        XCTAssertGreaterThan(sum.storedBytes, 0)
        XCTAssertLessThan(sum.storedBytes, sum.originalBytes)
        // a second writer, and a mount (shared lock), are refused while the first holds it
        let b = try Archive(path: path, create: false)
        for exclusive in [true, false] {
            XCTAssertThrowsError(try b.lock(exclusive: exclusive)) { e in
                XCTAssertEqual((e as? VoxError)?.kind, .busy, "\(e)")
            }
        }
        // only the gap series and the link come back
        let out = dir.appendingPathComponent("sub").path
        let n = try Packer.unpack(b, to: out, paths: ["study/ct/gap/", "./study/link.dcm"])
        XCTAssertEqual(n.restored, 9)
        let got = try FileManager.default.subpathsOfDirectory(atPath: out).sorted()
        XCTAssertTrue(got.allSatisfy { $0 == "study" || $0.hasPrefix("study/ct") || $0 == "study/link.dcm" }, "\(got)")
        for f in try FileManager.default.contentsOfDirectory(atPath: src.path + "/ct/gap") {
            XCTAssertEqual(try FileIO.read(out + "/study/ct/gap/" + f), try FileIO.read(src.path + "/ct/gap/" + f), f)
        }
        XCTAssertThrowsError(try Packer.unpack(b, to: out, paths: ["study/nothing"]))
        // stored sizes: the volume files share their volume's bytes; the two identical notes one blob
        let vols = Dictionary(uniqueKeysWithValues: try b.volumeInfos().map { ($0.id, $0) })
        let entries = try b.entries().filter { $0.kind == .file }
        var total = 0
        for e in entries { total += try b.storedSize(e, volumes: vols) }
        let slabBytes = vols.values.reduce(0) { $0 + $1.storedBytes }
        XCTAssertGreaterThan(total, slabBytes)
        let notes = try entries.filter { $0.path.hasSuffix(".txt") }.map { try b.storedSize($0, volumes: vols) }
        XCTAssertEqual(notes.count, 2)
        XCTAssertEqual(notes[0], notes[1])
        let blobs = Set(entries.compactMap { e -> [UInt8]? in if case .blob(let h) = e.content { return h }; return nil })
        XCTAssertEqual(blobs.count, entries.filter { if case .blob = $0.content { return true }; return false }.count - 1, "identical files share one blob")
    }

    /// Re-packing a changed file stores it again and drops what its old version used, so the
    /// archive holds no dead volumes or blobs.
    func testRepackingChangedFilesDropsTheirOldContent() throws {
        let src = try makeTree()
        let path = dir.appendingPathComponent("r.voxfs").path
        let packer = Packer(preset: try Preset.named("classical"))
        do {
            let a = try Archive(path: path, create: true)
            _ = try packer.pack([src.path], into: a, archivePath: path)
        }
        let before = try Archive(path: path, create: false).volumeInfos().count
        // the raw volume's slices reversed (same size, new content), and a note edited
        let raw = src.appendingPathComponent("misc/brain.raw").path
        let old = try FileIO.read(raw)
        let slice = 256 * 256 * 2
        var flipped = [UInt8]()
        for z in stride(from: 3, through: 0, by: -1) { flipped += old[(z * slice)..<((z + 1) * slice)] }
        try FileIO.writeAtomically(raw, flipped)
        try FileIO.writeAtomically(src.appendingPathComponent("misc/copy-of-notes.txt").path, Array("changed".utf8))
        let a = try Archive(path: path, create: true)
        let s = try packer.pack([src.path], into: a, archivePath: path)
        XCTAssertEqual(s.files, 2, "only the two changed files are packed again")
        XCTAssertEqual(try a.volumeInfos().count, before, "the raw file's old volume is gone")
        XCTAssertTrue(try a.verify(quick: false).problems.isEmpty)
        let out = dir.appendingPathComponent("out").path
        XCTAssertEqual(try Packer.unpack(a, to: out).failed.count, 0)
        XCTAssertEqual(try FileIO.read(out + "/study/misc/brain.raw"), flipped)
        XCTAssertEqual(try FileIO.read(out + "/study/misc/copy-of-notes.txt"), Array("changed".utf8))
        // the other note shared the old blob: it is still there
        XCTAssertEqual(try FileIO.read(out + "/study/notes ünïcødé.txt"), Array("hello".utf8))
    }
}
