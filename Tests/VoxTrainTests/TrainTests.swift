import Foundation
import XCTest
import VoxTestSupport
import VoxCodec
import VoxCore
import VoxTrain

final class TrainTests: XCTestCase {
    func realVolume(_ name: String) throws -> LoadedVolume {
        return try LoadedVolume.load(try RealData.require("volumes/\(name).raw"))
    }

    /// A crop of a real volume (keeps the tests fast).
    func crop(_ v: LoadedVolume, x0: Int, y0: Int, z0: Int, nx: Int, ny: Int, nz: Int) -> LoadedVolume {
        var out = [Int32]()
        for z in z0..<(z0 + nz) { for y in y0..<(y0 + ny) { for x in x0..<(x0 + nx) { out.append(v.values[(z * v.shape.y + y) * v.shape.x + x]) } } }
        return LoadedVolume(name: v.name + "-crop", path: v.path, shape: Shape(nx, ny, nz), dtype: v.dtype, values: out)
    }

    func smallConfig(lambda: Float) -> TrainConfig {
        var c = TrainConfig()
        c.hidden = 8
        c.neighbourhood = "pyramid:5,3/slice/noleft"
        c.normShift = 7
        c.batch = 32
        c.lambda = lambda
        c.lr = 1e-3
        c.seed = 3
        return c
    }

    func testGradientMatchesFiniteDifferences() throws {
        let v = crop(try realVolume("ct_lung1"), x0: 200, y0: 200, z0: 20, nx: 64, ny: 64, nz: 6)
        for (lambda, act): (Float, Activation) in [(0, .tables), (1, .tables), (0, .quadratic), (1, .quadratic)] {
            var cfg = smallConfig(lambda: lambda)
            cfg.activation = act
            let tr = try Trainer(config: cfg)
            let set = try SampleSet.draw(volumes: [v], neighbourhood: tr.nb, normShift: cfg.normShift, perVolume: 64, seed: 9)
            let idx = Array(0..<min(32, set.count))
            let (_, grad) = tr.lossAndGradient(set, indices: idx)
            // numerical derivative in double-sided form on a spread of parameters
            var checked = 0, bad = 0
            let H = cfg.hidden, K = tr.params.K
            // probes in every gate block of W (input and recurrent columns), b, Wo and bo
            var probe: [Int] = []
            for g in 0..<4 {
                for u in [0, H / 2, H - 1] {
                    let row = g * H + u
                    probe += [row * K + 0, row * K + K / 3, row * K + K - 1]
                    probe.append(4 * H * K + row)
                }
            }
            probe += [4 * H * K + 4 * H, 4 * H * K + 4 * H + H / 2, grad.count - 1]
            var worst = ""
            for k in probe {
                let eps: Float = 1e-3
                let up = try perturbed(tr, k, eps).lossAndGradient(set, indices: idx).loss
                let dn = try perturbed(tr, k, -eps).lossAndGradient(set, indices: idx).loss
                let num = (up - dn) / (2 * eps)
                let ana = grad[k]
                checked += 1
                if abs(num - ana) > 1e-4 + 0.03 * max(abs(num), abs(ana)) {
                    bad += 1
                    worst += " [\(k): numeric \(num) analytic \(ana)]"
                }
            }
            // MAE has kinks; allow a rare probe to straddle one
            XCTAssertLessThanOrEqual(bad, 2, "lambda \(lambda), \(act): \(bad) of \(checked) gradient probes disagree:\(worst)")
        }
    }

