import CVoxKernels
import Foundation
import VoxCore

/// The LSTM's gate activations (docs/format.md "Predictor arithmetic").
public enum Activation: Int, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// sigmoid and tanh from the committed tables (model format 1)
    case tables = 0
    /// piecewise quadratic sigmoid and tanh, computed without lookups (model format 2)
    case quadratic = 1
    public var description: String { self == .tables ? "tables" : "quadratic" }
    public init?(name: String) {
        guard let a = Activation.allCases.first(where: { $0.description == name }) else { return nil }
        self = a
    }
}

/// A quantised LSTM predictor (model file formats 1 and 2, docs/format.md "Model files").
public struct LSTMModel: Equatable, Sendable {
    public static let magic: [UInt8] = [0x89, 0x56, 0x58, 0x4D, 0x0D, 0x0A, 0x1A, 0x0A] // "\x89VXM\r\n\x1a\n"
    /// The newest model format this build reads; a model is written in the oldest format that
    /// holds it (1 for table activations, so those models keep their bytes and identity).
    public static let version: UInt16 = 2

    public var hidden: Int
    public var neighbourhood: Neighbourhood
    /// r: one normalised input unit is 2^r voxel units.
    public var normShift: Int
    /// F: fraction bits of the output y (Q_F, normalised units).
    public var outFracBits: Int
    /// Gate weights, 4H rows (i, f, g, o) of I + H columns, Q12.
    public var W: [Int16]
    /// Gate biases, Q24.
    public var b: [Int32]
    /// Output weights (Q(F-12)) and bias (Q_F).
    public var Wo: [Int16]
    public var bo: Int32
    /// Free-form JSON: name, how it was made. Not part of the identity hash.
    public var metadata: String
    /// Gate activations (format 2 models may choose the quadratic ones).
    public var activation: Activation

    /// The model file format version these weights are written in.
    public var formatVersion: UInt16 { activation == .tables ? 1 : 2 }

    public var steps: Int { neighbourhood.steps }
    public var stepInputs: Int { neighbourhood.stepInputs }

    public init(hidden: Int, neighbourhood: Neighbourhood, normShift: Int, outFracBits: Int,
                W: [Int16], b: [Int32], Wo: [Int16], bo: Int32, metadata: String = "{}",
                activation: Activation = .tables) throws {
        self.activation = activation
        self.hidden = hidden
        self.neighbourhood = neighbourhood
        self.normShift = normShift
        self.outFracBits = outFracBits
        self.W = W; self.b = b; self.Wo = Wo; self.bo = bo
        self.metadata = metadata
        try validate()
    }

    func validate() throws {
        let H = hidden, I = neighbourhood.stepInputs
        guard H >= 4, H <= 512, H % 4 == 0 else { throw VoxError(.badFormat, "model hidden size \(H) must be a multiple of 4, 4 to 512") }
        guard I <= 256, neighbourhood.steps <= 1024 else { throw VoxError(.badFormat, "model neighbourhood too large") }
        guard W.count == 4 * H * (I + H), b.count == 4 * H, Wo.count == H else { throw VoxError(.badFormat, "model weight arrays have the wrong sizes") }
        guard (0...20).contains(normShift), outFracBits - normShift >= 1, outFracBits <= 40 else {
            throw VoxError(.badFormat, "model normalisation (r=\(normShift), F=\(outFracBits)) out of range")
        }
    }

    /// The identity-defining bytes (everything but metadata and the trailing CRC).
    public var payload: [UInt8] {
        var w = ByteWriter()
        w.raw(LSTMModel.magic)
        w.u16(formatVersion)
        w.u16(UInt16(hidden))
        w.u16(UInt16(neighbourhood.stepInputs))
        w.u16(UInt16(neighbourhood.steps))
        w.u8(UInt8(normShift))
        w.u8(UInt8(outFracBits))
        if formatVersion >= 2 { w.u8(UInt8(activation.rawValue)) }
        w.string16(neighbourhood.spec)
        for v in W { w.i16(v) }
        for v in b { w.i32(v) }
        for v in Wo { w.i16(v) }
        w.i32(bo)
        return w.bytes
    }

