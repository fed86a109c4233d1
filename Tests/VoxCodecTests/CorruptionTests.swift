import Foundation
import XCTest
import VoxCore
import VoxCodec

final class CorruptionTests: XCTestCase {
    func sampleStream(preset: String = "default", model: LSTMModel? = nil) throws -> (stream: [UInt8], raw: [UInt8]) {
        let ct = try TestData.crop("ct_lung1", x0: 220, y0: 220, z0: 24, nx: 24, ny: 20, nz: 6)
        let opts = EncodeOptions(preset: try Preset.named(preset), model: model, slabThickness: 2)
        return (try ct.bytes.withUnsafeBytes { try VXZ.encode(raw: $0, shape: ct.shape, dtype: ct.dtype, options: opts) }, ct.bytes)
    }

    /// Decodes fully; returns the bytes or the error.
    func decode(_ s: [UInt8]) -> Result<[UInt8], Error> {
        Result { try VXZ.Decoder(stream: s).decodeVolume(threads: 2) }
    }

    func testEveryTruncationFailsCleanly() throws {
        let (s, _) = try sampleStream()
        for n in stride(from: 0, to: s.count, by: max(1, s.count / 300)) {
            switch decode(Array(s.prefix(n))) {
            case .success: XCTFail("truncated stream of \(n)/\(s.count) bytes decoded")
            case .failure(let e): XCTAssertNotNil(e as? VoxError, "\(e)")
            }
        }
    }

    func testBitFlipsNeverGiveWrongBytes() throws {
        for preset in ["classical", "default"] {
            let (s, raw) = try sampleStream(preset: preset)
            var rng = SplitMix64(seed: 31)
            for _ in 0..<300 {
                var d = s
                let pos = Int(rng.nextInt(in: 0...Int64(s.count - 1)))
                d[pos] ^= UInt8(1 << rng.nextInt(in: 0...7))
                switch decode(d) {
                case .success(let out): XCTAssertEqual(out, raw, "flip at \(pos) decoded to different bytes")
                case .failure(let e): XCTAssertNotNil(e as? VoxError, "\(e)")
                }
            }
        }
    }

    func testDamagedSlabIsNamed() throws {
        let (s, _) = try sampleStream()
        let h = try StreamHeader(parsing: s, fileSize: s.count)
        var d = s
        let e = h.slabs[1]
        for i in 0..<Int(e.length) { d[Int(e.offset) + i] ^= 0x5A }
        let dec = try VXZ.Decoder(stream: d)
        XCTAssertNoThrow(try dec.decodeSlab(0))
        XCTAssertNoThrow(try dec.decodeSlab(2))
        XCTAssertThrowsError(try dec.decodeSlab(1)) { err in
            let v = err as? VoxError
            XCTAssertEqual(v?.kind, .corrupt)
            XCTAssertTrue(v?.message.contains("slab 1") ?? false, v?.message ?? "")
        }
    }

    func testMutationFuzzSmall() throws {
        // random multi-byte mutations, insertions and deletions: never a crash or a hang,
        // and success only with the exact original bytes
        let (s, raw) = try sampleStream()
        var rng = SplitMix64(seed: 2024)
        for _ in 0..<200 {
            var d = s
            switch rng.nextInt(in: 0...2) {
            case 0: for _ in 0..<Int(rng.nextInt(in: 1...8)) { d[Int(rng.nextInt(in: 0...Int64(d.count - 1)))] = UInt8(rng.nextInt(in: 0...255)) }
            case 1: d.insert(UInt8(rng.nextInt(in: 0...255)), at: Int(rng.nextInt(in: 0...Int64(d.count))))
            default: d.remove(at: Int(rng.nextInt(in: 0...Int64(d.count - 1))))
            }
            if case .success(let out) = decode(d) { XCTAssertEqual(out, raw) }
        }
    }

    /// A hostile header with a valid CRC: offsets that overflow, absurd shapes, huge slabs.
    func testCraftedHeadersWithValidCRC() throws {
        let (s, _) = try sampleStream()
        let h = try StreamHeader(parsing: s, fileSize: s.count)
        func reencode(_ edit: (inout StreamHeader) -> Void) -> [UInt8] {
            var hh = h
            edit(&hh)
            return hh.serialized() + Array(s[h.headerLength...])
        }
        let cases: [[UInt8]] = [
            reencode { $0.slabs[0].offset = UInt64.max - 16 },
            reencode { $0.slabs[1].length = UInt32.max },
            reencode { $0.slabs[0].length = 0 },
            reencode { $0.shape = Shape(1 << 20, 1 << 16, 6) },
            reencode { $0.slabThickness = 0 },
            reencode { $0.pad = 40000 },
            reencode { $0.neighbourhood = "pyramid:13,9,5,1/voxel/left" },
            reencode { $0.left = !$0.left },
        ]
        for (i, c) in cases.enumerated() {
            switch decode(c) {
            case .success: XCTFail("crafted header \(i) decoded")
            case .failure(let e): XCTAssertNotNil(e as? VoxError, "case \(i): \(e)")
            }
        }
    }

