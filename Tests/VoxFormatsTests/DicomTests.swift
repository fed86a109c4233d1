import Foundation
import XCTest
import VoxTestSupport
import VoxCore
import VoxFormats

/// Real DICOM files from pydicom's and pydicom-data's test sets (scripts/fetch_data.sh copies
/// them into the cache with a MANIFEST.tsv of what pydicom itself reads from each).
final class DicomTests: XCTestCase {
    static var root: String { RealData.cache + "/dicom" }

    func manifest() throws -> [[String: String]] {
        let p = try RealData.require("dicom/MANIFEST.tsv")
        let lines = try String(contentsOfFile: p, encoding: .utf8).split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        let head = lines[0]
        return lines.dropFirst().map { row in Dictionary(uniqueKeysWithValues: zip(head, row + Array(repeating: "", count: max(0, head.count - row.count)))) }
    }

    func load(_ rel: String) throws -> (VolumeSource?, String?, [UInt8]) {
        let bytes = try FileIO.read(DicomTests.root + "/" + rel)
        let (s, why) = DicomVolume.source(path: rel, bytes: bytes)
        return (s, why, bytes)
    }

    func testEveryTestFileParsesOrIsOpaqueAndRebuildsExactly() throws {
        var native = 0, opaque = 0
        for row in try manifest() {
            let rel = row["relpath"]!
            let (src, why, bytes) = try load(rel)
            if let s = src {
                native += 1
                XCTAssertNil(why)
                let part = s.parts[0]
                XCTAssertEqual(part.rebuild(voxels: s.voxels[...], dtype: s.dtype), bytes, "\(rel) rebuilt differently")
                // geometry agrees with what pydicom read
                if let r = Int(row["rows"] ?? ""), let c = Int(row["cols"] ?? "") {
                    XCTAssertEqual(s.shape.y, r, rel); XCTAssertEqual(s.shape.x, c, rel)
                }
                if let fr = Int(row["frames"] ?? ""), fr > 0 { XCTAssertEqual(s.shape.z, fr, rel) }
                let ts = row["transfer_syntax"] ?? ""
                XCTAssertTrue(ts.isEmpty || [DicomFile.implicitLE, DicomFile.explicitLE, DicomFile.explicitBE].contains(ts), "\(rel) native with TS \(ts)")
            } else {
                opaque += 1
                XCTAssertNotNil(why, rel)
                // compressed transfer syntaxes must never be taken for native pixels
            }
        }
        XCTAssertGreaterThan(native, 20)
        XCTAssertGreaterThan(opaque, 50)
        print("DICOM test files: \(native) native volumes, \(opaque) opaque")
    }

    func testKnownFiles() throws {
        for (rel, shape, dt) in [("pydicom/CT_small.dcm", Shape(128, 128, 1), DType.int16),
                                 ("pydicom/MR_small.dcm", Shape(64, 64, 1), .int16),
                                 ("pydicom/MR_small_bigendian.dcm", Shape(64, 64, 1), .int16),
                                 ("pydicom/MR_small_implicit.dcm", Shape(64, 64, 1), .int16),
                                 ("pydicom-data/emri_small.dcm", Shape(64, 64, 10), .uint16)] {
            let (s, why, _) = try load(rel)
            XCTAssertNotNil(s, "\(rel): \(why ?? "")")
            XCTAssertEqual(s?.shape, shape, rel)
            XCTAssertEqual(s?.dtype, dt, rel)
        }
        // the same image in three encodings gives the same voxels (byte order handled)
        let a = try load("pydicom/MR_small.dcm").0!.voxels
        XCTAssertEqual(try load("pydicom/MR_small_bigendian.dcm").0!.voxels, a)
        XCTAssertEqual(try load("pydicom/MR_small_implicit.dcm").0!.voxels, a)
        for rel in ["pydicom/JPEG2000.dcm", "pydicom/MR_small_RLE.dcm", "pydicom/MR_small_jpeg_ls_lossless.dcm", "pydicom/SC_rgb_small_odd.dcm"] {
            let (s, why, _) = try load(rel)
            XCTAssertNil(s, rel)
            XCTAssertNotNil(why, rel)
        }
    }

    func testDamagedFilesNeverCrash() throws {
        let bytes = try FileIO.read(DicomTests.root + "/pydicom/CT_small.dcm")
        var rng = SystemRandomNumberGenerator()
        _ = rng
        var state: UInt64 = 42
        func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state >> 11 }
        for i in 0..<400 {
            var d = bytes
            switch i % 3 {
            case 0: d = Array(d.prefix(Int(next() % UInt64(d.count))))
            case 1: for _ in 0..<4 { d[Int(next() % UInt64(d.count))] = UInt8(next() & 0xFF) }
            default:
                // a huge length in a random element header position
                let at = Int(next() % UInt64(d.count - 4))
                d[at] = 0xFF; d[at + 1] = 0xFF; d[at + 2] = 0xFF; d[at + 3] = 0xFF
            }
            let (s, _) = DicomVolume.source(path: "x", bytes: d)
            if let s {
                // whatever was recognised rebuilds to exactly the damaged input
                XCTAssertEqual(s.parts[0].rebuild(voxels: s.voxels[...], dtype: s.dtype), d)
            }
        }
        for g in [[], Array("not a dicom file at all, just text".utf8), [UInt8](repeating: 0, count: 200)] {
            XCTAssertNil(DicomVolume.source(path: "g", bytes: g).0)
        }
    }
}
