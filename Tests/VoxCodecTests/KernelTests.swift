import Foundation
import XCTest
import CVoxKernels
import VoxCore
import VoxCodec

/// An independent Swift transcription of the fixed-point LSTM in docs/format.md, used to
/// check the C scalar kernel; the SIMD kernels are then checked against the scalar one.
enum ReferenceLSTM {
    static let sig: [Int32] = table { 1 / (1 + exp(-$0)) }
    static let tanhT: [Int32] = table { tanh($0) }
    static func table(_ f: (Double) -> Double) -> [Int32] {
        (0...1024).map { i in
            let v: Double = 16384 * f(Double(i * 64 - 32768) / 4096)
            return Int32((v + 0.5).rounded(.down))
        }
    }
    static func lut(_ t: [Int32], _ z0: Int32) -> Int32 {
        let z = min(max(z0, -32768), 32767)
        let u = z + 32768
        let i = Int(u >> 6), f = u & 63
        return t[i] + (((t[i + 1] - t[i]) * f + 32) >> 6)
    }
    /// The quadratic activations of model format 2, transcribed from docs/format.md.
    static func qsig(_ z: Int32) -> Int32 { let X = min(max(z, -16384), 16384); return 8192 + X - ((X * abs(X)) >> 15) }
    static func qtanh(_ z: Int32) -> Int32 { let X = min(max(z, -8192), 8192); return 4 * X - ((X * abs(X)) >> 12) }
    static func run(_ m: LSTMModel, _ x: [Int16]) -> Int32 {
        let quad = m.activation == .quadratic
        let S = { (z: Int32) in quad ? qsig(z) : lut(sig, z) }
        let Th = { (z: Int32) in quad ? qtanh(z) : lut(tanhT, z) }
        let H = m.hidden, I = m.stepInputs, T = m.steps, K = I + H
        var h = [Int32](repeating: 0, count: H), c = [Int32](repeating: 0, count: H)
        for t in 0..<T {
            var a = [Int32](repeating: 0, count: 4 * H)
            for j in 0..<(4 * H) {
                var s = UInt32(bitPattern: m.b[j])
                for k in 0..<K {
                    let v: Int32 = k < I ? Int32(x[t * I + k]) : h[k - I]
                    s = s &+ UInt32(bitPattern: Int32(m.W[j * K + k]) &* v)
                }
                a[j] = Int32(bitPattern: s)
            }
            for j in 0..<H {
                let q = { (v: Int32) in ((v >> 11) + 1) >> 1 }
                let gi = S(q(a[j])), gf = S(q(a[H + j])), gg = Th(q(a[2 * H + j])), go = S(q(a[3 * H + j]))
                var cc = (gf * c[j] + gi * gg + 8192) >> 14
                cc = min(max(cc, -65536), 65536)
                c[j] = cc
                h[j] = (go * Th((cc + 2) >> 2) + 32768) >> 16
            }
        }
        var y = UInt32(bitPattern: m.bo)
        for j in 0..<H { y = y &+ UInt32(bitPattern: Int32(m.Wo[j]) &* h[j]) }
        return Int32(bitPattern: y)
    }
}

