import CVoxKernels
import Foundation
import VoxCore

/// Everything needed to code the slabs of one volume: predictor, model, neighbourhood.
/// Immutable once built; shared by the worker threads.
public final class SlabCoder: @unchecked Sendable {
    public let shape: Shape
    public let dtype: DType
    public let left: Bool
    public let pad: Int32
    public let model: LSTMModel?
    public let kernel: Kernel
    /// Residual stage of the stream format: 0 for versions 1 and 2, 1 for version 3
    /// (sign-pattern contexts, the residual filter on slices with left voxels), 2 for version 4
    /// (version 3 and the floor-distance contexts).
    public let stage: Int
    let kmodel: KernelModel?
    let nb: Neighbourhood?
    let dx, dy, dz, slot: UnsafeMutableBufferPointer<Int32>

    public init(shape: Shape, dtype: DType, left: Bool, pad: Int32, model: LSTMModel?, kernel: Kernel = .best, stage: Int = 0) throws {
        precondition((0...2).contains(stage))
        self.shape = shape; self.dtype = dtype; self.pad = pad; self.model = model; self.kernel = kernel; self.stage = stage
        if let m = model {
            self.left = m.neighbourhood.left
            nb = m.neighbourhood
            kmodel = try m.makeKernelModel()
        } else {
            self.left = left
            nb = nil
            kmodel = nil
        }
        let n = max(nb?.count ?? 0, 1)
        dx = .allocate(capacity: n); dy = .allocate(capacity: n); dz = .allocate(capacity: n); slot = .allocate(capacity: n)
        if let nb {
            for i in 0..<nb.count { dx[i] = nb.dx[i]; dy[i] = nb.dy[i]; dz[i] = nb.dz[i]; slot[i] = nb.slot[i] }
        }
    }

    deinit { dx.deallocate(); dy.deallocate(); dz.deallocate(); slot.deallocate() }

    func params(slices: Int) -> vox_slab_params {
        var p = vox_slab_params()
        p.nx = Int32(shape.x); p.ny = Int32(shape.y); p.nz = Int32(slices)
        p.vmin = dtype.minValue; p.vmax = dtype.maxValue
        p.pad = pad
        p.left = left ? 1 : 0
        p.kernel = Int32(kernel.rawValue)
        p.stage = Int32(stage)
        if let m = model, let km = kmodel, let nb {
            p.norm_shift = Int32(m.normShift)
            p.out_shift = Int32(m.outFracBits - m.normShift)
            p.model = km.pointer
            p.n_nb = Int32(nb.count)
            p.nb_dx = UnsafePointer(dx.baseAddress); p.nb_dy = UnsafePointer(dy.baseAddress)
            p.nb_dz = UnsafePointer(dz.baseAddress); p.nb_slot = UnsafePointer(slot.baseAddress)
        }
        return p
    }

    static func describe(_ rc: Int32) -> String {
        switch rc {
        case Int32(VOX_ERR_PARAM): "inconsistent coding parameters"
        case Int32(VOX_ERR_NOMEM): "out of memory"
        case Int32(VOX_ERR_CORRUPT): "decoded values out of range (damaged data)"
        case Int32(VOX_ERR_RANGE): "voxel values outside the voxel type's range"
        case Int32(VOX_ERR_ABORT): "decoding stopped"
        default: "error \(rc)"
        }
    }

    /// Codes `slices` slices of voxels (Int32, within the dtype range).
    public func encode(_ vox: UnsafeBufferPointer<Int32>, slices: Int) throws -> [UInt8] {
        precondition(vox.count == shape.sliceVoxels * slices)
        var p = params(slices: slices)
        var out: UnsafeMutablePointer<UInt8>? = nil
        let n = vox_encode_slab(&p, vox.baseAddress, &out)
        guard n >= 0, let out else {
            throw VoxError(n == Int64(VOX_ERR_NOMEM) ? .outOfMemory : .invalidArgument, "cannot encode slab: \(SlabCoder.describe(Int32(n)))")
        }
        defer { vox_free(out) }
        return Array(UnsafeBufferPointer(start: out, count: Int(n)))
    }

