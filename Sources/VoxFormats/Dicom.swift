import Foundation
import VoxCore

/// A DICOM Part 10 file (or a bare dataset), parsed far enough to find its pixel data and
/// the attributes that describe it. The parser never trusts a length: every read is bounds-
/// checked, nesting is limited, and anything it cannot follow makes the file "opaque"
/// (kept as it is), never a crash.
public struct DicomFile: Sendable {
    public enum Syntax: Sendable, Equatable {
        case implicitLittle, explicitLittle, explicitBig
        case encapsulated(String)     // JPEG, JPEG-LS, JPEG 2000, RLE, deflate, ...
    }

    public static let implicitLE = "1.2.840.10008.1.2"
    public static let explicitLE = "1.2.840.10008.1.2.1"
    public static let explicitBE = "1.2.840.10008.1.2.2"

    public var hasPreamble = false
    public var transferSyntaxUID: String?
    public var syntax: Syntax = .explicitLittle

    // attributes (top-level dataset only)
    public var rows: Int?, columns: Int?
    public var bitsAllocated: Int?, bitsStored: Int?, pixelRepresentation: Int?
    public var samplesPerPixel: Int?
    public var numberOfFrames: Int?
    public var photometric: String?
    public var rescaleIntercept: Double?
    public var seriesInstanceUID: String?
    public var instanceNumber: Int?
    public var imagePosition: [Double]?
    public var imageOrientation: [Double]?
    public var sopInstanceUID: String?

    /// Byte range of the Pixel Data value (defined length), and whether it is encapsulated.
    public var pixelValue: Range<Int>?
    public var pixelEncapsulated = false

    /// Parses `bytes`. Throws only for data that is not DICOM at all or that it cannot follow.
    public static func parse(_ bytes: [UInt8]) throws -> DicomFile {
        var f = DicomFile()
        var p = DicomReader(bytes: bytes)
        var pos = 0
        if bytes.count >= 132, bytes[128] == 0x44, bytes[129] == 0x49, bytes[130] == 0x43, bytes[131] == 0x4D {
            f.hasPreamble = true
            pos = 132
        } else if bytes.count >= 132, bytes[0] == 0x44, bytes[1] == 0x49, bytes[2] == 0x43, bytes[3] == 0x4D {
            pos = 4 // "DICM" without the 128-byte preamble
        }
        // File meta information: group 0002, always explicit VR little endian.
        p.bigEndian = false
        p.explicit = true
        if pos + 6 <= bytes.count, p.u16(pos) == 0x0002, isVR(bytes, pos + 4) {
            while pos + 8 <= bytes.count, p.u16(pos) == 0x0002 {
                let e = try p.element(at: pos, depth: 0)
                if e.tag == 0x0002_0010 { f.transferSyntaxUID = p.string(e.value) }
                pos = e.end
            }
        }
        // The dataset's encoding: from the meta group, else guessed from the first element.
        if let ts = f.transferSyntaxUID {
            switch ts {
            case implicitLE: f.syntax = .implicitLittle
            case explicitLE: f.syntax = .explicitLittle
            case explicitBE: f.syntax = .explicitBig
            default: f.syntax = .encapsulated(ts)
            }
        } else {
            guard pos + 8 <= bytes.count else { throw VoxError(.badFormat, "too short to be DICOM") }
            let leGroup = UInt16(bytes[pos]) | UInt16(bytes[pos + 1]) << 8
            let beGroup = UInt16(bytes[pos]) << 8 | UInt16(bytes[pos + 1])
            // a dataset starts with a low group number (0008 usually): that fixes the byte order
            if isVR(bytes, pos + 4) {
                if leGroup >= 0x0002 && leGroup <= 0x00FF { f.syntax = .explicitLittle }
                else if beGroup >= 0x0002 && beGroup <= 0x00FF { f.syntax = .explicitBig }
                else { throw VoxError(.badFormat, "no DICOM preamble, meta group or plausible first element") }
            } else if leGroup >= 0x0002 && leGroup <= 0x00FF {
                f.syntax = .implicitLittle
            } else {
                throw VoxError(.badFormat, "no DICOM preamble, meta group or plausible first element")
            }
        }
        switch f.syntax {
        case .implicitLittle: p.explicit = false; p.bigEndian = false
        case .explicitLittle: p.explicit = true; p.bigEndian = false
        case .explicitBig: p.explicit = true; p.bigEndian = true
        case .encapsulated(let ts):
            // deflated datasets cannot be walked; other encapsulated syntaxes are explicit LE
            if ts == "1.2.840.10008.1.2.1.99" { return f }
            p.explicit = true; p.bigEndian = false
        }
        // Some writers declare explicit VR and write implicit (or the reverse): follow the
        // data, as pydicom does, when the first element says otherwise.
        if !p.bigEndian, pos + 6 <= bytes.count {
            let looksExplicit = isVR(bytes, pos + 4)
            if looksExplicit != p.explicit { p.explicit = looksExplicit }
        }
        // Top-level dataset.
        var guardCount = 0
        while pos < bytes.count {
            guardCount += 1
            if guardCount > 10_000_000 { throw VoxError(.badFormat, "too many elements") }
            if bytes.count - pos < 8 {
                // trailing padding bytes: allowed only as zeros
                break
            }
            let e = try p.element(at: pos, depth: 0)
            f.take(e, p)
            pos = e.end
        }
        return f
    }

