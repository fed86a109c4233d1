import CVoxKernels
import Foundation
import XCTest
import VoxCore
import VoxCodec

/// The LSTM split by dependency (lstm.c, coder.c): every batched and split kernel must give
/// exactly what the scalar reference gives, and the coder's split path exactly what its
/// monolithic path gives.
final class SplitKernelTests: XCTestCase {
    /// The CPU's own flags, independent of the kernels' dispatch code.
    static let cpuFlags: Set<String> = {
        guard let s = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
        return Set(line.split(separator: ":").last!.split(separator: " ").map(String.init))
    }()

    /// The SIMD kernels this CPU must run; skips (with the reason) only if it has no AVX2.
    func requiredSIMDKernels() throws -> [Kernel] { try SplitKernelTests.simdKernels() }

    /// The SIMD kernels this CPU can run (read from /proc/cpuinfo, not from the dispatcher);
    /// XCTSkip on a CPU without AVX2, where there is nothing to compare.
    static func simdKernels() throws -> [Kernel] {
        #if arch(x86_64)
        let f = SplitKernelTests.cpuFlags
        guard f.contains("avx2") else { throw XCTSkip("this CPU has no AVX2: only the scalar kernel can run, nothing to compare") }
        var k: [Kernel] = [.avx2]
        if f.contains("avx512f") && f.contains("avx512bw") && f.contains("avx512_vnni") { k.append(.avx512vnni) }
        return k
        #else
        throw XCTSkip("not an x86-64 CPU: only the scalar kernel exists")
        #endif
    }

    func testDispatchOffersEveryKernelTheCPUHas() throws {
        let need = try requiredSIMDKernels()
        for k in need { XCTAssertTrue(Kernel.available.contains(k), "the CPU has the instructions for \(k) but the dispatcher does not offer it") }
        XCTAssertEqual(Kernel.best, need.last!)
    }

    func testBatchedKernelsEqualScalarForEveryBatchSize() throws {
        let need = try requiredSIMDKernels()
        var ran = Set<Kernel>()
        var rng = SplitMix64(seed: 2024)
        let specs = ["pyramid:7,5,3/slice/left", "pyramid:7,5,3/slice/noleft", "cube:3:1/row", "pyramid:5,3/voxel/left", "cube:5/slice"]
        for act in Activation.allCases {
        for (i, H) in [4, 8, 12, 16, 20, 32, 64, 128].enumerated() {
            for big in [false, true] {
                let m = try TestData.randomModel(H: H, spec: specs[i % specs.count], seed: UInt64(77 + i), big: big, activation: act)
                let km = try m.makeKernelModel()
                for n in [1, 2, 3, 4, 5, 7, 31, 32, 33, 65, 130] + (H <= 32 ? [257] : []) {
                    let x = (0..<(n * m.steps * m.stepInputs)).map { _ in Int16(rng.nextInt(in: big ? -32767...32767 : -4096...4096)) }
                    let ref = km.run(inputs: x, count: n, kernel: .scalar)
                    for k in Kernel.available where k != .scalar {
                        XCTAssertEqual(km.run(inputs: x, count: n, kernel: k), ref, "kernel \(k) \(act) H=\(H) I=\(m.stepInputs) n=\(n) big=\(big)")
                        ran.insert(k)
                    }
                }
            }
        }
        }
        for k in need { XCTAssertTrue(ran.contains(k), "kernel \(k) never ran") }
    }

