import Foundation
import VoxCodec
import VoxCore

public struct TrainConfig: Sendable, Codable {
    public var hidden: Int = 16
    public var neighbourhood: String = "pyramid:7,5,3/slice/noleft"
    public var normShift: Int = 7
    public var epochs: Int = 10
    public var batch: Int = 128
    public var lr: Float = 1e-4
    public var beta1: Float = 0.9
    public var beta2: Float = 0.98
    public var lambda: Float = 1
    public var seed: UInt64 = 1
    public var samplesPerVolume: Int = 100_000
    public var slabThickness: Int = 8
    public var augment: Int = 0
    /// Gate activations (nil: the tables of model format 1, as in checkpoints written before
    /// model format 2); `.quadratic` trains a format 2 model, which decodes faster.
    public var activation: Activation? = nil
    public init() {}
    public var act: Activation { activation ?? .tables }
}

public struct EpochStats: Sendable {
    public var epoch: Int
    public var loss: Float, mae: Float, pcc: Float
    public var samplesPerSecond: Double
}

/// Trains the float LSTM on a sample set with Adam and MAE + lambda * (1 - |PCC|).
public final class Trainer {
    public let config: TrainConfig
    public let nb: Neighbourhood
    public private(set) var params: FloatParams
    public private(set) var adam: Adam
    public private(set) var epoch = 0
    let work: LSTMWorkspace

    /// A trainer starting from a quantised model's weights (fine-tuning).
    /// `normShift`: the normalisation of the fine-tuned model (default: the base model's). A
    /// different one keeps the weights and reinterprets the scale: inputs and output are
    /// measured in units of 2^normShift voxel units (`Adapter.fittedNormShift`).
    public convenience init(config: TrainConfig, startingFrom m: LSTMModel, normShift: Int? = nil) throws {
        var c = config
        c.hidden = m.hidden
        c.neighbourhood = m.neighbourhood.spec
        c.normShift = normShift ?? m.normShift
        c.activation = m.activation
        try self.init(config: c)
        params = FloatParams(dequantising: m)
    }

    public init(config: TrainConfig) throws {
        self.config = config
        nb = try Neighbourhood(spec: config.neighbourhood)
        guard config.hidden >= 4, config.hidden <= 512, config.hidden % 4 == 0 else {
            throw VoxError(.invalidArgument, "--hidden must be a multiple of 4 from 4 to 512")
        }
        guard config.batch >= 2, config.batch <= 65536 else { throw VoxError(.invalidArgument, "--batch must be 2 to 65536") }
        guard (0...20).contains(config.normShift) else { throw VoxError(.invalidArgument, "--norm-shift must be 0 to 20") }
        guard (1...65536).contains(config.slabThickness) else { throw VoxError(.invalidArgument, "--slab must be 1 to 65536") }
        guard (1...10_000_000).contains(config.samplesPerVolume) else { throw VoxError(.invalidArgument, "--samples must be 1 to 10000000") }
        params = FloatParams(H: config.hidden, I: nb.stepInputs, T: nb.steps, seed: config.seed)
        adam = Adam(count: params.count, lr: config.lr, beta1: config.beta1, beta2: config.beta2)
        work = LSTMWorkspace(H: config.hidden, I: nb.stepInputs, T: nb.steps, B: config.batch, activation: config.act)
        try BLAS.load()
        BLAS.setThreads(1) // small matrices: threads cost more than they give, and 1 thread is deterministic
    }

    /// Runs the float model over samples in batches; `collect` takes each batch's outputs.
    private func forwardBatches(_ set: SampleSet, range: Range<Int>, _ collect: (Int) -> Void) {
        let TI = set.steps * set.stepInputs
        var s = range.lowerBound
        while s < range.upperBound {
            let n = min(config.batch, range.upperBound - s)
            set.x.withUnsafeBufferPointer { work.forward(params, x: $0.baseAddress! + s * TI, n: n) }
            collect(n)
            s += n
        }
    }

