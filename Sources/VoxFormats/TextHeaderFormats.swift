import Foundation
import VoxCore

/// MetaImage (.mha, data attached: ElementDataFile = LOCAL) and NRRD (attached data, raw
/// encoding): text headers followed by the voxel block. Compressed data (MetaImage
/// CompressedData, NRRD gzip/bzip2 encodings) cannot be rebuilt bit for bit by recompressing
/// and stays opaque, as do types the codec does not take.
public enum TextHeaderFormats {
    static func dtype(metaType t: String) -> DType? {
        switch t { case "MET_UCHAR": .uint8; case "MET_SHORT": .int16; case "MET_USHORT": .uint16; default: nil }
    }
    static func dtype(nrrdType t: String) -> DType? {
        switch t.lowercased() {
        case "uchar", "unsigned char", "uint8", "uint8_t": .uint8
        case "short", "short int", "signed short", "signed short int", "int16", "int16_t": .int16
        case "ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t": .uint16
        default: nil
        }
    }

    /// Splits a text header into lines up to `maxBytes`; returns the lines and where each ends.
    static func lines(_ bytes: [UInt8], maxBytes: Int = 65536) -> [(String, Int)] {
        var out: [(String, Int)] = []
        var start = 0
        let limit = min(bytes.count, maxBytes)
        var i = 0
        while i < limit {
            if bytes[i] == 0x0A {
                var end = i
                if end > start && bytes[end - 1] == 0x0D { end -= 1 }
                out.append((String(decoding: bytes[start..<end], as: UTF8.self), i + 1))
                start = i + 1
            }
            i += 1
        }
        return out
    }

    static func shape(_ dims: [Int]) -> Shape? {
        guard (1...4).contains(dims.count), dims.allSatisfy({ $0 >= 1 && $0 <= 1 << 20 }) else { return nil }
        let d = dims + Array(repeating: 1, count: 4 - dims.count)
        return Shape(d[0], d[1], d[2] * d[3])
    }

    public static func metaImage(path: String, bytes: [UInt8]) -> (VolumeSource?, String?) {
        var fields: [String: String] = [:]
        var dataStart: Int? = nil
        for (line, end) in lines(bytes) {
            guard let eq = line.firstIndex(of: "=") else { return (nil, "not a MetaImage header") }
            let k = line[..<eq].trimmingCharacters(in: .whitespaces), v = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            fields[k] = v
            if k == "ElementDataFile" { dataStart = end; break }
        }
        guard fields["ObjectType"] == "Image" || fields["NDims"] != nil, let start = dataStart else { return (nil, "not a MetaImage header") }
        guard fields["ElementDataFile"] == "LOCAL" else { return (nil, "detached MetaImage data (ElementDataFile = \(fields["ElementDataFile"] ?? ""))") }
        let zipped = (fields["CompressedData"] ?? "False").lowercased() == "true"
        if (fields["ElementNumberOfChannels"] ?? "1") != "1" { return (nil, "multi-channel MetaImage") }
        guard let t = fields["ElementType"], let dt = dtype(metaType: t) else { return (nil, "MetaImage element type \(fields["ElementType"] ?? "missing")") }
        let dims = (fields["DimSize"] ?? "").split(separator: " ").compactMap { Int($0) }
        guard let s = shape(dims), dims.count == Int(fields["NDims"] ?? "") else { return (nil, "bad DimSize") }
        let big = ["true", "1"].contains((fields["BinaryDataByteOrderMSB"] ?? fields["ByteOrderMSB"] ?? "False").lowercased())
        if zipped {
            guard Int(fields["HeaderSize"] ?? "0") == 0 else { return (nil, "compressed MetaImage data with a HeaderSize") }
            return compressed(path: path, bytes: bytes, at: start, gzip: false, shape: s, dtype: dt, bigEndian: big, what: "compressed MetaImage data")
        }
        var offset = start
        if let hs = fields["HeaderSize"], let h = Int(hs), h != 0 { offset = h == -1 ? bytes.count - s.voxels * dt.bytesPerVoxel : start + h }
        return VolumeSource.singleFile(path: path, bytes: bytes, offset: offset, shape: s, dtype: dt, bigEndian: big)
    }

