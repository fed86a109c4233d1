import Foundation
import XCTest
import VoxCodec
import VoxCore
import VoxTestSupport

/// Format v2 (docs/format.md, "Slab coding, version 2"): a stream and a checksum per slice, the
/// coder state handed on after state_rows rows, a wavefront over slices, and the per-slice
/// classical fallback.
final class V2StreamTests: XCTestCase {
    func encode(_ raw: [UInt8], _ shape: Shape, _ dt: DType, preset: String, slab: Int = 8, stateRows: Int? = nil,
                version: UInt16 = StreamHeader.version, fallback: Bool = true) throws -> [UInt8] {
        var o = EncodeOptions(preset: try Preset.named(preset), slabThickness: slab, threads: 2)
        o.formatVersion = version
        o.stateRows = stateRows
        o.classicalFallback = fallback
        return try raw.withUnsafeBytes { try VXZ.encode(raw: $0, shape: shape, dtype: dt, options: o) }
    }

    /// The same voxels for every thread count and kernel (the wavefront only reorders work).
    func testWavefrontDecodeIsIndependentOfThreadsKernelsAndStateRows() throws {
        let (raw, shape, dt) = try TestData.crop("ct_lung1", x0: 150, y0: 150, z0: 18, nx: 96, ny: 64, nz: 12)
        for preset in ["default", "fast", "classical"] {
            for (rows, version) in [(1, 2), (3, 2), (32, 2), (1000, 2), (1, 3), (3, 3), (32, 3), (1000, 3)] as [(Int, UInt16)] {
                let s = try encode(raw, shape, dt, preset: preset, slab: 6, stateRows: rows, version: version)
                let h = try StreamHeader(parsing: s, fileSize: s.count)
                XCTAssertEqual(h.formatVersion, version)
                XCTAssertEqual(h.stateRows, rows)
                XCTAssertEqual(h.slabs.map(\.slices.count), [6, 6])
                for k in Kernel.available {
                    let d = try VXZ.Decoder(stream: s, kernel: k)
                    for threads in [1, 2, 3, 6] {
                        let got = try (0..<d.slabCount).flatMap { try d.decodeSlab($0, threads: threads) }
                        XCTAssertTrue(got == raw, "\(preset) v\(version) rows \(rows) kernel \(k) threads \(threads)")
                    }
                }
            }
        }
    }

    /// The coder is built twice (generic and AVX2, chosen with the LSTM kernel: `scalar` runs the
    /// generic one): both write the same bytes, on a real CT crop and on one with spikes (which
    /// send voxels from the row-batched split path to the monolithic one), for every preset kind.
    func testEncoderBuildsWriteIdenticalBytes() throws {
        let (raw0, shape, dt) = try TestData.crop("ct_lung1", x0: 100, y0: 140, z0: 18, nx: 150, ny: 40, nz: 6)
        var spiky = raw0
        var rng = SplitMix64(seed: 11)
        for i in stride(from: 0, to: spiky.count, by: 2) where rng.nextInt(in: 0...50) == 0 {
            let v = Int16(truncatingIfNeeded: rng.nextInt(in: -1024...3071))
            spiky[i] = UInt8(truncatingIfNeeded: v); spiky[i + 1] = UInt8(truncatingIfNeeded: v >> 8)
        }
        XCTAssertGreaterThan(Kernel.available.count, 1, "this CPU runs only the generic coder: nothing to compare")
        for raw in [raw0, spiky] {
            for preset in ["default", "fast", "classical"] {
                var outs: [[UInt8]] = []
                for k in Kernel.available {
                    var o = EncodeOptions(preset: try Preset.named(preset), slabThickness: 3, threads: 2, kernel: k)
                    o.formatVersion = StreamHeader.version
                    outs.append(try raw.withUnsafeBytes { try VXZ.encode(raw: $0, shape: shape, dtype: dt, options: o) })
                }
                for (i, o) in outs.enumerated() { XCTAssertTrue(o == outs[0], "\(preset): kernel \(Kernel.available[i]) wrote other bytes") }
                XCTAssertEqual(try VXZ.Decoder(stream: outs[0], kernel: .scalar).decodeVolume(), raw)
            }
        }
    }

