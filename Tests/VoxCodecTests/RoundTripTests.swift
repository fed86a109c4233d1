import Foundation
import XCTest
import VoxCore
import VoxCodec

final class RoundTripTests: XCTestCase {
    func roundTrip(_ bytes: [UInt8], _ shape: Shape, _ dt: DType, preset: String, model: LSTMModel? = nil, slab: Int = 8,
                   threads: Int = 2, file: StaticString = #filePath, line: UInt = #line) throws -> [UInt8] {
        let opts = EncodeOptions(preset: try Preset.named(preset), model: model, slabThickness: slab, threads: threads)
        let stream = try bytes.withUnsafeBytes { try VXZ.encode(raw: $0, shape: shape, dtype: dt, options: opts) }
        let dec = try VXZ.Decoder(stream: stream, extraModels: model.map { [$0] } ?? [])
        let back = try dec.decodeVolume(threads: threads)
        XCTAssertEqual(back, bytes, "round trip \(preset) \(shape) \(dt)", file: file, line: line)
        return stream
    }

    func testRealCTAndMRICropsEveryPreset() throws {
        let ct = try TestData.crop("ct_lung1", x0: 200, y0: 180, z0: 20, nx: 48, ny: 40, nz: 10)
        let mr = try TestData.crop("mr_brain1", x0: 90, y0: 90, z0: 8, nx: 40, ny: 36, nz: 9)
        for p in Preset.all where p.name != "paper" {
            let s1 = try roundTrip(ct.bytes, ct.shape, ct.dtype, preset: p.name)
            let s2 = try roundTrip(mr.bytes, mr.shape, mr.dtype, preset: p.name)
            // real tissue compresses: well under the 16 bits stored
            XCTAssertLessThan(Double(s1.count * 8) / Double(ct.shape.voxels), 10.0, p.name)
            XCTAssertLessThan(Double(s2.count * 8) / Double(mr.shape.voxels), 10.0, p.name)
        }
        // the paper's H=128 voxel-serial model is slow: a small crop
        let small = try TestData.crop("ct_lung1", x0: 250, y0: 250, z0: 22, nx: 12, ny: 10, nz: 4)
        _ = try roundTrip(small.bytes, small.shape, small.dtype, preset: "paper", slab: 2)
    }

    func testClassicalBeatsRawOnRealCT() throws {
        let ct = try TestData.crop("ct_lung1", x0: 0, y0: 0, z0: 16, nx: 512, ny: 512, nz: 8)
        let s = try roundTrip(ct.bytes, ct.shape, ct.dtype, preset: "classical")
        let bpp = Double(s.count * 8) / Double(ct.shape.voxels)
        XCTAssertLessThan(bpp, 5.5, "classical bpp on real CT")
    }

    func testNoiseConstantAndExtremes() throws {
        var rng = SplitMix64(seed: 7)
        for dt in DType.allCases {
            let shape = Shape(23, 17, 6)
            let noise = (0..<shape.voxels).map { _ in Int32(rng.nextInt(in: Int64(dt.minValue)...Int64(dt.maxValue))) }
            let constant = [Int32](repeating: dt.maxValue, count: shape.voxels)
            let extremes = (0..<shape.voxels).map { i in (i * 7919 % 3 == 0) ? dt.minValue : dt.maxValue }
            for (name, v) in [("noise", noise), ("constant", constant), ("extremes", extremes)] {
                for p in ["classical", "default"] {
                    let s = try roundTrip(TestData.encode(v, dt), shape, dt, preset: p, slab: 4)
                    if name == "noise" {
                        // incompressible: slabs fall back to stored, the stream barely grows
                        XCTAssertLessThan(s.count, shape.voxels * dt.bytesPerVoxel + 400, "\(dt) \(p)")
                    }
                    if name == "constant" { XCTAssertLessThan(s.count, 400, "\(dt) \(p) constant") }
                }
            }
        }
    }