    /// Float predictions for samples (normalised units).
    public func predict(_ set: SampleSet, range: Range<Int>) -> [Float] {
        var out: [Float] = []
        forwardBatches(set, range: range) { n in out += work.y.prefix(n) }
        return out
    }

    /// Final hidden states h_T ([n][H], float) for samples (the output layer's features).
    public func hiddenStates(_ set: SampleSet, range: Range<Int>) -> [Float] {
        var out: [Float] = []
        forwardBatches(set, range: range) { n in out += work.hT.prefix(n * config.hidden) }
        return out
    }

    /// Least-squares output layer (Wo, bo) for given samples: what a per-volume adaptation
    /// would transmit. Ridge-regularised normal equations solved in Double.
    public func fitOutputLayer(_ set: SampleSet, ridge: Double = 1e-3) -> (Wo: [Float], bo: Float) {
        let H = config.hidden, n = set.count, D = H + 1
        let h = hiddenStates(set, range: 0..<n)
        var A = [Double](repeating: 0, count: D * D), b = [Double](repeating: 0, count: D)
        var f = [Double](repeating: 1, count: D)
        for i in 0..<n {
            for j in 0..<H { f[j] = Double(h[i * H + j]) }
            f[H] = 1
            let t = Double(set.target[i])
            for r in 0..<D { b[r] += f[r] * t; for c in 0..<D { A[r * D + c] += f[r] * f[c] } }
        }
        for r in 0..<D { A[r * D + r] += ridge * Double(n) }
        // Gaussian elimination with partial pivoting
        var M = A, y = b
        for col in 0..<D {
            var piv = col
            for r in col..<D where abs(M[r * D + col]) > abs(M[piv * D + col]) { piv = r }
            if piv != col { for c in 0..<D { M.swapAt(col * D + c, piv * D + c) }; y.swapAt(col, piv) }
            let d = M[col * D + col]
            if abs(d) < 1e-30 { continue }
            for r in (col + 1)..<D {
                let k = M[r * D + col] / d
                if k == 0 { continue }
                for c in col..<D { M[r * D + c] -= k * M[col * D + c] }
                y[r] -= k * y[col]
            }
        }
        var w = [Double](repeating: 0, count: D)
        for r in stride(from: D - 1, through: 0, by: -1) {
            var acc = y[r]
            for c in (r + 1)..<D { acc -= M[r * D + c] * w[c] }
            w[r] = abs(M[r * D + r]) < 1e-30 ? 0 : acc / M[r * D + r]
        }
        return (w[0..<H].map { Float($0) }, Float(w[H]))
    }

    /// A copy of the quantised model with another output layer.
    public func quantised(metadata: String, outputLayer: (Wo: [Float], bo: Float)) throws -> LSTMModel {
        var p = params
        p.Wo = outputLayer.Wo
        p.bo = outputLayer.bo
        return try Trainer.quantise(p, nb: nb, normShift: config.normShift, metadata: metadata, activation: config.act)
    }

    /// Loss of the current parameters over a sample set (no update).
    public func evaluate(_ set: SampleSet) -> (loss: Float, mae: Float, pcc: Float) {
        let p = predict(set, range: 0..<set.count)
        let l = maePCCLoss(pred: p[...], truth: set.target[...], lambda: config.lambda)
        return (l.loss, l.mae, l.pcc)
    }

    /// Loss and gradient over one batch (used by training and by the gradient check).
    public func lossAndGradient(_ set: SampleSet, indices: [Int]) -> (loss: Float, grad: [Float]) {
        let TI = set.steps * set.stepInputs
        var xb = [Float](repeating: 0, count: indices.count * TI)
        var tb = [Float](repeating: 0, count: indices.count)
        for (k, i) in indices.enumerated() {
            for j in 0..<TI { xb[k * TI + j] = set.x[i * TI + j] }
            tb[k] = set.target[i]
        }
        let n = indices.count
        xb.withUnsafeBufferPointer { work.forward(params, x: $0.baseAddress!, n: n) }
        let l = maePCCLoss(pred: work.y[0..<n], truth: tb[...], lambda: config.lambda)
        var grad = [Float](repeating: 0, count: params.count)
        work.backward(params, dy: l.grad, n: n, grad: &grad)
        return (l.loss, grad)
    }

