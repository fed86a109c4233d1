import ArgumentParser
import Foundation
import VoxCodec
import VoxCore
import VoxTrain
import VoxFormats

struct VoxFSCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "voxfs",
        abstract: "Lossless LSTM compression of 3D medical volumes.",
        version: "0.1.0",
        subcommands: [Compress.self, Decompress.self, Info.self, Train.self, Eval.self, Probe.self, Pack.self, Unpack.self, Ls.self, Verify.self, Compact.self, Stats.self, Mount.self, Presets.self, ModelCommand.self]
    )
}

struct CodingOptions: ParsableArguments {
    @Option(help: "Worker threads (default: all cores).")
    var threads: Int?

    @Option(help: "LSTM kernel: scalar, avx2, avx512-vnni (default: the fastest this CPU runs; all give identical results).")
    var kernel: String?

    @Flag(name: .shortAndLong, help: "No progress bar or summary.")
    var quiet = false

    func resolvedKernel() throws -> Kernel {
        guard let k = kernel else { return .best }
        guard let kk = Kernel(name: k) else { throw VoxError(.invalidArgument, "unknown kernel '\(k)' (scalar, avx2, avx512-vnni)") }
        guard Kernel.available.contains(kk) else { throw VoxError(.invalidArgument, "this CPU cannot run the \(k) kernel") }
        return kk
    }

    func resolvedThreads() throws -> Int {
        let t = threads ?? ProcessInfo.processInfo.activeProcessorCount
        guard t >= 1, t <= 1024 else { throw VoxError(.invalidArgument, "--threads must be 1 to 1024") }
        return t
    }
}

