import Foundation
import XCTest
import VoxArchive
import VoxCore
import VoxFS
import VoxTestSupport

/// The mount never serves a byte that no checksum vouches for (issue 17): a damaged part
/// record of a schema 2 archive fails its seal at open; in a schema 1 archive (no seals) the
/// whole file's SHA-256 is checked before its first byte; a failed slab is remembered.
final class DamageTests: ScratchTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/archives").path

    func seed(_ name: String) throws -> String {
        let p = path(name + ".voxfs")
        try FileManager.default.copyItem(atPath: DamageTests.fixtures + "/\(name).voxfs", toPath: p)
        return p
    }

    /// Every file of the archive read through the filesystem: the bytes of those that read,
    /// and the paths of those that were an error.
    func readEverything(_ p: String) throws -> (read: [String: [UInt8]], failed: [String]) {
        let fs = try VoxFileSystem(archive: try Archive.reader(p), options: .init(cacheBytes: 16 << 20, workers: 0))
        var out: [String: [UInt8]] = [:], failed: [String] = []
        for e in try fs.archive.entries() where e.kind == .file {
            let ino = try fs.resolve(e.path)
            do {
                let fh = try fs.open(ino)
                defer { fs.release(fh) }
                out[e.path] = try FileSystemTests.readAll(fs, ino, chunk: 4096)
            } catch { failed.append(e.path) }
        }
        fs.drain()   // the rest of a slab may still be decoding after its reader returned
        return (out, failed)
    }

    func testADamagedPartRecordIsAnErrorNeverWrongBytesInEverySchema() throws {
        for name in ["seed-v1", "seed-v2"] {
            let p = try seed(name)
            let good = try readEverything(p)
            XCTAssertEqual(good.read.count, 11)
            XCTAssertEqual(good.failed, [], name)
            // the big-endian flag and the first slice of volume 1's part 1 (a CT slice)
            do {
                let a = try Archive(path: p, create: name == "seed-v2")
                let key = Archive.recordKey(volume: 1, index: 1)
                if name == "seed-v1" {
                    // a schema 1 archive cannot be opened for writing: damage its bytes in place
                    let rec = try XCTUnwrap(try a.rawRecord(.parts, key))
                    var file = try FileIO.read(p)
                    let at = try XCTUnwrap((0..<(file.count - 48)).first { Array(file[$0..<($0 + 48)]) == Array(rec.prefix(48)) })
                    file[at] ^= 1; file[at + 8] ^= 1
                    try FileIO.writeAtomically(p, file)
                } else {
                    var v = try XCTUnwrap(try a.rawRecord(.parts, key))
                    v[0] ^= 1; v[8] ^= 1
                    try a.setRawRecord(.parts, key, v)
                }
            }
            let got = try readEverything(p)
            XCTAssertEqual(got.failed.count, 1, "\(name): exactly the damaged file fails: \(got.failed)")
            XCTAssertEqual(got.read.count, 10)
            for (path, bytes) in got.read { XCTAssertEqual(bytes, good.read[path], "\(name): \(path) reads exact bytes") }
        }
    }

    func testAFailedDecodeIsRememberedNotRepeated() throws {
        let c = SlabCache(capacity: 1 << 20)
        let calls = Locked(0)
        for _ in 0..<5 { XCTAssertThrowsError(try c.get(.init(volume: 1, slab: 0), need: 3, size: 3) { _, _ in calls.mutate { $0 += 1 }; throw VoxError(.corrupt, "slab 0 is damaged") }) }
        XCTAssertEqual(calls.value, 1, "damage is remembered")
        XCTAssertTrue(c.contains(.init(volume: 1, slab: 0)))
        // a failure that is not damage (here: I/O) is tried again
        let io = Locked(0)
        for _ in 0..<3 { XCTAssertThrowsError(try c.get(.init(volume: 2, slab: 0), need: 3, size: 3) { _, _ in io.mutate { $0 += 1 }; throw VoxError(.io, "EIO") }) }
        XCTAssertEqual(io.value, 3)
        let b = try c.get(.init(volume: 1, slab: 1), need: 3, size: 3) { buf, publish in
            buf.mutableBytes.copyBytes(from: [1, 2, 3] as [UInt8]); publish(3)
        }
        XCTAssertEqual(b.withUnsafeBytes(0..<3) { Array($0) }, [1, 2, 3], "other slabs still decode")
    }

    /// A decode counts against the capacity from when it runs (it holds a decode slot), not
    /// only once done: the idle slab it displaces is evicted before the new buffer is filled,
    /// so cached and running slabs together stay within the capacity.
    func testARunningDecodeCountsAgainstTheCapacity() throws {
        let c = SlabCache(capacity: 3000)
        let a = SlabCache.Key(volume: 1, slab: 0), b = SlabCache.Key(volume: 1, slab: 1)
        _ = try c.get(a, need: 2000, size: 2000, prefetch: true) { buf, publish in publish(2000) }
        XCTAssertEqual(c.snapshot.bytes, 2000)
        let during = Locked(c.snapshot)
        _ = try c.get(b, need: 1500, size: 1500, prefetch: true) { buf, publish in
            let before = c.snapshot
            c.running(b)
            during.mutate { $0 = c.snapshot }
            XCTAssertEqual(before.bytes, 2000, "a decode waiting for its slot does not count")
            publish(1500)
        }
        XCTAssertEqual(during.value.bytes, 1500, "the running decode counts; the idle slab went to make room")
        XCTAssertEqual(during.value.evictions, 1)
        XCTAssertFalse(c.contains(a))
        XCTAssertEqual(c.snapshot.bytes, 1500, "counted once, not again when done")
        c.running(b) // a finished slab is not counted twice
        XCTAssertEqual(c.snapshot.bytes, 1500)
    }
}