    func testOddShapes() throws {
        var rng = SplitMix64(seed: 11)
        let shapes = [Shape(1, 1, 1), Shape(7, 3, 5), Shape(1, 9, 4), Shape(9, 1, 4), Shape(33, 20, 1), Shape(513, 511, 3)]
        for shape in shapes {
            // smooth-ish data with noise, int16
            var v = [Int32]()
            for z in 0..<shape.z { for y in 0..<shape.y { for x in 0..<shape.x {
                v.append(Int32(200 + 3 * x - 2 * y + 5 * z) + Int32(rng.nextInt(in: -4...4)))
            } } }
            for p in ["classical", "classical-par", "default"] {
                _ = try roundTrip(TestData.encode(v, .int16), shape, .int16, preset: p, slab: 2)
            }
        }
    }

    func testEveryNeighbourhoodShapeAndGrouping() throws {
        let ct = try TestData.crop("ct_lung1", x0: 240, y0: 200, z0: 20, nx: 20, ny: 14, nz: 5)
        let specs = ["pyramid:13,9,5,1", "pyramid:7,5,3", "pyramid:5,3", "cube:5", "cube:3:1", "cube:7:3"]
        var seed: UInt64 = 100
        for s in specs {
            for g in Neighbourhood.Grouping.allCases {
                for left in [false, true] {
                    let nb = try Neighbourhood(spec: "\(s)/\(g.rawValue)/\(left ? "left" : "noleft")")
                    seed += 1
                    let m = try LSTMModel.seeded(hidden: 8, neighbourhood: nb, seed: seed, outputScale: 2000, name: "t")
                    _ = try roundTrip(ct.bytes, ct.shape, ct.dtype, preset: "default", model: m, slab: 3)
                }
            }
        }
    }

    func testStreamsAreDeterministicAcrossThreadsAndKernels() throws {
        let ct = try TestData.crop("ct_lung1", x0: 150, y0: 150, z0: 10, nx: 64, ny: 48, nz: 12)
        let m = try LSTMModel.seeded(hidden: 16, neighbourhood: try Neighbourhood(spec: "pyramid:7,5,3"), seed: 4242, outputScale: 3000, name: "t")
        var streams: [[UInt8]] = []
        for k in Kernel.available {
            for t in [1, 2] {
                let opts = EncodeOptions(preset: try Preset.named("default"), model: m, slabThickness: 4, threads: t, kernel: k)
                streams.append(try ct.bytes.withUnsafeBytes { try VXZ.encode(raw: $0, shape: ct.shape, dtype: ct.dtype, options: opts) })
            }
        }
        for s in streams { XCTAssertEqual(s, streams[0]) }
        for k in Kernel.available {
            for t in [1, 2] {
                let d = try VXZ.Decoder(stream: streams[0], kernel: k, extraModels: [m])
                XCTAssertEqual(try d.decodeVolume(threads: t), ct.bytes, "kernel \(k) threads \(t)")
            }
        }
    }

    func testRandomAccessSlabDecode() throws {
        let ct = try TestData.crop("ct_lung1", x0: 100, y0: 100, z0: 0, nx: 40, ny: 30, nz: 20)
        let stream = try roundTrip(ct.bytes, ct.shape, ct.dtype, preset: "default", slab: 6)
        let d = try VXZ.Decoder(stream: stream)
        XCTAssertEqual(d.slabCount, 4)
        let sliceBytes = ct.shape.sliceVoxels * 2
        for i in [3, 1] {
            let sl = d.header.slices(ofSlab: i)
            XCTAssertEqual(try d.decodeSlab(i), Array(ct.bytes[(sl.lowerBound * sliceBytes)..<(sl.upperBound * sliceBytes)]))
        }
    }

    func testLengthMismatchAndBadShapeRejected() throws {
        let bytes = [UInt8](repeating: 0, count: 100)
        let opts = EncodeOptions(preset: try Preset.named("classical"))
        XCTAssertThrowsError(try bytes.withUnsafeBytes { try VXZ.encode(raw: $0, shape: Shape(10, 10, 1), dtype: .int16, options: opts) }) {
            XCTAssertEqual(($0 as? VoxError)?.kind, .invalidArgument)
        }
        // int16 voxels outside the dtype range cannot come from bytes, but a uint8 claim of
        // 100 bytes as 10x10x1 is fine
        XCTAssertNoThrow(try bytes.withUnsafeBytes { try VXZ.encode(raw: $0, shape: Shape(10, 10, 1), dtype: .uint8, options: opts) })
    }
}
