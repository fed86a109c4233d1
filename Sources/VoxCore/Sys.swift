import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The one chokepoint for the file-system calls of VoxFS's libraries and tools (issue 13): every
/// result is checked, EINTR is retried, short reads and writes are continued, and a failure
/// becomes a `VoxError(.io)` in one format, `PATH: cannot OPERATION: REASON` (REASON in words,
/// from strerror), with the errno kept (`VoxError.errno`) for callers that must pass it on (the
/// mount replies with it).
public enum Sys {
    /// errno in words, as users read it ("no space left on device", "permission denied").
    public static func reason(_ code: Int32) -> String {
        guard let s = strerror(code) else { return "error \(code)" }
        let w = String(cString: s)
        guard let f = w.first, f.isUppercase, !w.hasPrefix("I/O") else { return w }
        return f.lowercased() + w.dropFirst()
    }

    /// The error for `operation` on `path` that failed with `code` (errno by default).
    public static func error(_ path: String, _ operation: String, _ code: Int32 = errno) -> VoxError {
        VoxError(.io, "\(path): cannot \(operation): \(reason(code))", errno: code)
    }

    /// Runs `call` until it returns something other than -1 with errno EINTR.
    @inline(__always)
    static func retrying<T: BinaryInteger>(_ call: () -> T) -> T {
        while true {
            let r = call()
            if r == -1 && errno == EINTR { continue }
            return r
        }
    }

    /// open(2) with O_CLOEXEC; an error names `name` (default: the path), so that a temporary
    /// file's failure can name the file the user asked for.
    public static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0, operation: String = "open", name: String? = nil) throws -> Int32 {
        let fd = retrying { Foundation.open(path, flags | O_CLOEXEC, mode) }
        guard fd >= 0 else { throw error(name ?? path, operation) }
        return fd
    }

    /// Closes `fd`; an error here can be a write that failed late (NFS, full disk), so callers
    /// that wrote through `fd` must not ignore it. EINTR is not retried (the descriptor is gone).
    public static func close(_ fd: Int32, path: String) throws {
        if Foundation.close(fd) != 0 && errno != EINTR { throw error(path, "write") }
    }

    /// Closes `fd` on a path where an error is already being reported.
    public static func closeQuietly(_ fd: Int32) { let e = errno; _ = Foundation.close(fd); errno = e }

    public static func fstat(_ fd: Int32, path: String) throws -> stat {
        var st = stat()
        guard retrying({ Glibc.fstat(fd, &st) }) == 0 else { throw error(path, "stat") }
        return st
    }

    /// lstat, or nil when nothing is at `path` (ENOENT, ENOTDIR); other failures throw.
    public static func lstatIfExists(_ path: String) throws -> stat? {
        var st = stat()
        if retrying({ Glibc.lstat(path, &st) }) == 0 { return st }
        if errno == ENOENT || errno == ENOTDIR { return nil }
        throw error(path, "stat")
    }

    public static func lstat(_ path: String) throws -> stat {
        var st = stat()
        guard retrying({ Glibc.lstat(path, &st) }) == 0 else { throw error(path, "stat") }
        return st
    }

    /// stat (following links), or nil when nothing is at `path`; other failures throw.
    public static func statIfExists(_ path: String) throws -> stat? {
        var st = stat()
        if retrying({ cStat(path, &st) }) == 0 { return st }
        if errno == ENOENT || errno == ENOTDIR { return nil }
        throw error(path, "stat")
    }

    /// Whether `path` is a folder itself (not a symlink to one).
    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return retrying({ Glibc.lstat(path, &st) }) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// One read of up to `buffer.count` bytes (0 at the end of the file).
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, path: String) throws -> Int {
        let n = retrying { Foundation.read(fd, buffer.baseAddress, buffer.count) }
        guard n >= 0 else { throw error(path, "read") }
        return n
    }

    /// Writes all of `bytes` (at `offset` with pwrite when given, else at the file position).
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int? = nil, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = retrying { () -> Int in
                if let o = offset { return pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(o + done)) }
                return Foundation.write(fd, bytes.baseAddress! + done, bytes.count - done)
            }
            guard n > 0 else { throw error(path, "write", n == 0 ? EIO : errno) }
            done += n
        }
    }

    public static func fsync(_ fd: Int32, path: String) throws {
        guard retrying({ Foundation.fsync(fd) }) == 0 else { throw error(path, "write") }
    }

    public static func rename(_ from: String, to: String) throws {
        guard Foundation.rename(from, to) == 0 else { throw error(to, "create") }
    }

    /// Removes a file or link; nothing there is not an error.
    public static func unlinkIfExists(_ path: String) throws {
        guard Foundation.unlink(path) == 0 || errno == ENOENT else { throw error(path, "remove") }
    }

    public static func mkdir(_ path: String, _ mode: mode_t = 0o755) throws {
        guard Foundation.mkdir(path, mode) == 0 else { throw error(path, "create the folder") }
    }

    public static func symlink(_ target: String, at path: String) throws {
        guard Foundation.symlink(target, path) == 0 else { throw error(path, "create the symlink") }
    }

    public static func readlink(_ path: String) throws -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = Foundation.readlink(path, &buf, buf.count - 1)
        guard n >= 0 else { throw error(path, "read the symlink") }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func chmod(_ path: String, _ mode: mode_t) throws {
        guard retrying({ Foundation.chmod(path, mode) }) == 0 else { throw error(path, "set the mode") }
    }

    public static func fchmod(_ fd: Int32, _ mode: mode_t, path: String) throws {
        guard retrying({ Foundation.fchmod(fd, mode) }) == 0 else { throw error(path, "set the mode") }
    }

    /// Sets the owner of `path` itself (a symlink's own owner, not its target's).
    public static func lchown(_ path: String, uid: uid_t, gid: gid_t) throws {
        guard Foundation.lchown(path, uid, gid) == 0 else { throw error(path, "set the owner") }
    }

    /// Sets access and modification time of `path` itself (not following a symlink).
    public static func setTimes(_ path: String, seconds: Int, nanoseconds: Int) throws {
        var ts = [timespec(tv_sec: seconds, tv_nsec: nanoseconds), timespec(tv_sec: seconds, tv_nsec: nanoseconds)]
        guard utimensat(AT_FDCWD, path, &ts, AT_SYMLINK_NOFOLLOW) == 0 else { throw error(path, "set the times") }
    }
}

/// stat(2) by a name of its own: inside `Sys`, `stat` names the struct.
private func cStat(_ path: String, _ st: inout stat) -> Int32 { stat(path, &st) }

/// Parent and name of a path, split at its last "/". Foundation's NSString
/// `deletingLastPathComponent` traps on a one-character path ("a", and "a/") with Swift 6.3 on
/// Linux, and an archive may hold a file named "a" at its top: never use it on such paths.
public enum PathName {
    /// "study/ct/IM1" -> "study/ct"; "IM1" -> ""; "/IM1" -> "/".
    public static func parent(_ p: String) -> String {
        guard let i = p.lastIndex(of: "/") else { return "" }
        return i == p.startIndex ? "/" : String(p[..<i])
    }
    /// "study/ct/IM1" -> "IM1".
    public static func name(_ p: String) -> String {
        guard let i = p.lastIndex(of: "/") else { return p }
        return String(p[p.index(after: i)...])
    }
}
