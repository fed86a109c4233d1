import Foundation
import VoxCore

/// NIfTI-1 and NIfTI-2 single files (.nii): header, optional extensions, voxel block. Integer
/// voxel types the codec takes (uint8, int16, uint16) become a volume; anything else, and any
/// header that does not add up, stays opaque with the reason.
public enum Nifti {
    public static func source(path: String, bytes: [UInt8]) -> (VolumeSource?, String?) {
        guard bytes.count >= 348 else { return (nil, "too short for a NIfTI header") }
        func i32(_ o: Int, _ big: Bool) -> Int32 {
            let v = UInt32(bytes[o]) | UInt32(bytes[o + 1]) << 8 | UInt32(bytes[o + 2]) << 16 | UInt32(bytes[o + 3]) << 24
            return Int32(bitPattern: big ? v.byteSwapped : v)
        }
        func i16(_ o: Int, _ big: Bool) -> Int16 {
            let v = UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8
            return Int16(bitPattern: big ? v.byteSwapped : v)
        }
        func i64(_ o: Int, _ big: Bool) -> Int64 {
            var v: UInt64 = 0
            for k in 0..<8 { v |= UInt64(bytes[o + k]) << (8 * UInt64(k)) }
            return Int64(bitPattern: big ? v.byteSwapped : v)
        }
        var big = false
        var version = 0
        if i32(0, false) == 348 { version = 1 } else if i32(0, true) == 348 { version = 1; big = true }
        else if i32(0, false) == 540 { version = 2 } else if i32(0, true) == 540 { version = 2; big = true }
        else { return (nil, "not a NIfTI header (sizeof_hdr)") }
        var dims = [Int64](repeating: 0, count: 8)
        let datatype: Int, voxOffset: Int64
        if version == 1 {
            let magic = Array(bytes[344..<348])
            guard magic == [0x6E, 0x2B, 0x31, 0x00] else { return (nil, "NIfTI-1 header without the single-file magic n+1") }
            for k in 0..<8 { dims[k] = Int64(i16(40 + 2 * k, big)) }
            datatype = Int(i16(70, big))
            let bitsF = UInt32(bytes[108]) | UInt32(bytes[109]) << 8 | UInt32(bytes[110]) << 16 | UInt32(bytes[111]) << 24
            let f = Float(bitPattern: big ? bitsF.byteSwapped : bitsF)
            guard f.isFinite, f >= 348, f < Float(Int32.max) else { return (nil, "bad vox_offset") }
            voxOffset = Int64(f)
        } else {
            guard bytes.count >= 540 else { return (nil, "too short for a NIfTI-2 header") }
            guard Array(bytes[4..<12]) == [0x6E, 0x2B, 0x32, 0x00, 0x0D, 0x0A, 0x1A, 0x0A] else { return (nil, "NIfTI-2 header without the single-file magic n+2") }
            datatype = Int(i16(12, big))
            for k in 0..<8 { dims[k] = i64(16 + 8 * k, big) }
            voxOffset = i64(168, big)
        }
        let nd = Int(dims[0])
        guard (1...7).contains(nd) else { return (nil, "bad dim[0] \(dims[0])") }
        var extent = [Int64](repeating: 1, count: 7)
        for k in 0..<nd { extent[k] = dims[k + 1] }
        guard extent.allSatisfy({ $0 >= 1 && $0 <= 1 << 20 }) else { return (nil, "bad dimensions") }
        let dt: DType
        switch datatype {
        case 2: dt = .uint8
        case 4: dt = .int16
        case 512: dt = .uint16
        default: return (nil, "voxel datatype \(datatype) is not one the codec takes (uint8, int16, uint16)")
        }
        var z: Int64 = 1
        for k in 2..<7 { z = z.multipliedReportingOverflow(by: extent[k]).partialValue }
        let shape = Shape(Int(extent[0]), Int(extent[1]), Int(min(z, Int64(Int32.max))))
        guard voxOffset >= 0, voxOffset <= Int64(bytes.count) else { return (nil, "voxel block runs past the end of the file") }
        return VolumeSource.singleFile(path: path, bytes: bytes, offset: Int(voxOffset), shape: shape, dtype: dt, bigEndian: big)
    }
}
