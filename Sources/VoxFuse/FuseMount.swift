import CFuse3
import Foundation
import VoxCore
import VoxFS

/// The FUSE3 low-level driver: the only code that imports libfuse. Each callback asks the
/// FUSE-free `VoxFileSystem` and replies; `FSError`s become their errnos here, and anything
/// else (damage, a missing model, an LMDB error) becomes EIO plus a log line naming the file.
public final class FuseMount: @unchecked Sendable {
    public let fs: VoxFileSystem
    let log: @Sendable (String) -> Void
    /// Read-only, attributes and entries never change while mounted: the kernel may cache them
    /// this long. Read-write, every change comes through the kernel, which keeps its cache in
    /// step; a second still bounds what a missed invalidation could show.
    static let timeout: Double = 86400
    static let writableTimeout: Double = 1
    var timeout: Double { fs.options.writable ? FuseMount.writableTimeout : FuseMount.timeout }
    private var session: OpaquePointer?
    public let mountpoint: String

    /// Kernel readahead in bytes. Small by default: the kernel reads whole pages ahead of a
    /// reader, and readahead past a DICOM header's page would decode a slab for a header-only scan.
    public let readahead: Int

    public init(fs: VoxFileSystem, mountpoint: String, readahead: Int = 0, log: @escaping @Sendable (String) -> Void) {
        self.fs = fs
        self.readahead = readahead
        self.mountpoint = mountpoint
        self.log = log
    }

    deinit { if let s = session { fuse_session_destroy(s) } }

    /// Creates the session and mounts it. `options` are passed to the kernel mount (-o).
    public func mount(options: [String], debug: Bool) throws {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, conn in
            let m = Unmanaged<FuseMount>.fromOpaque(userdata!).takeUnretainedValue()
            conn!.pointee.max_readahead = UInt32(m.readahead)
        }
        ops.lookup = { req, parent, name in
            FuseMount.with(req, "lookup") { m in
                // a missing name is a negative entry (inode 0) the kernel may cache too
                let a: VoxFileSystem.Attributes?
                do { a = try m.fs.lookup(parent: parent, name: String(cString: name!)) } catch FSError.noEntry { a = nil }
                var e = m.entryParam(a)
                fuse_reply_entry(req, &e)
            }
        }
        ops.getattr = { req, ino, _ in
            FuseMount.with(req, "getattr") { m in
                var st = FuseMount.stat(try m.fs.attributes(ino))
                fuse_reply_attr(req, &st, m.timeout)
            }
        }
        ops.readlink = { req, ino in
            FuseMount.with(req, "readlink") { m in
                let t = try m.fs.readlink(ino)
                fuse_reply_readlink(req, t)
            }
        }
        ops.open = { req, ino, fi in
            FuseMount.with(req, "open", ino: ino) { m in
                let flags = fi!.pointee.flags
                let write = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0
                // libfuse offers atomic O_TRUNC: the kernel leaves the truncation to the open
                if flags & O_TRUNC != 0 && m.fs.options.writable { _ = try m.fs.setAttributes(ino, VoxFileSystem.AttributeChange(size: 0)) }
                let fh = try m.fs.open(ino, write: write)
                fi!.pointee.fh = fh
                voxfs_fi_set_keep_cache(fi)         // immutable: keep the page cache across opens
                if fuse_reply_open(req, fi) != 0 { m.fs.release(fh) }   // the open was interrupted
            }
        }
        ops.read = { req, ino, size, off, fi in
            FuseMount.with(req, "read", ino: ino) { m in
                // straight from the cached slab (or opaque file) where the range allows
                try m.fs.withRead(fi!.pointee.fh, offset: UInt64(max(0, off)), length: size) { p in
                    _ = fuse_reply_buf(req, p.baseAddress?.assumingMemoryBound(to: CChar.self), p.count)
                }
            }
        }
        ops.release = { req, _, fi in
            FuseMount.with(req, "release") { m in
                m.fs.release(fi!.pointee.fh)
                fuse_reply_err(req, 0)
            }
        }
        ops.readdir = { req, ino, size, off, _ in
            FuseMount.with(req, "readdir", ino: ino) { m in
                try FuseMount.replyDirectory(req, m.fs.list(ino), size: size, from: Int(off)) { buf, room, e, next in
                    var st = Glibc.stat()
                    st.st_ino = ino_t(e.ino)
                    st.st_mode = FuseMount.typeBits(e.kind)
                    return fuse_add_direntry(req, buf, room, e.name, &st, next)
                }
            }
        }
        ops.readdirplus = { req, ino, size, off, _ in
            FuseMount.with(req, "readdirplus", ino: ino) { m in
                try FuseMount.replyDirectory(req, m.fs.list(ino), size: size, from: Int(off)) { buf, room, e, next in
                    var p = m.entryParam(try m.fs.attributes(e.ino))
                    return fuse_add_direntry_plus(req, buf, room, e.name, &p, next)
                }
            }
        }
        ops.statfs = { req, _ in
            FuseMount.with(req, "statfs") { m in
                let s = m.fs.fsStats()
                var v = statvfs()
                v.f_bsize = UInt(s.blockSize); v.f_frsize = UInt(s.blockSize)
                v.f_blocks = fsblkcnt_t(s.blocks); v.f_bfree = fsblkcnt_t(s.free); v.f_bavail = fsblkcnt_t(s.available)
                v.f_files = fsfilcnt_t(s.files + s.freeFiles); v.f_ffree = fsfilcnt_t(s.freeFiles); v.f_favail = fsfilcnt_t(s.freeFiles)
                v.f_namemax = 255
                fuse_reply_statfs(req, &v)
            }
        }
        ops.getxattr = { req, ino, name, size in
            FuseMount.with(req, "getxattr", ino: ino) { m in
                FuseMount.replyXattr(req, size: size, try m.fs.xattr(ino, String(cString: name!)))
            }
        }
        ops.listxattr = { req, ino, size in
            FuseMount.with(req, "listxattr", ino: ino) { m in
                var v: [UInt8] = []
                for n in try m.fs.xattrNames(ino) { v += Array(n.utf8); v.append(0) }
                FuseMount.replyXattr(req, size: size, v)
            }
        }