    /// Decodes into `vox` (shape.sliceVoxels * slices values).
    public func decode(_ data: UnsafeRawBufferPointer, slices: Int, into vox: UnsafeMutableBufferPointer<Int32>) throws {
        precondition(vox.count == shape.sliceVoxels * slices)
        var p = params(slices: slices)
        let rc = vox_decode_slab(&p, data.bindMemory(to: UInt8.self).baseAddress, data.count, vox.baseAddress)
        guard rc == Int32(VOX_OK) else {
            throw VoxError(rc == Int32(VOX_ERR_NOMEM) ? .outOfMemory : .corrupt, SlabCoder.describe(rc))
        }
    }

    /// Codes `slices` slices as format v2: one stream per slice, each starting from the coder
    /// state the slice before had after `stateRows` rows; with `choose`, each slice of an LSTM
    /// coder is coded with the classical predictor too and the shorter kept.
    public func encodeV2(_ vox: UnsafeBufferPointer<Int32>, slices: Int, stateRows: Int, choose: Bool)
        throws -> (bytes: [UInt8], lengths: [UInt32], predictors: [UInt8]) {
        precondition(vox.count == shape.sliceVoxels * slices)
        var p = params(slices: slices)
        var out: UnsafeMutablePointer<UInt8>? = nil
        var lens = [UInt32](repeating: 0, count: slices), preds = [UInt8](repeating: 0, count: slices)
        let n = lens.withUnsafeMutableBufferPointer { lp in
            preds.withUnsafeMutableBufferPointer { pp in
                vox_encode_slab_v2(&p, Int32(stateRows), choose ? 1 : 0, vox.baseAddress, &out, lp.baseAddress, pp.baseAddress)
            }
        }
        guard n >= 0, let out else {
            throw VoxError(n == Int64(VOX_ERR_NOMEM) ? .outOfMemory : .invalidArgument, "cannot encode slab: \(SlabCoder.describe(Int32(n)))")
        }
        defer { vox_free(out) }
        return (Array(UnsafeBufferPointer(start: out, count: Int(n))), lens, preds)
    }

    /// Receives each decoded slice (in order) from the v2 decoder; throwing stops the decode.
    final class SliceSink {
        let body: (Int) throws -> Void
        var error: Error?
        init(_ body: @escaping (Int) throws -> Void) { self.body = body }
    }

    /// Decodes a v2 slab (`lengths`/`predictors` per slice, payloads back to back in `data`)
    /// into `vox` on `threads` threads (a wavefront across slices). `slice(z)` is called as
    /// soon as slice z's voxels are final, in slice order; an error it throws stops the
    /// decode and is rethrown.
    public func decodeV2(_ data: UnsafeRawBufferPointer, slices: Int, stateRows: Int, lengths: [UInt32], predictors: [UInt8],
                         into vox: UnsafeMutableBufferPointer<Int32>, threads: Int = 1, firstSlice: Int = 0,
                         slice: @escaping (Int) throws -> Void) throws {
        precondition(vox.count == shape.sliceVoxels * slices && lengths.count == slices && predictors.count == slices)
        var p = params(slices: slices)
        guard let base = data.bindMemory(to: UInt8.self).baseAddress ?? (data.count == 0 ? UnsafePointer<UInt8>(bitPattern: 1) : nil) else {
            throw VoxError(.corrupt, "no slab data")
        }
        var ptrs: [UnsafePointer<UInt8>?] = []
        var lens: [Int] = []
        var off = 0
        for l in lengths {
            guard off + Int(l) <= data.count else { throw VoxError(.corrupt, "slice streams run past the slab's bytes") }
            ptrs.append(base + off); lens.append(Int(l)); off += Int(l)
        }
        let sink = SliceSink(slice)
        let ctx = Unmanaged.passRetained(sink)
        defer { ctx.release() }
        var failed: Int32 = -1
        let rc = ptrs.withUnsafeBufferPointer { pp in
            lens.withUnsafeBufferPointer { lp in
                predictors.withUnsafeBufferPointer { prp in
                    vox_decode_slab_v2(&p, Int32(stateRows), pp.baseAddress, lp.baseAddress, prp.baseAddress, vox.baseAddress,
                                       Int32(max(1, threads)), { c, z in
                        let s = Unmanaged<SliceSink>.fromOpaque(c!).takeUnretainedValue()
                        do { try s.body(Int(z)); return 0 } catch { s.error = error; return 1 }
                    }, ctx.toOpaque(), &failed)
                }
            }
        }
        if let e = sink.error { throw e }
        guard rc == Int32(VOX_OK) else {
            let what = failed >= 0 ? "slice \(firstSlice + Int(failed)): " : ""
            throw VoxError(rc == Int32(VOX_ERR_NOMEM) ? .outOfMemory : .corrupt, what + SlabCoder.describe(rc))
        }
    }

