import Foundation
import XCTest
import VoxTestSupport
import VoxCore
import VoxFormats

/// DICOM series written by scripts/make_test_series.py from the real lung CT: real pixels,
/// headers written by the script (shuffled file names, unsigned with a rescale intercept,
/// signed, implicit VR, a missing slice).
final class SeriesTests: XCTestCase {
    static var cache: String { RealData.cache }

    func files(_ name: String) throws -> [(path: String, bytes: [UInt8])] {
        let dir = try RealData.require("series/" + name)
        let names = try FileManager.default.contentsOfDirectory(atPath: dir)
        return try names.filter { $0.hasSuffix(".dcm") }.sorted().map { (dir + "/" + $0, try FileIO.read(dir + "/" + $0)) }
    }

    /// Slices z of the real volume as little-endian int16 bytes.
    func realSlices(_ zs: [Int], offset: Int32 = 0) throws -> [UInt8] {
        let all = try FileIO.read(SeriesTests.cache + "/volumes/ct_lung1.raw")
        var out: [UInt8] = []
        for z in zs {
            let s = all[(z * 512 * 512 * 2)..<((z + 1) * 512 * 512 * 2)]
            if offset == 0 { out += s; continue }
            var i = s.startIndex
            while i < s.endIndex {
                let v = Int32(Int16(bitPattern: UInt16(s[i]) | UInt16(s[i + 1]) << 8)) + offset
                let u = UInt16(max(0, min(4095, v)))
                out.append(UInt8(u & 0xFF)); out.append(UInt8(u >> 8))
                i += 2
            }
        }
        return out
    }

    func checkRebuild(_ r: DicomSeries.Result, _ input: [(path: String, bytes: [UInt8])]) {
        let originals = Dictionary(uniqueKeysWithValues: input.map { ($0.path, $0.bytes) })
        for v in r.volumes {
            let sliceBytes = v.shape.sliceVoxels * v.dtype.bytesPerVoxel
            for p in v.parts {
                let vox = v.voxels[(p.firstSlice * sliceBytes)..<((p.firstSlice + p.slices) * sliceBytes)]
                XCTAssertEqual(p.rebuild(voxels: vox, dtype: v.dtype), originals[p.path], p.path)
            }
        }
    }

    func testSeriesGroupOrderAndRebuild() throws {
        for (name, dt, offset) in [("signed", DType.int16, Int32(0)), ("unsigned", .uint16, Int32(1024))] {
            let fs = try files(name)
            let r = DicomSeries.group(fs)
            XCTAssertEqual(r.volumes.count, 1, name)
            XCTAssertTrue(r.opaque.isEmpty, "\(r.opaque)")
            let v = r.volumes[0]
            XCTAssertEqual(v.shape, Shape(512, 512, 16), name)
            XCTAssertEqual(v.dtype, dt)
            // slices in anatomical order although the file names are shuffled
            XCTAssertEqual(v.voxels, try realSlices(Array(10..<26), offset: offset), name)
            checkRebuild(r, fs)
        }
        let imp = try files("implicit")
        let ri = DicomSeries.group(imp)
        XCTAssertEqual(ri.volumes.map(\.shape), [Shape(512, 512, 8)])
        XCTAssertEqual(ri.volumes[0].voxels, try realSlices(Array(30..<38)))
        checkRebuild(ri, imp)
    }

    func testGapSplitsAndMixturesSeparate() throws {
        let gap = try files("gap")
        let r = DicomSeries.group(gap)
        XCTAssertEqual(r.volumes.map(\.shape.z), [8, 7], "slice 18 missing: 10-17 and 19-25")
        XCTAssertEqual(r.volumes[0].voxels, try realSlices(Array(10..<18)))
        XCTAssertEqual(r.volumes[1].voxels, try realSlices(Array(19..<26)))
        checkRebuild(r, gap)
        // two series and a stray non-DICOM file in one folder: two volumes and one opaque file
        let mixed = try files("signed") + files("implicit") + [("notes.txt", Array("not dicom".utf8))]
        let m = DicomSeries.group(mixed.shuffled())
        XCTAssertEqual(Set(m.volumes.map(\.shape.z)), [16, 8])
        XCTAssertEqual(m.opaque.map(\.path), ["notes.txt"])
        checkRebuild(m, mixed)
        // a duplicated slice starts a new run instead of failing
        let dup = try files("implicit")
        let d = DicomSeries.group(dup + [(dup[0].path + "-copy", dup[0].bytes)])
        XCTAssertEqual(d.volumes.reduce(0) { $0 + $1.shape.z }, 9)
        XCTAssertGreaterThan(d.volumes.count, 1)
    }
}