        if fs.options.writable { FuseMount.addWriteOps(&ops) }

        var args = ["voxfs"] + (debug ? ["-d"] : [])
        if !options.isEmpty { args += ["-o", options.joined(separator: ",")] }
        var cargs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        defer { for p in cargs { free(p) } }
        let me = Unmanaged.passUnretained(self).toOpaque()
        guard let se = voxfs_fuse_session_new(Int32(args.count), &cargs, &ops, me) else {
            throw VoxError(.invalidArgument, "cannot start the FUSE session (options: \(options.joined(separator: ",")))")
        }
        session = se
        guard fuse_set_signal_handlers(se) == 0 else { throw VoxError(.io, "cannot install signal handlers") }
        guard fuse_session_mount(se, mountpoint) == 0 else {
            fuse_remove_signal_handlers(se)
            throw VoxError(.io, "cannot mount on \(mountpoint) (is /dev/fuse there, and fusermount3 installed?)")
        }
    }

    /// Unmounts at once (used when the mount cannot be handed over).
    public func unmount() {
        guard let se = session else { return }
        fuse_session_unmount(se)
        fuse_remove_signal_handlers(se)
    }

    /// Serves requests until the filesystem is unmounted (fusermount3 -u, umount) or the
    /// process gets SIGTERM, SIGINT or SIGHUP; then unmounts. Returns 0 on a clean exit.
    public func run(threads: Int) -> Int32 {
        guard let se = session else { return 1 }
        let rc = voxfs_fuse_loop_mt(se, UInt32(max(2, threads)))
        fuse_session_unmount(se)
        fuse_remove_signal_handlers(se)
        fs.drain()
        return rc == 0 || rc == -EINTR || rc == SIGTERM || rc == SIGINT || rc == SIGHUP ? 0 : 1
    }

    // MARK: helpers

    static func with(_ req: fuse_req_t?, _ op: String, ino: fuse_ino_t = 0, _ body: (FuseMount) throws -> Void) {
        let m = Unmanaged<FuseMount>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
        do {
            try body(m)
        } catch let e as FSError {
            fuse_reply_err(req, e.errno)
        } catch let e as VoxError where e.errno == ENOSPC || e.errno == EDQUOT {
            let path = (try? m.fs.path(of: UInt64(ino))) ?? "inode \(ino)"
            m.log("\(op) \(path): \(e.message)")
            fuse_reply_err(req, e.errno!)
        } catch let e as VoxError {
            let path = (try? m.fs.path(of: UInt64(ino))) ?? "inode \(ino)"
            m.log("\(op) \(path): \(e.message) -> EIO")
            fuse_reply_err(req, EIO)
        } catch {
            let path = (try? m.fs.path(of: UInt64(ino))) ?? "inode \(ino)"
            m.log("\(op) \(path): unexpected error \(error) -> EIO")
            fuse_reply_err(req, EIO)
        }
    }

    /// An entry for lookup and readdirplus (nil: a negative entry), with day-long timeouts.
    func entryParam(_ a: VoxFileSystem.Attributes?) -> fuse_entry_param {
        var e = fuse_entry_param()
        if let a {
            e.ino = fuse_ino_t(a.ino)
            e.attr = FuseMount.stat(a)
        }
        e.generation = 1
        e.attr_timeout = timeout
        e.entry_timeout = timeout
        return e
    }

    /// Fills a readdir reply of at most `size` bytes with the listing from index `from` on;
    /// `add(buffer, room, entry, next offset)` writes one entry and returns its size (more than
    /// `room` when it did not fit).
    static func replyDirectory(_ req: fuse_req_t?, _ list: [VoxFileSystem.DirEntry], size: Int, from: Int,
                               _ add: (UnsafeMutablePointer<CChar>, Int, VoxFileSystem.DirEntry, off_t) throws -> Int) throws {
        var buf = [CChar](repeating: 0, count: size)
        var used = 0
        for i in max(0, from)..<max(max(0, from), list.count) {
            let n = try buf.withUnsafeMutableBufferPointer { b in try add(b.baseAddress! + used, size - used, list[i], off_t(i + 1)) }
            if n > size - used { break }
            used += n
        }
        fuse_reply_buf(req, buf, used)
    }

    /// getxattr/listxattr: the size for a size-0 probe, ERANGE when the buffer is too small.
    static func replyXattr(_ req: fuse_req_t?, size: Int, _ v: [UInt8]) {
        if size == 0 { fuse_reply_xattr(req, v.count) }
        else if size < v.count { fuse_reply_err(req, ERANGE) }
        else { v.withUnsafeBytes { p in _ = fuse_reply_buf(req, p.baseAddress?.assumingMemoryBound(to: CChar.self), p.count) } }
    }

    static func typeBits(_ k: VoxFileSystem.FileKind) -> mode_t {
        switch k { case .directory: mode_t(Glibc.S_IFDIR); case .file: mode_t(Glibc.S_IFREG); case .symlink: mode_t(Glibc.S_IFLNK); case .special: 0 }
    }

    static func stat(_ a: VoxFileSystem.Attributes) -> Glibc.stat {
        var st = Glibc.stat()
        st.st_ino = ino_t(a.ino)
        st.st_mode = mode_t(a.mode)
        st.st_nlink = nlink_t(a.nlink)
        st.st_rdev = dev_t(a.rdev)
        st.st_uid = a.uid; st.st_gid = a.gid
        st.st_size = off_t(a.size)
        st.st_blksize = 4096
        st.st_blocks = blkcnt_t((a.size + 511) / 512)
        st.st_mtim = timespec(tv_sec: Int(a.mtimeSec), tv_nsec: Int(a.mtimeNsec))
        st.st_atim = timespec(tv_sec: Int(a.atimeSec), tv_nsec: Int(a.atimeNsec))
        st.st_ctim = timespec(tv_sec: Int(a.ctimeSec), tv_nsec: Int(a.ctimeNsec))
        return st
    }
}
