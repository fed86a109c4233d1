import CVoxKernels
import Foundation
import VoxCore

/// The `.vxz` stream header (formats v1 to v4, docs/format.md; v3 and v4 have v2's layout).
public struct StreamHeader: Equatable, Sendable {
    public static let magic: [UInt8] = [0x89, 0x56, 0x58, 0x5A, 0x0D, 0x0A, 0x1A, 0x0A] // "\x89VXZ\r\n\x1a\n"
    /// The version this voxfs writes; it reads every version in `readableVersions`.
    public static let version: UInt16 = 4
    public static let readableVersions: ClosedRange<UInt16> = 1...4

    /// The slab coder's residual stage for a format version (docs/format.md, "Slab coding,
    /// version 3" and "version 4"): 2 from version 4 on, 1 for version 3, else 0.
    public static func residualStage(version: UInt16) -> Int { version >= 4 ? 2 : (version == 3 ? 1 : 0) }

    public enum Method: UInt8, Sendable { case coded = 0, stored = 1 }

    /// Which predictor a v2 slice was coded with.
    public enum Predictor: UInt8, Sendable { case stream = 0, classical = 1 }

    /// A v2 slice: its own range-coded stream inside the slab payload, and its own checksum.
    public struct Slice: Equatable, Sendable {
        public var length: UInt32    // bytes of the slice's stream (stored slabs: its raw bytes)
        public var crc: UInt32       // CRC-32C of the slice's decoded voxels as little-endian dtype bytes
        public var predictor: Predictor
        public init(length: UInt32, crc: UInt32, predictor: Predictor) { self.length = length; self.crc = crc; self.predictor = predictor }
    }

    public struct Slab: Equatable, Sendable {
        public var offset: UInt64
        public var length: UInt32
        public var crc: UInt32       // CRC-32C of the slab's decoded voxels as little-endian dtype bytes
        public var method: Method
        /// v2: one entry per slice of the slab, whose lengths add up to `length`; v1: empty.
        public var slices: [Slice] = []
        public init(offset: UInt64, length: UInt32, crc: UInt32, method: Method, slices: [Slice] = []) {
            self.offset = offset; self.length = length; self.crc = crc; self.method = method; self.slices = slices
        }
    }

    /// Format version of this header (1 or 2).
    public var formatVersion: UInt16 = StreamHeader.version
    /// v2: slice z starts from the coder state slice z-1 had after this many rows (v1: 0).
    public var stateRows: Int = 0

    public var shape: Shape
    public var dtype: DType
    public var usesLSTM: Bool
    public var left: Bool
    public var normShift: Int
    public var outShift: Int
    public var pad: Int32
    public var slabThickness: Int
    public var modelHash: [UInt8]   // 32 zero bytes when no model
    public var preset: String
    public var neighbourhood: String
    public var slabs: [Slab]
    /// A model file stored in the stream itself (an encoder-adapted model), or nil.
    public var embeddedModel: [UInt8]? = nil

    /// Largest slab a stream may hold: bounds the memory one slab decode takes (hostile input).
    public static let maxSlabVoxels = 1 << 26
    /// Embedded models come with the (untrusted) stream: their multiply-adds per voxel
    /// (4H(I+H)T) and per slab are capped, so that decoding stays bounded in time.
    public static let maxEmbeddedModelCost = 1 << 20
    public static let maxEmbeddedSlabWork = 1 << 42

    public var slabCount: Int { (shape.z + slabThickness - 1) / slabThickness }

    /// Bytes of slab i's decoded voxels.
    public func byteCount(ofSlab i: Int) -> Int { slices(ofSlab: i).count * shape.sliceVoxels * dtype.bytesPerVoxel }

    /// Slices [start, end) of slab i.
    public func slices(ofSlab i: Int) -> Range<Int> {
        let s = i * slabThickness
        return s..<min(shape.z, s + slabThickness)
    }

