import Foundation
import XCTest
import VoxTestSupport
import VoxCore
import VoxFormats

/// MetaImage and NRRD files written by hand around real voxels (a crop of the lung CT), and
/// the real gzip-encoded NRRDs of the pyradiomics sdist (volumes since issue 15: rebuilt by recompressing with zlib).
final class TextHeaderTests: XCTestCase {
    func crop(big: Bool) throws -> [UInt8] {
        let p = try RealData.require("volumes/ct_lung1.raw")
        let all = try FileIO.read(p)
        var out: [UInt8] = []
        for z in 22..<26 { for y in 210..<250 { let o = ((z * 512 + y) * 512 + 200) * 2
            for x in 0..<48 { let a = all[o + 2 * x], b = all[o + 2 * x + 1]; out += big ? [b, a] : [a, b] }
        } }
        return out
    }

    func testMetaImageAndNrrdRebuildExactly() throws {
        for big in [false, true] {
            let vox = try crop(big: big), le = try crop(big: false)
            let mha = Array("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = \(big ? "True" : "False")\nCompressedData = False\nDimSize = 48 40 4\nElementSpacing = 0.57 0.57 5\nElementType = MET_SHORT\nElementDataFile = LOCAL\n".utf8) + vox
            let nrrd = Array("NRRD0004\n# written by hand\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 48 40 4\nendian: \(big ? "big" : "little")\nencoding: raw\nsource:=real CT crop\n\n".utf8) + vox + [0x0A]
            for (name, file, fn) in [("mha", mha, TextHeaderFormats.metaImage), ("nrrd", nrrd, TextHeaderFormats.nrrd)] {
                let (s, why) = fn("x." + name, file)
                XCTAssertNotNil(s, "\(name): \(why ?? "")")
                guard let s else { continue }
                XCTAssertEqual(s.shape, Shape(48, 40, 4), name)
                XCTAssertEqual(s.dtype, .int16)
                XCTAssertEqual(s.voxels, le, "\(name) big \(big)")
                XCTAssertEqual(s.parts[0].rebuild(voxels: s.voxels[...], dtype: s.dtype), file, name)
            }
        }
    }

    func testCompressedAndBrokenHeadersAreOpaque() throws {
        let vox = try crop(big: false)
        let cases: [(String, [UInt8], (String, [UInt8]) -> (VolumeSource?, String?))] = [
            ("gzip nrrd", Array("NRRD0004\ntype: short\ndimension: 3\nsizes: 48 40 4\nencoding: gzip\n\n".utf8) + vox, TextHeaderFormats.nrrd),
            ("short data", Array("NRRD0004\ntype: short\ndimension: 3\nsizes: 48 40 5\nencoding: raw\n\n".utf8) + vox, TextHeaderFormats.nrrd),
            ("float", Array("NRRD0004\ntype: float\ndimension: 3\nsizes: 48 40 2\nencoding: raw\n\n".utf8) + vox, TextHeaderFormats.nrrd),
            ("no blank line", Array("NRRD0004\ntype: short\ndimension: 3\nsizes: 48 40 4\nencoding: raw\n".utf8), TextHeaderFormats.nrrd),
            ("compressed mha", Array("NDims = 3\nCompressedData = True\nDimSize = 48 40 4\nElementType = MET_SHORT\nElementDataFile = LOCAL\n".utf8) + vox, TextHeaderFormats.metaImage),
            ("detached mha", Array("NDims = 3\nDimSize = 48 40 4\nElementType = MET_SHORT\nElementDataFile = x.raw\n".utf8), TextHeaderFormats.metaImage),
            ("absurd dims", Array("NDims = 3\nDimSize = 99999999 40 4\nElementType = MET_SHORT\nElementDataFile = LOCAL\n".utf8) + vox, TextHeaderFormats.metaImage),
            ("binary junk", vox, TextHeaderFormats.metaImage),
        ]
        for (name, bytes, fn) in cases {
            let (s, why) = fn("x", bytes)
            XCTAssertNil(s, name)
            XCTAssertNotNil(why, name)
        }
        // the real pyradiomics NRRDs are gzip-encoded (ITK, zlib level 6): since issue 15 they
        // are volumes whose file is rebuilt by recompressing (DeflateTests has the details)
        let src = try RealData.require("src/pyradiomics-3.0.1/data/lung1_image.nrrd")
        let bytes = try FileIO.read(src)
        let (s, why) = TextHeaderFormats.nrrd(path: src, bytes: bytes)
        XCTAssertNil(why)
        XCTAssertEqual(s?.shape, Shape(512, 512, 48))
        XCTAssertTrue((try s.map { try $0.parts[0].rebuildFile(voxels: $0.voxels[...], dtype: $0.dtype) }) == bytes, "rebuilds exactly")
    }
}
