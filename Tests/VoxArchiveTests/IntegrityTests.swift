import CVoxLMDB
import Foundation
import XCTest
import VoxArchive
import VoxIngest
import VoxCore
import VoxTestSupport

/// Damaged and hostile archives (issue 17): every record sealed and checked, the tree digest,
/// the entry-to-part tie, truncations and damaged meta pages found before anything is mapped,
/// LMDB faults caught, unpack confined to its destination. The committed seed archives
/// (Tests/Fixtures/archives: real pixels, see scripts/make_seed_tree.py) are golden files too:
/// schema 1 and 2 archives must stay readable.
final class IntegrityTests: ScratchTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/archives").path

    struct Want: Decodable { var type: String; var mode: UInt32; var mtime_ns: Int64; var link: String?; var sha256: String? }

    func manifest(_ name: String) throws -> [String: Want] {
        try JSONDecoder().decode([String: Want].self, from: Data(contentsOf: URL(fileURLWithPath: IntegrityTests.fixtures + "/\(name).manifest.json")))
    }

    /// A scratch copy of a committed seed archive.
    func seed(_ name: String = "seed-v2", copy: Int = 0) throws -> String {
        let p = path(name + "-\(copy).voxfs")
        try FileManager.default.copyItem(atPath: IntegrityTests.fixtures + "/\(name).voxfs", toPath: p)
        return p
    }

    /// Checks an unpacked tree against the manifest: every listed entry present with its bytes
    /// and metadata, except `except` (which must be absent).
    func assertTree(_ root: String, _ want: [String: Want], except: Set<String> = [], file: StaticString = #filePath, line: UInt = #line) throws {
        for (rel, w) in want {
            let p = root + "/" + rel
            var st = stat()
            if except.contains(rel) { XCTAssertNotEqual(lstat(p, &st), 0, "\(rel) should not be restored", file: file, line: line); continue }
            XCTAssertEqual(lstat(p, &st), 0, "\(rel) missing", file: file, line: line)
            XCTAssertEqual(UInt32(st.st_mode & 0o7777), w.mode, rel, file: file, line: line)
            switch w.type {
            case "file":
                XCTAssertEqual(Checksum.hex(Checksum.sha256(try FileIO.read(p))), w.sha256, rel, file: file, line: line)
                XCTAssertEqual(Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec), w.mtime_ns, rel, file: file, line: line)
            case "link": XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: p), w.link, file: file, line: line)
            case "fifo": XCTAssertEqual(st.st_mode & S_IFMT, S_IFIFO, rel, file: file, line: line)
            default: XCTAssertEqual(st.st_mode & S_IFMT, S_IFDIR, rel, file: file, line: line)
            }
        }
    }

    func testGoldenArchivesOfEverySchemaStayReadableAndExact() throws {
        // seed-v3: compressed volumes (a CPython-gzip .nii.gz, ITK's gzip NRRD) rebuilt by recompressing
        // seed-v4: seed-v2 changed through `voxfs mount -o rw` with cp, dd, truncate, mv, rm, mkfifo, mkdir -p and touch:
        // a copied slice and a patched one stored as chunks, a truncated NIfTI (its volume
        // reclaimed), a rename, a deletion, a FIFO, a path past LMDB's 511-byte key limit, times
        for (name, schema) in [("seed-v1", UInt32(1)), ("seed-v2", UInt32(2)), ("seed-v3", UInt32(3)), ("seed-v4", UInt32(4))] {
            let a = try Archive.reader(try seed(name))
            XCTAssertEqual(a.schema, schema)
            XCTAssertEqual(a.protectionNote != nil, schema == 1)
            let r = try a.verify(quick: false)
            XCTAssertEqual(r.problems.map(\.description), [], name)
            XCTAssertEqual(r.files, [1: 11, 2: 11, 3: 3, 4: 12][schema])
            let out = path("u-" + name)
            let u = try Packer.unpack(a, to: out)
            XCTAssertEqual(u.failed.map(\.description), [])
            try assertTree(out, try manifest(name))
            if schema >= 2 { XCTAssertEqual(try a.scanTree().digestMatches, true) }
        }
    }

    func testAnOlderSchemaIsNotWrittenTo() throws {
        XCTAssertThrowsError(try Archive(path: try seed("seed-v1"), create: true)) { e in
            XCTAssertTrue("\(e)".contains("schema 1"), "\(e)")
        }
    }

    /// Rewrites one raw record of the archive at `p` (no seal, no digest update: as damage would).
    func damage(_ p: String, _ db: Archive.Database, _ key: [UInt8], _ change: (inout [UInt8]) -> Void) throws {
        let a = try Archive(path: p, create: true)
        var v = try XCTUnwrap(try a.rawRecord(db, key))
        change(&v)
        try a.setRawRecord(db, key, v)
    }

    func testAFlippedPartIndexCostsThatFileAndNeverServesAnotherFilesBytes() throws {
        let p = try seed()
        let key = Array("seed/ct/IM0001.dcm".utf8)
        // the entry's part index (u32 after the kind, mode, owners, times, size, link and the
        // content tag and volume id): flip its low bit, as a bit flip on disk would
        let rec = try XCTUnwrap(try Archive.reader(p).rawRecord(.tree, key))
        let partAt = 1 + 4 * 3 + 8 + 4 + 8 + 4 + 1 + 8
        XCTAssertEqual(rec[partAt - 9], 2, "content tag of a volume entry")
        try damage(p, .tree, key) { $0[partAt] ^= 1 }
        let a = try Archive.reader(p)
        let r = try a.verify(quick: false)
        XCTAssertTrue(r.problems.contains { $0.path == "seed/ct/IM0001.dcm" && $0.message.contains("seal") }, "\(r.problems)")
        let u = try Packer.unpack(a, to: path("u"))
        XCTAssertEqual(u.failed.map(\.path).filter { $0 != "tree" }, ["seed/ct/IM0001.dcm"])
        try assertTree(path("u"), try manifest("seed-v2"), except: ["seed/ct/IM0001.dcm"])
    }

    func testAnEntryResealedOntoAnotherFilesPartIsFoundByItsSHA256() throws {
        let p = try seed()
        do {
            // a writer that re-seals a wrong part index (not just a bit flip): the SHA-256 tie finds it
            let a = try Archive(path: p, create: true)
            var e = try XCTUnwrap(try a.entry("seed/ct/IM0001.dcm"))
            let other = try XCTUnwrap(try a.entry("seed/ct/IM0003.dcm"))
            guard case .volume(let id, _) = e.content, case .volume(let oid, let ok) = other.content, id == oid else { return XCTFail("one volume") }
            e.content = .volume(id: id, part: ok)
            try a.putEntry(e)
        }
        let a = try Archive.reader(p)
        XCTAssertEqual(try a.scanTree().digestMatches, true)
        let r = try a.verify(quick: false)
        XCTAssertEqual(r.problems.map(\.path), ["seed/ct/IM0001.dcm"])
        XCTAssertTrue(r.problems[0].message.contains("belongs to another file"), r.problems[0].message)
        XCTAssertEqual(try a.verify(quick: true).problems.map(\.path), ["seed/ct/IM0001.dcm"])
        var cache: [UInt64: Archive.DecodedVolume] = [:]
        XCTAssertThrowsError(try a.contents(try XCTUnwrap(try a.entry("seed/ct/IM0001.dcm")), decoded: &cache))
    }

    func testDamagedPartFieldsAndHeadersAreFoundBySeals() throws {
        let p = try seed()
        // volume 1 is the CT series: its part 0's first-slice field, and its header record
        let partKey = Archive.recordKey(volume: 1, index: 0)
        try damage(p, .parts, partKey) { $0[0] ^= 1 }
        var a = try Archive.reader(p)
        XCTAssertThrowsError(try a.part(volume: 1, part: 0)) { XCTAssertTrue("\($0)".contains("seal"), "\($0)") }
        let r = try a.verify(quick: false)
        XCTAssertEqual(r.problems.count, 1, "\(r.problems)")

        let q = try seed(copy: 1)
        try damage(q, .volumes, Archive.recordKey(volume: 2)) { $0[$0.count - 1] ^= 0x40 }
        a = try Archive.reader(q)
        let (infos, damaged) = try a.scanVolumes()
        XCTAssertEqual(infos.count, 3)
        XCTAssertEqual(damaged.map(\.path), ["volume 2"])
        let v = try a.verify(quick: false)
        // the volume's one file is named; every other file is checked (not "0 files checked")
        XCTAssertEqual(v.files, 11)
        XCTAssertEqual(Set(v.problems.map(\.path)), ["volume 2", "seed/mr/brain.nii"])
    }

    func testAMissingEntryIsFoundByTheTreeDigest() throws {
        let p = try seed()
        do {
            try Archive(path: p, create: true).setRawRecord(.tree, Array("seed/notes/README.txt".utf8), nil)
        }
        let a = try Archive.reader(p)
        let s = try a.scanTree()
        XCTAssertEqual(s.digestMatches, false)
        XCTAssertEqual(s.entries.count, try manifest("seed-v2").count - 1)
        XCTAssertTrue(try a.verify(quick: true).problems.contains { $0.path == "tree" })
        XCTAssertTrue(try Packer.unpack(a, to: path("u")).failed.contains { $0.path == "tree" })
    }

    func testTruncatedArchivesAreAOneLineErrorBeforeAnythingIsMapped() throws {
        let full = try FileIO.read(try seed())
        var rng = SystemRandomNumberGenerator()
        let lengths = [1, 19, 100, 4096, 8191, 8192, 8193, full.count / 2, full.count - 4096, full.count - 1] + (0..<10).map { _ in Int.random(in: 1..<full.count, using: &rng) }
        for n in lengths {
            let p = path("cut-\(n).voxfs")
            try FileIO.writeAtomically(p, Array(full.prefix(n)))
            XCTAssertThrowsError(try Archive.reader(p), "\(n) bytes") { e in
                let m = "\(e)"
                XCTAssertTrue(m.contains("truncated") || m.contains("not a VoxFS archive"), "\(n): \(m)")
                XCTAssertFalse(m.contains("\n"))
            }
        }
    }

    func testADamagedMetaPageThatClaimsToBeNewestIsRefused() throws {
        let p = try seed()
        var b = try FileIO.read(p)
        func txn(_ page: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[page + 144 + $1]) << (8 * $1) } }
        // make the older meta page name a newer transaction than the newest one (LMDB would then
        // show the older state of the archive, silently)
        let (old, new) = txn(0) < txn(4096) ? (0, 4096) : (4096, 0)
        let forged = txn(new) + 2
        for i in 0..<8 { b[old + 144 + i] = UInt8((forged >> (8 * UInt64(i))) & 0xFF) }
        try FileIO.writeAtomically(p, b)
        XCTAssertThrowsError(try Archive.reader(p)) { XCTAssertTrue("\($0)".contains("meta page"), "\($0)") }
    }

    func testTheFaultGuardTurnsAFaultIntoAnError() throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let m = mmap(nil, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        XCTAssertNotEqual(m, MAP_FAILED)
        defer { munmap(m, page) }
        XCTAssertEqual(voxlmdb_probe(m!.assumingMemoryBound(to: UInt8.self)), 1)
        var x: UInt8 = 7
        XCTAssertEqual(voxlmdb_probe(&x), 0)
        XCTAssertEqual(voxlmdb_probe(m!.assumingMemoryBound(to: UInt8.self)), 1, "the guard works more than once")
    }

    func testUnpackStaysInsideItsDestinationAndDropsSetuid() throws {
        let p = path("hostile.voxfs")
        let outside = path("outside")
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        do {
            let a = try Archive(path: p, create: true)
            func entry(_ path: String, _ kind: Archive.Kind, mode: UInt32 = 0o644, link: String = "") -> Archive.Entry {
                Archive.Entry(path: path, kind: kind, mode: mode, uid: 0, gid: 0, mtimeSec: 0, mtimeNsec: 0, size: kind == .file ? 4 : 0, linkTarget: link, content: .none)
            }
            try a.putEntry(entry("t", .directory))
            try a.putEntry(entry("t/link", .symlink, mode: 0o777, link: outside))          // points outside DEST
            for path in ["t/link/evil", "../escape", "t/../../escape2", "/abs", "t/suid"] {
                try a.putOpaque(entry(path, .file, mode: path == "t/suid" ? 0o6755 : 0o644), prepared: .init(Array("evil".utf8)))
            }
        }
        let dest = path("dest")
        let r = try Packer.unpack(try Archive.reader(p), to: dest)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: outside), [], "nothing written through the symlink")
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("escape")))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.deletingLastPathComponent().appendingPathComponent("escape2").path))
        // t/link/evil is written before links are made, so it lands in a real folder t/link; the
        // symlink then cannot replace that folder and is reported
        XCTAssertEqual(Set(r.failed.map(\.path)), ["../escape", "t/../../escape2", "/abs", "t/link"])
        var st = stat()
        XCTAssertEqual(lstat(dest + "/t/link/evil", &st), 0)
        XCTAssertEqual(lstat(dest + "/t/suid", &st), 0)
        XCTAssertEqual(st.st_mode & 0o7777, 0o755, "setuid and setgid dropped")
        // a symlink already in the destination is never followed either
        let dest3 = path("dest3")
        try FileManager.default.createDirectory(atPath: dest3, withIntermediateDirectories: true)
        symlink(outside, dest3 + "/t")
        let r3 = try Packer.unpack(try Archive.reader(p), to: dest3)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: outside), [])
        XCTAssertTrue(r3.failed.contains { $0.path == "t/suid" && $0.message.contains("not a folder") }, "\(r3.failed)")
        _ = try Packer.unpack(try Archive.reader(p), to: path("dest2"), keepSetID: true)
        XCTAssertEqual(lstat(path("dest2") + "/t/suid", &st), 0)
        XCTAssertEqual(st.st_mode & 0o7777, 0o6755)
    }
}
