import CVoxBLAS
import Foundation
import VoxCore

/// The one place that calls OpenBLAS (training and adaptation only; the codec never uses BLAS).
/// The library is loaded on first use (CVoxBLAS), so the processes that only code, read or
/// mount never start its thread pool.
public enum BLAS {
    /// Loads OpenBLAS, or says clearly why it cannot (the trainer calls this before any sgemm).
    public static func load() throws {
        var err: UnsafePointer<CChar>? = nil
        if vox_blas_load(&err) != 0 {
            throw VoxError(.io, "cannot load OpenBLAS (libopenblas.so.0 or $VOXFS_BLAS_LIBRARY), which training and model adaptation need: \(err.map { String(cString: $0) } ?? "unknown error"); install Debian's libopenblas0 (make deps does)")
        }
    }

    /// C = alpha * op(A) * op(B) + beta * C, row-major. Calls `cblas_sgemm`.
    @inline(__always)
    static func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                      a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                      beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        vox_sgemm(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// The kernel OpenBLAS chose for this CPU (`openblas_get_corename`; "" when it cannot be loaded).
    public static var coreName: String { String(cString: vox_blas_corename()) }
    public static var config: String { String(cString: vox_blas_config()) }

    /// True when OpenBLAS runs one of its pre-AVX kernels (what it falls back to on CPUs it
    /// does not recognise).
    public static var usesGenericKernel: Bool {
        ["prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai", "coppermine", "northwood", "banias", "generic"]
            .contains(coreName.lowercased())
    }

    /// Calls `openblas_set_num_threads`.
    public static func setThreads(_ n: Int) { vox_blas_set_threads(Int32(n)) }

    /// Debian 12's OpenBLAS 0.3.21 does not recognise recent Xeons and falls back to its
    /// slowest kernel (Prescott) unless OPENBLAS_CORETYPE is set before the process starts.
    /// Returns the core type to set for this CPU, or nil when nothing needs changing.
    public static func preferredCoreType(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if environment["OPENBLAS_CORETYPE"] != nil { return nil }
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        if flags.contains("avx512f") && flags.contains("avx512bw") && flags.contains("avx512vl") { return "SkylakeX" }
        if flags.contains("avx2") && flags.contains("fma") { return "Haswell" }
        return nil
    }
}
