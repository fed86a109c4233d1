import Foundation
import XCTest
import VoxCodec
import VoxCore
import VoxTestSupport

/// Real scans fetched by scripts/fetch_data.sh (pyradiomics 3.0.1 sdist: chest CT, brain MRI).
enum TestData {
    /// A seeded random model (weights up to +-3000, or the full int16 range when `big`) for the
    /// kernel tests: the same seed gives the same model in every test.
    static func randomModel(H: Int, spec: String, seed: UInt64, big: Bool, normShift: Int = 12,
                            activation: Activation = .tables) throws -> LSTMModel {
        var rng = SplitMix64(seed: seed)
        let nb = try Neighbourhood(spec: spec)
        let K = nb.stepInputs + H
        let lim: Int64 = big ? 32767 : 3000
        let W = (0..<(4 * H * K)).map { _ in Int16(rng.nextInt(in: -lim...lim)) }
        let b = (0..<(4 * H)).map { _ in Int32(rng.nextInt(in: -(1 << 26)...(1 << 26))) }
        let Wo = (0..<H).map { _ in Int16(rng.nextInt(in: -lim...lim)) }
        return try LSTMModel(hidden: H, neighbourhood: nb, normShift: normShift, outFracBits: normShift + 12, W: W, b: b, Wo: Wo,
                             bo: Int32(rng.nextInt(in: -1000...1000)), activation: activation)
    }

    /// Loads a real volume; skips (or fails under `make test`) when the cache is missing.
    static func volume(_ name: String) throws -> (values: [Int32], shape: Shape, dtype: DType) {
        let raw = try RealData.require("volumes/\(name).raw")
        guard let sc = try Sidecar.load(forRaw: raw) else { throw VoxError(.io, "no sidecar for \(raw)") }
        let (shape, dtype) = try sc.parsed()
        let bytes = try FileIO.read(raw)
        var v = [Int32](repeating: 0, count: shape.voxels)
        bytes.withUnsafeBytes { b in v.withUnsafeMutableBufferPointer { dtype.decode(b, into: $0) } }
        return (v, shape, dtype)
    }

    /// A crop [x0, x0+nx) x [y0, y0+ny) x [z0, z0+nz) of a volume, as little-endian bytes.
    static func crop(_ name: String, x0: Int, y0: Int, z0: Int, nx: Int, ny: Int, nz: Int) throws -> (bytes: [UInt8], shape: Shape, dtype: DType) {
        let (v, s, dt) = try volume(name)
        var out = [Int32]()
        out.reserveCapacity(nx * ny * nz)
        for z in z0..<(z0 + nz) { for y in y0..<(y0 + ny) { for x in x0..<(x0 + nx) { out.append(v[(z * s.y + y) * s.x + x]) } } }
        return (encode(out, dt), Shape(nx, ny, nz), dt)
    }

    static func encode(_ v: [Int32], _ dt: DType) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: v.count * dt.bytesPerVoxel)
        v.withUnsafeBufferPointer { vv in b.withUnsafeMutableBytes { dt.encode(vv, into: $0) } }
        return b
    }
}