    /// Input projection, steps t0..t1 from a given state with a precomputed partial sum, then
    /// the rest: the same outputs as one monolithic run, with every kernel.
    func testStepsFromAGivenStateWithPartialSums() throws {
        _ = try requiredSIMDKernels()
        var rng = SplitMix64(seed: 31)
        for (H, spec) in [(8, "pyramid:7,5,3/slice/left"), (16, "pyramid:13,9,5,1/row/left"), (12, "cube:3:2/slice")] {
            let m = try TestData.randomModel(H: H, spec: spec, seed: UInt64(H), big: true)
            let km = try m.makeKernelModel()
            let T = m.steps, I = m.stepInputs, G = 4 * H
            for n in [1, 5, 33] {
                let x = (0..<(n * T * I)).map { _ in Int16(rng.nextInt(in: -32767...32767)) }
                let ref = km.run(inputs: x, count: n, kernel: .scalar)
                // x = xa + xb, column by column (even columns in xa, odd ones in xb)
                let xa = x.enumerated().map { $0.offset % 2 == 0 ? $0.element : 0 }
                let xb = x.enumerated().map { $0.offset % 2 == 1 ? $0.element : 0 }
                for k in Kernel.available {
                    var pa = [Int32](repeating: 0, count: n * T * G), pb = pa
                    xa.withUnsafeBufferPointer { vox_lstm_input_proj(km.pointer, Int32(n * T), $0.baseAddress, I, &pa, Int32(k.rawValue)) }
                    xb.withUnsafeBufferPointer { vox_lstm_input_proj(km.pointer, Int32(n * T), $0.baseAddress, I, &pb, Int32(k.rawValue)) }
                    // pre = proj(xa) + proj(xb) - b: the bias once
                    var pre = [Int32](repeating: 0, count: n * T * G)
                    for s in 0..<(n * T) { for j in 0..<G { pre[s * G + j] = pa[s * G + j] &+ pb[s * G + j] &- m.b[j] } }
                    var h = [Int16](repeating: 0, count: n * H), c = [Int32](repeating: 0, count: n * H)
                    var acc = [Int32](repeating: 0, count: n * G), y = [Int32](repeating: 0, count: n)
                    let split = max(1, T / 2)
                    pre.withUnsafeBufferPointer { pp in
                        vox_lstm_steps(km.pointer, Int32(n), 0, Int32(split), pp.baseAddress, T * G, &h, &c, 1, &acc, Int32(k.rawValue))
                        // the state is handed over between the two calls
                        vox_lstm_steps(km.pointer, Int32(n), Int32(split), Int32(T), pp.baseAddress! + split * G, T * G, &h, &c, 0, &acc, Int32(k.rawValue))
                    }
                    vox_lstm_output(km.pointer, Int32(n), h, &y)
                    XCTAssertEqual(y, ref, "\(spec) H=\(H) n=\(n) kernel \(k)")
                }
            }
        }
    }

    func values(_ c: (bytes: [UInt8], shape: Shape, dtype: DType)) -> [Int32] {
        var v = [Int32](repeating: 0, count: c.shape.voxels)
        c.bytes.withUnsafeBytes { b in v.withUnsafeMutableBufferPointer { c.dtype.decode(b, into: $0) } }
        return v
    }

    /// Split predictions == monolithic scalar predictions, for every kernel; returns the counts.
    @discardableResult
    func checkSplit(_ v: [Int32], _ shape: Shape, _ dt: DType, model: LSTMModel, slab: Int, label: String) throws -> (split: Int, mono: Int) {
        let pad = v.min() ?? 0
        var counts = (split: 0, mono: 0)
        var z0 = 0
        while z0 < shape.z {
            let n = min(slab, shape.z - z0)
            let part = Array(v[(z0 * shape.sliceVoxels)..<((z0 + n) * shape.sliceVoxels)])
            let ref = try SlabCoder(shape: shape, dtype: dt, left: false, pad: pad, model: model, kernel: .scalar)
            let r = try part.withUnsafeBufferPointer { try ref.predictions($0, slices: n, reference: true) }
            XCTAssertEqual(r.split, 0, "\(label): the reference path never splits")
            for k in Kernel.available {
                let coder = try SlabCoder(shape: shape, dtype: dt, left: false, pad: pad, model: model, kernel: k)
                let s = try part.withUnsafeBufferPointer { try coder.predictions($0, slices: n, reference: false) }
                XCTAssertEqual(s.anchor, r.anchor, "\(label) kernel \(k) anchors")
                XCTAssertTrue(s.pred == r.pred, "\(label) kernel \(k): split predictions differ from the monolithic reference at \(zip(s.pred, r.pred).filter { $0 != $1 }.count) voxels")
                if k == Kernel.available.last { counts.split += s.split; counts.mono += s.monolithic }
            }
            z0 += n
        }
        return counts
    }

    func testSplitPathEqualsMonolithicOnRealCropsForEveryPreset() throws {
        _ = try requiredSIMDKernels()
        let crops = [
            ("ct lung", try TestData.crop("ct_lung1", x0: 200, y0: 180, z0: 20, nx: 48, ny: 40, nz: 10)),
            ("ct body edge", try TestData.crop("ct_lung1", x0: 10, y0: 220, z0: 30, nx: 64, ny: 40, nz: 9)),
            ("mr", try TestData.crop("mr_brain1", x0: 90, y0: 90, z0: 8, nx: 40, ny: 36, nz: 9)),
        ]
        for p in Preset.all where p.name != "paper" {
            guard let m = try p.builtinModel() else { continue }
            for (name, c) in crops {
                let n = try checkSplit(values(c), c.shape, c.dtype, model: m, slab: 4, label: "\(p.name) on \(name)")
                if m.neighbourhood.left {
                    // not vacuous: most voxels away from the crop's edges go through the split path
                    XCTAssertGreaterThan(n.split, c.shape.voxels / 3, "\(p.name) on \(name): split path used for \(n.split) of \(c.shape.voxels) voxels")
                } else {
                    XCTAssertEqual(n.split, 0, "\(p.name): row-parallel presets batch whole rows instead")
                }
            }
        }
        // the paper's H=128 voxel-by-voxel model on a small crop
        let small = try TestData.crop("ct_lung1", x0: 240, y0: 240, z0: 22, nx: 20, ny: 18, nz: 6)
        let n = try checkSplit(values(small), small.shape, small.dtype, model: try Preset.named("paper").builtinModel()!, slab: 6, label: "paper")
        XCTAssertGreaterThan(n.split, 0)
    }