    /// Anchor (classical) and final predictions of every voxel, for tests and training.
    public func predictions(_ vox: UnsafeBufferPointer<Int32>, slices: Int) throws -> (anchor: [Int32], pred: [Int32]) {
        let r = try predictions(vox, slices: slices, reference: false)
        return (r.anchor, r.pred)
    }

    /// Predictions as above; `reference`: by the monolithic path with the scalar kernel (the
    /// definition the split path must equal). `split`/`monolithic`: how many voxels' LSTM
    /// outputs each path computed.
    public func predictions(_ vox: UnsafeBufferPointer<Int32>, slices: Int, reference: Bool) throws
        -> (anchor: [Int32], pred: [Int32], split: Int, monolithic: Int) {
        var p = params(slices: slices)
        p.reference = reference ? 1 : 0
        var stats: [Int64] = [0, 0]
        var a = [Int32](repeating: 0, count: vox.count), q = [Int32](repeating: 0, count: vox.count)
        let rc = stats.withUnsafeMutableBufferPointer { st in
            p.stats = st.baseAddress
            return a.withUnsafeMutableBufferPointer { ab in
                q.withUnsafeMutableBufferPointer { qb in vox_predict_slab(&p, vox.baseAddress, ab.baseAddress, qb.baseAddress) }
            }
        }
        guard rc == Int32(VOX_OK) else { throw VoxError(.invalidArgument, SlabCoder.describe(rc)) }
        return (a, q, Int(stats[0]), Int(stats[1]))
    }
}

extension SlabCoder {
    /// LSTM inputs (int16 Q12, [count][T][I]) and anchors for chosen voxels of a slab, exactly
    /// as the coder computes them: what training learns from is what the codec codes.
    public static func gatherInputs(neighbourhood nb: Neighbourhood, normShift: Int, shape: Shape, dtype: DType, pad: Int32,
                                    slab vox: UnsafeBufferPointer<Int32>, slices: Int, indices: [Int64]) throws -> (x: [Int16], anchor: [Int32]) {
        precondition(vox.count == shape.sliceVoxels * slices)
        var dx = nb.dx, dy = nb.dy, dz = nb.dz, slot = nb.slot
        var x = [Int16](repeating: 0, count: indices.count * nb.steps * nb.stepInputs)
        var a = [Int32](repeating: 0, count: indices.count)
        let rc: Int32 = dx.withUnsafeMutableBufferPointer { dxp in dy.withUnsafeMutableBufferPointer { dyp in
            dz.withUnsafeMutableBufferPointer { dzp in slot.withUnsafeMutableBufferPointer { sp in
                var p = vox_slab_params()
                p.nx = Int32(shape.x); p.ny = Int32(shape.y); p.nz = Int32(slices)
                p.vmin = dtype.minValue; p.vmax = dtype.maxValue; p.pad = pad
                p.left = nb.left ? 1 : 0
                p.norm_shift = Int32(normShift); p.out_shift = 1
                p.n_nb = Int32(nb.count)
                p.nb_dx = UnsafePointer(dxp.baseAddress); p.nb_dy = UnsafePointer(dyp.baseAddress)
                p.nb_dz = UnsafePointer(dzp.baseAddress); p.nb_slot = UnsafePointer(sp.baseAddress)
                return indices.withUnsafeBufferPointer { ip in
                    x.withUnsafeMutableBufferPointer { xp in
                        a.withUnsafeMutableBufferPointer { ap in
                            vox_gather_inputs(&p, Int32(nb.steps), Int32(nb.stepInputs), vox.baseAddress, ip.baseAddress, Int64(indices.count), xp.baseAddress, ap.baseAddress)
                        }
                    }
                }
            } }
        } }
        guard rc == Int32(VOX_OK) else { throw VoxError(.invalidArgument, "cannot gather training inputs: \(describe(rc))") }
        return (x, a)
    }
}

