import CLMDB
import Foundation
import XCTest
import VoxArchive
import VoxCore
import VoxTestSupport

final class LMDBTests: ScratchTestCase {

    func testPutGetScanDeleteAndPersistence() throws {
        let path = dir.appendingPathComponent("a.voxfs").path
        do {
            let env = try LMDBEnvironment(path: path)
            let files = try env.database("files"), slabs = try env.database("slabs")
            try env.write { t in
                for i in (0..<100).reversed() { try t.put(files, Array("f/\(String(format: "%03d", i))".utf8), [UInt8(i)]) }
                try t.put(slabs, [1, 2, 3], Array(repeating: 9, count: 1000))
            }
            try env.read { t in
                XCTAssertEqual(try t.get(files, Array("f/042".utf8)), [42])
                XCTAssertNil(try t.get(files, Array("f/100".utf8)))
                XCTAssertEqual(try t.count(files), 100)
                var seen: [UInt8] = []
                try t.scan(files, prefix: Array("f/01".utf8)) { _, v in seen += v; return true }
                XCTAssertEqual(seen, Array(10...19).map(UInt8.init), "keys come in order, prefix bounded")
            }
            try env.write { t in XCTAssertTrue(try t.delete(files, Array("f/000".utf8))); XCTAssertFalse(try t.delete(files, Array("nope".utf8))) }
        }
        // a single file plus its lock file, and the data is there after reopening read-only
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: path + "-lock"))
        let ro = try LMDBEnvironment(path: path, readOnly: true)
        let files = try ro.database("files")
        try ro.read { t in XCTAssertEqual(try t.count(files), 99) }
        // a write on it is an error (EROFS), not a trap
        XCTAssertThrowsError(try ro.write { _ in }) { XCTAssertEqual(($0 as? LMDBError)?.code, EROFS) }
    }

    func testAThrowAbortsTheTransaction() throws {
        let env = try LMDBEnvironment(path: dir.appendingPathComponent("b.voxfs").path)
        let db = try env.database("x")
        struct Boom: Error {}
        XCTAssertThrowsError(try env.write { t in try t.put(db, [1], [1]); throw Boom() })
        try env.read { t in XCTAssertNil(try t.get(db, [1])) }
    }

    func testMapGrowsWhenFull() throws {
        let env = try LMDBEnvironment(path: dir.appendingPathComponent("c.voxfs").path, mapSize: 1 << 20)
        let db = try env.database("slabs")
        let blob = [UInt8](repeating: 0xAB, count: 256 * 1024)
        for i in 0..<40 { // 10 MB into a 1 MB map, one transaction per slab
            try env.write { t in try t.put(db, [UInt8(i)], blob) }
        }
        XCTAssertGreaterThanOrEqual(env.mapSize, 10 << 20)
        try env.read { t in
            XCTAssertEqual(try t.count(db), 40)
            XCTAssertEqual(try t.get(db, [39]), blob)
        }
    }

    /// A value read `once` (a slab) comes back exact, and its map pages are released after the
    /// copy (the mount's resident memory does not grow with the archive pages it has read); a
    /// write transaction reads it the same way and releases nothing (its dirty pages are
    /// malloc'd memory, not the map).
    func testAValueReadOnceLeavesNoMapPagesResident() throws {
        let path = dir.appendingPathComponent("once.voxfs").path
        let env = try LMDBEnvironment(path: path)
        let db = try env.database("slabs")
        var rng = SystemRandomNumberGenerator()
        let blobs = (0..<8).map { _ in (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &rng) } }
        try env.write { t in for (i, b) in blobs.enumerated() { try t.put(db, [UInt8(i)], b) } }
        try env.write { t in XCTAssertEqual(try t.get(db, [0], once: true), blobs[0], "a write transaction reads it too") }
        func resident() throws -> Int { // kB of the archive's map resident in this process
            var kb = 0, inMap = false
            // read to the end (a /proc file has no size: a one-shot read of its "size" stops short)
            guard let f = FileHandle(forReadingAtPath: "/proc/self/smaps") else { throw VoxError(.io, "no /proc/self/smaps") }
            defer { try? f.close() }
            for line in String(decoding: f.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n") {
                if let c = line.first, c.isHexDigit, line.contains("-") { inMap = line.hasSuffix(path) }
                else if inMap, line.hasPrefix("Rss:") { kb += Int(line.split(separator: " ")[1]) ?? 0 }
            }
            return kb
        }
        try env.read { t in for i in 0..<8 { XCTAssertEqual(try t.get(db, [UInt8(i)]), blobs[i]) } }
        let plain = try resident()
        XCTAssertGreaterThan(plain, 7 << 10, "not vacuous: plain reads leave the 8 MiB of values resident")
        try env.read { t in for i in 0..<8 { XCTAssertEqual(try t.get(db, [UInt8(i)], once: true), blobs[i]) } }
        XCTAssertLessThan(try resident(), 1 << 10, "values read once leave their pages out of this process's memory")
    }

    func testErrorsCarryLMDBCodes() throws {
        let junk = dir.appendingPathComponent("junk.voxfs").path
        try Data(repeating: 0x42, count: 8192).write(to: URL(fileURLWithPath: junk))
        XCTAssertThrowsError(try LMDBEnvironment(path: junk, readOnly: true)) { e in
            let l = e as? LMDBError
            XCTAssertNotNil(l)
            XCTAssertEqual(l?.code, MDB_INVALID, "\(e)")
            XCTAssertTrue(l?.description.contains("mdb_env_open") ?? false)
        }
        XCTAssertThrowsError(try LMDBEnvironment(path: dir.appendingPathComponent("missing/x.voxfs").path)) { e in
            XCTAssertEqual((e as? LMDBError)?.code, ENOENT)
        }
    }
}