    mutating func take(_ e: DicomReader.Element, _ p: DicomReader) {
        switch e.tag {
        case 0x0028_0010: rows = p.uint(e)
        case 0x0028_0011: columns = p.uint(e)
        case 0x0028_0100: bitsAllocated = p.uint(e)
        case 0x0028_0101: bitsStored = p.uint(e)
        case 0x0028_0103: pixelRepresentation = p.uint(e)
        case 0x0028_0002: samplesPerPixel = p.uint(e)
        case 0x0028_0008: numberOfFrames = p.string(e.value).flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        case 0x0028_0004: photometric = p.string(e.value)
        case 0x0028_1052: rescaleIntercept = p.string(e.value).flatMap { Double($0.trimmingCharacters(in: .whitespaces)) }
        case 0x0020_000E: seriesInstanceUID = p.string(e.value)
        case 0x0008_0018: sopInstanceUID = p.string(e.value)
        case 0x0020_0013: instanceNumber = p.string(e.value).flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        case 0x0020_0032: imagePosition = p.decimals(e.value)
        case 0x0020_0037: imageOrientation = p.decimals(e.value)
        case 0x7FE0_0010:
            if e.undefinedLength { pixelEncapsulated = true } else { pixelValue = e.value }
        default: break
        }
    }

    /// Why this file's pixels cannot be coded as a volume (nil when they can).
    public var opaqueReason: String? {
        switch syntax {
        case .encapsulated(let ts): return "compressed or encapsulated transfer syntax \(ts)"
        default: break
        }
        if pixelEncapsulated { return "encapsulated pixel data" }
        guard let pv = pixelValue else { return "no pixel data" }
        guard let r = rows, let c = columns, r > 0, c > 0, r <= 65535, c <= 65535 else { return "missing or bad Rows/Columns" }
        guard (samplesPerPixel ?? 1) == 1 else { return "colour image (SamplesPerPixel \(samplesPerPixel!))" }
        let ph = (photometric ?? "").trimmingCharacters(in: .whitespaces).uppercased()
        guard ph == "MONOCHROME1" || ph == "MONOCHROME2" else { return "photometric interpretation '\(ph)'" }
        guard let ba = bitsAllocated, ba == 8 || ba == 16 else { return "BitsAllocated \(bitsAllocated.map(String.init) ?? "missing")" }
        if ba == 8 && (pixelRepresentation ?? 0) == 1 { return "signed 8-bit pixels" }
        let frames = numberOfFrames ?? 1
        guard frames >= 1, frames <= 1 << 20 else { return "bad NumberOfFrames" }
        let need = r * c * frames * (ba / 8)
        // extra bytes (odd-length padding, padded pixel data) stay in the file's trailer
        guard pv.count >= need else { return "pixel data length \(pv.count) is shorter than \(r)x\(c)x\(frames)x\(ba / 8) bytes" }
        return nil
    }

    public var dtype: DType? {
        guard opaqueReason == nil else { return nil }
        if bitsAllocated == 8 { return .uint8 }
        return (pixelRepresentation ?? 0) == 1 ? .int16 : .uint16
    }

    static func isVR(_ b: [UInt8], _ i: Int) -> Bool {
        guard i + 1 < b.count else { return false }
        return (0x41...0x5A).contains(b[i]) && (0x41...0x5A).contains(b[i + 1])
    }
}

/// Low-level element reader for one encoding.
struct DicomReader {
    let bytes: [UInt8]
    var explicit = true
    var bigEndian = false

    struct Element {
        var tag: UInt32
        var vr: String?
        var value: Range<Int>     // defined-length value bytes (empty for undefined length)
        var undefinedLength: Bool
        var end: Int              // offset just past the element (and its items)
    }

    static let longVRs: Set<String> = ["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"]
    static let maxDepth = 32

