import ArgumentParser
import CVoxKernels
import Foundation
import VoxArchive
import VoxCore
import VoxFS
import VoxFuse

/// Mount options: FUSE's own (passed to the kernel mount) and VoxFS's.
struct MountOptions {
    /// nosuid and nodev by default: an archive may come from elsewhere, and its stored modes
    /// must not make a setuid program or a device appear (`-o suid`, `-o dev` opt out).
    var fuse: [String] = ["ro", "default_permissions", "nosuid", "nodev"]
    var cacheBytes = VoxFileSystem.Options.defaultCacheBytes
    var workers = ProcessInfo.processInfo.activeProcessorCount
    var sliceThreads = min(4, max(1, ProcessInfo.processInfo.activeProcessorCount))
    var uid: UInt32?
    var gid: UInt32?
    var threads = 8
    var readahead = 0
    /// `-o rw`: a read-write mount (the archive is created when the path does not exist).
    var writable = false

    static let known = "allow_other, allow_root, default_permissions, ro (default), rw (also writable, for fstab), nosuid (default), suid, nodev (default), dev, noexec, exec, uid=N, gid=N, cache_size=SIZE (K/M/G), workers=N, slice_threads=N, threads=N, readahead=SIZE, fsname=NAME"

    static func size(_ s: String) -> Int? {
        let u = s.uppercased()
        let mult: Int, digits: Substring
        switch u.last {
        case "K": mult = 1 << 10; digits = u.dropLast()
        case "M": mult = 1 << 20; digits = u.dropLast()
        case "G": mult = 1 << 30; digits = u.dropLast()
        default: mult = 1; digits = Substring(u)
        }
        guard let n = Int(digits), n >= 0, n <= (1 << 46) / mult else { return nil }
        return n * mult
    }

    init(_ list: [String], archive: String) throws {
        fuse.append("fsname=" + archive.replacingOccurrences(of: ",", with: "\\,"))
        fuse.append("subtype=voxfs")
        for group in list {
            for o in group.split(separator: ",").map(String.init) where !o.isEmpty {
                let kv = o.split(separator: "=", maxSplits: 1).map(String.init)
                let key = kv[0], value = kv.count > 1 ? kv[1] : nil
                func bad() -> VoxError { VoxError(.invalidArgument, "bad value in mount option '\(o)'") }
                switch (key, value) {
                case ("allow_other", nil), ("allow_root", nil): fuse.append(key)
                case ("ro", nil): if writable { writable = false; fuse.insert("ro", at: 0) }
                case ("default_permissions", nil), ("nosuid", nil), ("nodev", nil), ("exec", nil): break
                case ("suid", nil): fuse.removeAll { $0 == "nosuid" }
                case ("dev", nil): fuse.removeAll { $0 == "nodev" }
                case ("noexec", nil): if !fuse.contains("noexec") { fuse.append("noexec") }
                case ("rw", nil), ("writable", nil): writable = true; fuse.removeAll { $0 == "ro" }
                case ("fsname", let v?): fuse.removeAll { $0.hasPrefix("fsname=") }; fuse.append("fsname=" + v)
                case ("uid", let v?): guard let n = UInt32(v) else { throw bad() }; uid = n
                case ("gid", let v?): guard let n = UInt32(v) else { throw bad() }; gid = n
                case ("cache_size", let v?): guard let n = MountOptions.size(v) else { throw bad() }; cacheBytes = n
                case ("workers", let v?): guard let n = Int(v), (0...256).contains(n) else { throw bad() }; workers = n
                case ("readahead", let v?): guard let n = MountOptions.size(v), n <= 1 << 24 else { throw bad() }; readahead = n
                case ("threads", let v?): guard let n = Int(v), (2...256).contains(n) else { throw bad() }; threads = n
                case ("slice_threads", let v?): guard let n = Int(v), (1...16).contains(n) else { throw bad() }; sliceThreads = n
                default: throw VoxError(.invalidArgument, "unknown mount option '\(o)' (known: \(MountOptions.known))")
                }
            }
        }
    }
}

