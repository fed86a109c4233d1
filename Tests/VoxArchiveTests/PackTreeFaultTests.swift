import Foundation
import XCTest
import VoxArchive
import VoxCodec
import VoxCore
import VoxIngest
import VoxTestSupport

/// Packing a source tree that misbehaves (issue 13, item 3), through a `SourceTree` double over
/// real files: a file that cannot be read, a folder that cannot be listed, a file that keeps
/// changing while it is read, one that vanishes. Each is a warning naming the path and why; the
/// rest of the tree packs and comes back byte for byte.
final class PackTreeFaultTests: ScratchTestCase {
    /// The local tree with faults at chosen paths.
    final class FaultyTree: SourceTree, @unchecked Sendable {
        let real = LocalTree()
        var unreadable: Set<String> = [], unlistable: Set<String> = [], changing: Set<String> = [], vanishing: Set<String> = []
        private var stats: [String: Int] = [:]
        private var readOnce: Set<String> = []
        private let lock = NSLock()

        func lstat(_ path: String) throws -> stat {
            var st = try real.lstat(path)
            lock.lock(); defer { lock.unlock() }
            if changing.contains(path) {           // a writer touches it between every two looks
                stats[path, default: 0] += 1
                st.st_mtim.tv_nsec = (st.st_mtim.tv_nsec + stats[path]!) % 1_000_000_000
            }
            if vanishing.contains(path), readOnce.contains(path) { throw Sys.error(path, "stat", ENOENT) }
            return st
        }
        func readlink(_ path: String) throws -> String { try real.readlink(path) }
        func list(_ path: String) throws -> [String] {
            if unlistable.contains(path) { throw Sys.error(path, "list the folder", EACCES) }
            return try real.list(path)
        }
        func read(_ path: String) throws -> [UInt8] {
            if unreadable.contains(path) { throw Sys.error(path, "open", EACCES) }
            lock.lock(); readOnce.insert(path); lock.unlock()
            return try real.read(path)
        }
    }

    func testAMisbehavingTreeIsWarnedAboutAndTheRestPacksExactly() throws {
        let cache = RealData.cache
        for p in ["series/signed", "volumes/ct_lung1.raw"] { _ = try RealData.require(p) }
        let src = dir.appendingPathComponent("study").path
        let fm = FileManager.default
        try fm.createDirectory(atPath: src + "/locked", withIntermediateDirectories: true)
        try fm.copyItem(atPath: cache + "/series/signed", toPath: src + "/ct")
        let all = try FileIO.read(cache + "/volumes/ct_lung1.raw")
        try FileIO.writeAtomically(src + "/crop.raw", Array(all[(512 * 512 * 2 * 20)..<(512 * 512 * 2 * 24)]))
        try FileIO.writeAtomically(src + "/crop.json", Array("{\"shape\":[512,512,4],\"dtype\":\"int16\"}".utf8))
        // a second crop whose sidecar is a symlink to the first one's (followed, as compress does)
        try FileIO.writeAtomically(src + "/crop2.raw", Array(all[(512 * 512 * 2 * 30)..<(512 * 512 * 2 * 34)]))
        try fm.createSymbolicLink(atPath: src + "/crop2.json", withDestinationPath: "crop.json")
        for n in ["notes.txt", "growing.log", "gone.txt", "locked/inside.txt"] { try FileIO.writeAtomically(src + "/" + n, Array("real data, see the test: \(n)\n".utf8)) }
        let slices = try fm.contentsOfDirectory(atPath: src + "/ct").sorted()
        XCTAssertGreaterThan(slices.count, 4)
        let tree = FaultyTree()
        tree.unreadable = [src + "/ct/" + slices[2]]
        tree.unlistable = [src + "/locked"]
        tree.changing = [src + "/growing.log"]
        tree.vanishing = [src + "/gone.txt"]

        let path = self.path("t.voxfs")
        let a = try Archive(path: path, create: true)
        var packer = Packer(preset: try Preset.named("classical-par"), threads: 1)
        packer.tree = tree
        let sum = try packer.pack([src], into: a, archivePath: path)
        XCTAssertEqual(sum.failed, 4, sum.warnings.joined(separator: "\n"))
        func warned(_ fragment: String, _ why: String) {
            XCTAssertTrue(sum.warnings.contains { $0.contains(fragment) && $0.contains(why) }, "no warning for \(fragment) (\(why)): \(sum.warnings)")
        }
        warned(slices[2], "cannot open: permission denied")
        warned("/locked", "cannot list the folder")
        warned("growing.log", "kept changing")
        warned("gone.txt", "vanished")
        // everything else is in the archive and comes back byte for byte
        let out = self.path("out")
        let r = try Packer.unpack(a, to: out)
        XCTAssertEqual(r.failed.map(\.message), [])
        var expected = ["study/notes.txt", "study/crop.raw", "study/crop.json", "study/crop2.raw"]
        expected += slices.enumerated().filter { $0.offset != 2 }.map { "study/ct/" + $0.element }
        for p in expected { XCTAssertEqual(try FileIO.read(out + "/" + p), try FileIO.read(dir.path + "/" + p), p) }
        for p in ["study/ct/" + slices[2], "study/growing.log", "study/gone.txt", "study/locked/inside.txt"] {
            XCTAssertFalse(fm.fileExists(atPath: out + "/" + p), "\(p) should not have been packed")
        }
        XCTAssertGreaterThanOrEqual(sum.volumes, 3, "the series (less one slice) and both raw crops are still coded as volumes")
        for p in ["study/crop.raw", "study/crop2.raw", "study/ct/" + slices[0]] {
            guard case .volume? = try a.entry(p)?.content else { XCTFail("\(p) is not coded as a volume"); continue }
        }
        XCTAssertEqual(try fm.destinationOfSymbolicLink(atPath: out + "/study/crop2.json"), "crop.json")
        // a second pack with the faults gone adds exactly what was missing
        tree.unreadable = []; tree.unlistable = []; tree.changing = []; tree.vanishing = []
        let again = try packer.pack([src], into: a, archivePath: path)
        XCTAssertEqual(again.failed, 0, again.warnings.joined(separator: "\n"))
        XCTAssertTrue(try Archive(path: path, create: false).entries().contains { $0.path == "study/locked/inside.txt" })
    }
}