    /// One pass over the samples in a seeded random order.
    public func runEpoch(_ set: SampleSet, progress: ((Int, Int, Float) -> Void)? = nil) -> EpochStats {
        var rng = SplitMix64(seed: config.seed &+ UInt64(epoch + 1) &* 0x9E37_79B9)
        var order = Array(0..<set.count)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        let t0 = Date()
        var flat = params.flat()
        var total: Float = 0, batches = 0
        var s = 0
        while s < order.count {
            let idx = Array(order[s..<min(order.count, s + config.batch)])
            s += idx.count
            if idx.count < 2 { continue }
            let (loss, grad) = lossAndGradient(set, indices: idx)
            adam.update(&flat, grad)
            params.setFlat(flat)
            total += loss; batches += 1
            progress?(s, order.count, total / Float(batches))
        }
        epoch += 1
        let secs = max(1e-9, Date().timeIntervalSince(t0))
        let ev = evaluate(set)
        return EpochStats(epoch: epoch, loss: ev.loss, mae: ev.mae, pcc: ev.pcc, samplesPerSecond: Double(set.count) / secs)
    }

    /// The fixed-point model the codec runs (docs/format.md "Model files"): W in Q12, b in
    /// Q24, Wo scaled by the largest power of two that keeps it in int16 and the output sum
    /// inside int32, bo in Q_F.
    public func quantised(metadata: String) throws -> LSTMModel {
        try Trainer.quantise(params, nb: nb, normShift: config.normShift, metadata: metadata, activation: config.act)
    }

    public static func quantise(_ p: FloatParams, nb: Neighbourhood, normShift r: Int, metadata: String,
                                activation: Activation = .tables) throws -> LSTMModel {
        guard p.W.allSatisfy({ $0.isFinite }), p.b.allSatisfy({ $0.isFinite }), p.Wo.allSatisfy({ $0.isFinite }), p.bo.isFinite else {
            throw VoxError(.invalidArgument, "training diverged (non-finite weights): lower --lr")
        }
        func q16(_ v: Float, _ scale: Float) -> Int16 { Int16(max(-32767, min(32767, (v * scale).rounded()))) }
        func q32(_ v: Float, _ scale: Double) -> Int32 { Int32(max(-2_147_483_647, min(2_147_483_647, (Double(v) * scale).rounded()))) }
        let W = p.W.map { q16($0, 4096) }
        let b = p.b.map { q32($0, Double(1 << 24)) }
        let maxWo = p.Wo.map { abs($0) }.max() ?? 0
        let limit = min(32767.0, Double((1 << 19) / p.H - 1))
        var s = 16
        if maxWo > 0 { s = Int(floor(log2(limit / Double(maxWo)))) }
        s = max(r - 11, min(s, 28))
        let F = 12 + s
        let Wo = p.Wo.map { q16($0, Float(pow(2.0, Double(s)))) }
        let bo = q32(p.bo, pow(2.0, Double(F)))
        return try LSTMModel(hidden: p.H, neighbourhood: nb, normShift: r, outFracBits: F, W: W, b: b, Wo: Wo, bo: bo, metadata: metadata,
                             activation: activation)
    }