struct Compress: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Compress a raw volume into a .vxz stream.")

    @Argument(help: "Raw little-endian volume (x fastest, z slowest).") var input: String
    @Argument(help: "Output .vxz file.") var output: String
    @Option(help: "Shape XxYxZ (default: from the JSON sidecar beside the input).") var shape: String?
    @Option(help: "Voxel type: uint8, int16, uint16 (default: from the sidecar).") var dtype: String?
    @Option(help: "Preset: \(Preset.all.map(\.name).joined(separator: ", ")).") var preset: String = Preset.defaultName
    @Option(help: "Model file (.vxm) to use instead of the preset's.") var model: String?
    @Option(help: "Slices per slab (random-access unit).") var slab: Int = 8
    @Option(help: "Stream format version to write: 4 (v3 plus contexts from the prediction's distance to the volume's minimum), 3 (v2 plus the residual filter and sign-pattern contexts), 2 (a stream and a checksum per slice) or 1.") var format: Int = Int(StreamHeader.version)
    @Option(help: "Formats 2 and 3: rows of a slice after which the next slice's coder state is taken (the lag of parallel slice decoding; default: half the rows).") var stateRows: Int?
    @Flag(help: "Formats 2 and 3, LSTM presets: do not also try the classical predictor on each slice.") var noFallback = false
    @Option(help: "Fine-tune the preset's model on this volume for N epochs and store it in the stream (0: off; default: 2 for LSTM presets on volumes of 1M voxels or more). The adapted model's normalisation fits the volume's intensity range. Slower to compress, same decode speed.") var adapt: Int?
    @OptionGroup var coding: CodingOptions

    func run() throws {
        let start = Date()
        let sidecar = try Sidecar.load(forRaw: input)
        var shp: Shape, dt: DType
        if let s = shape {
            guard let p = Shape(parsing: s), p.isValid else { throw VoxError(.invalidArgument, "bad --shape '\(s)': expected XxYxZ with positive sizes") }
            shp = p
        } else if let sc = sidecar { shp = try sc.parsed().0 } else {
            throw VoxError(.invalidArgument, "no --shape given and no sidecar \(Sidecar.candidates(for: input)[0]) found")
        }
        if let d = dtype {
            guard let p = DType(name: d) else { throw VoxError(.invalidArgument, "bad --dtype '\(d)': use uint8, int16 or uint16") }
            dt = p
        } else if let sc = sidecar { dt = try sc.parsed().1 } else {
            throw VoxError(.invalidArgument, "no --dtype given and no sidecar found")
        }
        let pr = try Preset.named(preset)
        var m: LSTMModel? = nil
        if let path = model {
            guard case .lstm = pr.predictor else { throw VoxError(.invalidArgument, "--model needs an LSTM preset, not '\(pr.name)'") }
            m = try LSTMModel.load(path: path)
        }
        guard slab >= 1, slab <= 65536 else { throw VoxError(.invalidArgument, "--slab must be 1 to 65536") }
        guard (1...Int(StreamHeader.version)).contains(format) else { throw VoxError(.invalidArgument, "--format must be 1 to \(StreamHeader.version)") }
        guard (stateRows ?? 1) >= 1, (stateRows ?? 1) <= 65535 else { throw VoxError(.invalidArgument, "--state-rows must be 1 to 65535") }
        let raw = try FileIO.read(input)
        guard raw.count == shp.voxels * dt.bytesPerVoxel else {
            throw VoxError(.invalidArgument, "\(input) has \(raw.count) bytes, but \(shp) \(dt) needs \(shp.voxels * dt.bytesPerVoxel)")
        }
        // everything that can be refused is refused before minutes of adaptation
        let threads = try coding.resolvedThreads(), kernel = try coding.resolvedKernel()
        guard shp.sliceVoxels * min(slab, shp.z) <= StreamHeader.maxSlabVoxels else {
            throw VoxError(.invalidArgument, "slab of \(slab) slices is too large (over 2^26 voxels); use a smaller --slab")
        }
        var isLSTM = false
        if case .lstm = pr.predictor { isLSTM = true }
        let adapt = self.adapt ?? (isLSTM && shp.voxels >= Adapter.autoMinVoxels ? Adapter.autoEpochs : 0)
        guard adapt >= 0, adapt <= 1000 else { throw VoxError(.invalidArgument, "--adapt must be 0 to 1000 epochs") }
        if adapt > 0 {
            guard case .lstm = pr.predictor, let base = try m ?? pr.builtinModel() else {
                throw VoxError(.invalidArgument, "--adapt needs an LSTM preset, not '\(pr.name)'")
            }
            var vals = [Int32](repeating: 0, count: shp.voxels)
            raw.withUnsafeBytes { b in vals.withUnsafeMutableBufferPointer { dt.decode(b, into: $0) } }
            let vol = LoadedVolume(name: input, path: input, shape: shp, dtype: dt, values: vals)
            let t0 = Date()
            m = try Adapter.adapt(base, to: vol, epochs: adapt, slabThickness: slab)
            if !coding.quiet { print(String(format: "adapted model %@ to this volume in %.1f s (%d epochs)", String(m!.hashHex.prefix(16)), Date().timeIntervalSince(t0), adapt)) }
        }
        var opts = EncodeOptions(preset: pr, model: m, slabThickness: slab, threads: threads, kernel: kernel, embedModel: adapt > 0)
        opts.formatVersion = UInt16(format)
        opts.stateRows = stateRows
        opts.classicalFallback = !noFallback
        let bar = ProgressBar(label: "compress", total: (shp.z + slab - 1) / slab, voxelsPerUnit: shp.sliceVoxels * slab, enabled: !coding.quiet)
        let t0 = Date()
        let out = try raw.withUnsafeBytes { try VXZ.encode(raw: $0, shape: shp, dtype: dt, options: opts, progress: bar.update) }
        let secs = Date().timeIntervalSince(t0)
        bar.finish()
        try FileIO.writeAtomically(output, out)
        if !coding.quiet {
            let bpp = Double(out.count * 8) / Double(shp.voxels)
            print(String(format: "%@: %@ %@ -> %ld bytes, %.3f bpp, ratio %.2f, %.2f Mvox/s (%.2f s coding, %.2f s total, %d threads, preset %@)",
                         output, shp.description, dt.description, out.count, bpp, Double(raw.count) / Double(out.count),
                         Double(shp.voxels) / secs / 1e6, secs, Date().timeIntervalSince(start), opts.threads, pr.name))
        }
    }
}