final class KernelTests: XCTestCase {
    /// The tables the kernels use (act_tables.h, read back from CVoxKernels) are the normative
    /// ones of docs/format.md (their SHA-256), and the reference transcription here uses the same
    /// values (it computes them from the formula).
    func testShippedActivationTablesAreTheNormativeOnes() {
        for (which, hash, ref) in [(Int32(0), "0e1d3fbdefa67a9f4a8ffaa2abf5d82115c9fe46d1b2f69c972515e531d9c828", ReferenceLSTM.sig),
                                   (Int32(1), "51081aaf26643d0f21719aa86a08d790b95cfe81546881ba1bcdb5f48502d453", ReferenceLSTM.tanhT)] {
            let t = Array(UnsafeBufferPointer(start: vox_activation_table(which), count: 1025))
            var bytes = [UInt8]()
            for v in t { for k in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: UInt32(bitPattern: v) >> (8 * UInt32(k)))) } }
            XCTAssertEqual(Checksum.hex(Checksum.sha256(bytes)), hash, "table \(which) is the one docs/format.md names")
            XCTAssertEqual(t, ref, "table \(which): the reference transcription uses the shipped values")
        }
        XCTAssertEqual(vox_activation_table(0)[512], 8192)
        XCTAssertEqual(vox_activation_table(1)[0], -16384)
    }

    /// The quadratic activations (model format 2): the C ones equal the transcription of the
    /// spec at every argument, follow the float curves they stand for to within 2 LSB (Q14),
    /// are monotone, and saturate at exactly 0 / +-1.
    func testQuadraticActivationsFollowTheSpec() {
        var prevS: Int32 = -1, prevT: Int32 = -16385
        for z in Int32(-40000)...Int32(40000) {
            let s = vox_activation(Int32(VOX_ACT_QUADRATIC), 0, z), t = vox_activation(Int32(VOX_ACT_QUADRATIC), 1, z)
            XCTAssertEqual(s, ReferenceLSTM.qsig(z)); XCTAssertEqual(t, ReferenceLSTM.qtanh(z))
            let x = Double(z) / 4096
            let fs = min(max(x, -4), 4), ft = min(max(x, -2), 2)
            XCTAssertEqual(Double(s), 16384 * (0.5 + fs / 4 - fs * abs(fs) / 32), accuracy: 2, "sigmoid at z=\(z)")
            XCTAssertEqual(Double(t), 16384 * (ft - ft * abs(ft) / 4), accuracy: 2, "tanh at z=\(z)")
            XCTAssertGreaterThanOrEqual(s, prevS); XCTAssertGreaterThanOrEqual(t, prevT)
            prevS = s; prevT = t
        }
        XCTAssertEqual(vox_activation(1, 0, -16384), 0); XCTAssertEqual(vox_activation(1, 0, 16384), 16384)
        XCTAssertEqual(vox_activation(1, 1, -8192), -16384); XCTAssertEqual(vox_activation(1, 1, 8192), 16384)
        XCTAssertEqual(vox_activation(1, 0, 0), 8192); XCTAssertEqual(vox_activation(1, 1, 0), 0)
        // the table activations through the same entry point are the table lookups
        XCTAssertEqual(vox_activation(0, 0, 0), 8192)
        XCTAssertEqual(vox_activation(0, 1, -32768), -16384)
    }

    func testScalarKernelMatchesReferenceTranscription() throws {
        var rng = SplitMix64(seed: 99)
        for act in Activation.allCases {
        for (H, spec, big) in [(4, "pyramid:5,3/slice", false), (8, "cube:3:1/row", true), (12, "pyramid:3/voxel/left", false), (32, "pyramid:7,5,3", true)] {
            let m = try TestData.randomModel(H: H, spec: spec, seed: UInt64(H), big: big, activation: act)
            let km = try m.makeKernelModel()
            let n = 37
            let x = (0..<(n * m.steps * m.stepInputs)).map { _ in Int16(rng.nextInt(in: -32767...32767)) }
            let y = km.run(inputs: x, count: n, kernel: .scalar)
            for s in 0..<n {
                let xs = Array(x[(s * m.steps * m.stepInputs)..<((s + 1) * m.steps * m.stepInputs)])
                XCTAssertEqual(y[s], ReferenceLSTM.run(m, xs), "\(act) H=\(H) \(spec) sequence \(s)")
            }
        }
        }
    }

    func testSIMDKernelsEqualScalar() throws {
        var rng = SplitMix64(seed: 5)
        XCTAssertTrue(Kernel.available.contains(.scalar))
        // not vacuous: every SIMD kernel the CPU can run is offered and compared (skip, said
        // so, only on a CPU without AVX2)
        let simd = try SplitKernelTests.simdKernels()
        XCTAssertEqual(Set(simd), Set(Kernel.available.filter { $0 != .scalar }))
        var compared = 0
        for act in Activation.allCases {
        for (i, H) in [4, 8, 16, 20, 32, 64, 128].enumerated() {
            for big in [false, true] {
                let m = try TestData.randomModel(H: H, spec: ["pyramid:7,5,3", "pyramid:13,9,5,1/row", "cube:5/slice/left"][i % 3], seed: UInt64(1000 + i), big: big,
                                                 activation: act)
                let km = try m.makeKernelModel()
                for n in [1, 3, 64, 130] {
                    let x = (0..<(n * m.steps * m.stepInputs)).map { _ in Int16(rng.nextInt(in: big ? -32767...32767 : -4096...4096)) }
                    let ref = km.run(inputs: x, count: n, kernel: .scalar)
                    for k in simd {
                        XCTAssertEqual(km.run(inputs: x, count: n, kernel: k), ref, "kernel \(k) \(act) H=\(H) n=\(n) big=\(big)")
                        compared += 1
                    }
                }
            }
        }
        }
        XCTAssertEqual(compared, 2 * 7 * 2 * 4 * simd.count)
    }

    func testPredictionsIdenticalAcrossKernelsOnRealCT() throws {
        let ct = try TestData.crop("ct_lung1", x0: 200, y0: 200, z0: 20, nx: 50, ny: 30, nz: 4)
        let m = try LSTMModel.seeded(hidden: 16, neighbourhood: try Neighbourhood(spec: "pyramid:7,5,3"), seed: 77, outputScale: 4000, name: "t")
        var v = [Int32](repeating: 0, count: ct.shape.voxels)
        ct.bytes.withUnsafeBytes { b in v.withUnsafeMutableBufferPointer { ct.dtype.decode(b, into: $0) } }
        var results: [[Int32]] = []
        for k in Kernel.available {
            let coder = try SlabCoder(shape: ct.shape, dtype: ct.dtype, left: false, pad: -1024, model: m, kernel: k)
            let (anchor, pred) = try v.withUnsafeBufferPointer { try coder.predictions($0, slices: 4) }
            XCTAssertNotEqual(anchor, pred, "the LSTM must change some predictions")
            results.append(pred)
        }
        for r in results { XCTAssertEqual(r, results[0]) }
    }

    func testNeighbourhoodsAreCausalWithExpectedSizes() throws {
        let p = try Neighbourhood(spec: "pyramid:13,9,5,1/voxel/noleft")
        // causal half of a radius-6 diamond without the target row: 36; then 41, 13, 1
        XCTAssertEqual(p.count, 36 + 41 + 13 + 1)
        XCTAssertEqual(p.steps, p.count)
        XCTAssertEqual(p.stepInputs, 1)
        let pl = try Neighbourhood(spec: "pyramid:13,9,5,1/voxel/left")
        XCTAssertEqual(pl.count, 36 + 6 + 41 + 13 + 1)
        let c = try Neighbourhood(spec: "cube:5/slice")
        XCTAssertEqual(c.count, 10 + 25 + 25)
        XCTAssertEqual(c.steps, 3)
        XCTAssertEqual(c.stepInputs, 25)
        for nb in [p, pl, c, try Neighbourhood(spec: "cube:7:3/row/left")] {
            for i in 0..<nb.count {
                let causal = nb.dz[i] < 0 || (nb.dz[i] == 0 && (nb.dy[i] < 0 || (nb.dy[i] == 0 && nb.dx[i] < 0 && nb.left)))
                XCTAssertTrue(causal, "\(nb.spec) offset \(i)")
            }
            XCTAssertEqual(Set(nb.slot).count, nb.count)
            XCTAssertEqual(try Neighbourhood(spec: nb.spec), nb, "canonical spec round trip")
        }
        XCTAssertThrowsError(try Neighbourhood(spec: "pyramid:4"))
        XCTAssertThrowsError(try Neighbourhood(spec: "sphere:3"))
        XCTAssertThrowsError(try Neighbourhood(spec: "cube:5/sideways"))
    }

    func testModelFileRoundTripAndIdentity() throws {
        let m = try Preset.named("default").builtinModel()!
        let bytes = m.serialized()
        let back = try LSTMModel(bytes: bytes)
        XCTAssertEqual(back, m)
        XCTAssertEqual(back.hash, m.hash)
        // identity does not depend on metadata
        var m2 = m
        m2.metadata = "{\"note\":\"renamed\"}"
        XCTAssertEqual(m2.hash, m.hash)
        // the built-in model is the shipped file models/default.vxm (embedded), or, without
        // one, a seeded model that regenerates to the same hash
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let shipped = root.appendingPathComponent("models/default.vxm").path
        if FileManager.default.fileExists(atPath: shipped) {
            XCTAssertTrue(try Preset.named("default").hasTrainedModel)
            XCTAssertEqual(try LSTMModel.load(path: shipped).hash, m.hash)
        } else {
            let again = try LSTMModel.seeded(hidden: 16, neighbourhood: try Neighbourhood(spec: "pyramid:7,5,3/slice/left"), seed: 0x766F_7866_7302, name: "default")
            XCTAssertEqual(again.hash, m.hash)
        }
        // damage is detected
        var bad = bytes
        bad[40] ^= 0x10
        XCTAssertThrowsError(try LSTMModel(bytes: bad)) { XCTAssertEqual(($0 as? VoxError)?.kind, .corrupt) }
        XCTAssertThrowsError(try LSTMModel(bytes: Array(bytes.prefix(30))))
        XCTAssertThrowsError(try LSTMModel(bytes: Array("not a model".utf8))) { XCTAssertEqual(($0 as? VoxError)?.kind, .badFormat) }
    }

    /// Model format 2: a model with quadratic activations is written as version 2 with the
    /// activation byte, reads back equal, and has another identity than the same weights with
    /// the tables; a table model is still written as version 1 (byte for byte what it was).
    func testModelFormat2CarriesTheActivation() throws {
        let t = try TestData.randomModel(H: 8, spec: "pyramid:7,5,3/slice/left", seed: 3, big: false)
        var q = t
        q.activation = .quadratic
        let tb = t.serialized(), qb = q.serialized()
        XCTAssertEqual(Array(tb[8..<10]), [1, 0], "table activations: model format 1")
        XCTAssertEqual(Array(qb[8..<10]), [2, 0], "quadratic activations: model format 2")
        XCTAssertEqual(qb[18], 1, "the activation byte follows F")
        XCTAssertEqual(qb.count, tb.count + 1)
        XCTAssertEqual(Array(qb[19...].dropLast(4)), Array(tb[18...].dropLast(4)), "otherwise the same layout")
        let back = try LSTMModel(bytes: qb)
        XCTAssertEqual(back, q)
        XCTAssertEqual(back.activation, .quadratic)
        XCTAssertEqual(try LSTMModel(bytes: tb).activation, .tables)
        XCTAssertNotEqual(q.hash, t.hash, "the activation is part of the identity")
        // the kernels really compute another function
        let x = (0..<(5 * t.steps * t.stepInputs)).map { Int16(truncatingIfNeeded: $0 * 977 % 8000 - 4000) }
        XCTAssertNotEqual(try q.makeKernelModel().run(inputs: x, count: 5, kernel: .scalar),
                          try t.makeKernelModel().run(inputs: x, count: 5, kernel: .scalar))
        // an unknown activation (0 is never written as format 2, 2 is undefined) or version is rejected
        func withByte(_ at: Int, _ v: UInt8) -> [UInt8] {
            var b = qb
            b[at] = v
            let crc = Checksum.crc32c(Array(b.dropLast(4)))
            for k in 0..<4 { b[b.count - 4 + k] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(k))) }
            return b
        }
        for bad in [withByte(18, 0), withByte(18, 2), withByte(8, 3)] {
            XCTAssertThrowsError(try LSTMModel(bytes: bad)) { XCTAssertEqual(($0 as? VoxError)?.kind, .badFormat) }
        }
    }
}
