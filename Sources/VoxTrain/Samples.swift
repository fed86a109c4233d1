import Foundation
import VoxCodec
import VoxCore

/// Training samples: LSTM inputs (normalised floats, [n][T][I]) and targets
/// (v - anchor) / 2^r, drawn from real volumes through the codec's own gather code.
public struct SampleSet: Sendable {
    public let steps: Int, stepInputs: Int
    public var x: [Float]
    public var target: [Float]
    public var count: Int { target.count }

    /// Activity buckets used to stratify: log2 of the mean absolute input (in voxel units).
    static let buckets = 10

    /// Draws about `perVolume` samples from each volume, slab by slab (the same slab
    /// thickness the codec uses, so the first slice of a slab is seen without its
    /// predecessors, as when coding). Sampling is stratified by local activity so that
    /// air and flat background, most of a CT, do not drown tissue and edges: candidates
    /// are binned by log2 of their mean absolute input and each non-empty bin gets an
    /// equal share (any share a bin cannot fill goes to the others).
    public static func draw(volumes: [LoadedVolume], neighbourhood nb: Neighbourhood, normShift r: Int,
                            slabThickness: Int = 8, perVolume: Int, seed: UInt64, augment: Int = 0) throws -> SampleSet {
        if augment > 0 {
            // flipped copies (x, y, z and combinations): the same statistics seen from other
            // directions, so the model learns less of one scan's particular anatomy
            var vols: [LoadedVolume] = []
            for v in volumes { for k in 0...min(augment, 7) { vols.append(flipped(v, k)) } }
            return try draw(volumes: vols, neighbourhood: nb, normShift: r, slabThickness: slabThickness,
                            perVolume: max(1, perVolume / (min(augment, 7) + 1)), seed: seed, augment: 0)
        }
        var rng = SplitMix64(seed: seed)
        let TI = nb.steps * nb.stepInputs
        var xs: [Float] = [], ts: [Float] = []
        xs.reserveCapacity(volumes.count * perVolume * TI)
        let scaleIn: Float = 1.0 / 4096
        let scaleOut: Float = 1.0 / Float(1 << r)
        for vol in volumes {
            let pad = vol.values.min() ?? 0
            let nslabs = (vol.shape.z + slabThickness - 1) / slabThickness
            let perSlab = max(1, perVolume / nslabs)
            for sIdx in 0..<nslabs {
                let z0 = sIdx * slabThickness, z1 = min(vol.shape.z, z0 + slabThickness)
                let nv = (z1 - z0) * vol.shape.sliceVoxels
                let cand = min(nv, perSlab * 6)
                var idx = [Int64]()
                idx.reserveCapacity(cand)
                for _ in 0..<cand { idx.append(Int64(rng.next() % UInt64(nv))) }
                let slab = Array(vol.values[(z0 * vol.shape.sliceVoxels)..<(z1 * vol.shape.sliceVoxels)])
                let (xq, anchor) = try slab.withUnsafeBufferPointer {
                    try SlabCoder.gatherInputs(neighbourhood: nb, normShift: r, shape: vol.shape, dtype: vol.dtype, pad: pad,
                                               slab: $0, slices: z1 - z0, indices: idx)
                }
                // bin candidates by activity
                var bins = [[Int]](repeating: [], count: buckets)
                for k in 0..<cand {
                    var act = 0
                    for i in 0..<TI { act += abs(Int(xq[k * TI + i])) }
                    let mean = act / max(1, nb.count) // Q12 units; 2^(12-r) per voxel unit
                    let b = mean <= 0 ? 0 : min(buckets - 1, (Int.bitWidth - mean.leadingZeroBitCount) / 2)
                    bins[b].append(k)
                }
                var chosen: [Int] = []
                var remaining = perSlab
                var open = bins.filter { !$0.isEmpty }
                while remaining > 0 && !open.isEmpty {
                    let share = max(1, remaining / open.count)
                    var next: [[Int]] = []
                    for var bin in open {
                        let take = min(share, bin.count, remaining)
                        chosen += bin.prefix(take)
                        remaining -= take
                        bin.removeFirst(take)
                        if !bin.isEmpty { next.append(bin) }
                        if remaining == 0 { break }
                    }
                    open = next
                }
                for k in chosen {
                    for i in 0..<TI { xs.append(Float(xq[k * TI + i]) * scaleIn) }
                    let v = slab[Int(idx[k])]
                    ts.append(Float(v - anchor[k]) * scaleOut)
                }
            }
        }
        return SampleSet(steps: nb.steps, stepInputs: nb.stepInputs, x: xs, target: ts)
    }

    /// The volume flipped along x (bit 0 of k), y (bit 1) and z (bit 2).
    static func flipped(_ v: LoadedVolume, _ k: Int) -> LoadedVolume {
        if k == 0 { return v }
        let s = v.shape
        var out = [Int32](repeating: 0, count: s.voxels)
        for z in 0..<s.z {
            let zz = k & 4 != 0 ? s.z - 1 - z : z
            for y in 0..<s.y {
                let yy = k & 2 != 0 ? s.y - 1 - y : y
                let src = (zz * s.y + yy) * s.x, dst = (z * s.y + y) * s.x
                if k & 1 != 0 { for x in 0..<s.x { out[dst + x] = v.values[src + s.x - 1 - x] } }
                else { for x in 0..<s.x { out[dst + x] = v.values[src + x] } }
            }
        }
        return LoadedVolume(name: v.name + "-flip\(k)", path: v.path, shape: s, dtype: v.dtype, values: out)
    }
}