    /// Serialises the header; slab offsets are absolute file offsets.
    public func serialized() -> [UInt8] {
        var w = ByteWriter()
        w.raw(StreamHeader.magic)
        w.u16(formatVersion)
        w.u16(embeddedModel == nil ? 0 : 1) // flags: bit 0 = the model file is embedded after the slab table
        w.u32(0) // header length, patched below
        w.u32(UInt32(shape.x)); w.u32(UInt32(shape.y)); w.u32(UInt32(shape.z))
        w.u8(dtype.rawValue)
        w.u8(usesLSTM ? 1 : 0)
        w.u8(left ? 1 : 0)
        w.u8(UInt8(normShift))
        w.u8(UInt8(outShift))
        if formatVersion >= 2 { w.u16(UInt16(stateRows)); w.u8(0) } else { w.raw([0, 0, 0]) }
        w.i32(pad)
        w.u32(UInt32(slabThickness))
        w.raw(modelHash)
        w.string16(preset)
        w.string16(neighbourhood)
        w.u32(UInt32(slabs.count))
        for s in slabs {
            w.u64(s.offset); w.u32(s.length); w.u32(s.crc); w.u8(s.method.rawValue); w.raw([0, 0, 0])
            if formatVersion >= 2 {
                for c in s.slices { w.u32(c.length); w.u32(c.crc); w.u8(c.predictor.rawValue); w.raw([0, 0, 0]) }
            }
        }
        if let m = embeddedModel {
            w.u32(UInt32(m.count))
            w.raw(m)
        }
        w.patchU32(at: 12, UInt32(w.count + 4))
        w.u32(Checksum.crc32c(w.bytes))
        return w.bytes
    }

    /// Size of a serialised header for these strings and slab count (`slices`: v2's slice
    /// entries in all, 0 for v1).
    static func size(preset: String, neighbourhood: String, slabs: Int, slices: Int = 0, embedded: Int? = nil) -> Int {
        8 + 2 + 2 + 4 + 12 + 8 + 4 + 4 + 32 + 2 + preset.utf8.count + 2 + neighbourhood.utf8.count + 4 + 20 * slabs + 12 * slices
            + (embedded.map { 4 + $0 } ?? 0) + 4
    }

