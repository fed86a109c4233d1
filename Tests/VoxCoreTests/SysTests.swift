import Foundation
import XCTest
import VoxCore

/// The system-call chokepoint: failures become one error format with the errno kept, short
/// writes are continued, and a full device says so.
final class SysTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "voxfs-sys-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try Sys.mkdir(dir)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testAMissingFileIsNamedWithItsReasonAndErrno() throws {
        let p = dir + "/missing.raw"
        XCTAssertThrowsError(try Sys.open(p, O_RDONLY)) { e in
            let v = e as! VoxError
            XCTAssertEqual(v.kind, .io)
            XCTAssertEqual(v.errno, ENOENT)
            XCTAssertEqual(v.message, "\(p): cannot open: no such file or directory")
        }
        XCTAssertThrowsError(try FileIO.read(p)) { e in XCTAssertEqual((e as! VoxError).errno, ENOENT) }
        XCTAssertNil(try Sys.lstatIfExists(p))
        XCTAssertNil(try Sys.statIfExists(p + "/below"))
        // a name under a regular file: ENOTDIR, also "nothing there"
        try FileIO.writeAtomically(p, [1, 2, 3])
        XCTAssertNil(try Sys.lstatIfExists(p + "/below"))
        XCTAssertEqual(try Sys.lstatIfExists(p)?.st_size, 3)
    }

    func testWritesAndReadsRoundTripAndLeaveNoTemporaryFile() throws {
        let p = dir + "/data.bin"
        let bytes = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try FileIO.writeAtomically(p, bytes)
        XCTAssertEqual(try FileIO.read(p), bytes)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["data.bin"])
        // into a folder that does not exist: the error names the file, nothing is left behind
        XCTAssertThrowsError(try FileIO.writeAtomically(dir + "/no/such/x.bin", bytes)) { e in
            let v = e as! VoxError
            XCTAssertEqual(v.errno, ENOENT)
            XCTAssertTrue(v.message.hasPrefix(dir + "/no/such/x.bin: cannot write"), v.message)
        }
        XCTAssertThrowsError(try FileIO.read(dir)) { e in XCTAssertTrue((e as! VoxError).message.contains("is a folder"), "\(e)") }
    }

    func testAFullDeviceSaysSo() throws {
        guard FileManager.default.fileExists(atPath: "/dev/full") else { throw XCTSkip("no /dev/full") }
        let fd = try Sys.open("/dev/full", O_WRONLY)
        defer { Sys.closeQuietly(fd) }
        let b = [UInt8](repeating: 7, count: 100)
        XCTAssertThrowsError(try b.withUnsafeBytes { try Sys.writeAll(fd, $0, path: "/dev/full") }) { e in
            let v = e as! VoxError
            XCTAssertEqual(v.errno, ENOSPC)
            XCTAssertEqual(v.message, "/dev/full: cannot write: no space left on device")
        }
    }

    func testLinksFoldersModesAndTimes() throws {
        let f = dir + "/f", l = dir + "/l", d = dir + "/d"
        try FileIO.writeAtomically(f, [9])
        try Sys.symlink("f", at: l)
        XCTAssertEqual(try Sys.readlink(l), "f")
        XCTAssertThrowsError(try Sys.symlink("f", at: l)) { e in XCTAssertEqual((e as! VoxError).errno, EEXIST) }
        try Sys.mkdir(d)
        XCTAssertTrue(Sys.isDirectory(d))
        XCTAssertFalse(Sys.isDirectory(l))
        XCTAssertThrowsError(try Sys.mkdir(d)) { e in
            XCTAssertEqual((e as! VoxError).message, "\(d): cannot create the folder: file exists")
        }
        try Sys.chmod(f, 0o600)
        XCTAssertEqual(try Sys.lstat(f).st_mode & 0o7777, 0o600)
        // times of the link itself, not of its target
        try Sys.setTimes(l, seconds: 1_000_000_000, nanoseconds: 5)
        XCTAssertEqual(try Sys.lstat(l).st_mtim.tv_sec, 1_000_000_000)
        XCTAssertNotEqual(try Sys.lstat(f).st_mtim.tv_sec, 1_000_000_000)
        try Sys.unlinkIfExists(l)
        try Sys.unlinkIfExists(l)   // nothing there: not an error
        XCTAssertNil(try Sys.lstatIfExists(l))
        XCTAssertThrowsError(try Sys.rename(dir + "/none", to: dir + "/x")) { e in XCTAssertEqual((e as! VoxError).errno, ENOENT) }
    }
}