public struct EncodeOptions: Sendable {
    public var preset: Preset
    public var model: LSTMModel?          // overrides the preset's built-in model
    public var slabThickness: Int = 8
    public var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    public var kernel: Kernel = .best
    /// Store the model file in the stream (for models made for this one volume).
    public var embedModel = false
    /// Stream format to write: 2 (per-slice streams and checksums) or 1.
    public var formatVersion: UInt16 = StreamHeader.version
    /// v2: rows of slice z-1 after which slice z's coder state is taken (the wavefront lag);
    /// nil: half the rows (docs/design.md, "Format v2": ratio within 0.05% of a state carried
    /// through the whole slice, while two threads still keep busy).
    public var stateRows: Int? = nil
    /// v2, LSTM presets: code each slice with the classical predictor too and keep the shorter.
    public var classicalFallback = true
    public static func defaultStateRows(rows: Int) -> Int { max(1, min(65535, (rows + 1) / 2)) }

    public init(preset: Preset, model: LSTMModel? = nil, slabThickness: Int = 8, threads: Int? = nil, kernel: Kernel = .best,
                embedModel: Bool = false) {
        self.embedModel = embedModel
        self.preset = preset
        self.model = model
        self.slabThickness = slabThickness
        if let threads { self.threads = threads }
        self.kernel = kernel
    }
}


