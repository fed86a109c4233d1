import Foundation

/// Voxel types VoxFS codes. Stored little-endian.
public enum DType: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    case uint8 = 1
    case int16 = 2
    case uint16 = 3

    public var bytesPerVoxel: Int { self == .uint8 ? 1 : 2 }

    public var minValue: Int32 {
        switch self {
        case .uint8, .uint16: return 0
        case .int16: return Int32(Int16.min)
        }
    }

    public var maxValue: Int32 {
        switch self {
        case .uint8: return 255
        case .int16: return Int32(Int16.max)
        case .uint16: return Int32(UInt16.max)
        }
    }

    public var description: String {
        switch self {
        case .uint8: return "uint8"
        case .int16: return "int16"
        case .uint16: return "uint16"
        }
    }

    /// Parses the names used in sidecars and on the command line (numpy spellings too).
    public init?(name: String) {
        switch name.lowercased() {
        case "uint8", "u8", "u1", "<u1", "|u1", "ubyte": self = .uint8
        case "int16", "i16", "i2", "<i2", "short": self = .int16
        case "uint16", "u16", "u2", "<u2", "ushort": self = .uint16
        default: return nil
        }
    }

    /// Converts little-endian voxel bytes to Int32 values.
    public func decode(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutableBufferPointer<Int32>) {
        precondition(bytes.count == out.count * bytesPerVoxel)
        switch self {
        case .uint8:
            for i in 0..<out.count { out[i] = Int32(bytes[i]) }
        case .int16:
            for i in 0..<out.count { out[i] = Int32(Int16(bitPattern: UInt16(bytes[2 * i]) | UInt16(bytes[2 * i + 1]) << 8)) }
        case .uint16:
            for i in 0..<out.count { out[i] = Int32(UInt16(bytes[2 * i]) | UInt16(bytes[2 * i + 1]) << 8) }
        }
    }

    /// Converts Int32 values (within the type's range) to little-endian voxel bytes.
    public func encode(_ values: UnsafeBufferPointer<Int32>, into out: UnsafeMutableRawBufferPointer) {
        precondition(out.count == values.count * bytesPerVoxel)
        switch self {
        case .uint8:
            for i in 0..<values.count { out[i] = UInt8(truncatingIfNeeded: values[i]) }
        case .int16, .uint16:
            for i in 0..<values.count {
                let v = UInt16(truncatingIfNeeded: values[i])
                out[2 * i] = UInt8(v & 0xFF)
                out[2 * i + 1] = UInt8(v >> 8)
            }
        }
    }
}

/// Volume shape (x, y, z): x varies fastest, z slowest (C order with z slowest).
public struct Shape: Equatable, Sendable, CustomStringConvertible {
    public var x: Int, y: Int, z: Int
    public init(_ x: Int, _ y: Int, _ z: Int) { self.x = x; self.y = y; self.z = z }
    public var voxels: Int { x * y * z }
    public var sliceVoxels: Int { x * y }
    public var description: String { "\(x)x\(y)x\(z)" }

    /// Parses "XxYxZ" (also "X,Y,Z").
    public init?(parsing s: String) {
        let parts = s.split(whereSeparator: { $0 == "x" || $0 == "X" || $0 == "," }).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 3, let a = parts[0], let b = parts[1], let c = parts[2] else { return nil }
        self.init(a, b, c)
    }

    /// Largest dimension a stream may declare: keeps allocations sane on hostile headers.
    public static let maxDimension = 1 << 20
    public static let maxVoxels = 1 << 36

    public var isValid: Bool {
        x >= 1 && y >= 1 && z >= 1 && x <= Shape.maxDimension && y <= Shape.maxDimension && z <= Shape.maxDimension
            && x.multipliedReportingOverflow(by: y).partialValue.multipliedReportingOverflow(by: z).partialValue <= Shape.maxVoxels
            && x * y <= Shape.maxVoxels
    }
}