    /// A volume whose voxels are the whole content of the compressed stream at `offset` (a
    /// gzip member, or a zlib stream), rebuilt by recompressing (`DeflateWrapper`).
    static func compressed(path: String, bytes: [UInt8], at offset: Int, gzip: Bool, shape s: Shape, dtype dt: DType, bigEndian big: Bool,
                           what: String) -> (VolumeSource?, String?) {
        switch Deflate.unwrapStream(bytes, at: offset, gzip: gzip) {
        case .no(let why): return (nil, "\(what): \(why)")
        case .ok(let content, let w):
            guard content.count == s.voxels * dt.bytesPerVoxel else {
                return (nil, "\(what) holds \(content.count) bytes, the header's sizes need \(s.voxels * dt.bytesPerVoxel)")
            }
            var (part, vox) = VolumeFilePart.split(path: path, bytes: content, offset: 0, count: content.count, dtype: dt, bigEndian: big,
                                                   firstSlice: 0, slices: s.z)
            part.wrapper = w
            return (VolumeSource(shape: s, dtype: dt, parts: [part], voxels: vox), nil)
        }
    }

    public static func nrrd(path: String, bytes: [UInt8]) -> (VolumeSource?, String?) {
        guard bytes.count >= 8, String(decoding: bytes[0..<4], as: UTF8.self) == "NRRD" else { return (nil, "not a NRRD file") }
        var fields: [String: String] = [:]
        var dataStart: Int? = nil
        for (i, (line, end)) in lines(bytes).enumerated() {
            if i == 0 { continue }
            if line.isEmpty { dataStart = end; break }
            if line.hasPrefix("#") { continue }
            if let c = line.range(of: ":=") { fields["kv:" + line[..<c.lowerBound]] = String(line[c.upperBound...]); continue }
            guard let c = line.firstIndex(of: ":") else { return (nil, "bad NRRD field line") }
            fields[line[..<c].trimmingCharacters(in: .whitespaces).lowercased()] = line[line.index(after: c)...].trimmingCharacters(in: .whitespaces)
        }
        guard let start = dataStart else { return (nil, "NRRD header without data (detached or truncated)") }
        if fields["data file"] != nil || fields["datafile"] != nil { return (nil, "detached NRRD data") }
        let enc = (fields["encoding"] ?? "").lowercased()
        guard enc == "raw" || enc == "gzip" || enc == "gz" else { return (nil, "NRRD encoding '\(enc)' (raw and gzip are rebuilt bit for bit)") }
        guard let t = fields["type"], let dt = dtype(nrrdType: t) else { return (nil, "NRRD type \(fields["type"] ?? "missing")") }
        let dims = (fields["sizes"] ?? "").split(separator: " ").compactMap { Int($0) }
        guard let s = shape(dims), dims.count == Int(fields["dimension"] ?? "") else { return (nil, "bad NRRD sizes") }
        let big = (fields["endian"] ?? "little").lowercased() == "big"
        let skip = Int(fields["byte skip"] ?? fields["byteskip"] ?? "0") ?? 0
        if enc != "raw" {
            guard skip == 0 else { return (nil, "gzip NRRD with a byte skip") }
            return compressed(path: path, bytes: bytes, at: start, gzip: true, shape: s, dtype: dt, bigEndian: big, what: "NRRD gzip data")
        }
        let offset = skip == -1 ? bytes.count - s.voxels * dt.bytesPerVoxel : start + max(0, skip)
        return VolumeSource.singleFile(path: path, bytes: bytes, offset: offset, shape: s, dtype: dt, bigEndian: big)
    }
}