    func u16(_ i: Int) -> UInt16 {
        bigEndian ? UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1]) : UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8
    }
    func u32(_ i: Int) -> UInt32 {
        bigEndian
            ? UInt32(bytes[i]) << 24 | UInt32(bytes[i + 1]) << 16 | UInt32(bytes[i + 2]) << 8 | UInt32(bytes[i + 3])
            : UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24
    }

    func truncated(_ at: Int) -> VoxError { VoxError(.truncated, "DICOM element at offset \(at) runs past the end of the file") }

    /// Reads the element at `pos`, skipping over sequences, items and encapsulated fragments.
    func element(at pos: Int, depth: Int) throws -> Element {
        guard depth <= DicomReader.maxDepth else { throw VoxError(.badFormat, "DICOM sequences nested too deeply") }
        guard pos + 8 <= bytes.count else { throw truncated(pos) }
        // items and delimiters are always implicit-style (tag + 4-byte length)
        let group = u16(pos), elem = u16(pos + 2)
        let tag = UInt32(group) << 16 | UInt32(elem)
        var vr: String? = nil
        var length: UInt32
        var valueStart: Int
        if group == 0xFFFE {
            length = u32(pos + 4)
            valueStart = pos + 8
        } else if explicit {
            let v = String(decoding: bytes[(pos + 4)..<(pos + 6)], as: UTF8.self)
            guard DicomFile.isVR(bytes, pos + 4) else { throw VoxError(.badFormat, "invalid VR at offset \(pos + 4)") }
            vr = v
            if DicomReader.longVRs.contains(v) {
                guard pos + 12 <= bytes.count else { throw truncated(pos) }
                length = u32(pos + 8)
                valueStart = pos + 12
            } else {
                length = UInt32(u16(pos + 6))
                valueStart = pos + 8
            }
        } else {
            length = u32(pos + 4)
            valueStart = pos + 8
        }
        if length == 0xFFFF_FFFF {
            // undefined length: a sequence (items until FFFE,E0DD) or encapsulated pixel data
            var q = valueStart
            var n = 0
            while true {
                n += 1
                if n > 1_000_000 { throw VoxError(.badFormat, "too many items") }
                guard q + 8 <= bytes.count else { throw truncated(q) }
                let g = u16(q), el = u16(q + 2)
                let len = u32(q + 4)
                if g == 0xFFFE && el == 0xE0DD { q += 8; break }          // sequence delimitation
                guard g == 0xFFFE && el == 0xE000 else {
                    throw VoxError(.badFormat, "expected an item at offset \(q)")
                }
                if len == 0xFFFF_FFFF {
                    // item of undefined length: a nested dataset until FFFE,E00D
                    var r = q + 8
                    var m = 0
                    while true {
                        m += 1
                        if m > 10_000_000 { throw VoxError(.badFormat, "too many elements in an item") }
                        guard r + 8 <= bytes.count else { throw truncated(r) }
                        if u16(r) == 0xFFFE && u16(r + 2) == 0xE00D { r += 8; break }
                        // an undefined-length UN element holds implicit VR little endian data
                        var sub = self
                        if vr == "UN" { sub.explicit = false; sub.bigEndian = false }
                        let inner = try sub.element(at: r, depth: depth + 1)
                        r = inner.end
                    }
                    q = r
                } else {
                    guard Int(len) <= bytes.count - (q + 8) else { throw truncated(q) }
                    q += 8 + Int(len)
                }
            }
            return Element(tag: tag, vr: vr, value: valueStart..<valueStart, undefinedLength: true, end: q)
        }
        guard Int(length) <= bytes.count - valueStart else { throw truncated(pos) }
        return Element(tag: tag, vr: vr, value: valueStart..<(valueStart + Int(length)), undefinedLength: false, end: valueStart + Int(length))
    }

    func string(_ r: Range<Int>) -> String? {
        guard r.count <= 1024 else { return nil }
        let s = String(decoding: bytes[r], as: UTF8.self)
        return s.trimmingCharacters(in: CharacterSet(charactersIn: " \0"))
    }

    func decimals(_ r: Range<Int>) -> [Double]? {
        guard let s = string(r) else { return nil }
        let parts = s.split(separator: "\\").map { Double($0.trimmingCharacters(in: .whitespaces)) }
        return parts.contains(where: { $0 == nil }) ? nil : parts.map { $0! }
    }

    /// US / UL value (2 or 4 bytes), or an IS string in implicit files.
    func uint(_ e: Element) -> Int? {
        if e.value.count == 2 { return Int(u16(e.value.lowerBound)) }
        if e.value.count == 4, e.vr == "UL" || e.vr == "SL" { return Int(u32(e.value.lowerBound)) }
        if e.value.count == 4, e.vr == nil { return Int(u32(e.value.lowerBound)) }
        return string(e.value).flatMap { Int($0) }
    }
}