struct Decompress: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Decompress a .vxz stream back to the raw volume, byte for byte.")

    @Argument(help: "Input .vxz file.") var input: String
    @Argument(help: "Output raw file.") var output: String
    @Option(help: "Model file (.vxm) the stream was coded with, if not installed.") var model: String?
    @Option(help: "Format 2: threads per slab (slices decoded as a wavefront; default: the cores the slabs leave over, slabs run in parallel on --threads).") var sliceThreads: Int?
    @OptionGroup var coding: CodingOptions

    func run() throws {
        if let st = sliceThreads { guard st >= 1, st <= 16 else { throw VoxError(.invalidArgument, "--slice-threads must be 1 to 16") } }
        let stream = try FileIO.read(input)
        var extra: [LSTMModel] = []
        if let m = model { extra.append(try LSTMModel.load(path: m)) }
        let dec = try VXZ.Decoder(stream: stream, name: input, kernel: try coding.resolvedKernel(), extraModels: extra)
        let h = dec.header
        let tmp = output + ".voxfs-tmp-\(getpid())"
        let fd = try Sys.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o644, operation: "create", name: output)
        var ok = false, open = true
        defer {
            if open { Sys.closeQuietly(fd) }
            if !ok { try? Sys.unlinkIfExists(tmp) }
        }
        let slabBytes = h.slabThickness * h.shape.sliceVoxels * h.dtype.bytesPerVoxel
        let bar = ProgressBar(label: "decompress", total: h.slabs.count, voxelsPerUnit: h.shape.sliceVoxels * h.slabThickness, enabled: !coding.quiet)
        let t0 = Date()
        let cores = try coding.resolvedThreads()
        let perSlab = sliceThreads ?? VXZ.Decoder.sliceThreads(cores: cores, slabs: h.slabs.count)
        try dec.decodeAll(threads: try coding.resolvedThreads(), sliceThreads: perSlab, progress: bar.update) { i, bytes in
            try bytes.withUnsafeBytes { try Sys.writeAll(fd, $0, at: i * slabBytes, path: output) }
        }
        let secs = Date().timeIntervalSince(t0)
        bar.finish()
        try Sys.fsync(fd, path: output)
        open = false
        try Sys.close(fd, path: output)
        try Sys.rename(tmp, to: output)
        ok = true
        if !coding.quiet {
            print(String(format: "%@: %@ %@, %.3f bpp, %.2f Mvox/s (%.2f s, %d threads), all %ld slab checksums match",
                         output, h.shape.description, h.dtype.description, Double(stream.count * 8) / Double(h.shape.voxels),
                         Double(h.shape.voxels) / secs / 1e6, secs, try coding.resolvedThreads(), h.slabs.count))
        }
    }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Describe a .vxz stream without decoding it.")

    @Argument(help: "Input .vxz file.") var input: String
    @Flag(help: "Also list every slab.") var slabs = false

    func run() throws {
        let stream = try FileIO.read(input)
        let h = try StreamHeader(parsing: stream, fileSize: stream.count, name: input)
        let raw = h.shape.voxels * h.dtype.bytesPerVoxel
        print("file:          \(input)")
        print("format:        vxz version \(h.formatVersion)\(h.formatVersion >= 2 ? " (a stream and a checksum per slice; next slice's state after \(h.stateRows) rows\(h.formatVersion >= 3 ? "; residual filter and sign-pattern contexts" : "")\(h.formatVersion >= 4 ? "; floor contexts, counted adaptation" : ""))" : "")")
        print("shape:         \(h.shape) (\(h.shape.voxels) voxels)")
        print("dtype:         \(h.dtype)")
        print("preset:        \(h.preset)")
        print("predictor:     \(h.usesLSTM ? "LSTM" : "classical MED-3D blend"), \(h.left ? "with" : "without") left voxels\(h.left ? " (voxel-serial)" : " (row-parallel)")")
        print("neighbourhood: \(h.neighbourhood)")
        if h.usesLSTM {
            let known = h.embeddedModel != nil || ModelRegistry.shared.model(hash: h.modelHash) != nil
            let note = h.embeddedModel != nil ? " (embedded in the stream: adapted to this volume)" : (known ? "" : " (not installed)")
            print("model:         \(Checksum.hex(h.modelHash))\(note)")
            print("normalisation: r=\(h.normShift), output shift \(h.outShift)")
        } else {
            print("model:         none")
        }
        print("slabs:         \(h.slabs.count) of \(h.slabThickness) slices")
        if h.usesLSTM && h.formatVersion >= 2 {
            let all = h.slabs.flatMap(\.slices)
            let fb = all.filter { $0.predictor == .classical }.count
            print("fallback:      \(fb) of \(all.count) slices coded with the classical predictor (shorter there)")
        }
        print(String(format: "size:          %ld bytes (raw %ld), %.3f bpp, ratio %.2f", stream.count, raw, Double(stream.count * 8) / Double(h.shape.voxels), Double(raw) / Double(stream.count)))
        if slabs {
            for (i, s) in h.slabs.enumerated() {
                let sl = h.slices(ofSlab: i)
                print(String(format: "  slab %4d  slices %4d-%-4d  offset %10llu  %9u bytes  %@  crc32c %08x", i, sl.lowerBound, sl.upperBound - 1, s.offset, s.length, s.method == .coded ? "coded " : "stored", s.crc))
                for (k, c) in s.slices.enumerated() {
                    print(String(format: "        slice %4d  %9u bytes  %@  crc32c %08x", sl.lowerBound + k, c.length, c.predictor == .classical ? "classical" : "stream   ", c.crc))
                }
            }
        }
    }
}

struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Tell what medical files are: a volume VoxFS codes (format, shape, type) or opaque (and why).")
    @Argument(help: "Files.") var files: [String]
    @Flag(help: "Check that each volume file rebuilds byte for byte from its parts.") var verify = false

    func run() throws {
        var failed = false
        for path in files {
            let bytes: [UInt8]
            do { bytes = try FileIO.read(path) } catch let e as VoxError { print("\(path): unreadable: \(e.message)"); failed = true; continue }
            let r = Formats.recognise(path: path, bytes: bytes)
            if let s = r.source {
                var line = "\(path): \(r.kind.rawValue) volume \(s.shape) \(s.dtype), header \(s.parts[0].header.count) bytes, trailer \(s.parts[0].trailer.count) bytes"
                if let w = s.parts[0].wrapper { line += ", compressed: rebuilt by \(w.summary)" }
                if verify {
                    let ok = (try? s.parts[0].rebuildFile(voxels: s.voxels[...], dtype: s.dtype)) == bytes
                    line += ok ? ", rebuilds exactly" : ", REBUILD MISMATCH"
                    failed = failed || !ok
                }
                print(line)
            } else {
                print("\(path): opaque (\(r.reason ?? "unknown"))")
            }
        }
        if failed { throw ExitCode(1) }
    }
}