/// `.vxz` streams: whole-volume encode and decode, and single-slab random access.
public enum VXZ {
    /// Encodes a raw little-endian volume. `progress(done, total)` is called per slab.
    public static func encode(raw: UnsafeRawBufferPointer, shape: Shape, dtype: DType, options: EncodeOptions,
                              progress: (@Sendable (Int, Int) -> Void)? = nil) throws -> [UInt8] {
        guard shape.isValid else { throw VoxError(.invalidArgument, "invalid shape \(shape)") }
        guard raw.count == shape.voxels * dtype.bytesPerVoxel else {
            throw VoxError(.invalidArgument, "input has \(raw.count) bytes but shape \(shape) \(dtype) needs \(shape.voxels * dtype.bytesPerVoxel)")
        }
        guard options.slabThickness >= 1, options.slabThickness <= 65536 else { throw VoxError(.invalidArgument, "slab thickness must be 1 to 65536") }
        guard shape.sliceVoxels * min(options.slabThickness, shape.z) <= StreamHeader.maxSlabVoxels else {
            throw VoxError(.invalidArgument, "slab of \(options.slabThickness) slices is too large (over 2^26 voxels); use a smaller --slab")
        }
        var model = options.model
        var left = false
        switch options.preset.predictor {
        case .classical(let l): left = l; model = nil
        case .lstm: if model == nil { model = try options.preset.builtinModel() }
        }
        // pad: the volume's minimum (edges of CT and MRI are background)
        var vmin = Int32.max
        let bpv = dtype.bytesPerVoxel
        do {
            let chunk = 1 << 20
            var buf = [Int32](repeating: 0, count: chunk)
            var i = 0
            let n = shape.voxels
            while i < n {
                let m = min(chunk, n - i)
                buf.withUnsafeMutableBufferPointer { b in
                    dtype.decode(UnsafeRawBufferPointer(rebasing: raw[(i * bpv)..<((i + m) * bpv)]), into: UnsafeMutableBufferPointer(rebasing: b[0..<m]))
                    for k in 0..<m where b[k] < vmin { vmin = b[k] }
                }
                i += m
            }
        }
        guard StreamHeader.readableVersions.contains(options.formatVersion) else {
            throw VoxError(.invalidArgument, "stream format version must be \(StreamHeader.readableVersions.lowerBound) to \(StreamHeader.readableVersions.upperBound)")
        }
        let coder = try SlabCoder(shape: shape, dtype: dtype, left: left, pad: vmin, model: model, kernel: options.kernel,
                                  stage: StreamHeader.residualStage(version: options.formatVersion))
        let thickness = options.slabThickness
        let nslabs = (shape.z + thickness - 1) / thickness
        let v2 = options.formatVersion >= 2
        let choose = options.classicalFallback && model != nil
        let stateRows = options.stateRows ?? EncodeOptions.defaultStateRows(rows: shape.y)
        guard !v2 || (stateRows >= 1 && stateRows <= 65535) else { throw VoxError(.invalidArgument, "state rows must be 1 to 65535") }
        final class Results: @unchecked Sendable {
            var payloads: [[UInt8]]
            var entries: [StreamHeader.Slab]
            var done = 0
            let lock = NSLock()
            init(_ n: Int) {
                payloads = Array(repeating: [], count: n)
                entries = Array(repeating: StreamHeader.Slab(offset: 0, length: 0, crc: 0, method: .coded), count: n)
            }
        }
        let res = Results(nslabs)
        struct RawRef: @unchecked Sendable { let b: UnsafeRawBufferPointer }
        let baseRef = RawRef(b: raw)
        try parallelFor(nslabs, threads: options.threads) { i in
            let z0 = i * thickness, z1 = min(shape.z, z0 + thickness)
            let nv = (z1 - z0) * shape.sliceVoxels
            let bytes = UnsafeRawBufferPointer(rebasing: baseRef.b[(z0 * shape.sliceVoxels * bpv)..<(z1 * shape.sliceVoxels * bpv)])
            let crc = Checksum.crc32c(bytes)
            var vox = [Int32](repeating: 0, count: nv)
            vox.withUnsafeMutableBufferPointer { dtype.decode(bytes, into: $0) }
            var payload: [UInt8]
            var slices: [StreamHeader.Slice] = []
            if v2 {
                let r = try vox.withUnsafeBufferPointer {
                    try coder.encodeV2($0, slices: z1 - z0, stateRows: stateRows, choose: choose)
                }
                payload = r.bytes
                let sb = shape.sliceVoxels * bpv
                for k in 0..<(z1 - z0) {
                    let sc = Checksum.crc32c(UnsafeRawBufferPointer(rebasing: bytes[(k * sb)..<((k + 1) * sb)]))
                    slices.append(StreamHeader.Slice(length: r.lengths[k], crc: sc, predictor: r.predictors[k] == 0 ? .stream : .classical))
                }
            } else {
                payload = try vox.withUnsafeBufferPointer { try coder.encode($0, slices: z1 - z0) }
            }
            var method = StreamHeader.Method.coded
            if payload.count >= bytes.count {
                payload = Array(bytes)
                method = .stored
                let sb = UInt32(shape.sliceVoxels * bpv)
                for k in slices.indices { slices[k].length = sb; slices[k].predictor = .stream }
            }
            res.lock.lock()
            res.payloads[i] = payload
            res.entries[i] = StreamHeader.Slab(offset: 0, length: UInt32(payload.count), crc: crc, method: method, slices: slices)
            res.done += 1
            let d = res.done
            res.lock.unlock()
            progress?(d, nslabs)
        }
        let presetName = options.preset.name
        let spec = model?.neighbourhood.spec ?? (left ? "classical/left" : "classical/noleft")
        let embedded = options.embedModel ? model?.serialized() : nil
        var off = UInt64(StreamHeader.size(preset: presetName, neighbourhood: spec, slabs: nslabs, slices: v2 ? shape.z : 0, embedded: embedded?.count))
        for i in 0..<nslabs {
            res.entries[i].offset = off
            off += UInt64(res.entries[i].length)
        }
        let header = StreamHeader(shape: shape, dtype: dtype, usesLSTM: model != nil, left: coder.left,
                                  normShift: model?.normShift ?? 0, outShift: model.map { $0.outFracBits - $0.normShift } ?? 0,
                                  pad: vmin, slabThickness: thickness, modelHash: model?.hash ?? [UInt8](repeating: 0, count: 32),
                                  preset: presetName, neighbourhood: spec, slabs: res.entries, embeddedModel: embedded,
                                  formatVersion: options.formatVersion, stateRows: v2 ? stateRows : 0)
        var out = header.serialized()
        precondition(UInt64(out.count) == res.entries.first?.offset ?? UInt64(out.count))
        out.reserveCapacity(Int(off))
        for p in res.payloads { out += p }
        return out
    }