    /// Slices are reported as verified one by one; a damaged slice stops the slab there, with
    /// an error naming it, and nothing of it or after it is reported.
    func testADamagedSliceIsNamedAndTheSlicesBeforeItVerify() throws {
        let (raw, shape, dt) = try TestData.crop("mr_brain1", x0: 60, y0: 60, z0: 5, nx: 120, ny: 100, nz: 8)
        var s = try encode(raw, shape, dt, preset: "default", slab: 8)
        let h = try StreamHeader(parsing: s, fileSize: s.count)
        let sliceBytes = shape.sliceVoxels * dt.bytesPerVoxel
        let good = try VXZ.Decoder(stream: s)
        var seen: [Int] = []
        _ = try good.decodeSlab(0, into: UnsafeMutableRawBufferPointer.allocate(byteCount: 8 * sliceBytes, alignment: 4), verified: { seen.append($0) })
        XCTAssertEqual(seen, (1...8).map { $0 * sliceBytes }, "each slice verified in turn")
        let sl = h.slabs[0].slices
        let at = Int(h.slabs[0].offset) + sl[0..<5].reduce(0) { $0 + Int($1.length) } + Int(sl[5].length) / 2
        s[at] ^= 0x40
        for threads in [1, 2, 4] {
            let d = try VXZ.Decoder(stream: s)
            let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 * sliceBytes, alignment: 4)
            defer { out.deallocate() }
            var verified = 0
            XCTAssertThrowsError(try d.decodeSlab(0, into: out, threads: threads) { verified = $0 }) { e in
                XCTAssertEqual((e as? VoxError)?.kind, .corrupt)
                XCTAssertTrue("\(e)".contains("slab 0") && "\(e)".contains("slice 5"), "\(e)")
            }
            XCTAssertEqual(verified, 5 * sliceBytes, "threads \(threads): slices 0-4 verified, no more")
            XCTAssertTrue(Array(UnsafeRawBufferPointer(rebasing: out[0..<verified])) == Array(raw[0..<verified]))
        }
    }

    /// Where the LSTM hurts, every slice falls back to the classical predictor and the stream
    /// codes exactly what the classical preset codes (plus its longer header).
    func testWhereTheLSTMHurtsTheStreamIsNoLargerThanClassical() throws {
        var rng = SplitMix64(seed: 7)
        let shape = Shape(64, 48, 10)
        let noise = (0..<shape.voxels).map { _ in Int32(1000 + rng.nextInt(in: -40...40)) }
        var edge = [Int32](repeating: 300, count: shape.voxels)
        for i in edge.indices where (i % shape.x) >= 40 { edge[i] = 2000 }
        for (name, v) in [("noise", noise), ("constant plus an edge", edge)] {
          for version: UInt16 in [2, 3] {
            let raw = TestData.encode(v, .int16)
            let classical = try encode(raw, shape, .int16, preset: "classical", version: version)
            let hc = try StreamHeader(parsing: classical, fileSize: classical.count)
            for preset in ["default", "fast"] {
                let s = try encode(raw, shape, .int16, preset: preset, version: version)
                let h = try StreamHeader(parsing: s, fileSize: s.count)
                let payload = h.slabs.reduce(0) { $0 + Int($1.length) }, cpayload = hc.slabs.reduce(0) { $0 + Int($1.length) }
                XCTAssertLessThanOrEqual(payload, cpayload, "\(name), \(preset) v\(version): payload no larger than classical's")
                XCTAssertLessThanOrEqual(s.count, classical.count + (h.headerLength - hc.headerLength), "\(name), \(preset) v\(version)")
                XCTAssertTrue(try VXZ.Decoder(stream: s).decodeVolume() == raw, "\(name), \(preset) v\(version) round trip")
                // v3: the residual filter's step differs between LSTM and classical slices, so
                // the greedy slice choice is not the whole story there (the encoder bounds each
                // slab by the classical predictor's coding, checked above)
                if name == "noise" && version == 2 {
                    // the voxel-serial default loses on every slice of noise; fast (row-parallel,
                    // with its left-residual correction) wins a few, which is allowed: shorter
                    let fb = h.slabs.flatMap(\.slices).filter { $0.predictor == .classical }.count
                    if preset == "default" { XCTAssertEqual(fb, shape.z, "\(name), \(preset): every slice falls back") }
                    else { XCTAssertGreaterThan(fb, 0, "\(name), \(preset): slices fall back (\(fb) of \(shape.z))") }
                }
                // without the fallback the LSTM codes noise larger: the fallback is what keeps it small
                if name == "noise" && version == 2 {
                    let nf = try encode(raw, shape, .int16, preset: preset, version: version, fallback: false)
                    XCTAssertGreaterThan(nf.count, s.count, "\(name), \(preset): the LSTM alone costs more")
                    XCTAssertTrue(try VXZ.Decoder(stream: nf).decodeVolume() == raw)
                }
            }
          }
        }
    }

    /// v2 header fields are checked: a crafted header with a valid CRC never decodes.
    func testCraftedV2HeadersAreRejected() throws {
        let (raw, shape, dt) = try TestData.crop("ct_lung1", x0: 200, y0: 200, z0: 20, nx: 40, ny: 30, nz: 6)
        let s = try encode(raw, shape, dt, preset: "default", slab: 3)
        let cs = try encode(raw, shape, dt, preset: "classical", slab: 3)
        func crafted(_ base: [UInt8], _ edit: (inout StreamHeader) -> Void) throws -> [UInt8] {
            var h = try StreamHeader(parsing: base, fileSize: base.count)
            let body = Array(base[h.headerLength...])
            edit(&h)
            return h.serialized() + body
        }
        let cases: [(String, [UInt8])] = [
            ("state rows 0", try crafted(s) { $0.stateRows = 0 }),
            ("slice lengths that do not add up", try crafted(s) { $0.slabs[0].slices[0].length += 1 }),
            ("a slice shorter than a flush", try crafted(s) { $0.slabs[1].slices[2].length = 4; $0.slabs[1].slices[1].length += $0.slabs[1].slices[2].length - 4 }),
            ("the classical fallback in a classical stream", try crafted(cs) { $0.slabs[0].slices[1].predictor = .classical }),
            ("a slice checksum", try crafted(s) { $0.slabs[1].slices[1].crc ^= 1 }),
            ("another slice's predictor", try crafted(s) { $0.slabs[0].slices[2].predictor = $0.slabs[0].slices[2].predictor == .classical ? .stream : .classical }),
        ]
        for (what, c) in cases {
            do {
                let d = try VXZ.Decoder(stream: c)
                let out = try d.decodeVolume()
                XCTAssertNotEqual(out, raw, "\(what): decoded to the original?")
                XCTFail("\(what): decoded")
            } catch let e as VoxError {
                XCTAssertTrue([.corrupt, .badFormat, .truncated].contains(e.kind), "\(what): \(e)")
            }
        }
        // a version this voxfs does not know is named as such
        var next = s
        next[8] = UInt8(StreamHeader.version + 1)
        XCTAssertThrowsError(try StreamHeader(parsing: next)) { e in XCTAssertTrue("\(e)".contains("version \(StreamHeader.version + 1)"), "\(e)") }
    }

    /// Format v3's residual stage (the residual filter on slices with left voxels, two-neighbour
    /// sign contexts) codes real CT smaller than v2 with every preset kind, the v2 encoder
    /// still writes v2, and both decode exactly with every kernel and thread count.
    func testVersion3CodesRealCTSmallerThanVersion2() throws {
        // measured on this crop (slab 4): classical -5.6%, default -6.7%, fast -1.4%; the
        // thresholds are about half of that (a smaller crop leaves the slow classical filter too
        // few voxels to learn: -1.7% on 128x96x8)
        let (raw, shape, dt) = try TestData.crop("ct_lung1", x0: 128, y0: 128, z0: 16, nx: 256, ny: 256, nz: 8)
        for (preset, gain) in [("classical", 0.03), ("default", 0.03), ("fast", 0.007)] {
            try assertVersionCodesSmaller((raw, shape, dt), "lung1", preset: preset, from: 2, to: 3, by: gain)
        }
    }

    /// Codes `vol` with `preset` as format `old` and as format `new`: each stream says its
    /// version, the newer is at least `gain` smaller, and both decode exactly with every kernel
    /// and 1 and 2 threads per slab.
    func assertVersionCodesSmaller(_ vol: (bytes: [UInt8], shape: Shape, dtype: DType), _ name: String, preset: String,
                                   from old: UInt16, to new: UInt16, by gain: Double,
                                   file: StaticString = #filePath, line: UInt = #line) throws {
        let (raw, shape, dt) = vol
        let so = try encode(raw, shape, dt, preset: preset, slab: 4, version: old)
        let sn = try encode(raw, shape, dt, preset: preset, slab: 4, version: new)
        XCTAssertEqual(try StreamHeader(parsing: so, fileSize: so.count).formatVersion, old, file: file, line: line)
        XCTAssertEqual(try StreamHeader(parsing: sn, fileSize: sn.count).formatVersion, new, file: file, line: line)
        XCTAssertLessThan(Double(sn.count), Double(so.count) * (1 - gain),
                          "\(name) \(preset): v\(new) \(sn.count) bytes, v\(old) \(so.count)", file: file, line: line)
        for k in Kernel.available {
            for s in [so, sn] {
                let d = try VXZ.Decoder(stream: s, kernel: k)
                for t in [1, 2] {
                    XCTAssertTrue(try (0..<d.slabCount).flatMap { try d.decodeSlab($0, threads: t) } == raw,
                                  "\(name) \(preset) kernel \(k) threads \(t)", file: file, line: line)
                }
            }
        }
    }

    /// Format v4's floor contexts (the probabilities also chosen by the prediction's distance to
    /// the volume's minimum) code real MR with background smaller than v3, the v3 encoder still
    /// writes v3, and both decode exactly with every kernel and thread count.
    func testVersion4CodesMRBackgroundSmallerThanVersion3() throws {
        // measured (slab 4): brain1 whole slices 8-15, default -0.84%, classical -0.45%; the ICBM
        // template (8-bit, zero background) x 0+197, y 40+150, z 70+8: classical -1.39%, default
        // -1.69%. The thresholds are about half of that. (A crop inside the head, with no
        // background, costs v4 0.2%: twelve times the probability sets learn from the same voxels.)
        let brain = try TestData.crop("mr_brain1", x0: 0, y0: 0, z0: 8, nx: 256, ny: 256, nz: 8)
        let icbm = try TestData.crop("mr_icbm152_t1", x0: 0, y0: 40, z0: 70, nx: 197, ny: 150, nz: 8)
        for (name, vol, preset, gain) in [("brain1", brain, "default", 0.004), ("brain1", brain, "classical", 0.002),
                                          ("icbm", icbm, "classical", 0.007), ("icbm", icbm, "default", 0.008)] {
            try assertVersionCodesSmaller(vol, name, preset: preset, from: 3, to: 4, by: gain)
        }
    }

    /// v1 streams still decode, and the v1 encoder still writes v1.
    func testVersion1IsStillWrittenAndRead() throws {
        let (raw, shape, dt) = try TestData.crop("ct_lung1", x0: 200, y0: 200, z0: 20, nx: 40, ny: 30, nz: 6)
        let s1 = try encode(raw, shape, dt, preset: "default", slab: 3, version: 1)
        let h = try StreamHeader(parsing: s1, fileSize: s1.count)
        XCTAssertEqual(h.formatVersion, 1)
        XCTAssertTrue(h.slabs.allSatisfy { $0.slices.isEmpty })
        var reported: [Int] = []
        let d = try VXZ.Decoder(stream: s1)
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: d.slabByteCount(0), alignment: 4)
        defer { out.deallocate() }
        try d.decodeSlab(0, into: out, threads: 2) { reported.append($0) }
        XCTAssertEqual(reported, [d.slabByteCount(0)], "a v1 slab is verified as a whole")
        XCTAssertTrue(try d.decodeVolume() == raw)
    }
}
