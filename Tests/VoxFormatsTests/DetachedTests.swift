import Foundation
import XCTest
import VoxTestSupport
import VoxCore
import VoxFormats

/// Header/data pairs written by hand around real voxels (a crop of the lung CT).
final class DetachedTests: XCTestCase {
    func testPairsRebuildExactly() throws {
        let p = try RealData.require("volumes/ct_lung1.raw")
        let all = try FileIO.read(p)
        let vox = Array(all[(20 * 512 * 512 * 2)..<(22 * 512 * 512 * 2)]) // two real slices
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pairs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // NIfTI-1 pair
        var h = [UInt8](repeating: 0, count: 348)
        func put(_ o: Int, _ b: [UInt8]) { for (i, x) in b.enumerated() { h[o + i] = x } }
        func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        put(0, le(Int32(348)))
        for (k, d) in [Int16(3), 512, 512, 2, 1, 1, 1, 1].enumerated() { put(40 + 2 * k, le(d)) }
        put(70, le(Int16(4))); put(72, le(Int16(16))); put(344, [0x6E, 0x69, 0x31, 0x00])
        let cases: [(String, [UInt8], String, [UInt8])] = [
            ("ct.hdr", h, "ct.img", vox),
            ("ct.mhd", Array("ObjectType = Image\nNDims = 3\nDimSize = 512 512 2\nElementType = MET_SHORT\nElementDataFile = ct.raw\n".utf8), "ct.raw", vox),
            ("ct.nhdr", Array("NRRD0004\ntype: short\ndimension: 3\nsizes: 512 512 2\nendian: little\nencoding: raw\nbyte skip: 16\ndata file: ct.data\n\n".utf8), "ct.data", [UInt8](repeating: 7, count: 16) + vox + [1, 2, 3]),
        ]
        for (hname, hbytes, dname, dbytes) in cases {
            try FileIO.writeAtomically(dir.appendingPathComponent(hname).path, hbytes)
            try FileIO.writeAtomically(dir.appendingPathComponent(dname).path, dbytes)
            let (pair, why) = Detached.describe(headerPath: dir.appendingPathComponent(hname).path, bytes: hbytes)
            XCTAssertNotNil(pair, "\(hname): \(why ?? "")")
            guard let pair else { continue }
            XCTAssertEqual(pair.dataPath, dir.appendingPathComponent(dname).path)
            let (s, why2) = Detached.source(pair, dataBytes: try FileIO.read(pair.dataPath))
            XCTAssertNotNil(s, why2 ?? "")
            XCTAssertEqual(s?.shape, Shape(512, 512, 2))
            XCTAssertEqual(s?.voxels, vox, hname)
            XCTAssertEqual(s.map { $0.parts[0].rebuild(voxels: $0.voxels[...], dtype: $0.dtype) }, dbytes, hname)
        }
        // a data file shorter than the header says is not a volume
        let short = Detached.describe(headerPath: dir.appendingPathComponent("ct.hdr").path, bytes: h).0!
        XCTAssertNil(Detached.source(short, dataBytes: Array(vox.prefix(1000))).0)
    }
}
