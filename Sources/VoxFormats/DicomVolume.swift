import Foundation
import VoxCore

/// How a file is rebuilt from its non-pixel bytes and a run of voxels of a volume: the
/// `VolumeSource` view that the archive and the filesystem use (they never parse formats).
public struct VolumeFilePart: Sendable, Equatable {
    public var path: String
    /// Bytes before the voxels and after them (odd padding, elements after Pixel Data).
    public var header: [UInt8]
    public var trailer: [UInt8]
    /// The file's voxels are slices [firstSlice, firstSlice + slices) of the volume.
    public var firstSlice: Int
    public var slices: Int
    /// Voxel bytes in the file are big-endian (the volume is always little-endian).
    public var bigEndian: Bool
    /// A compressed file (.nii.gz, NRRD gzip): header, voxels and trailer are its decompressed
    /// content, and the file is that content deflated again as the wrapper says.
    public var wrapper: DeflateWrapper?

    public init(path: String, header: [UInt8], trailer: [UInt8], firstSlice: Int, slices: Int, bigEndian: Bool, wrapper: DeflateWrapper? = nil) {
        self.path = path; self.header = header; self.trailer = trailer
        self.firstSlice = firstSlice; self.slices = slices; self.bigEndian = bigEndian; self.wrapper = wrapper
    }

    /// The file's bytes from the volume's little-endian voxel bytes of its slices (recompressed
    /// when the file is wrapped).
    public func rebuildFile(voxels: ArraySlice<UInt8>, dtype: DType) throws -> [UInt8] {
        let inner = rebuild(voxels: voxels, dtype: dtype)
        guard let w = wrapper else { return inner }
        return try w.wrap(inner)
    }

    /// The file's (decompressed) content from the volume's little-endian voxel bytes of its slices.
    public func rebuild(voxels: ArraySlice<UInt8>, dtype: DType) -> [UInt8] {
        var out = header
        out.reserveCapacity(header.count + voxels.count + trailer.count)
        if bigEndian && dtype.bytesPerVoxel == 2 {
            var i = voxels.startIndex
            while i < voxels.endIndex { out.append(voxels[i + 1]); out.append(voxels[i]); i += 2 }
        } else {
            out += voxels
        }
        out += trailer
        return out
    }
}

public struct VolumeSource: Sendable {
    public var shape: Shape
    public var dtype: DType
    public var parts: [VolumeFilePart]
    /// The volume's voxels, little-endian, x fastest then y then z.
    public var voxels: [UInt8]
}

extension VolumeFilePart {
    /// Splits a file whose voxels are the `count` bytes at `offset` into its part (the bytes
    /// around the voxels) and its voxels, little-endian (swapped when the file is big-endian).
    static func split(path: String, bytes: [UInt8], offset: Int, count n: Int, dtype: DType, bigEndian: Bool,
                      firstSlice: Int, slices: Int) -> (VolumeFilePart, [UInt8]) {
        var vox = Array(bytes[offset..<(offset + n)])
        if bigEndian && dtype.bytesPerVoxel == 2 {
            var i = 0
            while i < vox.count { vox.swapAt(i, i + 1); i += 2 }
        }
        let part = VolumeFilePart(path: path, header: Array(bytes[0..<offset]), trailer: Array(bytes[(offset + n)...]),
                                  firstSlice: firstSlice, slices: slices, bigEndian: bigEndian)
        return (part, vox)
    }
}

extension VolumeSource {
    /// A file holding one volume as a voxel block at `offset` (DICOM, NIfTI, MetaImage, NRRD,
    /// header/data pairs): nil with the reason when the block does not fit in the file.
    static func singleFile(path: String, bytes: [UInt8], offset: Int, shape: Shape, dtype: DType, bigEndian: Bool) -> (VolumeSource?, String?) {
        guard shape.isValid else { return (nil, "bad dimensions") }
        let n = shape.voxels * dtype.bytesPerVoxel
        guard offset >= 0, offset <= bytes.count, n <= bytes.count - offset else { return (nil, "voxel block runs past the end of the file") }
        let (part, vox) = VolumeFilePart.split(path: path, bytes: bytes, offset: offset, count: n, dtype: dtype, bigEndian: bigEndian,
                                               firstSlice: 0, slices: shape.z)
        return (VolumeSource(shape: shape, dtype: dtype, parts: [part], voxels: vox), nil)
    }
}

public enum DicomVolume {
    /// A single DICOM file (single- or multi-frame) with native monochrome pixels as a volume
    /// of columns x rows x frames; nil with the reason when it must stay opaque.
    public static func source(path: String, bytes: [UInt8]) -> (VolumeSource?, String?) {
        let f: DicomFile
        do { f = try DicomFile.parse(bytes) } catch let e as VoxError { return (nil, e.message) } catch { return (nil, "\(error)") }
        if let why = f.opaqueReason { return (nil, why) }
        guard let dt = f.dtype, let pv = f.pixelValue, let r = f.rows, let c = f.columns else { return (nil, "no pixel data") }
        return VolumeSource.singleFile(path: path, bytes: bytes, offset: pv.lowerBound, shape: Shape(c, r, f.numberOfFrames ?? 1),
                                       dtype: dt, bigEndian: f.syntax == .explicitBig)
    }
}