    /// A decoder for one stream: parses the header once, then decodes any slab on demand.
    public final class Decoder: @unchecked Sendable {
        public let header: StreamHeader
        /// Slab i's stored bytes (from the stream in memory, or fetched from an archive record).
        let slabBytes: @Sendable (Int) throws -> [UInt8]
        let coder: SlabCoder
        public let name: String

        public convenience init(stream: [UInt8], name: String = "stream", kernel: Kernel = .best, extraModels: [LSTMModel] = []) throws {
            let h = try StreamHeader(parsing: stream, fileSize: stream.count, name: name)
            try self.init(header: h, name: name, kernel: kernel, extraModels: extraModels) { i in
                let e = h.slabs[i]
                return Array(stream[Int(e.offset)..<(Int(e.offset) + Int(e.length))])
            }
        }

        /// A decoder that reads each slab's bytes through `slab` when it decodes it (an archive
        /// keeps one record per slab, so a volume is never reassembled in memory).
        public init(header: StreamHeader, name: String = "stream", kernel: Kernel = .best, extraModels: [LSTMModel] = [],
                    slab: @escaping @Sendable (Int) throws -> [UInt8]) throws {
            self.header = header
            slabBytes = slab
            self.name = name
            var model: LSTMModel? = nil
            if header.usesLSTM {
                for m in extraModels { ModelRegistry.shared.register(m) }
                var found: LSTMModel? = nil
                if let bytes = header.embeddedModel {
                    let em: LSTMModel
                    do { em = try LSTMModel(bytes: bytes, name: "\(name): embedded model") } catch let e as VoxError {
                        throw VoxError(.corrupt, e.message)
                    }
                    guard em.hash == header.modelHash else { throw VoxError(.corrupt, "\(name): embedded model does not match the model hash") }
                    // a stream must not be able to make its decoder run for days
                    let cost = 4 * em.hidden * (em.stepInputs + em.hidden) * em.steps
                    let slabVoxels = header.shape.sliceVoxels * min(header.slabThickness, header.shape.z)
                    guard cost <= StreamHeader.maxEmbeddedModelCost, cost * slabVoxels <= StreamHeader.maxEmbeddedSlabWork else {
                        throw VoxError(.badFormat, "\(name): embedded model is too expensive to decode (\(cost) multiply-adds per voxel)")
                    }
                    found = em
                } else {
                    found = ModelRegistry.shared.model(hash: header.modelHash)
                }
                guard let m = found else {
                    throw VoxError(.missingModel, "\(name) was coded with model \(Checksum.hex(header.modelHash)) (preset '\(header.preset)'), which is not installed; pass it with --model or put it in a model folder (\(ModelRegistry.searchPaths.joined(separator: ", ")))")
                }
                guard m.neighbourhood.spec == header.neighbourhood, m.neighbourhood.left == header.left, m.normShift == header.normShift,
                      m.outFracBits - m.normShift == header.outShift else {
                    throw VoxError(.corrupt, "\(name): model \(m.hashHex) does not match the stream's neighbourhood or normalisation")
                }
                model = m
            } else {
                guard header.neighbourhood == (header.left ? "classical/left" : "classical/noleft") else {
                    throw VoxError(.corrupt, "\(name): classical stream with neighbourhood '\(header.neighbourhood)'")
                }
            }
            coder = try SlabCoder(shape: header.shape, dtype: header.dtype, left: header.left, pad: header.pad, model: model, kernel: kernel,
                                  stage: StreamHeader.residualStage(version: header.formatVersion))
        }

