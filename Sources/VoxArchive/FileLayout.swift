import Foundation
import VoxCodec
import VoxCore

/// Where each byte of a volume-backed file comes from, worked out once from its part record and
/// its volume's header; the mount, unpack and verify all read a file's bytes through it (issue 13,
/// item 2), so the layout and the byte swap are written once.
///
/// Offsets are in the file's content (for a compressed file, .nii.gz, its decompressed content):
/// [0, pixStart) is the part's header, [pixStart, preEnd) its stored page prefix (the first voxel
/// bytes up to a 4 KiB boundary, kept so that a header read needs no decode), [preEnd, pixEnd)
/// voxel bytes, content byte f being volume byte f + base (or its pair partner (f + base) ^ 1 when
/// 16-bit voxels are stored big-endian; the volume is little-endian), and [pixEnd, size) the trailer.
public struct FileLayout: Sendable {
    public let part: Archive.StoredPart
    public let pixStart: Int, preEnd: Int, pixEnd: Int, size: Int
    /// Volume byte offset of content byte f is f + base.
    public let base: Int
    /// Bytes of a full slab (the last one may be shorter: `slabSize`).
    public let slabBytes: Int
    /// 16-bit voxels stored big-endian: content byte f is volume byte (f + base) ^ 1.
    public let swap: Bool
    private let volumeBytes: Int

    /// Checks the part against its volume (a damaged or foreign part record is an error naming
    /// `path`, never a layout that reads outside the volume).
    public init(_ sp: Archive.StoredPart, header h: StreamHeader, path: String) throws {
        let p = sp.part
        let sliceBytes = h.shape.sliceVoxels * h.dtype.bytesPerVoxel
        guard p.firstSlice >= 0, p.slices >= 0, p.firstSlice <= h.shape.z - p.slices, sp.prefix.count <= p.slices * sliceBytes else {
            throw VoxError(.corrupt, "\(path): its file part does not match its volume")
        }
        part = sp
        pixStart = p.header.count
        preEnd = pixStart + sp.prefix.count
        pixEnd = pixStart + p.slices * sliceBytes
        size = pixEnd + p.trailer.count
        base = p.firstSlice * sliceBytes - pixStart
        slabBytes = h.slabThickness * sliceBytes
        swap = p.bigEndian && h.dtype.bytesPerVoxel == 2
        volumeBytes = h.shape.z * sliceBytes
    }

    /// Bytes of slab s (the last slab of a volume may hold fewer slices).
    public func slabSize(_ s: Int) -> Int { max(0, min(slabBytes, volumeBytes - s * slabBytes)) }

    /// The slabs whose voxels content bytes [lo, hi) read (nil: none, only header, prefix or
    /// trailer bytes), with `prefix` as in `visit`.
    public func slabs(_ lo: Int, _ hi: Int, prefix: Bool = true) -> ClosedRange<Int>? {
        let a = max(lo, prefix ? preEnd : pixStart), b = min(hi, pixEnd)
        guard a < b, slabBytes > 0 else { return nil }
        return ((a + base) / slabBytes)...((b - 1 + base) / slabBytes)
    }

    /// Hands content bytes [lo, hi) to `sink` in order: header, page prefix (with `prefix` false,
    /// the decoded voxels there instead, which unpack and verify compare with the prefix), voxel
    /// bytes, trailer. `slab(s, need, use)` must call `use` with slab s's bytes from the slab's
    /// start, at least its first `need` of them verified (a swapped read needs whole voxels).
    public func visit(_ lo: Int, _ hi: Int, prefix: Bool = true,
                      slab: (_ s: Int, _ need: Int, _ use: (UnsafeRawBufferPointer) throws -> Void) throws -> Void,
                      path: String, _ sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        let p = part.part
        let lo = max(0, lo), hi = min(size, hi)
        guard lo < hi else { return }
        if lo < pixStart { try p.header[lo..<min(hi, pixStart)].withUnsafeBytes(sink) }
        let voxelsFrom = prefix ? preEnd : pixStart
        if prefix, max(lo, pixStart) < min(hi, preEnd) {
            try part.prefix[(max(lo, pixStart) - pixStart)..<(min(hi, preEnd) - pixStart)].withUnsafeBytes(sink)
        }
        let a = max(lo, voxelsFrom), b = min(hi, pixEnd)
        if a < b, let range = slabs(a, b, prefix: prefix) {
            let va = a + base, vb = b + base
            var scratch = [UInt8]()
            // (sink escapes into the slab provider's callback only for the length of the call)
            try withoutActuallyEscaping(sink) { sink in
                for s in range {
                    let s0 = s * slabBytes
                    let from = max(va, s0), to = min(vb, s0 + slabSize(s))
                    guard from < to else { throw VoxError(.corrupt, "\(path): slab \(s) of its volume is shorter than its slices") }
                    // a swapped byte's partner is in the same voxel: round the need up to whole voxels
                    let need = swap ? min(slabSize(s), (to - s0 + 1) & ~1) : to - s0
                    try slab(s, need) { sb in
                        guard sb.count >= need else { throw VoxError(.corrupt, "\(path): slab \(s) of its volume is shorter than its slices") }
                        if swap {
                            scratch.removeAll(keepingCapacity: true)
                            scratch.reserveCapacity(to - from)
                            for o in from..<to { scratch.append(sb[(o ^ 1) - s0]) }
                            try scratch.withUnsafeBytes(sink)
                        } else {
                            try sink(UnsafeRawBufferPointer(rebasing: sb[(from - s0)..<(to - s0)]))
                        }
                    }
                }
            }
        }
        if hi > pixEnd { try p.trailer[(max(lo, pixEnd) - pixEnd)..<(hi - pixEnd)].withUnsafeBytes(sink) }
    }

    /// Content bytes [lo, hi) as an array (`visit` into one buffer).
    public func bytes(_ lo: Int, _ hi: Int, prefix: Bool = true,
                      slab: (_ s: Int, _ need: Int, _ use: (UnsafeRawBufferPointer) throws -> Void) throws -> Void,
                      path: String) throws -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(max(0, min(hi, size) - max(0, lo)))
        try visit(lo, hi, prefix: prefix, slab: slab, path: path) { out.append(contentsOf: $0) }
        return out
    }
}
