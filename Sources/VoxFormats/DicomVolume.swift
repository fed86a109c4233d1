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

    public init(path: String, header: [UInt8], trailer: [UInt8], firstSlice: Int, slices: Int, bigEndian: Bool) {
        self.path = path; self.header = header; self.trailer = trailer
        self.firstSlice = firstSlice; self.slices = slices; self.bigEndian = bigEndian
    }

    /// The file's bytes from the volume's little-endian voxel bytes of its slices.
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

public enum DicomVolume {
    /// A single DICOM file (single- or multi-frame) with native monochrome pixels as a volume
    /// of columns x rows x frames; nil with the reason when it must stay opaque.
    public static func source(path: String, bytes: [UInt8]) -> (VolumeSource?, String?) {
        let f: DicomFile
        do { f = try DicomFile.parse(bytes) } catch let e as VoxError { return (nil, e.message) } catch { return (nil, "\(error)") }
        if let why = f.opaqueReason { return (nil, why) }
        guard let dt = f.dtype, let pv = f.pixelValue, let r = f.rows, let c = f.columns else { return (nil, "no pixel data") }
        let frames = f.numberOfFrames ?? 1
        let n = r * c * frames * dt.bytesPerVoxel
        let big = f.syntax == .explicitBig
        var vox = Array(bytes[pv.lowerBound..<(pv.lowerBound + n)])
        if big && dt.bytesPerVoxel == 2 {
            var i = 0
            while i < vox.count { vox.swapAt(i, i + 1); i += 2 }
        }
        let part = VolumeFilePart(path: path, header: Array(bytes[0..<pv.lowerBound]), trailer: Array(bytes[(pv.lowerBound + n)...]),
                                  firstSlice: 0, slices: frames, bigEndian: big)
        return (VolumeSource(shape: Shape(c, r, frames), dtype: dt, parts: [part], voxels: vox), nil)
    }
}
