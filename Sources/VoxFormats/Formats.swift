import Foundation
import VoxCore

/// The one entry point the archive and the filesystem use: what a file is, and (when its
/// voxels can be coded as a volume) its `VolumeSource`.
public enum Formats {
    public enum Kind: String, Sendable { case dicom, nifti, metaImage = "metaimage", nrrd, raw, opaque }

    /// A raw volume with its JSON sidecar (what `voxfs compress` reads): the whole file is voxels.
    public static func raw(path: String, bytes: [UInt8], sidecar: Sidecar) -> Recognised {
        guard let (shape, dt) = try? sidecar.parsed() else { return Recognised(kind: .opaque, source: nil, reason: "sidecar without a valid shape and dtype") }
        guard bytes.count == shape.voxels * dt.bytesPerVoxel else {
            return Recognised(kind: .opaque, source: nil, reason: "raw file of \(bytes.count) bytes does not match its sidecar (\(shape) \(dt))")
        }
        let part = VolumeFilePart(path: path, header: [], trailer: [], firstSlice: 0, slices: shape.z, bigEndian: false)
        return Recognised(kind: .raw, source: VolumeSource(shape: shape, dtype: dt, parts: [part], voxels: bytes), reason: nil)
    }

    public struct Recognised: Sendable {
        public var kind: Kind
        public var source: VolumeSource?
        /// Why the file is kept opaque (nil for volumes).
        public var reason: String?
    }

    /// Recognises one file by content (and extension for the text formats). Never throws.
    /// A gzip file is decompressed and its content recognised; it is coded as a volume when
    /// zlib rebuilds its compressed bytes exactly (`DeflateWrapper`), else kept opaque with why.
    public static func recognise(path: String, bytes: [UInt8]) -> Recognised {
        if bytes.count >= 2, bytes[0] == 0x1F, bytes[1] == 0x8B {
            switch Deflate.unwrapStream(bytes, at: 0, gzip: true) {
            case .no(let why): return Recognised(kind: .opaque, source: nil, reason: "gzip: \(why)")
            case .ok(let content, let w):
                var inner = path.lowercased().hasSuffix(".gz") ? String(path.dropLast(3)) : path
                if inner == path { inner += ".content" }
                let r = recogniseUncompressed(path: inner, bytes: content)
                guard var src = r.source, r.kind != .dicom, src.parts.count == 1 else {
                    let why = r.kind == .dicom ? "gzip-wrapped DICOM is kept as it is" : (r.reason ?? "its content is not a volume")
                    return Recognised(kind: .opaque, source: nil, reason: "gzip (rebuilt by \(w.summary)), but \(why)")
                }
                src.parts[0].path = path
                src.parts[0].wrapper = w
                return Recognised(kind: r.kind, source: src, reason: nil)
            }
        }
        return recogniseUncompressed(path: path, bytes: bytes)
    }

    static func recogniseUncompressed(path: String, bytes: [UInt8]) -> Recognised {
        let lower = path.lowercased()
        if bytes.count >= 4, String(decoding: bytes[0..<4], as: UTF8.self) == "NRRD" {
            let (s, why) = TextHeaderFormats.nrrd(path: path, bytes: bytes)
            return Recognised(kind: s == nil ? .opaque : .nrrd, source: s, reason: why.map { "NRRD: \($0)" })
        }
        if lower.hasSuffix(".mha") || lower.hasSuffix(".mhd") {
            let (s, why) = TextHeaderFormats.metaImage(path: path, bytes: bytes)
            return Recognised(kind: s == nil ? .opaque : .metaImage, source: s, reason: why.map { "MetaImage: \($0)" })
        }
        if bytes.count >= 348 {
            let sz = UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
            if [348, 540, UInt32(348).byteSwapped, UInt32(540).byteSwapped].contains(sz) {
                let (s, why) = Nifti.source(path: path, bytes: bytes)
                if s != nil || lower.hasSuffix(".nii") { return Recognised(kind: s == nil ? .opaque : .nifti, source: s, reason: why.map { "NIfTI: \($0)" }) }
            }
        }
        if bytes.count >= 2, bytes[0] == 0x1F, bytes[1] == 0x8B {
            return Recognised(kind: .opaque, source: nil, reason: "gzip inside gzip (kept as it is)")
        }
        let (s, why) = DicomVolume.source(path: path, bytes: bytes)
        return Recognised(kind: s == nil ? .opaque : .dicom, source: s, reason: why.map { "DICOM: \($0)" })
    }
}
