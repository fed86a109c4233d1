import ArgumentParser
import Foundation
import VoxCodec
import VoxCore
import VoxTrain

struct ModelShapeOptions: ParsableArguments {
    @Option(help: "Start from a preset's model shape (hidden size and neighbourhood).") var preset: String?
    @Option(help: "LSTM hidden size H (multiple of 4).") var hidden: Int?
    @Option(help: "Neighbourhood spec, e.g. pyramid:7,5,3/slice/noleft or cube:5/voxel/left.") var neighbourhood: String?
    @Option(help: "Normalisation r: one input/output unit is 2^r voxel units.") var normShift: Int = 7
    @Option(help: "Training epochs.") var epochs: Int = 10
    @Option(help: "Random seed (sampling, initial weights, shuffling).") var seed: UInt64 = 1
    @Option(help: "Samples drawn per training volume.") var samples: Int = 100_000
    @Option(help: "Batch size.") var batch: Int = 128
    @Option(help: "Adam learning rate.") var lr: Float = 1e-4
    @Option(help: "Adam beta1.") var beta1: Float = 0.9
    @Option(help: "Adam beta2.") var beta2: Float = 0.98
    @Option(help: "Weight lambda of the (1 - |PCC|) loss term.") var lambda: Float = 1
    @Option(help: "Slices per slab (as the codec will use).") var slab: Int = 8
    @Option(help: "Augment with flipped copies of each volume (0: none, 1: x, 3: x and y, 7: x, y and z).") var augment: Int = 0
    @Option(help: "Gate activations: tables (sigmoid/tanh tables, model format 1) or quadratic (piecewise quadratic, format 2: no table lookups, decodes faster).") var activation: String = "tables"

    func config() throws -> TrainConfig {
        var c = TrainConfig()
        if let p = preset {
            guard case .lstm(let h, let spec, _) = try Preset.named(p).predictor else {
                throw VoxError(.invalidArgument, "preset '\(p)' has no LSTM to train")
            }
            c.hidden = h
            c.neighbourhood = spec
        }
        if let h = hidden { c.hidden = h }
        if let n = neighbourhood { c.neighbourhood = try Neighbourhood(spec: n).spec }
        c.normShift = normShift; c.epochs = epochs; c.seed = seed; c.samplesPerVolume = samples
        guard let act = Activation(name: activation) else { throw VoxError(.invalidArgument, "--activation must be tables or quadratic") }
        c.activation = act
        c.augment = augment; c.batch = batch; c.lr = lr; c.beta1 = beta1; c.beta2 = beta2; c.lambda = lambda; c.slabThickness = slab
        guard epochs >= 0, samples >= 1 else { throw VoxError(.invalidArgument, "--epochs must be >= 0 and --samples >= 1") }
        return c
    }
}

/// Trains on `volumes` with a terminal progress line per epoch. Returns the trainer.
func trainModel(_ cfg: TrainConfig, volumes: [LoadedVolume], checkpoint: String?, resume: Bool, quiet: Bool) throws -> Trainer {
    let trainer = try Trainer(config: cfg)
    if resume, let ck = checkpoint, FileManager.default.fileExists(atPath: ck) {
        try trainer.loadCheckpoint(ck)
        if !quiet { print("resumed from \(ck) at epoch \(trainer.epoch)") }
    }
    let t0 = Date()
    let set = try SampleSet.draw(volumes: volumes, neighbourhood: trainer.nb, normShift: cfg.normShift,
                                 slabThickness: cfg.slabThickness, perVolume: cfg.samplesPerVolume, seed: cfg.seed, augment: cfg.augment)
    if !quiet {
        print(String(format: "%d samples from %d volumes (%.1f s), H=%d, %@, T=%d, I=%d, %d weights, OpenBLAS core %@",
                     set.count, volumes.count, Date().timeIntervalSince(t0), cfg.hidden, trainer.nb.spec, trainer.nb.steps,
                     trainer.nb.stepInputs, trainer.params.count, BLAS.coreName))
    }
    let tty = isatty(1) != 0 && !quiet
    while trainer.epoch < cfg.epochs {
        let e = trainer.epoch + 1
        var last = Date.distantPast
        let epochStart = Date()
        let st = trainer.runEpoch(set) { done, total, loss in
            guard tty, Date().timeIntervalSince(last) > 0.2 || done == total else { return }
            last = Date()
            let w = 30, f = done * w / max(1, total)
            let rate = Double(done) / max(1e-6, Date().timeIntervalSince(epochStart))
            print(String(format: "\repoch %d/%d [%@%@] loss %.5f  %.0f samples/s", e, cfg.epochs, String(repeating: "#", count: f), String(repeating: ".", count: w - f), loss, rate), terminator: "")
            fflush(nil)
        }
        if tty { print("\r\u{1B}[K", terminator: "") }
        if !quiet {
            print(String(format: "epoch %d/%d  loss %.5f  mae %.5f (%.2f voxel units)  pcc %.4f  %.0f samples/s", st.epoch, cfg.epochs, st.loss, st.mae,
                         st.mae * Float(1 << cfg.normShift), st.pcc, st.samplesPerSecond))
        }
        if let ck = checkpoint { try trainer.saveCheckpoint(ck) }
    }
    return trainer
}