    /// A trainer whose parameter k is shifted by eps (through a checkpoint round trip, the
    /// public way to set parameters).
    func perturbed(_ tr: Trainer, _ k: Int, _ eps: Float) throws -> Trainer {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ck-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try tr.saveCheckpoint(path)
        var bytes = try FileIO.read(path)
        // parameters follow magic, config and counters: locate by re-reading the layout
        let cfgLen = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
        let base = 8 + 4 + cfgLen + 4 + 8 + 4 + 4 * k
        var f = Float(bitPattern: UInt32(bytes[base]) | UInt32(bytes[base + 1]) << 8 | UInt32(bytes[base + 2]) << 16 | UInt32(bytes[base + 3]) << 24)
        f += eps
        let b = f.bitPattern
        for i in 0..<4 { bytes[base + i] = UInt8((b >> (8 * UInt32(i))) & 0xFF) }
        let body = Array(bytes.dropLast(4))
        let crc = Checksum.crc32c(body)
        bytes = body + [UInt8(crc & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8((crc >> 16) & 0xFF), UInt8(crc >> 24)]
        try FileIO.writeAtomically(path, bytes)
        let t = try Trainer(config: tr.config)
        try t.loadCheckpoint(path)
        return t
    }

    func testTinyTrainingRunLowersLossOnRealData() throws {
        let v = crop(try realVolume("ct_lung1"), x0: 120, y0: 120, z0: 16, nx: 256, ny: 256, nz: 8)
        var cfg = smallConfig(lambda: 1)
        cfg.epochs = 3
        let tr = try Trainer(config: cfg)
        let set = try SampleSet.draw(volumes: [v], neighbourhood: tr.nb, normShift: cfg.normShift, perVolume: 4000, seed: 1)
        XCTAssertGreaterThan(set.count, 3000)
        let before = tr.evaluate(set)
        for _ in 0..<cfg.epochs { _ = tr.runEpoch(set) }
        let after = tr.evaluate(set)
        XCTAssertLessThan(after.loss, before.loss * 0.9, "loss \(before.loss) -> \(after.loss)")
        XCTAssertLessThan(after.mae, before.mae, "mae \(before.mae) -> \(after.mae)")
    }

    func testQuantisedAgreesWithFloatAndRoundTrips() throws {
        let full = try realVolume("ct_lung1")
        let v = crop(full, x0: 150, y0: 150, z0: 16, nx: 200, ny: 160, nz: 8)
        for act in Activation.allCases {
        var cfg = smallConfig(lambda: 0)
        cfg.activation = act
        cfg.epochs = 2
        let tr = try Trainer(config: cfg)
        let set = try SampleSet.draw(volumes: [v], neighbourhood: tr.nb, normShift: cfg.normShift, perVolume: 3000, seed: 2)
        for _ in 0..<cfg.epochs { _ = tr.runEpoch(set) }
        let m = try tr.quantised(metadata: "{\"name\":\"test\"}")
        // quantised vs float predictions on the same inputs, in voxel units
        let fl = tr.predict(set, range: 0..<set.count)
        let xq = set.x.map { Int16(($0 * 4096).rounded()) }
        let yq = try m.makeKernelModel().run(inputs: xq, count: set.count, kernel: .scalar)
        let scale = Double(1 << cfg.normShift)
        var maxDiff = 0.0, sumDiff = 0.0
        for i in 0..<set.count {
            let q = Double(yq[i]) / pow(2, Double(m.outFracBits)) * scale
            let f = Double(fl[i]) * scale
            maxDiff = max(maxDiff, abs(q - f)); sumDiff += abs(q - f)
        }
        let meanDiff = sumDiff / Double(set.count)
        // the quantisation step of the prediction is one voxel unit: the fixed-point model
        // must agree with the float one to within that on average, and never be far off
        XCTAssertLessThan(meanDiff, 0.5, "mean |quantised - float| = \(meanDiff) voxel units")
        XCTAssertLessThan(maxDiff, 4, "max |quantised - float| = \(maxDiff) voxel units")
        // the trained model codes the volume byte-exactly and the stream names it
        let raw = v.bytes()
        let opts = EncodeOptions(preset: try Preset.named("default"), model: m, slabThickness: 4)
        let s = try raw.withUnsafeBytes { try VXZ.encode(raw: $0, shape: v.shape, dtype: v.dtype, options: opts) }
        let h = try StreamHeader(parsing: s, fileSize: s.count)
        XCTAssertEqual(h.modelHash, m.hash)
        XCTAssertThrowsError(try VXZ.Decoder(stream: s)) { XCTAssertEqual(($0 as? VoxError)?.kind, .missingModel) }
        XCTAssertEqual(try VXZ.Decoder(stream: s, extraModels: [m]).decodeVolume(), raw)
        XCTAssertEqual(m.activation, act, "the quantised model keeps the activations it was trained with")
        // fine-tuning starts from the model's own activations
        XCTAssertEqual(try Trainer(config: cfg, startingFrom: m).config.act, act)
        }
    }

    func testSamplingIsStratifiedAndDeterministic() throws {
        let v = crop(try realVolume("ct_lung1"), x0: 0, y0: 0, z0: 16, nx: 512, ny: 512, nz: 8)
        let nb = try Neighbourhood(spec: "pyramid:5,3")
        let a = try SampleSet.draw(volumes: [v], neighbourhood: nb, normShift: 7, perVolume: 5000, seed: 4)
        let b = try SampleSet.draw(volumes: [v], neighbourhood: nb, normShift: 7, perVolume: 5000, seed: 4)
        XCTAssertEqual(a.x, b.x)
        XCTAssertEqual(a.target, b.target)
        // flat samples (all inputs zero: air) are a minority, though most of a chest CT is flat
        let TI = a.steps * a.stepInputs
        var flat = 0
        for i in 0..<a.count where (0..<TI).allSatisfy({ a.x[i * TI + $0] == 0 }) { flat += 1 }
        XCTAssertLessThan(Double(flat) / Double(a.count), 0.3)
    }

    func testCheckpointResumeIsExact() throws {
        let v = crop(try realVolume("mr_brain1"), x0: 60, y0: 60, z0: 8, nx: 128, ny: 128, nz: 8)
        var cfg = smallConfig(lambda: 1)
        cfg.epochs = 2
        let set = try SampleSet.draw(volumes: [v], neighbourhood: try Neighbourhood(spec: cfg.neighbourhood), normShift: 7, perVolume: 2000, seed: 5)
        let straight = try Trainer(config: cfg)
        _ = straight.runEpoch(set); _ = straight.runEpoch(set)
        let first = try Trainer(config: cfg)
        _ = first.runEpoch(set)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ck-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try first.saveCheckpoint(path)
        let resumed = try Trainer(config: cfg)
        try resumed.loadCheckpoint(path)
        XCTAssertEqual(resumed.epoch, 1)
        _ = resumed.runEpoch(set)
        XCTAssertEqual(try resumed.quantised(metadata: "{}").hash, try straight.quantised(metadata: "{}").hash)
    }

    func testAdaptingToAVolumeLowersItsBpp() throws {
        let v = crop(try realVolume("ct_lung2"), x0: 128, y0: 128, z0: 24, nx: 256, ny: 256, nz: 8)
        let base = try Preset.named("fast").builtinModel()!
        let adapted = try Adapter.adapt(base, to: v, epochs: 2, samples: 20000)
        XCTAssertNotEqual(adapted.hash, base.hash)
        let raw = v.bytes()
        func size(_ m: LSTMModel, embed: Bool) throws -> Int {
            let o = EncodeOptions(preset: try Preset.named("fast"), model: m, slabThickness: 8, embedModel: embed)
            let s = try raw.withUnsafeBytes { try VXZ.encode(raw: $0, shape: v.shape, dtype: v.dtype, options: o) }
            XCTAssertEqual(try VXZ.Decoder(stream: s).decodeVolume(), raw)
            return s.count
        }
        let before = try size(base, embed: false), after = try size(adapted, embed: true)
        // the adapted stream, its embedded model included, is smaller
        XCTAssertLessThan(after, before, "adapted \(after) bytes vs base \(before)")
        XCTAssertEqual(adapted.normShift, base.normShift, "a 12-bit CT keeps the training normalisation")
    }

    /// The robust intensity range ignores one voxel in 10,000 at either end.
    func testRangeBitsIgnoresOutliers() {
        XCTAssertEqual(Adapter.rangeBits([]), 0)
        XCTAssertEqual(Adapter.rangeBits([Int32](repeating: 300, count: 1000)), 0)
        var v = (0..<100_000).map { Int32($0 % 256) }          // 0...255: 8 bits
        XCTAssertEqual(Adapter.rangeBits(v), 8)
        v[0] = 32000; v[1] = -3000                              // 2 of 100,000 (the cut is 10 per end)
        XCTAssertEqual(Adapter.rangeBits(v), 8)
        v += [Int32](repeating: 32000, count: 20)               // now more than the cut at the top
        XCTAssertEqual(Adapter.rangeBits(v), 15)                // 0...32000
        XCTAssertEqual(Adapter.rangeBits((0..<100_000).map { Int32($0 % 4096) - 1024 }), 12)
    }

    /// Issue 12, item 4: a model adapted to an 8-bit MR (the ICBM 2009a T1 template) gets a
    /// normalisation fitted to its intensity range, and codes it smaller than the same
    /// adaptation at the base model's r (both streams exact).
    func testAdaptationFitsTheNormalisationToAn8BitVolume() throws {
        let v = crop(try realVolume("mr_icbm152_t1"), x0: 30, y0: 40, z0: 70, nx: 136, ny: 150, nz: 16)
        XCTAssertEqual(v.dtype, .uint8)
        let base = try Preset.named("default").builtinModel()!
        let r = Adapter.fittedNormShift(base: base, volume: v)
        XCTAssertEqual(r, base.normShift - 4, "8-bit range: 4 bits below the 12-bit training range")
        let fitted = try Adapter.adapt(base, to: v, epochs: 2, samples: 30000)
        let unfitted = try Adapter.adapt(base, to: v, epochs: 2, samples: 30000, normShift: base.normShift)
        XCTAssertEqual(fitted.normShift, r)
        XCTAssertEqual(unfitted.normShift, base.normShift)
        let raw = v.bytes()
        func size(_ m: LSTMModel) throws -> Int {
            let o = EncodeOptions(preset: try Preset.named("default"), model: m, slabThickness: 8, embedModel: true)
            let s = try raw.withUnsafeBytes { try VXZ.encode(raw: $0, shape: v.shape, dtype: v.dtype, options: o) }
            XCTAssertEqual(try VXZ.Decoder(stream: s).decodeVolume(), raw)
            return s.count
        }
        let a = try size(fitted), b = try size(unfitted)
        XCTAssertLessThan(Double(a), Double(b) * 0.98, "fitted r=\(r): \(a) bytes, base r: \(b)")
    }
}