        public var slabCount: Int { header.slabs.count }

        /// Tests only: called with (decoder name, slab, slice in slab) after a v2 slice's bytes
        /// are written to the output and before its checksum is checked, on the decoding
        /// thread; lets a test hold the decoder in the window where unverified bytes exist.
        nonisolated(unsafe) public static var sliceHook: (@Sendable (String, Int, Int) -> Void)?

        /// Decodes slab i to little-endian dtype bytes, checking its CRC.
        public func decodeSlab(_ i: Int, threads: Int = 1) throws -> [UInt8] {
            var out = [UInt8](repeating: 0, count: header.byteCount(ofSlab: i))
            try out.withUnsafeMutableBytes { o in try decodeSlab(i, into: o, threads: threads) { _ in } }
            return out
        }

        /// Threads per slab when `slabs` slabs are decoded on `cores` cores: the cores left over
        /// by the slabs decode slices as a wavefront (v2; at most 4 per slab: the wavefront's
        /// gain levels off, and v1 slabs ignore it).
        public static func sliceThreads(cores: Int, slabs: Int) -> Int {
            max(1, min(4, cores / max(1, slabs)))
        }

        /// Bytes of slab i's decoded voxels.
        public func slabByteCount(_ i: Int) -> Int { header.byteCount(ofSlab: i) }