    /// SHA-256 of the payload: the model's identity, recorded in every stream it codes.
    public var hash: [UInt8] { Checksum.sha256(payload) }
    public var hashHex: String { Checksum.hex(hash) }

    public func serialized() -> [UInt8] {
        var w = ByteWriter()
        w.raw(payload)
        let meta = Array(metadata.utf8)
        w.u32(UInt32(meta.count))
        w.raw(meta)
        w.u32(Checksum.crc32c(w.bytes))
        return w.bytes
    }

    public init(bytes: [UInt8], name: String = "model file") throws {
        var r = ByteReader(bytes, what: name)
        guard bytes.count >= 8, Array(bytes[0..<8]) == LSTMModel.magic else { throw VoxError(.badFormat, "\(name) is not a VoxFS model file") }
        guard bytes.count >= 12 else { throw VoxError(.truncated, "\(name) is truncated") }
        let tail = bytes.count - 4
        let stored = UInt32(bytes[tail]) | UInt32(bytes[tail + 1]) << 8 | UInt32(bytes[tail + 2]) << 16 | UInt32(bytes[tail + 3]) << 24
        guard stored == Checksum.crc32c(Array(bytes[0..<tail])) else {
            throw VoxError(.corrupt, "\(name) is damaged or truncated (checksum mismatch)")
        }
        _ = try r.raw(8)
        let ver = try r.u16()
        guard (1...LSTMModel.version).contains(ver) else { throw VoxError(.badFormat, "\(name) has model format version \(ver); this voxfs reads versions 1 to \(LSTMModel.version)") }
        let H = Int(try r.u16()), I = Int(try r.u16()), T = Int(try r.u16())
        let rShift = Int(try r.u8()), F = Int(try r.u8())
        var act = Activation.tables
        if ver >= 2 {
            let code = try r.u8()
            guard let a = Activation(rawValue: Int(code)), a != .tables else {
                throw VoxError(.badFormat, "\(name): unknown activation \(code) for model format \(ver)")
            }
            act = a
        }
        let spec = try r.string16()
        let nb: Neighbourhood
        do { nb = try Neighbourhood(spec: spec) } catch { throw VoxError(.badFormat, "\(name): unknown neighbourhood '\(spec)'") }
        guard nb.spec == spec else { throw VoxError(.badFormat, "\(name): neighbourhood '\(spec)' is not in canonical form ('\(nb.spec)')") }
        guard nb.stepInputs == I, nb.steps == T else { throw VoxError(.badFormat, "\(name): neighbourhood \(spec) does not match I=\(I), T=\(T)") }
        guard H >= 4, H <= 512 else { throw VoxError(.badFormat, "\(name): hidden size \(H) out of range") }
        let nW = 4 * H * (I + H)
        var W = [Int16](); W.reserveCapacity(nW)
        for _ in 0..<nW { W.append(try r.i16()) }
        var b = [Int32](); for _ in 0..<(4 * H) { b.append(try r.i32()) }
        var Wo = [Int16](); for _ in 0..<H { Wo.append(try r.i16()) }
        let bo = try r.i32()
        let metaLen = Int(try r.u32())
        let meta = try r.raw(metaLen)
        guard r.offset == tail else { throw VoxError(.badFormat, "\(name): unexpected bytes after the metadata") }
        try self.init(hidden: H, neighbourhood: nb, normShift: rShift, outFracBits: F, W: W, b: b, Wo: Wo, bo: bo,
                      metadata: String(decoding: meta, as: UTF8.self), activation: act)
    }

    public static func load(path: String) throws -> LSTMModel {
        try LSTMModel(bytes: try FileIO.read(path), name: path)
    }

