import Foundation

/// The JSON sidecar written beside raw volumes by scripts/fetch_data.sh (and read by
/// `voxfs compress`): `{"shape": [x, y, z], "dtype": "int16", "spacing": [..], "source": ".."}`.
public struct Sidecar: Codable, Sendable {
    public var shape: [Int]
    public var dtype: String
    public var spacing: [Double]?
    public var source: String?
    public var sha256: String?

    public init(shape: [Int], dtype: String, spacing: [Double]? = nil, source: String? = nil, sha256: String? = nil) {
        self.shape = shape
        self.dtype = dtype
        self.spacing = spacing
        self.source = source
        self.sha256 = sha256
    }

    /// The sidecar path for a raw file: NAME.raw -> NAME.json (also NAME.raw.json).
    public static func candidates(for path: String) -> [String] {
        let url = URL(fileURLWithPath: path)
        return [url.deletingPathExtension().appendingPathExtension("json").path, path + ".json"]
    }

    public static func load(forRaw path: String) throws -> Sidecar? {
        for c in candidates(for: path) where c != path && FileManager.default.fileExists(atPath: c) {
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: c)) } catch {
                throw VoxError(.io, "cannot read sidecar \(c): \(error.localizedDescription)")
            }
            return try decode(Array(data), path: c)
        }
        return nil
    }

    /// A sidecar from its JSON bytes (`path` names it in the error).
    public static func decode(_ bytes: [UInt8], path: String) throws -> Sidecar {
        do { return try JSONDecoder().decode(Sidecar.self, from: Data(bytes)) } catch {
            throw VoxError(.badFormat, "sidecar \(path) is not valid: expected {\"shape\": [x, y, z], \"dtype\": \"int16\"}")
        }
    }

    public func parsed() throws -> (Shape, DType) {
        guard shape.count == 3 else { throw VoxError(.badFormat, "sidecar shape must have 3 entries, has \(shape.count)") }
        let s = Shape(shape[0], shape[1], shape[2])
        guard s.isValid else { throw VoxError(.badFormat, "sidecar shape \(s) is not a valid volume shape") }
        guard let d = DType(name: dtype) else { throw VoxError(.badFormat, "sidecar dtype '\(dtype)' is not one of uint8, int16, uint16") }
        return (s, d)
    }
}

public enum FileIO {
    /// Reads a whole file (open, fstat, read; through `Sys`, so EINTR is retried and errors name
    /// the path and say why in words, never a Foundation error domain).
    public static func read(_ path: String) throws -> [UInt8] {
        let fd = try Sys.open(path, O_RDONLY)
        defer { Sys.closeQuietly(fd) }
        let st = try Sys.fstat(fd, path: path)
        guard (st.st_mode & S_IFMT) != S_IFDIR else { throw VoxError(.io, "\(path) is a folder, not a file", errno: EISDIR) }
        var out = [UInt8]()
        out.reserveCapacity(max(0, Int(st.st_size)))
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = try buf.withUnsafeMutableBytes { try Sys.read(fd, into: $0, path: path) }
            if n == 0 { return out }
            out += buf[0..<n]
        }
    }

    /// Writes a file atomically (temporary file in the same folder, then rename), so that a
    /// failed or interrupted write never leaves a partial file under the final name.
    /// The file gets mode 0644 less the umask, as Foundation's atomic write gave it. Errors say
    /// why in words ("no such file or directory", "no space left on device").
    public static func writeAtomically(_ path: String, _ bytes: [UInt8]) throws {
        let dir = PathName.parent(path)
        var template = Array(((dir.isEmpty ? "." : dir) + "/.\(PathName.name(path)).voxfs-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw Sys.error(path, "write") }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        let tmp = String(cString: template)
        var ok = false, open = true
        defer {
            if open { Sys.closeQuietly(fd) }
            if !ok { try? Sys.unlinkIfExists(tmp) }
        }
        let mask = umask(0); umask(mask)
        try Sys.fchmod(fd, 0o644 & ~mask, path: path)
        try bytes.withUnsafeBytes { try Sys.writeAll(fd, $0, path: path) }
        open = false
        try Sys.close(fd, path: path)
        try Sys.rename(tmp, to: path)
        ok = true
    }
}

/// A raw volume in memory as Int32 values (for training and evaluation).
public struct LoadedVolume: Sendable {
    public var name: String
    public var path: String
    public var shape: Shape
    public var dtype: DType
    public var values: [Int32]
    public var rawBytes: Int { shape.voxels * dtype.bytesPerVoxel }

    public init(name: String, path: String, shape: Shape, dtype: DType, values: [Int32]) {
        self.name = name; self.path = path; self.shape = shape; self.dtype = dtype; self.values = values
    }

    /// Loads NAME.raw with its JSON sidecar.
    public static func load(_ path: String) throws -> LoadedVolume {
        guard let sc = try Sidecar.load(forRaw: path) else {
            throw VoxError(.invalidArgument, "\(path): no JSON sidecar (\(Sidecar.candidates(for: path)[0])) with shape and dtype")
        }
        let (shape, dtype) = try sc.parsed()
        let bytes = try read(path, expect: shape.voxels * dtype.bytesPerVoxel)
        var v = [Int32](repeating: 0, count: shape.voxels)
        bytes.withUnsafeBytes { b in v.withUnsafeMutableBufferPointer { dtype.decode(b, into: $0) } }
        let name = URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        return LoadedVolume(name: name, path: path, shape: shape, dtype: dtype, values: v)
    }

    static func read(_ path: String, expect: Int) throws -> [UInt8] {
        let b = try FileIO.read(path)
        guard b.count == expect else { throw VoxError(.invalidArgument, "\(path) has \(b.count) bytes, its sidecar's shape needs \(expect)") }
        return b
    }

    /// Little-endian bytes of the volume.
    public func bytes() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: rawBytes)
        values.withUnsafeBufferPointer { v in b.withUnsafeMutableBytes { dtype.encode(v, into: $0) } }
        return b
    }
}