/// Log lines: stderr in the foreground, a file with --log, syslog for a daemon without one.
/// Written with write(2): a full disk or a closed stderr loses a line, never the mount.
final class MountLog: @unchecked Sendable {
    let fd: Int32
    let lock = NSLock()
    init(path: String?, foreground: Bool) throws {
        if let path {
            fd = try Sys.open(path, O_WRONLY | O_APPEND | O_CREAT, 0o640, operation: "open the log file")
        } else if foreground {
            fd = 2
        } else {
            fd = -1
            openlog("voxfs", LOG_PID, LOG_DAEMON)
        }
    }
    func callAsFunction(_ s: String) {
        lock.lock(); defer { lock.unlock() }
        if fd < 0 { withVaList([s]) { vsyslog(LOG_ERR, "%s", $0) }; return }
        let line = Array("\(ISO8601DateFormatter().string(from: Date())) voxfs[\(getpid())]: \(s)\n".utf8)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }
}

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an archive as a folder (FUSE3): files read back byte for byte, decoded on demand; -o rw also takes writes.",
        discussion: """
        Read-only by default. With -o rw files can be created, written, renamed and deleted; each file's bytes \
        are stored (zstd, as they are) when it is closed, flushed or synced, and every other change at once; an \
        archive path that does not exist becomes a new, empty archive. Pack, unpack and verify are refused while \
        an archive is mounted read-write.
        Returns once the mount is ready (the daemon runs on in the background); -f stays in the foreground.
        Unmount with `fusermount3 -u MOUNTPOINT` (or umount, or SIGTERM to the daemon).
        Options (-o, comma-separated): \(MountOptions.known).
        """)
    @Argument(help: "Archive (NAME.voxfs).") var archive: String
    @Argument(help: "Mount point (an existing empty folder).") var mountpoint: String
    @Flag(name: .short, help: "Stay in the foreground.") var foreground = false
    @Flag(name: .short, help: "FUSE debug output (implies -f).") var debug = false
    @Option(name: .short, help: "Mount options.") var o: [String] = []
    @Option(help: "Append log lines to this file (default: stderr in the foreground, syslog otherwise).") var log: String?
    @Flag(help: .hidden) var daemonChild = false

    func validateMountpoint() throws -> String {
        let mp = URL(fileURLWithPath: mountpoint).standardizedFileURL.path
        var st = stat(), pst = stat()
        guard stat(mp, &st) == 0 else {
            throw VoxError(.io, errno == ENOTCONN ? "\(mp): a dead mount is still there (run fusermount3 -u \(mp))" : "\(mp): mount point does not exist")
        }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            throw VoxError(.io, "\(mp): mount point is not a folder" + (mp.hasSuffix(".voxfs") ? " (the archive comes first: voxfs mount ARCHIVE MOUNTPOINT)" : ""))
        }
        if stat(mp + "/..", &pst) == 0, pst.st_dev != st.st_dev || (pst.st_ino == st.st_ino && mp != "/") {
            throw VoxError(.busy, "\(mp): already a mount point (busy); unmount it first (fusermount3 -u \(mp))")
        }
        if let items = try? FileManager.default.contentsOfDirectory(atPath: mp), !items.isEmpty {
            throw VoxError(.io, "\(mp): mount point is not empty (the mount would hide its \(items.count) entries); use an empty folder")
        }
        return mp
    }

    func run() throws {
        let opts = try MountOptions(o, archive: URL(fileURLWithPath: archive).standardizedFileURL.path)
        let mp = try validateMountpoint()
        let archivePath = URL(fileURLWithPath: archive).standardizedFileURL.path
        if !(foreground || debug) && !daemonChild { return try daemonise() }

        let logPath = self.log.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        if daemonChild { _ = chdir("/") }        // its own session already (POSIX_SPAWN_SETSID)
        let a: Archive
        if opts.writable {
            a = try Archive(path: archivePath, create: true)
            guard a.schema >= 2 else {
                throw VoxError(.badFormat, "\(archivePath) has archive schema \(a.schema) (an older voxfs): it can be mounted read-only, not read-write; unpack it and pack it again")
            }
            try a.lock(exclusive: true)
        } else {
            a = try Archive.reader(archivePath)
        }
        // memory beside the cache: with glibc's defaults 32 readers took the daemon to 282 MiB
        // with a 64 MiB cache (make soak); see vox_tune_malloc
        _ = vox_tune_malloc(2, 256 << 10)
        let log = try MountLog(path: logPath, foreground: !daemonChild)
        var fsOptions = VoxFileSystem.Options(cacheBytes: opts.cacheBytes, workers: opts.workers, uid: opts.uid, gid: opts.gid, log: { log($0) })
        fsOptions.sliceThreads = opts.sliceThreads
        fsOptions.writable = opts.writable
        let fs = try VoxFileSystem(archive: a, options: fsOptions)
        let m = FuseMount(fs: fs, mountpoint: mp, readahead: opts.readahead, log: { log($0) })
        try m.mount(options: opts.fuse, debug: debug)
        log("mounted \(archivePath) on \(mp)\(opts.writable ? " read-write" : ""): \(fs.inodeCount) entries, cache \(opts.cacheBytes) bytes, \(opts.workers) prefetch workers")
        if daemonChild {
            // tell the waiting parent, then let go of its pipe; a parent that has gone (Ctrl-C)
            // gets no mount left behind
            let ready = Array("READY\n".utf8)
            if ready.withUnsafeBytes({ write(1, $0.baseAddress, $0.count) }) != ready.count {
                log("the starting voxfs mount went away before the mount was ready; unmounting")
                m.unmount()
                throw ExitCode(1)
            }
            // the parent has its answer: stdio goes to /dev/null (the log file has the rest); a
            // failure here is logged, and the mount serves on regardless
            do {
                let null = try Sys.open("/dev/null", O_RDWR, operation: "open")
                for fd in Int32(0)...2 where dup2(null, fd) < 0 { log("cannot redirect fd \(fd) to /dev/null: \(Sys.reason(errno))") }
                if null > 2 { Sys.closeQuietly(null) }
            } catch { log("\(error)") }
        }
        let rc = m.run(threads: opts.threads)
        let c = fs.cache.snapshot
        log("unmounted \(mp) (cache: \(c.hits) hits, \(c.misses) misses, \(c.decodes) decodes, \(c.prefetches) prefetches, \(c.evictions) evictions)")
        if rc != 0 { throw ExitCode(rc) }
    }

    /// Starts this command again as a detached child (a new session: POSIX_SPAWN_SETSID, so
    /// the terminal's signals do not reach it) and returns once the child writes READY on the
    /// pipe that is its stdout and stderr, or fails with what the child wrote.
    func daemonise() throws {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw VoxError(.io, "cannot create a pipe: \(Sys.reason(errno))", errno: errno) }
        var fa = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fa)
        defer { posix_spawn_file_actions_destroy(&fa) }
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&fa, fds[1], 1)
        posix_spawn_file_actions_adddup2(&fa, fds[1], 2)
        posix_spawn_file_actions_addclose(&fa, fds[0])
        if fds[1] > 2 { posix_spawn_file_actions_addclose(&fa, fds[1]) }
        // nothing else this process has open may reach the daemon: a pipe it held would keep
        // whoever reads that pipe (a script, a test) waiting for an EOF that never comes
        if let open = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            for f in open.compactMap({ Int32($0) }) where f > 2 { _ = fcntl(f, F_SETFD, FD_CLOEXEC) }
        }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(0x80))        // POSIX_SPAWN_SETSID (glibc 2.26+)
        // the marker goes right after the subcommand, so that a `--` in the arguments cannot swallow it
        let args = [CommandLine.arguments[0], "mount", "--daemon-child"] + CommandLine.arguments.dropFirst(2)
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        // the resolved binary, not /proc/self/exe: the kernel names a process after the file it
        // executed, and the daemon should show up as `voxfs` in ps and top, not `exe`
        var exe = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &exe, Int(PATH_MAX))
        let binary = n > 0 ? String(decoding: exe[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "/proc/self/exe"
        let rc = posix_spawn(&pid, binary, &fa, &attr, &argv, environ)
        close(fds[1])
        guard rc == 0 else { close(fds[0]); throw VoxError(.io, "cannot start the mount daemon: \(Sys.reason(rc))", errno: rc) }
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
            if n > 0 { out += buf[0..<n]; continue }
            if n < 0 && errno == EINTR { continue }
            break
        }
        close(fds[0])
        let text = String(decoding: out, as: UTF8.self)
        if text.contains("READY\n") { return }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let msg = text.isEmpty ? "voxfs: the mount daemon exited (status \(code))\n" : text
        _ = Array(msg.utf8).withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        throw ExitCode(code == 0 ? 1 : code)
    }
}
