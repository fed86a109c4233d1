/// Files the tests write around real voxels (the voxels come from the data cache).
public enum TestFiles {
    static func bytes<T: FixedWidthInteger>(_ v: T, big: Bool) -> [UInt8] {
        let x = big ? v.bigEndian : v.littleEndian
        return withUnsafeBytes(of: x) { Array($0) }
    }

    /// A NIfTI-1 single file (.nii) of int16 voxels: 348-byte header, the extension flag and
    /// `extensionBytes`, the voxels, then `trailer`.
    public static func nifti1(_ vals: [Int16], x: Int, y: Int, z: Int, big: Bool, extensionBytes: [UInt8] = [], trailer: [UInt8] = []) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 348)
        func put(_ o: Int, _ b: [UInt8]) { for (i, v) in b.enumerated() { h[o + i] = v } }
        put(0, bytes(Int32(348), big: big))
        let dims: [Int16] = [3, Int16(x), Int16(y), Int16(z), 1, 1, 1, 1]
        for (k, d) in dims.enumerated() { put(40 + 2 * k, bytes(d, big: big)) }
        put(70, bytes(Int16(4), big: big)); put(72, bytes(Int16(16), big: big))
        let voxOffset = Float(352 + extensionBytes.count)
        put(108, bytes(voxOffset.bitPattern, big: big))
        put(112, bytes(Float(1).bitPattern, big: big)) // scl_slope
        put(344, [0x6E, 0x2B, 0x31, 0x00])
        var out = h + [extensionBytes.isEmpty ? 0 : 1, 0, 0, 0] + extensionBytes
        for v in vals { out += bytes(v, big: big) }
        return out + trailer
    }
}