        /// Decodes slab i into `out` (slabByteCount(i) bytes of little-endian dtype voxels).
        /// `verified(n)` is called each time the first n bytes are final and covered by a
        /// checksum that matched: slice by slice for v2 streams, once at the end for v1. No
        /// byte is reported before its checksum has matched; a mismatch throws `.corrupt`
        /// naming the slab and slice.
        public func decodeSlab(_ i: Int, into out: UnsafeMutableRawBufferPointer, threads: Int = 1,
                               verified: (Int) -> Void) throws {
            let e = header.slabs[i]
            let sl = header.slices(ofSlab: i)
            let sliceVox = header.shape.sliceVoxels
            let nv = sl.count * sliceVox
            let bpv = header.dtype.bytesPerVoxel
            let nbytes = nv * bpv
            precondition(out.count == nbytes)
            let where_ = "\(name): slab \(i) (slices \(sl.lowerBound)-\(sl.upperBound - 1))"
            let data = try slabBytes(i)
            guard data.count == Int(e.length) else { throw VoxError(.corrupt, "\(where_) has \(data.count) stored bytes, the slab table says \(e.length)") }
            let v2 = header.formatVersion >= 2
            let sliceBytes = sliceVox * bpv
            func checkSlice(_ k: Int) throws {
                let c = Checksum.crc32c(UnsafeRawBufferPointer(rebasing: out[(k * sliceBytes)..<((k + 1) * sliceBytes)]))
                guard c == e.slices[k].crc else {
                    throw VoxError(.corrupt, "\(name): slab \(i) slice \(sl.lowerBound + k) is damaged: checksum mismatch")
                }
            }
            switch e.method {
            case .stored:
                guard e.length == nbytes else { throw VoxError(.corrupt, "\(where_) has the wrong stored size") }
                data.withUnsafeBytes { d in out.copyMemory(from: d) }
                if v2 { for k in 0..<sl.count { try checkSlice(k); verified((k + 1) * sliceBytes) } }
            case .coded:
                var vox = [Int32](repeating: 0, count: nv)
                let dtype = header.dtype
                do {
                    try data.withUnsafeBytes { d in
                        try vox.withUnsafeMutableBufferPointer { v in
                            if v2 {
                                let vbase = v.baseAddress!
                                try withoutActuallyEscaping(verified) { verified in
                                try coder.decodeV2(d, slices: sl.count, stateRows: header.stateRows, lengths: e.slices.map(\.length),
                                                   predictors: e.slices.map(\.predictor.rawValue), into: v, threads: threads,
                                                   firstSlice: sl.lowerBound) { k in
                                    let src = UnsafeBufferPointer(start: vbase + k * sliceVox, count: sliceVox)
                                    dtype.encode(src, into: UnsafeMutableRawBufferPointer(rebasing: out[(k * sliceBytes)..<((k + 1) * sliceBytes)]))
                                    Decoder.sliceHook?(self.name, i, k)   // tests: the window before the checksum
                                    try checkSlice(k)
                                    verified((k + 1) * sliceBytes)
                                }
                                }
                            } else {
                                try coder.decode(d, slices: sl.count, into: v)
                            }
                        }
                    }
                } catch let err as VoxError {
                    throw err.message.hasPrefix(name) ? err : VoxError(err.kind, "\(where_) is damaged: \(err.message)")
                }
                if !v2 { vox.withUnsafeBufferPointer { v in header.dtype.encode(v, into: out) } }
            }
            guard Checksum.crc32c(UnsafeRawBufferPointer(out)) == e.crc else { throw VoxError(.corrupt, "\(where_) is damaged: checksum mismatch") }
            if !v2 { verified(nbytes) }
        }

        /// Decodes every slab on `threads` workers; `sink(i, bytes)` receives each slab
        /// (possibly out of order, from several threads).
        public func decodeAll(threads: Int, sliceThreads: Int = 1, progress: (@Sendable (Int, Int) -> Void)? = nil,
                              sink: @escaping @Sendable (Int, [UInt8]) throws -> Void) throws {
            final class Counter: @unchecked Sendable { var n = 0; let lock = NSLock() }
            let c = Counter()
            let total = slabCount
            try parallelFor(total, threads: threads) { i in
                let b = try self.decodeSlab(i, threads: sliceThreads)
                try sink(i, b)
                c.lock.lock(); c.n += 1; let d = c.n; c.lock.unlock()
                progress?(d, total)
            }
        }

        /// Decodes the whole volume into memory.
        public func decodeVolume(threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws -> [UInt8] {
            final class Buf: @unchecked Sendable { var bytes: [UInt8]; init(_ n: Int) { bytes = [UInt8](repeating: 0, count: n) } }
            let h = header
            let total = h.shape.voxels * h.dtype.bytesPerVoxel
            guard UInt64(total) <= ProcessInfo.processInfo.physicalMemory / 2 else {
                throw VoxError(.outOfMemory, "\(name): the decoded volume (\(total) bytes) does not fit in memory; decode it slab by slab (decodeSlab, decodeAll)")
            }
            let slabBytes = h.slabThickness * h.shape.sliceVoxels * h.dtype.bytesPerVoxel
            let buf = Buf(h.shape.voxels * h.dtype.bytesPerVoxel)
            let lock = NSLock()
            try decodeAll(threads: threads) { i, b in
                lock.lock(); defer { lock.unlock() }
                buf.bytes.replaceSubrange((i * slabBytes)..<(i * slabBytes + b.count), with: b)
            }
            return buf.bytes
        }
    }
}
