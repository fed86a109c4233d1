import CVoxKernels

/// Little-endian writer for headers.
public struct ByteWriter {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { bytes.append(UInt8(v & 0xFF)); bytes.append(UInt8(v >> 8)) }
    public mutating func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8((v >> (8 * UInt32(i))) & 0xFF)) } }
    public mutating func u64(_ v: UInt64) { for i in 0..<8 { bytes.append(UInt8((v >> (8 * UInt64(i))) & 0xFF)) } }
    public mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    public mutating func i16(_ v: Int16) { u16(UInt16(bitPattern: v)) }
    public mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    public mutating func string16(_ s: String) {
        let b = Array(s.utf8)
        u16(UInt16(b.count))
        bytes.append(contentsOf: b)
    }
    public mutating func patchU32(at offset: Int, _ v: UInt32) {
        for i in 0..<4 { bytes[offset + i] = UInt8((v >> (8 * UInt32(i))) & 0xFF) }
    }
    public var count: Int { bytes.count }
}

/// Bounds-checked little-endian reader: every read past the end throws `.truncated`.
public struct ByteReader {
    public let bytes: [UInt8]
    public private(set) var offset: Int
    let what: String

    public init(_ bytes: [UInt8], offset: Int = 0, what: String = "data") {
        self.bytes = bytes
        self.offset = offset
        self.what = what
    }

    public var remaining: Int { bytes.count - offset }

    mutating func need(_ n: Int) throws {
        if n < 0 || n > remaining {
            throw VoxError(.truncated, "\(what) is truncated (needs \(n) bytes at offset \(offset), has \(remaining))")
        }
    }
    public mutating func u8() throws -> UInt8 { try need(1); defer { offset += 1 }; return bytes[offset] }
    public mutating func u16() throws -> UInt16 {
        try need(2); defer { offset += 2 }
        return UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }
    public mutating func u32() throws -> UInt32 {
        try need(4); defer { offset += 4 }
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(bytes[offset + i]) << (8 * UInt32(i)) }
        return v
    }
    public mutating func u64() throws -> UInt64 {
        try need(8); defer { offset += 8 }
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        return v
    }
    public mutating func i32() throws -> Int32 { Int32(bitPattern: try u32()) }
    public mutating func i16() throws -> Int16 { Int16(bitPattern: try u16()) }
    public mutating func raw(_ n: Int) throws -> [UInt8] {
        try need(n); defer { offset += n }
        return Array(bytes[offset..<offset + n])
    }
    public mutating func string16() throws -> String {
        let n = Int(try u16())
        let b = try raw(n)
        guard let s = String(validating: b, as: UTF8.self) else {
            throw VoxError(.badFormat, "\(what) holds a string that is not UTF-8")
        }
        return s
    }
}

public enum Checksum {
    /// CRC-32C of a byte buffer.
    public static func crc32c(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        vox_crc32c(seed, bytes.baseAddress, bytes.count)
    }
    public static func crc32c(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { crc32c($0, seed: seed) }
    }
    public static func crc32c(_ bytes: ArraySlice<UInt8>, seed: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { crc32c($0, seed: seed) }
    }

    /// SHA-256 of a byte buffer.
    public static func sha256(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        var ctx = vox_sha256_ctx()
        vox_sha256_init(&ctx)
        vox_sha256_update(&ctx, bytes.baseAddress, bytes.count)
        var out = [UInt8](repeating: 0, count: 32)
        out.withUnsafeMutableBufferPointer { vox_sha256_final(&ctx, $0.baseAddress!) }
        return out
    }
    public static func sha256(_ bytes: [UInt8]) -> [UInt8] { bytes.withUnsafeBytes { sha256($0) } }

    /// SHA-256 over bytes that arrive in pieces.
    public struct SHA256 {
        private var ctx = vox_sha256_ctx()
        public init() { vox_sha256_init(&ctx) }
        public mutating func update(_ bytes: UnsafeRawBufferPointer) { vox_sha256_update(&ctx, bytes.baseAddress, bytes.count) }
        public mutating func finish() -> [UInt8] {
            var out = [UInt8](repeating: 0, count: 32)
            out.withUnsafeMutableBufferPointer { vox_sha256_final(&ctx, $0.baseAddress!) }
            return out
        }
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef")
        var s = ""
        s.reserveCapacity(bytes.count * 2)
        for b in bytes { s.append(digits[Int(b >> 4)]); s.append(digits[Int(b & 15)]) }
        return s
    }
}