struct Presets: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the coding presets.")
    func run() throws {
        for p in Preset.all {
            var model = "-"
            if let m = try p.builtinModel() { model = String(m.hashHex.prefix(16)) + (p.hasTrainedModel ? " trained  " : " untrained") }
            print("\(p.name.padding(toLength: 14, withPad: " ", startingAt: 0)) model \(model.padding(toLength: 26, withPad: " ", startingAt: 0))  \(p.summary)")
        }
        print("LSTM kernels on this CPU: \(Kernel.available.map(\.description).joined(separator: ", ")) (using \(Kernel.best))")
    }
}

struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "model", abstract: "Inspect and export model files.",
                                                    subcommands: [Export.self, Show.self])

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a preset's built-in model to a .vxm file.")
        @Option(help: "Preset name.") var preset: String = Preset.defaultName
        @Argument(help: "Output .vxm file.") var output: String
        func run() throws {
            guard let m = try Preset.named(preset).builtinModel() else { throw VoxError(.invalidArgument, "preset '\(preset)' has no model") }
            try FileIO.writeAtomically(output, m.serialized())
            print("\(output): model \(m.hashHex)")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Describe a .vxm model file.")
        @Argument(help: "Model file.") var input: String
        func run() throws {
            let m = try LSTMModel.load(path: input)
            print("model:         \(m.hashHex)")
            print("hidden:        \(m.hidden)")
            print("neighbourhood: \(m.neighbourhood.spec) (T=\(m.steps), I=\(m.stepInputs))")
            print("normalisation: r=\(m.normShift), F=\(m.outFracBits)")
            print("metadata:      \(m.metadata)")
        }
    }
}

/// A progress bar on a terminal (stderr), nothing otherwise.
final class ProgressBar: @unchecked Sendable {
    let label: String
    let total: Int
    let voxelsPerUnit: Int
    let enabled: Bool
    let start = Date()
    let lock = NSLock()

    init(label: String, total: Int, voxelsPerUnit: Int, enabled: Bool) {
        self.label = label
        self.total = total
        self.voxelsPerUnit = voxelsPerUnit
        self.enabled = enabled && isatty(2) != 0
    }

    func update(_ done: Int, _ total: Int) {
        guard enabled else { return }
        lock.lock(); defer { lock.unlock() }
        let width = 30
        let filled = total > 0 ? done * width / total : width
        let secs = max(Date().timeIntervalSince(start), 1e-6)
        let rate = Double(done * voxelsPerUnit) / secs / 1e6
        let eta = done > 0 ? secs * Double(total - done) / Double(done) : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        FileHandle.standardError.write(Data(String(format: "\r%@ [%@] %d/%d slabs  %.2f Mvox/s  ETA %.0f s ", label, bar, done, total, rate, eta).utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