func trainingMetadata(_ cfg: TrainConfig, name: String, volumes: [LoadedVolume], epochs: Int) -> String {
    let vols = volumes.map { "\"\($0.name)\"" }.joined(separator: ",")
    return "{\"name\":\"\(name)\",\"kind\":\"trained\",\"hidden\":\(cfg.hidden),\"neighbourhood\":\"\(cfg.neighbourhood)\",\"norm_shift\":\(cfg.normShift),\"activation\":\"\(cfg.act)\",\"epochs\":\(epochs),\"seed\":\(cfg.seed),\"samples_per_volume\":\(cfg.samplesPerVolume),\"batch\":\(cfg.batch),\"lr\":\(cfg.lr),\"beta1\":\(cfg.beta1),\"beta2\":\(cfg.beta2),\"lambda\":\(cfg.lambda),\"volumes\":[\(vols)]}"
}

/// Codes a volume with a model (or a classical preset) and measures bpp and speeds.
func measure(_ v: LoadedVolume, preset: Preset, model: LSTMModel?, threads: Int) throws -> (bpp: Double, enc: Double, dec: Double) {
    let raw = v.bytes()
    let opts = EncodeOptions(preset: preset, model: model, slabThickness: 8, threads: threads)
    let t0 = Date()
    let s = try raw.withUnsafeBytes { try VXZ.encode(raw: $0, shape: v.shape, dtype: v.dtype, options: opts) }
    let t1 = Date()
    let back = try VXZ.Decoder(stream: s, extraModels: model.map { [$0] } ?? []).decodeVolume(threads: threads)
    let t2 = Date()
    guard back == raw else { throw VoxError(.corrupt, "round trip of \(v.name) was not byte-identical") }
    return (Double(s.count * 8) / Double(v.shape.voxels), t1.timeIntervalSince(t0), t2.timeIntervalSince(t1))
}

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train an LSTM predictor on raw volumes and write a quantised model file.")

    @Option(name: .customLong("data"), parsing: .upToNextOption, help: "Training volumes (raw files with JSON sidecars).") var data: [String]
    @Option(help: "Output model file (.vxm).") var out: String
    @OptionGroup var shape: ModelShapeOptions
    @Option(help: "Checkpoint file, written after every epoch.") var checkpoint: String?
    @Flag(help: "Resume from --checkpoint if it exists.") var resume = false
    @Flag(help: "After training, report bpp of the quantised model on the training volumes.") var report = false
    @Flag(name: .shortAndLong, help: "Less output.") var quiet = false

    func run() throws {
        guard !data.isEmpty else { throw VoxError(.invalidArgument, "give training volumes with --data") }
        let cfg = try shape.config()
        let vols = try data.map { try LoadedVolume.load($0) }
        let trainer = try trainModel(cfg, volumes: vols, checkpoint: checkpoint, resume: resume, quiet: quiet)
        let name = URL(fileURLWithPath: out).deletingPathExtension().lastPathComponent
        let m = try trainer.quantised(metadata: trainingMetadata(cfg, name: name, volumes: vols, epochs: trainer.epoch))
        try FileIO.writeAtomically(out, m.serialized())
        if !quiet {
            print("\(out): model \(m.hashHex)")
            let check = try SampleSet.draw(volumes: vols, neighbourhood: trainer.nb, normShift: cfg.normShift, slabThickness: cfg.slabThickness,
                                           perVolume: 5000, seed: cfg.seed &+ 77)
            let q = try trainer.quantisationCost(check, model: m)
            print(String(format: "quantisation: mean |error| %.3f voxel units in float, %.3f quantised (about %+.4f bpp)", q.floatMAE, q.quantisedMAE, q.bpp))
        }
        if report {
            let classical = try Preset.named("classical"), lstm = try Preset.named("default")
            for v in vols {
                let c = try measure(v, preset: classical, model: nil, threads: ProcessInfo.processInfo.activeProcessorCount)
                let l = try measure(v, preset: lstm, model: m, threads: ProcessInfo.processInfo.activeProcessorCount)
                print(String(format: "%@: classical %.3f bpp, trained model %.3f bpp (%+.1f%%), decode %.2f Mvox/s", v.name, c.bpp, l.bpp,
                             100 * (l.bpp / c.bpp - 1), Double(v.shape.voxels) / l.dec / 1e6))
            }
        }
    }
}

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "k-fold cross-validation over volumes: train on k-1 folds, code the held-out ones.")

    @Argument(help: "Volumes (raw files with JSON sidecars).") var volumes: [String]
    @Option(help: "Number of folds (volumes are dealt round-robin).") var folds: Int = 4
    @Option(parsing: .upToNextOption, help: "Instead of folds: train on the volumes given as arguments, test on these (cross-modality).") var holdout: [String] = []
    @Option(help: "Also report held-out bpp after these epochs (comma-separated).") var reportEpochs: String?
    @Option(help: "Test on at most this many middle slices of each held-out volume (faster experiments).") var testSlices: Int?
    @OptionGroup var shape: ModelShapeOptions
    @Option(help: "Write the table as markdown here too.") var markdown: String?
    @Flag(name: .shortAndLong, help: "Less output.") var quiet = false
    @Flag(help: "Experiment: also refit the output layer on each held-out volume (least squares) and report its bpp.") var adaptOutput = false
    @Option(help: "Also report bpp after fine-tuning the fold's model on each held-out volume for N epochs (what `voxfs compress --adapt N` does; the embedded model is counted).") var adapt: Int = 0

    func middle(_ v: LoadedVolume) -> LoadedVolume {
        guard let n = testSlices, n < v.shape.z, n >= 1 else { return v }
        let z0 = (v.shape.z - n) / 2
        let sv = v.shape.sliceVoxels
        return LoadedVolume(name: v.name, path: v.path, shape: Shape(v.shape.x, v.shape.y, n), dtype: v.dtype,
                            values: Array(v.values[(z0 * sv)..<((z0 + n) * sv)]))
    }

    func run() throws {
        let cfg = try shape.config()
        let vols = try volumes.map { try LoadedVolume.load($0) }
        var plan: [(train: [LoadedVolume], test: [LoadedVolume])] = []
        if !holdout.isEmpty {
            plan = [(vols, try holdout.map { try LoadedVolume.load($0) })]
        } else {
            guard folds >= 2, vols.count >= folds else { throw VoxError(.invalidArgument, "need --folds >= 2 and at least that many volumes") }
            for f in 0..<folds {
                plan.append((vols.enumerated().filter { $0.offset % folds != f }.map(\.element),
                             vols.enumerated().filter { $0.offset % folds == f }.map(\.element)))
            }
        }
        var marks = Set((reportEpochs ?? "").split(separator: ",").compactMap { Int($0) })
        marks.insert(cfg.epochs)
        let threads = ProcessInfo.processInfo.activeProcessorCount
        var rows: [String] = []
        var perEpoch: [Int: [Double]] = [:]
        var sums = (c: 0.0, l: 0.0, n: 0, dec: 0.0, vox: 0, a: 0.0)
        var adapted: [String] = []
        var classicalBpp: [String: Double] = [:]
        rows.append("| fold | volume | voxels | classical bpp | LSTM bpp | gain | LSTM encode s | LSTM decode s | decode Mvox/s |")
        rows.append("|---|---|---|---|---|---|---|---|---|")
        for (f, split) in plan.enumerated() {
            let test = split.test.map(middle)
            if !quiet { print("fold \(f + 1)/\(plan.count): train on \(split.train.map(\.name).joined(separator: ", ")); test on \(test.map(\.name).joined(separator: ", "))") }
            let trainer = try Trainer(config: cfg)
            let set = try SampleSet.draw(volumes: split.train, neighbourhood: trainer.nb, normShift: cfg.normShift,
                                         slabThickness: cfg.slabThickness, perVolume: cfg.samplesPerVolume, seed: cfg.seed, augment: cfg.augment)
            for v in test where classicalBpp[v.name] == nil {
                classicalBpp[v.name] = try measure(v, preset: try Preset.named("classical"), model: nil, threads: threads).bpp
            }
            for e in 1...max(1, cfg.epochs) {
                if cfg.epochs > 0 {
                    let st = trainer.runEpoch(set)
                    if !quiet { print(String(format: "  epoch %d: loss %.5f mae %.5f pcc %.4f, %.0f samples/s", e, st.loss, st.mae, st.pcc, st.samplesPerSecond)) }
                }
                guard marks.contains(e) else { continue }
                let m = try trainer.quantised(metadata: trainingMetadata(cfg, name: "eval-fold\(f + 1)", volumes: split.train, epochs: trainer.epoch))
                for v in test {
                    let l = try measure(v, preset: try Preset.named("default"), model: m, threads: threads)
                    perEpoch[e, default: []].append(l.bpp)
                    if adaptOutput && (e == cfg.epochs || cfg.epochs == 0) {
                        // uniform (unstratified) samples of the held-out volume itself
                        let own = try SampleSet.draw(volumes: [v], neighbourhood: trainer.nb, normShift: cfg.normShift,
                                                     slabThickness: cfg.slabThickness, perVolume: 50_000, seed: 99)
                        let ol = trainer.fitOutputLayer(own)
                        let ma = try trainer.quantised(metadata: "{}", outputLayer: ol)
                        let la = try measure(v, preset: try Preset.named("default"), model: ma, threads: threads)
                        print(String(format: "adapted output layer on %@: %.3f bpp (vs %.3f)", v.name, la.bpp, l.bpp))
                    }
                    if adapt > 0 && (e == cfg.epochs || cfg.epochs == 0) {
                        let t0 = Date()
                        let ma = try Adapter.adapt(m, to: v, epochs: adapt, slabThickness: cfg.slabThickness)
                        let secs = Date().timeIntervalSince(t0)
                        let raw = v.bytes()
                        let opts = EncodeOptions(preset: try Preset.named("default"), model: ma, slabThickness: cfg.slabThickness, threads: threads, embedModel: true)
                        let s = try raw.withUnsafeBytes { try VXZ.encode(raw: $0, shape: v.shape, dtype: v.dtype, options: opts) }
                        guard try VXZ.Decoder(stream: s).decodeVolume(threads: threads) == raw else { throw VoxError(.corrupt, "adapted round trip failed") }
                        let bpp = Double(s.count * 8) / Double(v.shape.voxels)
                        adapted.append(String(format: "| %d | %@ | %.3f | %.3f | %.3f | %+.1f%% | %.1f |", f + 1, v.name, classicalBpp[v.name]!, l.bpp, bpp,
                                              100 * (1 - bpp / classicalBpp[v.name]!), secs))
                        sums.a += bpp
                    }
                    if e == cfg.epochs || cfg.epochs == 0 {
                        let c = classicalBpp[v.name]!
                        rows.append(String(format: "| %d | %@ | %d | %.3f | %.3f | %+.1f%% | %.2f | %.2f | %.2f |", f + 1, v.name, v.shape.voxels, c, l.bpp,
                                           100 * (1 - l.bpp / c), l.enc, l.dec, Double(v.shape.voxels) / l.dec / 1e6))
                        sums.c += c; sums.l += l.bpp; sums.n += 1; sums.dec += l.dec; sums.vox += v.shape.voxels
                    }
                }
            }
        }
        rows.append(String(format: "| mean | | | %.3f | %.3f | %+.1f%% | | | %.2f |", sums.c / Double(sums.n), sums.l / Double(sums.n),
                           100 * (1 - sums.l / sums.c), Double(sums.vox) / sums.dec / 1e6))
        var out = ["H=\(cfg.hidden), \(cfg.neighbourhood), r=\(cfg.normShift), \(cfg.epochs) epochs, \(cfg.samplesPerVolume) samples/volume, lr \(cfg.lr), lambda \(cfg.lambda), seed \(cfg.seed); gain = fewer bits than classical; \(threads) threads", ""] + rows
        if adapt > 0 {
            out += ["", "Adapted to each held-out volume (\(adapt) epochs at encode time, model embedded in the stream):", "",
                    "| fold | volume | classical bpp | LSTM bpp | adapted bpp | gain | adapt s |", "|---|---|---|---|---|---|---|"] + adapted
            out.append(String(format: "| mean | | %.3f | %.3f | %.3f | %+.1f%% | |", sums.c / Double(sums.n), sums.l / Double(sums.n), sums.a / Double(sums.n),
                              100 * (1 - sums.a / sums.c)))
        }
        if marks.count > 1 {
            out += ["", "| epochs | mean held-out LSTM bpp |", "|---|---|"]
            for e in marks.sorted() { if let b = perEpoch[e] { out.append(String(format: "| %d | %.3f |", e, b.reduce(0, +) / Double(b.count))) } }
        }
        let table = out.joined(separator: "\n")
        print(table)
        if let md = markdown { try FileIO.writeAtomically(md, Array((table + "\n").utf8)) }
    }
}
