import Foundation
import VoxCore

/// Groups DICOM files into volumes: files with the same SeriesInstanceUID and pixel geometry
/// form one volume, ordered by position along the slice normal (ImagePositionPatient projected
/// on the normal of ImageOrientationPatient), InstanceNumber breaking ties. Duplicate
/// positions, gaps (a spacing unlike the series' usual one) and mixed sizes split a series
/// into consistent runs; a run of one file is still a volume. Multi-frame files are volumes on
/// their own. Nothing here fails: files that cannot be volumes are returned as opaque.
public enum DicomSeries {
    public struct Result: Sendable {
        public var volumes: [VolumeSource]
        public var opaque: [(path: String, reason: String)]
    }

    struct Slice {
        let path: String
        let bytes: [UInt8]
        let file: DicomFile
        let position: Double?
        let instance: Int
    }

    public static func group(_ files: [(path: String, bytes: [UInt8])]) -> Result {
        var result = Result(volumes: [], opaque: [])
        var buckets: [String: [Slice]] = [:]
        var order: [String] = []
        for (path, bytes) in files {
            let f: DicomFile
            do { f = try DicomFile.parse(bytes) } catch {
                result.opaque.append((path, (error as? VoxError)?.message ?? "\(error)")); continue
            }
            if let why = f.opaqueReason { result.opaque.append((path, why)); continue }
            if (f.numberOfFrames ?? 1) > 1 {
                let (s, why) = DicomVolume.source(path: path, bytes: bytes)
                if let s { result.volumes.append(s) } else { result.opaque.append((path, why ?? "unreadable")) }
                continue
            }
            var pos: Double? = nil
            var orientKey = "none"
            if let o = f.imageOrientation, o.count == 6, let p = f.imagePosition, p.count == 3 {
                let n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]]
                pos = p[0] * n[0] + p[1] * n[1] + p[2] * n[2]
                orientKey = o.map { String(format: "%.4f", $0) }.joined(separator: ",")
            }
            let key = [f.seriesInstanceUID ?? "no-series:\(path)", "\(f.rows!)x\(f.columns!)", "\(f.dtype!)", orientKey,
                       f.syntax == .explicitBig ? "be" : "le"].joined(separator: "|")
            if buckets[key] == nil { order.append(key) }
            buckets[key, default: []].append(Slice(path: path, bytes: bytes, file: f, position: pos, instance: f.instanceNumber ?? 0))
        }
        for key in order {
            var slices = buckets[key]!
            let positioned = slices.allSatisfy { $0.position != nil }
            slices.sort { a, b in
                if positioned, let pa = a.position, let pb = b.position, abs(pa - pb) > 1e-4 { return pa < pb }
                if a.instance != b.instance { return a.instance < b.instance }
                return a.path < b.path
            }
            for run in runs(slices, positioned: positioned) { result.volumes.append(volume(run)) }
        }
        return result
    }

    /// Splits a sorted series at duplicate positions and at gaps.
    static func runs(_ s: [Slice], positioned: Bool) -> [[Slice]] {
        guard positioned, s.count > 2 else { return positioned || s.count <= 1 ? [s] : s.map { [$0] } }
        let steps = zip(s.dropFirst(), s).map { $0.position! - $1.position! }
        let positive = steps.filter { $0 > 1e-4 }.sorted()
        let usual = positive.isEmpty ? 0 : positive[positive.count / 2]
        var out: [[Slice]] = [[s[0]]]
        for (i, step) in steps.enumerated() {
            let consistent = step > 1e-4 && usual > 0 && abs(step - usual) <= 0.1 * usual
            if consistent { out[out.count - 1].append(s[i + 1]) } else { out.append([s[i + 1]]) }
        }
        return out
    }

    static func volume(_ run: [Slice]) -> VolumeSource {
        let f = run[0].file
        let dt = f.dtype!
        let r = f.rows!, c = f.columns!
        let n = r * c * dt.bytesPerVoxel
        var vox: [UInt8] = []
        vox.reserveCapacity(n * run.count)
        var parts: [VolumeFilePart] = []
        for (z, s) in run.enumerated() {
            let (part, px) = VolumeFilePart.split(path: s.path, bytes: s.bytes, offset: s.file.pixelValue!.lowerBound, count: n, dtype: dt,
                                                  bigEndian: s.file.syntax == .explicitBig, firstSlice: z, slices: 1)
            vox += px
            parts.append(part)
        }
        return VolumeSource(shape: Shape(c, r, run.count), dtype: dt, parts: parts, voxels: vox)
    }
}