    func testGarbageAndForeignFiles() {
        for g in [[], Array("hello world".utf8), [UInt8](repeating: 0, count: 4096), Array("\u{89}VXZ\r\n\u{1A}\n".utf8)] {
            XCTAssertThrowsError(try VXZ.Decoder(stream: g)) { XCTAssertNotNil($0 as? VoxError) }
        }
    }

    func testEmbeddedModelNeedsNoRegistryAndIsChecked() throws {
        let m = try LSTMModel.seeded(hidden: 8, neighbourhood: try Neighbourhood(spec: "pyramid:5,3"), seed: 0xE3BE_DDED, outputScale: 500, name: "embedded")
        let ct = try TestData.crop("ct_lung1", x0: 200, y0: 200, z0: 20, nx: 40, ny: 30, nz: 6)
        let opts = EncodeOptions(preset: try Preset.named("default"), model: m, slabThickness: 3, embedModel: true)
        let s = try ct.bytes.withUnsafeBytes { try VXZ.encode(raw: $0, shape: ct.shape, dtype: ct.dtype, options: opts) }
        let h = try StreamHeader(parsing: s, fileSize: s.count)
        XCTAssertEqual(h.embeddedModel, m.serialized())
        XCTAssertEqual(h.modelHash, m.hash)
        // the model is registered nowhere: the stream alone decodes
        XCTAssertEqual(try VXZ.Decoder(stream: s).decodeVolume(), ct.bytes)
        // another model under the same hash (header CRC recomputed) is rejected
        let other = try LSTMModel.seeded(hidden: 8, neighbourhood: try Neighbourhood(spec: "pyramid:5,3"), seed: 1234, outputScale: 500, name: "other")
        var hh = h
        hh.embeddedModel = other.serialized()
        var offsetFix = hh
        let delta = Int64(hh.serialized().count) - Int64(h.headerLength)
        for i in 0..<offsetFix.slabs.count { offsetFix.slabs[i].offset = UInt64(Int64(offsetFix.slabs[i].offset) + delta) }
        let forged = offsetFix.serialized() + Array(s[h.headerLength...])
        XCTAssertThrowsError(try VXZ.Decoder(stream: forged)) { XCTAssertEqual(($0 as? VoxError)?.kind, .corrupt) }

        // a (consistent) embedded model too expensive to decode is refused up front
        let costly = try LSTMModel.seeded(hidden: 256, neighbourhood: try Neighbourhood(spec: "pyramid:13,9,5,1/voxel"), seed: 5, name: "costly")
        var hc = h
        hc.embeddedModel = costly.serialized()
        hc.modelHash = costly.hash
        hc.neighbourhood = costly.neighbourhood.spec
        let d2 = Int64(hc.serialized().count) - Int64(h.headerLength)
        for i in 0..<hc.slabs.count { hc.slabs[i].offset = UInt64(Int64(hc.slabs[i].offset) + d2) }
        let expensive = hc.serialized() + Array(s[h.headerLength...])
        XCTAssertThrowsError(try VXZ.Decoder(stream: expensive)) { err in
            XCTAssertEqual((err as? VoxError)?.kind, .badFormat)
            XCTAssertTrue((err as? VoxError)?.message.contains("too expensive") ?? false, "\(err)")
        }
    }

    func testMissingModelIsNamed() throws {
        let m = try LSTMModel.seeded(hidden: 8, neighbourhood: try Neighbourhood(spec: "pyramid:5,3"), seed: 0xDEAD_BEEF, name: "private")
        let (s, raw) = try sampleStream(model: m)
        XCTAssertThrowsError(try VXZ.Decoder(stream: s)) { err in
            XCTAssertEqual((err as? VoxError)?.kind, .missingModel)
            XCTAssertTrue((err as? VoxError)?.message.contains(m.hashHex) ?? false)
        }
        XCTAssertEqual(try VXZ.Decoder(stream: s, extraModels: [m]).decodeVolume(), raw)
    }
}
