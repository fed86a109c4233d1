import Foundation
import VoxCore

/// Header/data pairs: NIfTI .hdr + .img, MetaImage .mhd + its ElementDataFile, NRRD .nhdr +
/// its data file. The header file stays an ordinary (small) file; the data file's voxels are
/// the volume, with whatever precedes or follows them in the data file kept as its header and
/// trailer. Only uncompressed data with the codec's voxel types is taken.
public enum Detached {
    public struct Pair: Sendable {
        public var headerPath: String
        public var dataPath: String
        public var shape: Shape
        public var dtype: DType
        public var offset: Int
        public var bigEndian: Bool
    }

    /// Reads a header file and names its data file (resolved beside it) and voxel layout.
    public static func describe(headerPath: String, bytes: [UInt8]) -> (Pair?, String?) {
        let dir = URL(fileURLWithPath: headerPath).deletingLastPathComponent()
        let lower = headerPath.lowercased()
        if lower.hasSuffix(".hdr") {
            // NIfTI-1 pair: magic "ni1\0", voxel block in the .img at vox_offset (normally 0)
            guard bytes.count >= 348 else { return (nil, "too short for a NIfTI header") }
            var big = false
            let sz = UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
            if sz == 348 { big = false } else if sz.byteSwapped == 348 { big = true } else { return (nil, "not a NIfTI-1 header") }
            guard Array(bytes[344..<348]) == [0x6E, 0x69, 0x31, 0x00] else { return (nil, "NIfTI header without the pair magic ni1") }
            func i16(_ o: Int) -> Int { let v = UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8; return Int(Int16(bitPattern: big ? v.byteSwapped : v)) }
            let nd = i16(40)
            guard (1...7).contains(nd) else { return (nil, "bad dim[0]") }
            let dims = (1...nd).map { i16(40 + 2 * $0) }
            guard let s = TextHeaderFormats.shape(Array(dims.prefix(3)) + [dims.dropFirst(3).reduce(1, *)].filter { _ in dims.count > 3 }) else { return (nil, "bad dimensions") }
            let dt: DType
            switch i16(70) { case 2: dt = .uint8; case 4: dt = .int16; case 512: dt = .uint16; default: return (nil, "voxel datatype \(i16(70))") }
            let fb = UInt32(bytes[108]) | UInt32(bytes[109]) << 8 | UInt32(bytes[110]) << 16 | UInt32(bytes[111]) << 24
            let f = Float(bitPattern: big ? fb.byteSwapped : fb)
            guard f.isFinite, f >= 0, f < 1e9 else { return (nil, "bad vox_offset") }
            let img = URL(fileURLWithPath: headerPath).deletingPathExtension().appendingPathExtension("img").path
            return (Pair(headerPath: headerPath, dataPath: img, shape: s, dtype: dt, offset: Int(f), bigEndian: big), nil)
        }
        let text = TextHeaderFormats.lines(bytes)
        if lower.hasSuffix(".mhd") {
            var fields: [String: String] = [:]
            for (line, _) in text {
                guard let eq = line.firstIndex(of: "=") else { continue }
                fields[line[..<eq].trimmingCharacters(in: .whitespaces)] = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            }
            guard let file = fields["ElementDataFile"], file != "LOCAL", !file.contains(" "), !file.hasPrefix("LIST") else { return (nil, "MetaImage data file not a single file") }
            if (fields["CompressedData"] ?? "False").lowercased() == "true" { return (nil, "compressed MetaImage data") }
            guard let t = fields["ElementType"], let dt = TextHeaderFormats.dtype(metaType: t) else { return (nil, "MetaImage element type") }
            let dims = (fields["DimSize"] ?? "").split(separator: " ").compactMap { Int($0) }
            guard let s = TextHeaderFormats.shape(dims) else { return (nil, "bad DimSize") }
            let big = ["true", "1"].contains((fields["BinaryDataByteOrderMSB"] ?? fields["ByteOrderMSB"] ?? "False").lowercased())
            let hs = Int(fields["HeaderSize"] ?? "0") ?? 0
            return (Pair(headerPath: headerPath, dataPath: dir.appendingPathComponent(file).path, shape: s, dtype: dt, offset: hs, bigEndian: big), nil)
        }
        if bytes.count >= 4, String(decoding: bytes[0..<4], as: UTF8.self) == "NRRD" {
            var fields: [String: String] = [:]
            for (i, (line, _)) in text.enumerated() where i > 0 {
                if line.isEmpty { break }
                guard !line.hasPrefix("#"), let c = line.firstIndex(of: ":"), !line.contains(":=") else { continue }
                fields[line[..<c].trimmingCharacters(in: .whitespaces).lowercased()] = line[line.index(after: c)...].trimmingCharacters(in: .whitespaces)
            }
            guard let file = fields["data file"] ?? fields["datafile"], !file.hasPrefix("LIST"), !file.contains(" ") else { return (nil, "NRRD without a single detached data file") }
            guard (fields["encoding"] ?? "").lowercased() == "raw" else { return (nil, "NRRD encoding '\(fields["encoding"] ?? "")'") }
            guard let t = fields["type"], let dt = TextHeaderFormats.dtype(nrrdType: t) else { return (nil, "NRRD type") }
            let dims = (fields["sizes"] ?? "").split(separator: " ").compactMap { Int($0) }
            guard let s = TextHeaderFormats.shape(dims) else { return (nil, "bad NRRD sizes") }
            let skip = Int(fields["byte skip"] ?? fields["byteskip"] ?? "0") ?? 0
            return (Pair(headerPath: headerPath, dataPath: dir.appendingPathComponent(file).path, shape: s, dtype: dt, offset: max(0, skip),
                         bigEndian: (fields["endian"] ?? "little").lowercased() == "big"), nil)
        }
        return (nil, "not a header of a header/data pair")
    }

    /// The data file of a pair as a volume.
    public static func source(_ p: Pair, dataBytes: [UInt8]) -> (VolumeSource?, String?) {
        VolumeSource.singleFile(path: p.dataPath, bytes: dataBytes, offset: p.offset, shape: p.shape, dtype: p.dtype, bigEndian: p.bigEndian)
    }
}
