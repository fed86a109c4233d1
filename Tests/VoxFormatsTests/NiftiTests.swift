import Foundation
import XCTest
import VoxTestSupport
import VoxCore
import VoxFormats

/// NIfTI files written by hand (header fields as the NIfTI-1/-2 standards lay them out) around
/// real voxels: a crop of the pyradiomics lung CT.
final class NiftiTests: XCTestCase {
    func realCrop() throws -> (values: [Int16], shape: Shape) {
        let p = try RealData.require("volumes/ct_lung1.raw")
        let all = try FileIO.read(p)
        var v: [Int16] = []
        for z in 20..<26 { for y in 200..<240 { for x in 180..<236 {
            let o = ((z * 512 + y) * 512 + x) * 2
            v.append(Int16(bitPattern: UInt16(all[o]) | UInt16(all[o + 1]) << 8))
        } } }
        return (v, Shape(56, 40, 6))
    }

    func le<T: FixedWidthInteger>(_ v: T, big: Bool) -> [UInt8] {
        let x = big ? v.bigEndian : v.littleEndian
        return withUnsafeBytes(of: x) { Array($0) }
    }

    func nifti1(_ vals: [Int16], _ s: Shape, big: Bool, extensionBytes: [UInt8], trailer: [UInt8]) -> [UInt8] {
        TestFiles.nifti1(vals, x: s.x, y: s.y, z: s.z, big: big, extensionBytes: extensionBytes, trailer: trailer)
    }

    func testNifti1LittleBigEndianAndExtensionsRebuildExactly() throws {
        let (vals, shape) = try realCrop()
        var ext: [UInt8] = le(Int32(32), big: false) + le(Int32(6), big: false) + Array("{\"comment\":\"real CT\"}".utf8)
        while ext.count < 32 { ext.append(0) }
        for big in [false, true] {
            for (e, t) in [([UInt8](), [UInt8]()), (ext, Array("trailing".utf8))] {
                let file = nifti1(vals, shape, big: big, extensionBytes: e, trailer: t)
                let (s, why) = Nifti.source(path: "a.nii", bytes: file)
                XCTAssertNotNil(s, why ?? "")
                guard let s else { continue }
                XCTAssertEqual(s.shape, shape)
                XCTAssertEqual(s.dtype, .int16)
                XCTAssertEqual(s.parts[0].rebuild(voxels: s.voxels[...], dtype: s.dtype), file, "big \(big)")
                // the volume holds the real voxels, little-endian, whatever the file's byte order
                var expect: [UInt8] = []
                for v in vals { expect += le(v, big: false) }
                XCTAssertEqual(s.voxels, expect)
            }
        }
    }

    func testNifti2RebuildsExactly() throws {
        let (vals, shape) = try realCrop()
        var h = [UInt8](repeating: 0, count: 540)
        func put(_ o: Int, _ b: [UInt8]) { for (i, x) in b.enumerated() { h[o + i] = x } }
        put(0, le(Int32(540), big: false))
        put(4, [0x6E, 0x2B, 0x32, 0x00, 0x0D, 0x0A, 0x1A, 0x0A])
        put(12, le(Int16(4), big: false)); put(14, le(Int16(16), big: false))
        let dims: [Int64] = [3, Int64(shape.x), Int64(shape.y), Int64(shape.z), 1, 1, 1, 1]
        for (k, d) in dims.enumerated() { put(16 + 8 * k, le(d, big: false)) }
        put(168, le(Int64(544), big: false))
        var file = h + [0, 0, 0, 0]
        for v in vals { file += le(v, big: false) }
        let (s, why) = Nifti.source(path: "b.nii", bytes: file)
        XCTAssertNotNil(s, why ?? "")
        XCTAssertEqual(s?.shape, shape)
        XCTAssertEqual(s.map { $0.parts[0].rebuild(voxels: $0.voxels[...], dtype: $0.dtype) }, file)
    }

    func testBadHeadersAreOpaqueNotCrashes() throws {
        let (vals, shape) = try realCrop()
        let good = nifti1(vals, shape, big: false, extensionBytes: [], trailer: [])
        // float data, absurd dims, vox_offset past the end, truncation, wrong magic
        var cases: [[UInt8]] = []
        var f = good; f[70] = 16; cases.append(f)
        f = good; f[42] = 0xFF; f[43] = 0x7F; cases.append(f)
        f = good; f[40] = 9; cases.append(f)
        f = good; let big = Float(1e9).bitPattern; for k in 0..<4 { f[108 + k] = UInt8((big >> (8 * UInt32(k))) & 0xFF) }; cases.append(f)
        f = good; let nan = Float.nan.bitPattern; for k in 0..<4 { f[108 + k] = UInt8((nan >> (8 * UInt32(k))) & 0xFF) }; cases.append(f)
        cases.append(Array(good.prefix(good.count - 7)))
        f = good; f[345] = 0x78; cases.append(f)
        cases.append(Array(good.prefix(100)))
        for (i, c) in cases.enumerated() {
            let (s, why) = Nifti.source(path: "x.nii", bytes: c)
            XCTAssertNil(s, "case \(i)")
            XCTAssertNotNil(why, "case \(i)")
        }
    }

    func testShortRandomFuzz() throws {
        let (vals, shape) = try realCrop()
        let good = nifti1(vals, shape, big: false, extensionBytes: [], trailer: [])
        var state: UInt64 = 7
        func next() -> Int { state = state &* 6364136223846793005 &+ 1442695040888963407; return Int(state >> 33) }
        for i in 0..<500 {
            var f = good
            for _ in 0..<(1 + next() % 6) {
                let at = next() % 352
                f[at] = UInt8(next() & 0xFF)
            }
            if i % 5 == 0 { f = Array(f.prefix(next() % f.count)) }
            let r = Formats.recognise(path: "f.nii", bytes: f)
            if let s = r.source { XCTAssertEqual(s.parts[0].rebuild(voxels: s.voxels[...], dtype: s.dtype), f, "case \(i)") }
            else { XCTAssertNotNil(r.reason) }
        }
    }

    func testRawWithSidecar() throws {
        let (vals, shape) = try realCrop()
        var bytes: [UInt8] = []
        for v in vals { bytes += le(v, big: false) }
        let sc = Sidecar(shape: [shape.x, shape.y, shape.z], dtype: "int16")
        let r = Formats.raw(path: "a.raw", bytes: bytes, sidecar: sc)
        XCTAssertEqual(r.kind, .raw)
        XCTAssertEqual(r.source?.shape, shape)
        XCTAssertEqual(r.source.map { $0.parts[0].rebuild(voxels: $0.voxels[...], dtype: $0.dtype) }, bytes)
        XCTAssertEqual(Formats.raw(path: "a.raw", bytes: Array(bytes.dropLast(2)), sidecar: sc).kind, .opaque)
    }
}