    /// Mean absolute error in voxel units of the float model and of its quantised version on
    /// the same samples (up to `limit`): what quantisation costs. A residual coder pays about
    /// log2(quantised / float) bits per voxel for the difference.
    public func quantisationCost(_ set: SampleSet, model: LSTMModel, limit: Int = 20000) throws -> (floatMAE: Double, quantisedMAE: Double, bpp: Double) {
        let n = min(limit, set.count)
        let fl = predict(set, range: 0..<n)
        let TI = set.steps * set.stepInputs
        let xq = set.x[0..<(n * TI)].map { Int16(max(-32767, min(32767, ($0 * 4096).rounded()))) }
        let yq = try model.makeKernelModel().run(inputs: xq, count: n, kernel: .best)
        let unit = Double(1 << config.normShift)
        var ef = 0.0, eq = 0.0
        for i in 0..<n {
            let t = Double(set.target[i]) * unit
            // the codec rounds the correction to whole voxel units
            ef += abs(t - (Double(fl[i]) * unit).rounded())
            eq += abs(t - (Double(yq[i]) / pow(2, Double(model.outFracBits)) * unit).rounded())
        }
        ef /= Double(n); eq /= Double(n)
        return (ef, eq, log2(max(eq, 1e-9) / max(ef, 1e-9)))
    }

    // MARK: checkpoints (float parameters + Adam state + epoch; resumable)

    static let checkpointMagic: [UInt8] = Array("VXCKPT01".utf8)

    public func saveCheckpoint(_ path: String) throws {
        var w = ByteWriter()
        w.raw(Trainer.checkpointMagic)
        let cfg = try JSONEncoder().encode(config)
        w.u32(UInt32(cfg.count)); w.raw([UInt8](cfg))
        w.u32(UInt32(epoch)); w.u64(UInt64(adam.step))
        for arr in [params.flat(), adam.m, adam.v] {
            w.u32(UInt32(arr.count))
            for f in arr { w.u32(f.bitPattern) }
        }
        w.u32(Checksum.crc32c(w.bytes))
        try FileIO.writeAtomically(path, w.bytes)
    }

    /// Restores a checkpoint written with the same configuration.
    public func loadCheckpoint(_ path: String) throws {
        let bytes = try FileIO.read(path)
        guard bytes.count > 16, Array(bytes.prefix(8)) == Trainer.checkpointMagic else { throw VoxError(.badFormat, "\(path) is not a voxfs training checkpoint") }
        let body = Array(bytes.dropLast(4))
        var tail = ByteReader(Array(bytes.suffix(4)))
        guard try tail.u32() == Checksum.crc32c(body) else { throw VoxError(.corrupt, "\(path) is damaged (checksum mismatch)") }
        var r = ByteReader(body, offset: 8, what: path)
        let n = Int(try r.u32())
        let cfg = try JSONDecoder().decode(TrainConfig.self, from: Data(try r.raw(n)))
        guard cfg.hidden == config.hidden, cfg.neighbourhood == config.neighbourhood, cfg.normShift == config.normShift,
              cfg.act == config.act else {
            throw VoxError(.invalidArgument, "\(path) was made with a different model shape (H=\(cfg.hidden), \(cfg.neighbourhood), r=\(cfg.normShift), \(cfg.act) activations)")
        }
        let ep = Int(try r.u32())
        guard let step = Int(exactly: try r.u64()), step < (1 << 48) else { throw VoxError(.corrupt, "\(path): bad optimiser step") }
        var arrays: [[Float]] = []
        for _ in 0..<3 {
            let c = Int(try r.u32())
            guard c == params.count else { throw VoxError(.corrupt, "\(path): parameter count mismatch") }
            var a = [Float](repeating: 0, count: c)
            for i in 0..<c { a[i] = Float(bitPattern: try r.u32()) }
            guard a.allSatisfy({ $0.isFinite }) else { throw VoxError(.corrupt, "\(path): non-finite values") }
            arrays.append(a)
        }
        guard r.remaining == 0 else { throw VoxError(.corrupt, "\(path): unexpected trailing bytes") }
        params.setFlat(arrays[0])
        adam.m = arrays[1]; adam.v = arrays[2]; adam.step = step
        epoch = ep
    }
}


