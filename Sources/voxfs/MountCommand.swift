import ArgumentParser
import Foundation
import VoxArchive
import VoxCore
import VoxFS
import VoxFuse

/// Mount options: FUSE's own (passed to the kernel mount) and VoxFS's.
struct MountOptions {
    var fuse: [String] = ["ro", "default_permissions"]
    var cacheBytes = VoxFileSystem.Options.defaultCacheBytes
    var workers = ProcessInfo.processInfo.activeProcessorCount
    var uid: UInt32?
    var gid: UInt32?
    var threads = 8
    var readahead = 0

    static let known = "allow_other, allow_root, default_permissions, ro, uid=N, gid=N, cache_size=SIZE (K/M/G), workers=N, threads=N, readahead=SIZE, fsname=NAME"

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
                case ("ro", nil), ("default_permissions", nil): break
                case ("rw", nil): throw VoxError(.invalidArgument, "a VoxFS mount is read-only: mount option 'rw' cannot be honoured")
                case ("fsname", let v?): fuse.removeAll { $0.hasPrefix("fsname=") }; fuse.append("fsname=" + v)
                case ("uid", let v?): guard let n = UInt32(v) else { throw bad() }; uid = n
                case ("gid", let v?): guard let n = UInt32(v) else { throw bad() }; gid = n
                case ("cache_size", let v?): guard let n = MountOptions.size(v) else { throw bad() }; cacheBytes = n
                case ("workers", let v?): guard let n = Int(v), (0...256).contains(n) else { throw bad() }; workers = n
                case ("readahead", let v?): guard let n = MountOptions.size(v), n <= 1 << 24 else { throw bad() }; readahead = n
                case ("threads", let v?): guard let n = Int(v), (2...256).contains(n) else { throw bad() }; threads = n
                default: throw VoxError(.invalidArgument, "unknown mount option '\(o)' (known: \(MountOptions.known))")
                }
            }
        }
    }
}

/// Log lines: stderr in the foreground, a file with --log, syslog for a daemon without one.
final class MountLog: @unchecked Sendable {
    let file: FileHandle?
    let toStderr: Bool
    let lock = NSLock()
    init(path: String?, foreground: Bool) throws {
        toStderr = foreground && path == nil
        if let path {
            if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
            guard let f = FileHandle(forWritingAtPath: path) else { throw VoxError(.io, "\(path): cannot open the log file") }
            f.seekToEndOfFile()
            file = f
        } else {
            file = nil
            if !foreground { openlog("voxfs", LOG_PID, LOG_DAEMON) }
        }
    }
    func callAsFunction(_ s: String) {
        lock.lock(); defer { lock.unlock() }
        let line = "\(ISO8601DateFormatter().string(from: Date())) voxfs[\(getpid())]: \(s)\n"
        if let file { file.write(Data(line.utf8)) }
        else if toStderr { FileHandle.standardError.write(Data(line.utf8)) }
        else { withVaList([s]) { vsyslog(LOG_ERR, "%s", $0) } }
    }
}

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an archive as a read-only folder (FUSE3): files read back byte for byte, decoded on demand.",
        discussion: """
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
        guard st.st_mode & S_IFMT == S_IFDIR else { throw VoxError(.io, "\(mp): mount point is not a folder") }
        if stat(mp + "/..", &pst) == 0, pst.st_dev != st.st_dev || (pst.st_ino == st.st_ino && mp != "/") {
            throw VoxError(.busy, "\(mp): already a mount point (busy); unmount it first (fusermount3 -u \(mp))")
        }
        return mp
    }

    func run() throws {
        let opts = try MountOptions(o, archive: URL(fileURLWithPath: archive).standardizedFileURL.path)
        let mp = try validateMountpoint()
        let archivePath = URL(fileURLWithPath: archive).standardizedFileURL.path
        if !(foreground || debug) && !daemonChild { return try daemonise() }

        let logPath = self.log.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
        if daemonChild { setsid(); _ = chdir("/") }
        let a = try Archive(path: archivePath, create: false)
        try a.lock(exclusive: false)
        let log = try MountLog(path: logPath, foreground: !daemonChild)
        let fs = try VoxFileSystem(archive: a, options: .init(cacheBytes: opts.cacheBytes, workers: opts.workers, uid: opts.uid, gid: opts.gid, log: { log($0) }))
        let m = FuseMount(fs: fs, mountpoint: mp, readahead: opts.readahead, log: { log($0) })
        try m.mount(options: opts.fuse, debug: debug)
        log("mounted \(archivePath) on \(mp): \(fs.inodeCount) entries, cache \(opts.cacheBytes) bytes, \(opts.workers) prefetch workers")
        if daemonChild {
            // tell the waiting parent, then let go of the terminal
            FileHandle.standardOutput.write(Data("READY\n".utf8))
            let null = open("/dev/null", O_RDWR)
            dup2(null, 0); dup2(null, 1); dup2(null, 2)
            if null > 2 { close(null) }
        }
        let rc = m.run(threads: opts.threads)
        let c = fs.cache.snapshot
        log("unmounted \(mp) (cache: \(c.hits) hits, \(c.misses) misses, \(c.decodes) decodes, \(c.prefetches) prefetches, \(c.evictions) evictions)")
        if rc != 0 { throw ExitCode(rc) }
    }

    /// Starts this command again as a detached child (its own session) and returns once the
    /// child says the mount is ready, or fails with the child's message.
    func daemonise() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        p.arguments = Array(CommandLine.arguments.dropFirst()) + ["--daemon-child"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let ready = out.fileHandleForReading.readDataToEndOfFile()
        if String(decoding: ready, as: UTF8.self).contains("READY") { return }
        let msg = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        FileHandle.standardError.write(Data((msg.isEmpty ? "voxfs: the mount daemon exited (status \(p.terminationStatus))\n" : msg).utf8))
        throw ExitCode(p.terminationStatus == 0 ? 1 : p.terminationStatus)
    }
}