    /// Parses and validates a header; `fileSize` bounds the slab table.
    public init(parsing bytes: [UInt8], fileSize: Int? = nil, name: String = "stream") throws {
        guard bytes.count >= 8, Array(bytes[0..<8]) == StreamHeader.magic else {
            throw VoxError(.badFormat, "\(name) is not a VoxFS .vxz stream (bad magic)")
        }
        var r = ByteReader(bytes, offset: 8, what: name)
        let ver = try r.u16()
        guard StreamHeader.readableVersions.contains(ver) else {
            throw VoxError(.badFormat, "\(name) has stream format version \(ver); this voxfs reads versions \(StreamHeader.readableVersions.lowerBound) to \(StreamHeader.readableVersions.upperBound)")
        }
        formatVersion = ver
        let flags = try r.u16()
        guard flags & ~1 == 0 else { throw VoxError(.badFormat, "\(name) uses stream features this voxfs does not know (flags \(flags))") }
        let hlen = Int(try r.u32())
        guard hlen >= 108, hlen <= bytes.count else { throw VoxError(.truncated, "\(name) is truncated (header needs \(hlen) bytes, file has \(bytes.count))") }
        let crcStored = UInt32(bytes[hlen - 4]) | UInt32(bytes[hlen - 3]) << 8 | UInt32(bytes[hlen - 2]) << 16 | UInt32(bytes[hlen - 1]) << 24
        guard crcStored == Checksum.crc32c(bytes[0..<(hlen - 4)]) else { throw VoxError(.corrupt, "\(name): header is damaged (checksum mismatch)") }
        shape = Shape(Int(try r.u32()), Int(try r.u32()), Int(try r.u32()))
        guard shape.isValid else { throw VoxError(.corrupt, "\(name): invalid shape \(shape)") }
        guard let dt = DType(rawValue: try r.u8()) else { throw VoxError(.badFormat, "\(name): unknown voxel type") }
        dtype = dt
        usesLSTM = try r.u8() != 0
        left = try r.u8() != 0
        normShift = Int(try r.u8())
        outShift = Int(try r.u8())
        if ver >= 2 {
            stateRows = Int(try r.u16()); _ = try r.u8()
            guard stateRows >= 1 else { throw VoxError(.corrupt, "\(name): state rows must be at least 1") }
        } else { _ = try r.raw(3) }
        pad = try r.i32()
        slabThickness = Int(try r.u32())
        modelHash = try r.raw(32)
        preset = try r.string16()
        neighbourhood = try r.string16()
        let n = Int(try r.u32())
        guard slabThickness >= 1, slabThickness <= 65536 else {
            throw VoxError(.corrupt, "\(name): invalid slab thickness \(slabThickness)")
        }
        guard n == (shape.z + slabThickness - 1) / slabThickness else { throw VoxError(.corrupt, "\(name): slab count \(n) does not match the shape") }
        guard shape.sliceVoxels * min(slabThickness, shape.z) <= StreamHeader.maxSlabVoxels else {
            throw VoxError(.badFormat, "\(name): slabs of \(shape.sliceVoxels * min(slabThickness, shape.z)) voxels are larger than this voxfs decodes (2^26)")
        }
        guard pad >= dt.minValue, pad <= dt.maxValue else { throw VoxError(.corrupt, "\(name): pad value out of range") }
        var slabs: [Slab] = []
        for i in 0..<n {
            let off = try r.u64(), len = try r.u32(), crc = try r.u32()
            guard let m = Method(rawValue: try r.u8()) else { throw VoxError(.corrupt, "\(name): slab \(i) has an unknown method") }
            _ = try r.raw(3)
            if m == .coded && len < 5 { throw VoxError(.corrupt, "\(name): slab \(i) is too short to be coded data") }
            if let fs = fileSize, off < UInt64(hlen) || off > UInt64(fs) || UInt64(len) > UInt64(fs) - off {
                throw VoxError(.truncated, "\(name) is truncated or damaged: slab \(i) lies outside the file")
            }
            var slices: [Slice] = []
            if ver >= 2 {
                let nsl = min(shape.z, (i + 1) * slabThickness) - i * slabThickness
                let raw = UInt64(shape.sliceVoxels * dt.bytesPerVoxel)
                var total: UInt64 = 0
                slices.reserveCapacity(nsl)
                for k in 0..<nsl {
                    let sl = try r.u32(), sc = try r.u32()
                    guard let pr = Predictor(rawValue: try r.u8()) else { throw VoxError(.corrupt, "\(name): slab \(i) slice \(k) has an unknown predictor") }
                    _ = try r.raw(3)
                    if pr == .classical && !usesLSTM { throw VoxError(.corrupt, "\(name): slab \(i) slice \(k) names the classical fallback in a classical stream") }
                    if m == .coded && sl < 5 { throw VoxError(.corrupt, "\(name): slab \(i) slice \(k) is too short to be coded data") }
                    if m == .stored && (UInt64(sl) != raw || pr != .stream) { throw VoxError(.corrupt, "\(name): slab \(i) slice \(k) has the wrong stored size") }
                    total += UInt64(sl)
                    slices.append(Slice(length: sl, crc: sc, predictor: pr))
                }
                guard total == UInt64(len) else { throw VoxError(.corrupt, "\(name): slab \(i)'s slices add up to \(total) bytes, the slab has \(len)") }
            }
            slabs.append(Slab(offset: off, length: len, crc: crc, method: m, slices: slices))
        }
        self.slabs = slabs
        if flags & 1 != 0 {
            guard usesLSTM else { throw VoxError(.corrupt, "\(name): embedded model in a classical stream") }
            let n = Int(try r.u32())
            guard n <= hlen else { throw VoxError(.corrupt, "\(name): embedded model length out of range") }
            embeddedModel = try r.raw(n)
        }
        guard r.offset + 4 == hlen else { throw VoxError(.corrupt, "\(name): header length mismatch") }
        headerLength = hlen
    }

    public private(set) var headerLength: Int = 0

    public init(shape: Shape, dtype: DType, usesLSTM: Bool, left: Bool, normShift: Int, outShift: Int, pad: Int32,
                slabThickness: Int, modelHash: [UInt8], preset: String, neighbourhood: String, slabs: [Slab],
                embeddedModel: [UInt8]? = nil, formatVersion: UInt16 = StreamHeader.version, stateRows: Int = 0) {
        self.embeddedModel = embeddedModel
        self.formatVersion = formatVersion; self.stateRows = stateRows
        self.shape = shape; self.dtype = dtype; self.usesLSTM = usesLSTM; self.left = left
        self.normShift = normShift; self.outShift = outShift; self.pad = pad; self.slabThickness = slabThickness
        self.modelHash = modelHash; self.preset = preset; self.neighbourhood = neighbourhood; self.slabs = slabs
    }
}