/// Encoder-side adaptation: fine-tunes a model on the volume being coded. The result is
/// stored in the stream (`EncodeOptions.embedModel`), so the decoder needs nothing else and
/// stays exactly as fast; the encoder pays a few seconds of training.
public enum Adapter {
    /// `voxfs compress` adapts by default (for LSTM presets) volumes this large, this many epochs:
    /// below about a million voxels the embedded model (a few KB) costs more than it saves.
    public static let autoMinVoxels = 1 << 20
    public static let autoEpochs = 2

    /// The intensity range the shipped models were trained on: their volumes (CT and MR, 11-12
    /// significant bits) span about 2^12 voxel units between the 0.01% and 99.99% quantiles.
    public static let referenceRangeBits = 12

    /// Bits of the volume's robust intensity range: ceil(log2(q99.99 - q0.01 + 1)), the quantiles
    /// of its voxel values (one voxel in 10,000 at either end is ignored, so a few hot voxels do
    /// not decide it).
    public static func rangeBits(_ values: [Int32]) -> Int {
        guard let lo0 = values.min(), let hi0 = values.max() else { return 0 }
        if lo0 == hi0 { return 0 }
        var hist = [Int](repeating: 0, count: Int(hi0 - lo0) + 1)
        for v in values { hist[Int(v - lo0)] += 1 }
        let cut = values.count / 10_000
        var acc = 0, lo = 0
        while lo < hist.count - 1 && acc + hist[lo] <= cut { acc += hist[lo]; lo += 1 }
        acc = 0
        var hi = hist.count - 1
        while hi > lo && acc + hist[hi] <= cut { acc += hist[hi]; hi -= 1 }
        let span = hi - lo + 1
        return span <= 1 ? 0 : Int.bitWidth - (span - 1).leadingZeroBitCount
    }

    /// The normalisation a model adapted to `volume` uses (issue 12, item 4): the base model's
    /// r moved by how far the volume's intensity range is from the training range (in bits), so that an
    /// 8-bit MR template looks to the network like the 12-bit scans it was trained on
    /// (measured on the ICBM 2009a T1 template: r = 3 codes 6.4% smaller than the base r = 7).
    /// A range within one bit of the training range keeps the base r: the estimate is good to
    /// about a bit, and one bit either way moved the full development volumes by 0.1% at most
    /// (a crop of the lung2 CT, 11 bits, lost its adaptation gain at r = 6).
    public static func fittedNormShift(base: LSTMModel, volume: LoadedVolume) -> Int {
        let d = rangeBits(volume.values) - referenceRangeBits
        if abs(d) <= 1 { return base.normShift }
        return min(max(base.normShift + d, 0), 20)
    }

    /// `normShift`: the adapted model's normalisation; nil: `fittedNormShift`.
    public static func adapt(_ base: LSTMModel, to volume: LoadedVolume, epochs: Int, samples: Int = 100_000,
                             lr: Float = 1e-3, slabThickness: Int = 8, seed: UInt64 = 1, normShift: Int? = nil) throws -> LSTMModel {
        var cfg = TrainConfig()
        cfg.lr = lr
        cfg.lambda = 0
        cfg.seed = seed
        cfg.slabThickness = slabThickness
        let tr = try Trainer(config: cfg, startingFrom: base, normShift: normShift ?? fittedNormShift(base: base, volume: volume))
        let set = try SampleSet.draw(volumes: [volume], neighbourhood: tr.nb, normShift: tr.config.normShift,
                                     slabThickness: slabThickness, perVolume: samples, seed: seed)
        for _ in 0..<epochs { _ = tr.runEpoch(set) }
        let meta = "{\"name\":\"adapted\",\"kind\":\"adapted\",\"base\":\"\(base.hashHex)\",\"epochs\":\(epochs),\"samples\":\(set.count)}"
        return try tr.quantised(metadata: meta)
    }
}