    /// The row-parallel presets' inputs, gathered 8 voxels at a time with 8x8 transposes in the
    /// AVX2 coder: neighbourhoods whose steps split into chunks of every length (pyramid 7/5/3:
    /// 9, 25, 21 inputs; one input per step; cubes), shifts up (r <= 12) and down (r > 12),
    /// spikes that saturate inputs, widths that leave remainders. Predictions equal the scalar
    /// reference's (the generic coder's one-voxel gather) everywhere.
    func testBatchGatherOfRowParallelModels() throws {
        _ = try requiredSIMDKernels()
        for (nx, x0) in [(80, 0), (37, 200)] {
            let ct = try TestData.crop("ct_lung1", x0: x0, y0: 200, z0: 20, nx: nx, ny: 24, nz: 5)
            var v = values(ct)
            var rng = SplitMix64(seed: UInt64(nx))
            for i in 0..<v.count where rng.nextInt(in: 0...30) == 0 { v[i] = Int32(rng.nextInt(in: -1024...3000)) } // spikes
            for (H, spec, r) in [(8, "pyramid:7,5,3/slice", 7), (8, "pyramid:7,5,3/slice", 3), (16, "pyramid:7,5,3/slice", 14),
                                 (8, "pyramid:5,3/voxel", 12), (8, "cube:5:1/row", 16), (4, "pyramid:13,9,5,1/slice", 9),
                                 (8, "cube:3:2/slice", 13)] {
                let m = try TestData.randomModel(H: H, spec: spec, seed: UInt64(H * 31 + r), big: true, normShift: r)
                try checkSplit(v, ct.shape, ct.dtype, model: m, slab: 5, label: "row-parallel \(spec) H=\(H) r=\(r) nx=\(nx)")
            }
        }
    }

    /// Random weights (sums wrap modulo 2^32), r = 12 and r = 5, and data with large jumps:
    /// both paths are taken (saturated inputs go monolithic) and agree everywhere.
    func testSplitPathWithRandomModelsAndSaturatingInputs() throws {
        _ = try requiredSIMDKernels()
        let ct = try TestData.crop("ct_lung1", x0: 0, y0: 200, z0: 20, nx: 80, ny: 30, nz: 6)
        var v = values(ct)
        var rng = SplitMix64(seed: 3)
        for i in 0..<v.count where rng.nextInt(in: 0...40) == 0 { v[i] = Int32(rng.nextInt(in: -1024...3000)) } // spikes
        // the fused kernels exist for H = 8, 16 (AVX2) and 16, 32 (AVX-512), for both activations
        for (H, spec, r, big, act) in [(16, "pyramid:7,5,3/slice/left", 7, true, Activation.tables), (8, "pyramid:5,3/voxel/left", 12, false, .tables),
                                       (20, "cube:5:1/row/left", 5, true, .tables), (12, "pyramid:7,5,3/slice/left", 3, false, .tables),
                                       (16, "pyramid:7,5,3/slice/left", 7, true, .quadratic), (8, "pyramid:7,5,3/slice/left", 7, false, .quadratic),
                                       (32, "pyramid:7,5,3/slice/left", 6, true, .quadratic), (12, "cube:5:1/row/left", 5, false, .quadratic)] {
            let m = try TestData.randomModel(H: H, spec: spec, seed: UInt64(H * 7 + r), big: big, normShift: r, activation: act)
            let n = try checkSplit(v, ct.shape, ct.dtype, model: m, slab: 3, label: "random \(act) \(spec) H=\(H) r=\(r)")
            XCTAssertGreaterThan(n.split, 0, "\(spec) r=\(r): split path used")
            XCTAssertGreaterThan(n.mono, 0, "\(spec) r=\(r): edges and spikes take the monolithic path")
        }
    }
}
