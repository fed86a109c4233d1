import Foundation
import XCTest
import VoxArchive
import VoxIngest
import VoxCodec
import VoxCore
import VoxFS
import VoxTestSupport

/// The filesystem, unpack and verify over the in-memory record store (issue 13), with the
/// faults a disk gives: a read that fails, a record cut short, a commit that fails or is torn.
/// Whatever fails, a reader gets an error or the original bytes, never other bytes.
final class StoreFaultTests: ScratchTestCase {
    /// A small tree of real data: a DICOM series (real CT pixels, headers written by
    /// scripts/make_test_series.py), a raw CT crop with its sidecar, a text file.
    func makeTree() throws -> String {
        let cache = RealData.cache
        for p in ["series/signed", "volumes/ct_lung1.raw"] { _ = try RealData.require(p) }
        let src = dir.appendingPathComponent("study").path
        try? FileManager.default.removeItem(atPath: src)
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: cache + "/series/signed", toPath: src + "/ct")
        let all = try FileIO.read(cache + "/volumes/ct_lung1.raw")
        try FileIO.writeAtomically(src + "/crop.raw", Array(all[(512 * 512 * 2 * 20)..<(512 * 512 * 2 * 26)]))
        try FileIO.writeAtomically(src + "/crop.json", Array("{\"shape\":[512,512,6],\"dtype\":\"int16\"}".utf8))
        try FileIO.writeAtomically(src + "/notes.txt", Array("real data, see the test's comment\n".utf8))
        return src
    }

    /// The tree packed into a fresh memory store; the originals by archive path.
    func packed() throws -> (MemoryStore, [String: [UInt8]]) {
        let src = try makeTree()
        let store = MemoryStore()
        let a = try Archive(store: store, path: "memory", create: true)
        _ = try Packer(preset: try Preset.named("classical-par"), threads: 1).pack([src], into: a, archivePath: "memory")
        var originals: [String: [UInt8]] = [:]
        for rel in try FileManager.default.subpathsOfDirectory(atPath: src) {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: src + "/" + rel, isDirectory: &isDir), !isDir.boolValue {
                originals["study/" + rel] = try FileIO.read(src + "/" + rel)
            }
        }
        return (store, originals)
    }

    /// Every file read through a fresh filesystem on the store: its bytes, or nil when the read failed.
    func readAll(_ store: MemoryStore) throws -> [String: [UInt8]?] {
        let fs = try VoxFileSystem(archive: try Archive(store: store, path: "memory", create: false),
                                   options: .init(cacheBytes: 16 << 20, workers: 0, log: { _ in }))
        var out: [String: [UInt8]?] = [:]
        for e in try fs.archive.entries() where e.kind == .file {
            do { out[e.path] = try FileSystemTests.readAll(fs, try fs.resolve(e.path), chunk: 65536) } catch { out[e.path] = .some(nil) }
        }
        fs.drain()
        return out
    }

    func testTheFilesystemAndUnpackReadAMemoryArchiveExactly() throws {
        let (store, originals) = try packed()
        XCTAssertGreaterThan(originals.count, 5)
        let got = try readAll(store)
        XCTAssertEqual(Set(got.keys), Set(originals.keys))
        for (p, b) in originals { XCTAssertEqual(got[p] ?? nil, b, p) }
        let a = try Archive(store: store, path: "memory", create: false)
        let v = try a.verify(quick: false, threads: 1)
        XCTAssertEqual(v.problems.map(\.message), [])
        XCTAssertGreaterThan(v.volumes, 1)
        let dest = path("out")
        let r = try Packer.unpack(a, to: dest)
        XCTAssertEqual(r.failed.map(\.message), [])
        for (p, b) in originals { XCTAssertEqual(try FileIO.read(dest + "/" + p), b, p) }
    }

    func testAReadErrorOnSlabsFailsTheVolumesFilesOnly() throws {
        let (store, originals) = try packed()
        store.injectReadFault(.init(.slabs, .ioError))
        let got = try readAll(store)
        var failed = 0
        for (p, b) in originals {
            let isVolume = p.hasPrefix("study/ct/") || p == "study/crop.raw"
            if isVolume {
                XCTAssertNil(got[p] ?? nil, "\(p) read although every slab read fails")
                failed += 1
            } else {
                XCTAssertEqual(got[p] ?? nil, b, "\(p) stores no pixels and must still read")
            }
        }
        XCTAssertGreaterThan(failed, 3)
        // verify names the volumes; unpack restores the rest and reports the volumes' files
        let a = try Archive(store: store, path: "memory", create: false)
        XCTAssertFalse(try a.verify(quick: false, threads: 1).problems.isEmpty)
        let r = try Packer.unpack(a, to: path("out"))
        XCTAssertEqual(Set(r.failed.map(\.path)), Set(originals.keys.filter { $0.hasPrefix("study/ct/") || $0 == "study/crop.raw" }))
        XCTAssertEqual(try FileIO.read(path("out") + "/study/notes.txt"), originals["study/notes.txt"])
        for p in r.failed.map(\.path) { XCTAssertFalse(FileManager.default.fileExists(atPath: path("out") + "/" + p), "\(p) was left half-written") }
        // the fault gone, a fresh reader gets everything back
        store.clearFaults()
        let again = try readAll(store)
        for (p, b) in originals { XCTAssertEqual(again[p] ?? nil, b, p) }
    }

    func testRecordsCutShortAreErrorsNeverOtherBytes() throws {
        for (table, n) in [(StoreTable.slabs, 100), (.parts, 20), (.blobs, 10), (.volumes, 30)] {
            let (store, originals) = try packed()
            store.injectReadFault(.init(table, .short(n)))
            var got: [String: [UInt8]?] = [:]
            do { got = try readAll(store) } catch {
                // a record every file depends on: the archive refuses to open, with a message
                XCTAssertTrue("\(error)".contains("memory"), "\(table): \(error)")
                continue
            }
            var wrong = 0, failed = 0
            for (p, b) in originals {
                guard let r = got[p] ?? nil else { failed += 1; continue }
                if r != b { wrong += 1 }
            }
            XCTAssertEqual(wrong, 0, "\(table): a short record gave other bytes")
            XCTAssertGreaterThan(failed, 0, "\(table): no read noticed the short records")
            let a = try Archive(store: store, path: "memory", create: false)
            XCTAssertFalse(try a.verify(quick: false, threads: 1).problems.isEmpty, "\(table)")
        }
    }

    func testAFailedCommitLeavesNoTraceAndATornOneIsRefused() throws {
        let (store, originals) = try packed()
        let extra = dir.appendingPathComponent("more").path
        try FileManager.default.createDirectory(atPath: extra, withIntermediateDirectories: true)
        try FileIO.writeAtomically(extra + "/later.txt", Array("added later\n".utf8))
        let before = try Archive(store: store, path: "memory", create: false).entries().map(\.path)
        // a failed commit: an error, and the archive exactly as before
        let a = try Archive(store: store, path: "memory", create: true)
        store.failNextCommits(1)
        XCTAssertThrowsError(try Packer(preset: try Preset.named("classical-par"), threads: 1).pack([extra], into: a, archivePath: "memory"))
        XCTAssertEqual(try Archive(store: store, path: "memory", create: false).entries().map(\.path), before)
        let got = try readAll(store)
        for (p, b) in originals { XCTAssertEqual(got[p] ?? nil, b, p) }
        // the same pack again works
        _ = try Packer(preset: try Preset.named("classical-par"), threads: 1).pack([extra], into: a, archivePath: "memory")
        XCTAssertTrue(try Archive(store: store, path: "memory", create: false).entries().contains { $0.path == "more/later.txt" })
        // a torn commit (what a store without atomic commits leaves after a crash): the
        // transaction stamp no longer matches, so the archive refuses to open instead of
        // showing a half-written state
        try FileIO.writeAtomically(extra + "/torn.txt", Array("half\n".utf8))
        store.tearNextCommit(after: 1)
        XCTAssertThrowsError(try Packer(preset: try Preset.named("classical-par"), threads: 1).pack([extra], into: a, archivePath: "memory"))
        XCTAssertThrowsError(try Archive(store: store, path: "memory", create: false)) { e in
            XCTAssertTrue("\(e)".contains("damaged"), "\(e)")
        }
    }
}