    /// A reproducible, untrained model: weights from a fixed-seed integer generator (no
    /// floating point, so the same bytes on every machine). A placeholder until trained
    /// models ship (the training issue); its output layer is small, so predictions stay close to
    /// the classical anchor while the whole LSTM path runs.
    public static func seeded(hidden H: Int, neighbourhood nb: Neighbourhood, seed: UInt64, normShift: Int = 12,
                              outputScale: Int = 16, name: String) throws -> LSTMModel {
        var rng = SplitMix64(seed: seed)
        let I = nb.stepInputs, K = I + H
        var W = [Int16](repeating: 0, count: 4 * H * K)
        // inputs +-0.5, recurrent +-0.25 (Q12), as a Xavier-like spread for small K
        for j in 0..<(4 * H) {
            for k in 0..<K {
                let lim: Int64 = k < I ? 2048 : 1024
                W[j * K + k] = Int16(rng.nextInt(in: -lim...lim))
            }
        }
        var b = [Int32](repeating: 0, count: 4 * H)
        for j in H..<(2 * H) { b[j] = 1 << 24 } // forget-gate bias 1.0 (Q24)
        var Wo = [Int16](repeating: 0, count: H)
        for j in 0..<H { Wo[j] = Int16(rng.nextInt(in: Int64(-outputScale)...Int64(outputScale))) }
        let meta = "{\"name\":\"\(name)\",\"kind\":\"seeded-untrained\",\"seed\":\(seed)}"
        return try LSTMModel(hidden: H, neighbourhood: nb, normShift: normShift, outFracBits: 28,
                             W: W, b: b, Wo: Wo, bo: 0, metadata: meta)
    }

    /// The C handle used by the coder.
    public func makeKernelModel() throws -> KernelModel {
        guard let p = W.withUnsafeBufferPointer({ w in
            b.withUnsafeBufferPointer { bb in
                Wo.withUnsafeBufferPointer { wo in
                    vox_model_new_act(Int32(hidden), Int32(stepInputs), Int32(steps), w.baseAddress, bb.baseAddress, wo.baseAddress, bo,
                                      Int32(activation.rawValue))
                }
            }
        }) else { throw VoxError(.outOfMemory, "cannot build the LSTM kernel model") }
        return KernelModel(p)
    }
}

/// Owns a C `vox_model`; immutable after creation, so it may be shared between threads.
public final class KernelModel: @unchecked Sendable {
    public let pointer: OpaquePointer
    init(_ p: OpaquePointer) { pointer = p }
    deinit { vox_model_free(pointer) }

    /// Runs the LSTM on n sequences of T*I inputs each (for tests and tools).
    public func run(inputs: [Int16], count n: Int, kernel: Kernel) -> [Int32] {
        var H: Int32 = 0, I: Int32 = 0, T: Int32 = 0
        vox_model_shape(pointer, &H, &I, &T)
        precondition(n >= 0 && inputs.count >= n * Int(T) * Int(I), "inputs too short for \(n) sequences")
        var y = [Int32](repeating: 0, count: n)
        inputs.withUnsafeBufferPointer { x in
            y.withUnsafeMutableBufferPointer { yy in
                _ = vox_lstm_run(pointer, Int32(n), x.baseAddress, yy.baseAddress, Int32(kernel.rawValue))
            }
        }
        return y
    }
}

/// LSTM kernels: all give identical results; the fastest available is the default.
public enum Kernel: Int, CaseIterable, Sendable, CustomStringConvertible {
    case scalar = 0, avx2 = 1, avx512vnni = 2

    public static var available: [Kernel] {
        let mask = vox_kernels_available()
        return Kernel.allCases.filter { mask & (1 << $0.rawValue) != 0 }
    }
    public static var best: Kernel { Kernel(rawValue: Int(vox_kernel_best())) ?? .scalar }
    public var description: String {
        switch self { case .scalar: "scalar"; case .avx2: "avx2"; case .avx512vnni: "avx512-vnni" }
    }
    public init?(name: String) {
        guard let k = Kernel.allCases.first(where: { $0.description == name }) else { return nil }
        self = k
    }
}

/// SplitMix64: a tiny integer PRNG with a fixed definition (reproducible models and tests).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform integer in range, by rejection-free modulo (bias irrelevant here, definition fixed).
    public mutating func nextInt(in range: ClosedRange<Int64>) -> Int64 {
        let span = UInt64(range.upperBound - range.lowerBound) + 1
        return range.lowerBound + Int64(next() % span)
    }
}
