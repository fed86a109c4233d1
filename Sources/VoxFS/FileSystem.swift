import Foundation
import VoxArchive
import VoxCodec
import VoxCore
import VoxFormats

/// The filesystem's domain errors; the FUSE layer turns them into errnos (and nothing else
/// does). Damage (a VoxError from the archive or the codec) is not one of these: it becomes
/// EIO plus a log line there.
public enum FSError: Error, Equatable, Sendable {
    case noEntry, notDirectory, isDirectory, notLink, readOnly, noAttribute, range, badHandle
    case exists, notEmpty, notPermitted, nameTooLong, invalid, notSupported, fileTooBig

    public var errno: Int32 {
        switch self {
        case .noEntry: ENOENT
        case .notDirectory: ENOTDIR
        case .isDirectory: EISDIR
        case .notLink: EINVAL
        case .readOnly: EROFS
        case .noAttribute: ENODATA
        case .range: ERANGE
        case .badHandle: EBADF
        case .exists: EEXIST
        case .notEmpty: ENOTEMPTY
        case .notPermitted: EPERM
        case .nameTooLong: ENAMETOOLONG
        case .invalid: EINVAL
        case .notSupported: EOPNOTSUPP
        case .fileTooBig: EFBIG
        }
    }
}

/// A read-only filesystem over an archive, free of FUSE: inodes, lookup, attributes, listings,
/// links, extended attributes, and `read(handle, offset, length)` that decodes only the slabs
/// the byte range needs, through a bounded slab cache, with prefetch of the next slab.
public final class VoxFileSystem: @unchecked Sendable {
    public struct Options: Sendable {
        /// Bytes of decoded slabs kept (LRU).
        public var cacheBytes: Int
        /// Background decoders for prefetch (and how many slabs ahead a sequential reader is served).
        public var workers: Int
        /// Threads one slab decode that a reader waits for runs on (format v2 slabs decode as a
        /// wavefront over their slices); prefetch decodes take one each.
        public var sliceThreads: Int = min(4, max(1, ProcessInfo.processInfo.activeProcessorCount))
        /// Log each slab decode's timings (VOXFS_TRACE=1 for the mount daemon).
        public var trace = ProcessInfo.processInfo.environment["VOXFS_TRACE"] == "1"
        /// Report every file as owned by these instead of the owners recorded at pack time.
        public var uid: UInt32?, gid: UInt32?
        /// Read-write (`-o rw`): files can be created, written, renamed and deleted; each change
        /// is stored at once (writes when the file is flushed, closed or synced).
        public var writable = false
        public var log: @Sendable (String) -> Void

        public static var defaultCacheBytes: Int {
            Int(min(UInt64(1) << 30, max(UInt64(64) << 20, ProcessInfo.processInfo.physicalMemory / 8)))
        }

        public init(cacheBytes: Int = Options.defaultCacheBytes, workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                    uid: UInt32? = nil, gid: UInt32? = nil, log: @escaping @Sendable (String) -> Void = { _ in }) {
            self.cacheBytes = cacheBytes; self.workers = max(0, workers); self.uid = uid; self.gid = gid; self.log = log
        }
    }

    /// What an inode is (the filesystem's own type: its users need not know the archive's).
    public enum FileKind: Sendable, Equatable {
        case directory, file, symlink
        /// A FIFO, socket or device node (read-write mounts store them; `nodev` keeps devices inert).
        case special
        init(_ k: Archive.Kind) { self = switch k { case .directory: .directory; case .file: .file; case .symlink: .symlink; case .special: .special } }
    }

    public struct Attributes: Sendable, Equatable {
        public var ino: UInt64
        public var kind: FileKind
        /// Permission bits with the file type (S_IFDIR, S_IFREG, S_IFLNK, S_IFIFO, ...).
        public var mode: UInt32
        /// A device node's device number.
        public var rdev: UInt64 = 0
        public var nlink: UInt32
        public var uid: UInt32, gid: UInt32
        public var size: UInt64
        public var mtimeSec: Int64, mtimeNsec: Int32
        public var atimeSec: Int64 = 0, atimeNsec: Int32 = 0
        public var ctimeSec: Int64 = 0, ctimeNsec: Int32 = 0
    }

    public struct DirEntry: Sendable, Equatable {
        public var name: String
        public var ino: UInt64
        public var kind: FileKind
    }

    struct Node {
        var entry: Archive.Entry
        var parent: UInt64
        var children: [(name: String, ino: UInt64)] = []
        var index: [String: UInt64] = [:]
        /// Folders among the children (a folder's link count is 2 + this).
        var subdirs = 0
        /// Unlinked while open (read-write): kept until its last handle closes.
        var removed = false
        /// Open handles (read-write: an unlinked file's content is dropped after the last).
        var opens = 0
        /// Read-write: the file's content as it is now (written and not yet stored, or stored
        /// in chunks); nil for a file nothing has written to.
        var data: FileData?
    }

    public static let rootIno: UInt64 = 1

    public let archive: Archive
    public let options: Options
    public let cache: SlabCache
    var nodes: [Node]                         // nodes[ino - 1]; under `tree`
    /// Guards `nodes` and every file's `FileData` (read-write mounts change them).
    let tree = NSRecursiveLock()
    /// Serialises the read-write mount's transactions (one change at a time, in order).
    let commitLock = NSRecursiveLock()
    var volumeInfos: [UInt64: Archive.VolumeInfo]
    /// Read-write: how many entries refer to each blob record and each volume.
    var blobRefs: [[UInt8]: Int] = [:]
    var volumeRefs: [UInt64: Int] = [:]
    /// Read-write: recently read chunks (decompressed and checked).
    let chunkCache = ChunkCache(capacity: 32)
    public internal(set) var originalBytes: UInt64
    public internal(set) var storedBytes: UInt64
    /// How well what the mount serves is vouched for (the root's user.voxfs.integrity).
    public let integrity: String

    private let lock = NSLock()
    private var decoders: [UInt64: VXZ.Decoder] = [:]
    private var handles: [UInt64: Handle] = [:]
    private var nextHandle: UInt64 = 1
    private var lastSlab: [UInt64: Int] = [:]  // per volume: the last slab a read touched
    private var queued = Set<SlabCache.Key>()   // prefetches submitted and not finished
    private var decodesPending = 0              // slab decodes running or waiting for a slot
    private let prefetchPool: WorkerPool
    /// Decodes running at once, readers and prefetch together: a decode holds a slab's voxels
    /// and the coder's buffers (several times the slab's bytes), so with 32 readers on cold slabs
    /// memory followed the reader count, not the cache size, and two cores gained nothing from
    /// more than a few. Readers of cached slabs never wait for a slot.
    private let decodeSlots: DispatchSemaphore

    public init(archive: Archive, options: Options = Options()) throws {
        self.archive = archive
        self.options = options
        cache = SlabCache(capacity: options.cacheBytes)
        prefetchPool = WorkerPool(threads: options.workers)
        decodeSlots = DispatchSemaphore(value: max(2, options.workers))
        // damage costs only what it touches: a damaged volume header makes its own files EIO,
        // a damaged entry is left out; each is logged once here
        let (infos, damagedVolumes) = try archive.scanVolumes()
        let volumeInfos = Dictionary(infos.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        self.volumeInfos = volumeInfos
        let scan = try archive.scanTree()
        for p in damagedVolumes + scan.problems { options.log("damaged archive record: \(p)") }
        if let note = archive.protectionNote { options.log("note: \(note)") }
        integrity = archive.protectionNote != nil ? "schema 1 (no record seals; each file's SHA-256 is checked before its first byte is served)"
            : scan.problems.isEmpty && damagedVolumes.isEmpty ? "sound" : "damaged: \(scan.problems.count + damagedVolumes.count) records (see the log)"

        var st = stat()
        stat(archive.path, &st)
        var root = Archive.Entry(path: "", kind: .directory, mode: 0o755, uid: st.st_uid, gid: st.st_gid,
                                 mtimeSec: Int64(st.st_mtim.tv_sec), mtimeNsec: Int32(st.st_mtim.tv_nsec), size: 0, linkTarget: "", content: .none)
        if let r = try archive.rootEntry(), r.kind == .directory { root = r }
        var nodes = [Node(entry: root, parent: VoxFileSystem.rootIno)]
        var byPath: [String: UInt64] = ["": VoxFileSystem.rootIno]
        var original: UInt64 = 0
        var files: [Archive.Entry] = []
        for e in scan.entries {
            let comps = e.path.split(separator: "/", omittingEmptySubsequences: false)
            guard !e.path.isEmpty, !comps.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
                options.log("damaged archive record: unsafe path '\(e.path)' left out")
                continue
            }
            let parent = VoxFileSystem.ensureDirectory(PathName.parent(e.path), &nodes, &byPath, like: root)
            let name = PathName.name(e.path)
            if let existing = byPath[e.path] {         // a folder made up for an earlier child
                if e.kind == .directory { nodes[Int(existing - 1)].entry = e }
                continue
            }
            // a parent that is not a folder (a damaged or hostile tree): leave the entry out
            guard nodes[Int(parent - 1)].entry.kind == .directory else {
                options.log("damaged archive record: '\(e.path)' lies under a non-folder; left out")
                continue
            }
            nodes.append(Node(entry: e, parent: parent))
            let ino = UInt64(nodes.count)
            byPath[e.path] = ino
            nodes[Int(parent - 1)].children.append((name, ino))
            nodes[Int(parent - 1)].index[name] = ino
            if e.kind == .directory { nodes[Int(parent - 1)].subdirs += 1 }
            if e.kind == .file {
                original += e.size
                files.append(e)
            }
        }
        self.nodes = nodes
        originalBytes = original
        storedBytes = try archive.storedBytes(files, volumes: volumeInfos)
        if options.writable {
            for e in files {
                for h in e.content.blobKeys { blobRefs[h, default: 0] += 1 }
                if case .volume(let id, _) = e.content { volumeRefs[id, default: 0] += 1 }
            }
        }
    }

    /// The inode of folder `path`, creating folders the archive does not list (so that every
    /// entry has a parent).
    private static func ensureDirectory(_ path: String, _ nodes: inout [Node], _ byPath: inout [String: UInt64], like root: Archive.Entry) -> UInt64 {
        if let i = byPath[path] { return i }
        let parent = ensureDirectory(PathName.parent(path), &nodes, &byPath, like: root)
        var e = root
        e.path = path
        nodes.append(Node(entry: e, parent: parent))
        let ino = UInt64(nodes.count)
        byPath[path] = ino
        let name = PathName.name(path)
        nodes[Int(parent - 1)].children.append((name, ino))
        nodes[Int(parent - 1)].index[name] = ino
        nodes[Int(parent - 1)].subdirs += 1
        return ino
    }

    public var inodeCount: Int { tree.lock(); defer { tree.unlock() }; return nodes.count }

    func node(_ ino: UInt64) throws -> Node {
        tree.lock(); defer { tree.unlock() }
        guard ino >= 1, ino <= UInt64(nodes.count) else { throw FSError.noEntry }
        return nodes[Int(ino - 1)]
    }

    // MARK: metadata

    public func attributes(_ ino: UInt64) throws -> Attributes {
        let n = try node(ino)
        let e = n.entry
        var rdev: UInt64 = 0
        let type: UInt32 = switch e.content {
        case .special(let t, let r): { rdev = r; return t }()
        default: switch e.kind { case .directory: UInt32(S_IFDIR); case .symlink: UInt32(S_IFLNK); default: UInt32(S_IFREG) }
        }
        let nlink: UInt32 = n.removed ? 0 : e.kind == .directory ? 2 + UInt32(n.subdirs) : 1
        let size: UInt64 = e.kind == .symlink ? UInt64(e.linkTarget.utf8.count) : e.size
        let t = e.times ?? Archive.Times(atimeSec: e.mtimeSec, atimeNsec: e.mtimeNsec, ctimeSec: e.mtimeSec, ctimeNsec: e.mtimeNsec)
        return Attributes(ino: ino, kind: FileKind(e.kind), mode: type | (e.mode & 0o7777), rdev: rdev, nlink: nlink,
                          uid: options.uid ?? e.uid, gid: options.gid ?? e.gid, size: size, mtimeSec: e.mtimeSec, mtimeNsec: e.mtimeNsec,
                          atimeSec: t.atimeSec, atimeNsec: t.atimeNsec, ctimeSec: t.ctimeSec, ctimeNsec: t.ctimeNsec)
    }

    public func lookup(parent: UInt64, name: String) throws -> Attributes {
        let p = try node(parent)
        guard p.entry.kind == .directory else { throw FSError.notDirectory }
        if name == "." { return try attributes(parent) }
        if name == ".." { return try attributes(p.parent) }
        guard name.utf8.count <= 255 else { throw FSError.nameTooLong }
        guard let ino = p.index[name] else { throw FSError.noEntry }
        return try attributes(ino)
    }

    /// The folder's entries, "." and ".." first, in a stable order (offsets index into it).
    public func list(_ ino: UInt64) throws -> [DirEntry] {
        tree.lock(); defer { tree.unlock() }
        let n = try node(ino)
        guard n.entry.kind == .directory else { throw FSError.notDirectory }
        var out = [DirEntry(name: ".", ino: ino, kind: .directory), DirEntry(name: "..", ino: n.parent, kind: .directory)]
        for c in n.children { out.append(DirEntry(name: c.name, ino: c.ino, kind: FileKind(nodes[Int(c.ino - 1)].entry.kind))) }
        return out
    }

    public func readlink(_ ino: UInt64) throws -> String {
        let n = try node(ino)
        guard n.entry.kind == .symlink else { throw FSError.notLink }
        return n.entry.linkTarget
    }

    /// Inode of an archive path ("" is the root).
    public func resolve(_ path: String) throws -> UInt64 {
        var ino = VoxFileSystem.rootIno
        for c in path.split(separator: "/") where !c.isEmpty { ino = try lookup(parent: ino, name: String(c)).ino }
        return ino
    }

    public func path(of ino: UInt64) throws -> String { try node(ino).entry.path }

    // MARK: extended attributes (user.voxfs.*)

    public func xattrNames(_ ino: UInt64) throws -> [String] {
        try xattrs(ino).map(\.0)
    }

    public func xattr(_ ino: UInt64, _ name: String) throws -> [UInt8] {
        _ = try node(ino)
        // security.*, system.posix_acl_* and the like are probed on every file by ls, cp -a, tar
        guard name.hasPrefix("user.voxfs.") else { throw FSError.noAttribute }
        guard let v = try xattrs(ino).first(where: { $0.0 == name }) else { throw FSError.noAttribute }
        return Array(v.1.utf8)
    }

    private func xattrs(_ ino: UInt64) throws -> [(String, String)] {
        let n = try node(ino)
        if ino == VoxFileSystem.rootIno {
            let c = cache.snapshot
            return [("user.voxfs.archive", archive.path),
                    ("user.voxfs.original_bytes", "\(originalBytes)"),
                    ("user.voxfs.stored_bytes", "\(storedBytes)"),
                    ("user.voxfs.ratio", String(format: "%.3f", Double(originalBytes) / Double(max(1, storedBytes)))),
                    ("user.voxfs.volumes", "\(volumeInfos.count)"),
                    ("user.voxfs.integrity", integrity),
                    ("user.voxfs.cache", "capacity=\(cache.capacity) bytes=\(c.bytes) slabs=\(c.entries) hits=\(c.hits) misses=\(c.misses) decodes=\(c.decodes) prefetches=\(c.prefetches) evictions=\(c.evictions)")]
        }
        let e = n.entry
        guard e.kind == .file else { return [] }
        if options.writable, let d = n.data, d.pending { return [("user.voxfs.storage", "pending (written, not yet stored)")] }
        let stored = try archive.storedSize(e, volumes: volumeInfos)
        var out: [(String, String)] = [("user.voxfs.stored_size", "\(stored)"),
                                       ("user.voxfs.ratio", String(format: "%.3f", Double(e.size) / Double(max(1, stored))))]
        switch e.content {
        case .none, .special: break
        case .blob(let h):
            out.append(("user.voxfs.storage", "blob (zstd)"))
            out.append(("user.voxfs.sha256", Checksum.hex(h)))
        case .chunks(let shift, let hs):
            out.append(("user.voxfs.storage", "stored as is (zstd, \(hs.count) chunk\(hs.count == 1 ? "" : "s") of \(1 << Int(shift)) bytes)"))
        case .volume(let id, let k):
            out.append(("user.voxfs.storage", "volume"))
            out.append(("user.voxfs.volume", "\(id)"))
            if let v = volumeInfos[id] {
                let h = v.header
                out.append(("user.voxfs.shape", h.shape.description + " " + h.dtype.description))
                out.append(("user.voxfs.preset", h.preset))
                out.append(("user.voxfs.model", h.usesLSTM ? Checksum.hex(h.modelHash) + (h.embeddedModel != nil ? " (adapted, embedded)" : "") : "none (classical)"))
            }
            let p = try archive.part(volume: id, part: k, for: e)
            out.append(("user.voxfs.slices", "\(p.part.firstSlice)-\(p.part.firstSlice + p.part.slices - 1)"))
            if let w = p.part.wrapper { out.append(("user.voxfs.compressed", "deflate, rebuilt by \(w.summary)")) }
            out.append(("user.voxfs.sha256", Checksum.hex(p.sha256)))
        }
        return out
    }

    // MARK: compressed volume files

    /// A compressed volume file being rebuilt for its readers (format `DeflateWrapper`): a
    /// background thread writes it front to back; bytes [0, verified) lie in chunks whose
    /// CRC-32C (recorded at pack time) matched, and only those are ever served.
    final class StreamedFile: @unchecked Sendable {
        let size: Int
        let base: UnsafeMutableRawPointer
        private let cond = NSCondition()
        private var verified = 0
        private var failure: Error?
        private var done = false

        init(size: Int) {
            self.size = size
            base = .allocate(byteCount: max(1, size), alignment: 16)
        }
        deinit { base.deallocate() }

        private var holders = 0
        private var cancelled = false
        /// An open handle reads it; when the last one closes, an unfinished rebuild stops.
        func retain() { cond.lock(); holders += 1; cond.unlock() }
        func releaseHandle() {
            cond.lock(); holders -= 1
            if holders <= 0 && !done { cancelled = true }
            cond.unlock()
        }
        var isCancelled: Bool { cond.lock(); defer { cond.unlock() }; return cancelled }

        func publish(_ n: Int) { cond.lock(); verified = n; cond.broadcast(); cond.unlock() }
        func finish(_ e: Error?) { cond.lock(); failure = e; done = true; cond.broadcast(); cond.unlock() }

        /// Waits until bytes [0, n) are verified; throws the rebuild's error if they never will be.
        func wait(upTo n: Int) throws {
            cond.lock(); defer { cond.unlock() }
            while !done && verified < n { cond.wait() }
            if verified < n { throw failure ?? VoxError(.corrupt, "the file could not be rebuilt") }
        }
    }
    private final class WeakStream { weak var file: StreamedFile?; init(_ f: StreamedFile) { file = f } }
    private var streams: [[UInt8]: WeakStream] = [:]
    private let rebuilds = NSCondition()
    private var rebuilding = 0

    /// The rebuild of a compressed volume file, shared by every open handle of it; started on
    /// the first open.
    private func streamedFile(id: UInt64, layout L: FileLayout, header h: StreamHeader, entry: Archive.Entry) -> StreamedFile {
        let p = L.part
        lock.lock()
        if let f = streams[p.sha256]?.file, !f.isCancelled { f.retain(); lock.unlock(); return f }
        let f = StreamedFile(size: Int(entry.size))
        f.retain()
        streams = streams.filter { $0.value.file != nil }
        streams[p.sha256] = WeakStream(f)
        lock.unlock()
        rebuilds.lock(); rebuilding += 1; rebuilds.unlock()
        let rebuilds = self.rebuilds
        let t = Thread { [weak self] in
            if let self {
                do { try self.recompress(f, id: id, layout: L, header: h, path: entry.path); f.finish(nil) } catch {
                    if !f.isCancelled { self.options.log("read \(entry.path): \(error) -> EIO") }
                    f.finish(error)
                }
                rebuilds.lock(); self.rebuilding -= 1; rebuilds.broadcast(); rebuilds.unlock()
            } else { f.finish(VoxError(.io, "the filesystem was closed")) }
        }
        t.name = "voxfs-recompress"
        t.start()
        return f
    }

    private func recompress(_ f: StreamedFile, id: UInt64, layout L: FileLayout, header h: StreamHeader, path: String) throws {
        let w = L.part.part.wrapper!
        var pos = 0, chunk = 0
        let shift = w.chunkShift
        func append(_ b: UnsafeRawBufferPointer) throws {
            if f.isCancelled { throw VoxError(.io, "\(path): closed before it was rebuilt") }
            guard pos + b.count <= f.size else { throw VoxError(.corrupt, "\(path): rebuilt file is longer than its recorded size") }
            if b.count > 0 { (f.base + pos).copyMemory(from: b.baseAddress!, byteCount: b.count) }
            pos += b.count
            let before = chunk
            while chunk < w.chunkCRCs.count, min(f.size, (chunk + 1) << shift) <= pos {
                let lo = chunk << shift, hi = min(f.size, (chunk + 1) << shift)
                guard Checksum.crc32c(UnsafeRawBufferPointer(start: f.base + lo, count: hi - lo)) == w.chunkCRCs[chunk] else {
                    throw VoxError(.corrupt, "\(path): recompressed bytes \(lo)-\(hi - 1) differ from the original (chunk checksum mismatch; is this zlib the one the file was packed with?)")
                }
                chunk += 1
            }
            if chunk > before { f.publish(min(f.size, chunk << shift)) }
        }
        let ds: Recompressor
        do { ds = try w.makeRecompressor() } catch let e as VoxError { throw VoxError(e.kind, "\(path): \(e.message)") }
        let out = w.limit { try append($0) }   // a corrected stream keeps only its matching prefix
        try w.outerHeader.withUnsafeBytes { try append($0) }
        // the decompressed content front to back, from the decoded voxels (the chunk CRCs check
        // the result); the next slab decodes in the background while this one is deflated
        let last = L.slabs(0, L.size, prefix: false)?.upperBound
        try L.visit(0, L.size, prefix: false, slab: { s, need, use in
            if let last, s < last { prefetch(id: id, slab: s + 1, header: h, path: path) }
            let slab = try slabData(volume: id, slab: s, header: h, need: L.slabSize(s), path: path)
            guard slab.count >= L.slabSize(s) else { throw VoxError(.corrupt, "\(path): volume \(id) slab \(s) is shorter than its slices") }
            try slab.withUnsafeBytes(0..<L.slabSize(s)) { try use($0) }
        }, path: path) { try ds.write($0, sink: out) }
        try ds.finish(sink: out)
        try w.outerTrailer.withUnsafeBytes { try append($0) }
        guard pos == f.size, chunk == w.chunkCRCs.count else { throw VoxError(.corrupt, "\(path): rebuilt file has \(pos) bytes, the entry says \(f.size)") }
        f.publish(f.size)
    }

    /// Queues slab s for a background decode, once (a slab already cached, being decoded or
    /// waiting for a worker is not queued again).
    private func prefetch(id: UInt64, slab s: Int, header: StreamHeader, path: String) {
        let key = SlabCache.Key(volume: id, slab: s)
        if cache.contains(key) || options.workers == 0 { return }
        lock.lock()
        let fresh = queued.insert(key).inserted
        lock.unlock()
        guard fresh else { return }
        prefetchPool.submit { [self] in
            do { _ = try self.slabData(volume: id, slab: s, header: header, need: 0, path: path, prefetch: true) } catch {
                self.options.log("prefetch: \(error)")
            }
            self.lock.lock(); self.queued.remove(key); self.lock.unlock()
        }
    }

    // MARK: open files and reads

    /// A volume-backed file open for reading: its volume and the layout of its bytes
    /// (`FileLayout`, the one the unpack and verify paths read through too).
    struct VoxelMap {
        let id: UInt64
        let header: StreamHeader
        let L: FileLayout
        var part: Archive.StoredPart { L.part }
        var base: Int { L.base }
        var preEnd: Int { L.preEnd }
        var pixEnd: Int { L.pixEnd }
        var slabBytes: Int { L.slabBytes }
        var swap: Bool { L.swap }
    }

    final class Handle: @unchecked Sendable {
        enum Layout {
            case bytes(BlobBox)
            case volume(VoxelMap)
            case stream(StreamedFile)
            /// Read-write: the file's current content (its `FileData`), read afresh on every read.
            case live
        }
        let ino: UInt64
        let entry: Archive.Entry
        let layout: Layout
        let write: Bool
        init(ino: UInt64, entry: Archive.Entry, layout: Layout, write: Bool = false) {
            self.ino = ino; self.entry = entry; self.layout = layout; self.write = write
        }
    }

    /// Opens a file; returns a handle for `read` and `release` (and, read-write, `write`). An
    /// opaque file's content is unpacked (and its SHA-256 checked) here; a volume-backed file
    /// reads only its part record (its header bytes come without decoding any voxels).
    public func open(_ ino: UInt64, write: Bool = false) throws -> UInt64 {
        let n = try node(ino)
        guard n.entry.kind != .directory else { throw FSError.isDirectory }
        guard n.entry.kind == .file else { throw n.entry.kind == .special ? FSError.notSupported : FSError.noEntry }
        guard !write || options.writable else { throw FSError.readOnly }
        let layout: Handle.Layout
        if options.writable, write || n.data != nil || { if case .chunks = n.entry.content { true } else { false } }() {
            layout = .live
        } else {
            layout = try self.layout(of: n.entry, ino: ino)
        }
        tree.lock()
        nodes[Int(ino - 1)].opens += 1
        tree.unlock()
        lock.lock(); defer { lock.unlock() }
        let fh = nextHandle
        nextHandle += 1
        handles[fh] = Handle(ino: ino, entry: n.entry, layout: layout, write: write)
        return fh
    }

    /// How a stored file's bytes are read: its blob, its volume's slabs, or its recompression.
    func layout(of entry: Archive.Entry, ino: UInt64) throws -> Handle.Layout {
        switch entry.content {
        case .none, .special: return .bytes(BlobBox([]))
        case .chunks: return .live
        case .blob(let sha):
            return .bytes(try openBlob(sha, entry: entry))
        case .volume(let id, let k):
            let p = try archive.part(volume: id, part: k, for: entry)
            tree.lock()
            let info = volumeInfos[id]
            tree.unlock()
            guard let v = info else { throw VoxError(.corrupt, "\(entry.path): its volume \(id) is missing or damaged") }
            let h = v.header
            if let w = p.part.wrapper {
                // a compressed file (.nii.gz, NRRD gzip): recompressed front to back by a
                // background thread as its slabs decode (a deflate stream cannot be cut at an
                // arbitrary byte), each chunk served once its CRC-32C from pack time matches
                let L = try FileLayout(p, header: h, path: entry.path)
                guard entry.size <= UInt64(1) << 31, w.chunkCRCs.count == (Int(entry.size) + (1 << w.chunkShift) - 1) >> w.chunkShift else {
                    throw VoxError(.corrupt, "\(entry.path): its file part does not match its volume or its size")
                }
                return .stream(streamedFile(id: id, layout: L, header: h, entry: entry))
            }
            let L = try FileLayout(p, header: h, path: entry.path)
            guard UInt64(L.size) == entry.size else {
                throw VoxError(.corrupt, "\(entry.path): its file part does not match its volume or its size")
            }
            let m = VoxelMap(id: id, header: h, L: L)
            // schema 1: the part record's fields carry no seal, so no byte is served before the
            // whole file's SHA-256 has matched (once per file and part record)
            if archive.schema < 2 { try verifyWholeFile(m, entry: entry, ino: ino) }
            return .volume(m)
        }
    }

    private var verifiedFiles = Set<[UInt8]>()    // schema 1: ino + part SHA-256 checked whole

    private func verifyWholeFile(_ m: VoxelMap, entry: Archive.Entry, ino: UInt64) throws {
        var w = ByteWriter(); w.u64(ino); w.raw(m.part.sha256)
        let key = w.bytes
        lock.lock()
        let done = verifiedFiles.contains(key)
        lock.unlock()
        if done { return }
        var sha = Checksum.SHA256()
        var lo = 0
        let size = Int(entry.size)
        while lo < size {
            let hi = min(size, lo + max(1 << 16, m.slabBytes))
            try assemble(m, lo, hi, path: entry.path).withUnsafeBytes { sha.update($0) }
            lo = hi
        }
        guard sha.finish() == m.part.sha256 else {
            throw VoxError(.corrupt, "\(entry.path): rebuilt file differs from the original (SHA-256 mismatch)")
        }
        lock.lock(); verifiedFiles.insert(key); lock.unlock()
    }

    public func release(_ fh: UInt64) {
        lock.lock()
        let h = handles.removeValue(forKey: fh)
        lock.unlock()
        guard let h else { return }
        if case .stream(let f) = h.layout { f.releaseHandle() }
        if options.writable { closed(h) }
        else { tree.lock(); nodes[Int(h.ino - 1)].opens -= 1; tree.unlock() }
    }

    func handle(_ fh: UInt64) -> Handle? { lock.lock(); defer { lock.unlock() }; return handles[fh] }

    public var openHandles: Int { lock.lock(); defer { lock.unlock() }; return handles.count }

    /// An opaque file's content, shared by every open handle of it (and of identical files);
    /// it lives while a handle holds it.
    final class BlobBox: @unchecked Sendable {
        let bytes: [UInt8]
        init(_ b: [UInt8]) { bytes = b }
    }
    private final class WeakBlob { weak var box: BlobBox?; init(_ b: BlobBox) { box = b } }
    private var blobs: [[UInt8]: WeakBlob] = [:]

    private func openBlob(_ sha: [UInt8], entry: Archive.Entry) throws -> BlobBox {
        lock.lock()
        if let b = blobs[sha]?.box { lock.unlock(); return b }
        lock.unlock()
        var unused: [UInt64: Archive.DecodedVolume] = [:]
        let box = BlobBox(try archive.contents(entry, decoded: &unused))
        lock.lock(); defer { lock.unlock() }
        if let b = blobs[sha]?.box { return b }
        blobs = blobs.filter { $0.value.box != nil }
        blobs[sha] = WeakBlob(box)
        return box
    }

    /// Calls `body` with bytes [offset, offset + length) of the open file (fewer at its end).
    /// A range inside one decoded slab (no byte swap) or inside an opaque file is handed over
    /// from the cached memory itself, without a copy (the FUSE driver replies straight from
    /// it); any other range is assembled first.
    public func withRead<R>(_ fh: UInt64, offset: UInt64, length: Int, _ body: (UnsafeRawBufferPointer) -> R) throws -> R {
        lock.lock()
        let h = handles[fh]
        lock.unlock()
        guard let h else { throw FSError.badHandle }
        if isLive(h) { return try liveRead(h.ino, offset: offset, length: length).withUnsafeBytes { body($0) } }
        return try withRead(h.layout, size: h.entry.size, path: h.entry.path, offset: offset, length: length, body)
    }

    /// Bytes of a stored file through its layout (see `withRead(_:offset:length:_:)`).
    func withRead<R>(_ layout: Handle.Layout, size: UInt64, path: String, offset: UInt64, length: Int, _ body: (UnsafeRawBufferPointer) -> R) throws -> R {
        guard offset < size, length > 0 else { return body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        let lo = Int(offset), hi = Int(min(size, offset + UInt64(length)))
        switch layout {
        case .live: throw VoxError(.io, "\(path): internal error: a live file read through a stored layout")
        case .bytes(let b):
            return b.bytes.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[lo..<hi])) }
        case .stream(let f):
            try f.wait(upTo: hi)
            return body(UnsafeRawBufferPointer(start: f.base + lo, count: hi - lo))
        case .volume(let m):
            let s = (m.base + lo) / m.slabBytes
            if !m.swap, lo >= m.preEnd, hi <= m.pixEnd, s == (m.base + hi - 1) / m.slabBytes {
                notePosition(m, first: s, last: s, path: path)
                let from = m.base + lo - s * m.slabBytes, to = m.base + hi - s * m.slabBytes
                let slab = try slabData(volume: m.id, slab: s, header: m.header, need: to, path: path)
                guard to <= slab.count else { throw VoxError(.corrupt, "\(path): volume \(m.id) slab \(s) is shorter than its slices") }
                return slab.withUnsafeBytes(from..<to) { body($0) }
            }
            return try assemble(m, lo, hi, path: path).withUnsafeBytes { body($0) }
        }
    }

    /// Bytes [offset, offset + length) of the open file (fewer at its end).
    public func read(_ fh: UInt64, offset: UInt64, length: Int) throws -> [UInt8] {
        try withRead(fh, offset: offset, length: length) { Array($0) }
    }

    /// File bytes [lo, hi) of a volume-backed file (`FileLayout.visit`: header, page prefix,
    /// voxel bytes from the slabs, byte-swapped when the file is big-endian, trailer).
    private func assemble(_ m: VoxelMap, _ lo: Int, _ hi: Int, path: String) throws -> [UInt8] {
        // before decoding: the slabs ahead start on the workers while this read decodes
        if let r = m.L.slabs(lo, hi) { notePosition(m, first: r.lowerBound, last: r.upperBound, path: path) }
        return try m.L.bytes(lo, hi, slab: { s, need, use in
            let slab = try slabData(volume: m.id, slab: s, header: m.header, need: need, path: path)
            guard slab.count >= need else { throw VoxError(.corrupt, "\(path): volume \(m.id) slab \(s) is shorter than its slices") }
            try slab.withUnsafeBytes(0..<need) { try use($0) }
        }, path: path)
    }

    private func decoder(_ id: UInt64) throws -> VXZ.Decoder {
        lock.lock()
        if let d = decoders[id] { lock.unlock(); return d }
        lock.unlock()
        let d = try archive.decoder(volume: id)
        lock.lock(); defer { lock.unlock() }
        if let other = decoders[id] { return other }
        decoders[id] = d
        return d
    }

    /// Slab s of a volume with at least its first `need` bytes verified (v2 slabs are
    /// verified slice by slice, so a reader of an early slice does not wait for the rest).
    private func slabData(volume id: UInt64, slab s: Int, header: StreamHeader, need: Int, path: String, prefetch: Bool = false) throws -> SlabBuffer {
        guard s >= 0, s < header.slabs.count else { throw VoxError(.corrupt, "\(path): volume \(id) has no slab \(s)") }
        // the decode's error is shared by every reader waiting for the slab: each names its own file
        do {
            // weak: a decode thread may outlive the reader that started it by a moment, and must
            // not keep the filesystem (and its archive) open after drain()
            return try cache.get(SlabCache.Key(volume: id, slab: s), need: need, size: header.byteCount(ofSlab: s), prefetch: prefetch) { [weak self] buf, publish in
                guard let self else { throw VoxError(.io, "the filesystem was closed") }
                let t0 = DispatchTime.now().uptimeNanoseconds
                func ms() -> String { String(format: "%.1f", Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6) }
                lock.lock(); decodesPending += 1; lock.unlock()
                defer { self.lock.lock(); self.decodesPending -= 1; self.lock.unlock() }
                decodeSlots.wait()
                defer { self.decodeSlots.signal() }
                cache.running(SlabCache.Key(volume: id, slab: s))
                // a reader waits for this slab: when it is the only decode, it runs on every
                // core (a wavefront over its slices); under load each decode takes one core
                // (the wavefront's second thread is 80% efficient), as a prefetch always does
                lock.lock(); let alone = decodesPending == 1; lock.unlock()
                let threads = prefetch || !alone ? 1 : options.sliceThreads
                let tSlot = ms()
                let d = try decoder(id)
                let tDec = ms()
                if !options.trace { return try d.decodeSlab(s, into: buf.mutableBytes, threads: threads, verified: publish) }
                var marks: [String] = []
                try d.decodeSlab(s, into: buf.mutableBytes, threads: threads) { n in marks.append(ms()); publish(n) }
                options.log("trace: volume \(id) slab \(s)\(prefetch ? " (prefetch)" : ""): slot \(tSlot) ms, decoder \(tDec) ms, verified at \(marks.joined(separator: ", ")) ms, \(threads) threads")
            }
        } catch let e as VoxError {
            throw VoxError(e.kind, "\(path): \(e.message)")
        }
    }

    /// A read that continues where the last read of the volume was (same or next slab) is
    /// sequential: the next `workers` slabs are decoded in the background.
    private func notePosition(_ m: VoxelMap, first: Int, last: Int, path: String) {
        let id = m.id, header = m.header
        lock.lock()
        let prev = lastSlab[id]
        lastSlab[id] = last
        lock.unlock()
        // the first read of a volume gets one slab ahead (most first reads start a scan);
        // a sequential reader gets `workers` slabs ahead
        let ahead: Int
        if prev == nil { ahead = 1 } else if first == prev! || first == prev! + 1 { ahead = options.workers } else { return }
        // never more ahead than the cache holds beside the slab being read (prefetched slabs
        // are newer in the LRU and would evict it)
        let room = cache.capacity / max(1, m.slabBytes) - 1
        let depth = min(ahead, options.workers, room)
        guard depth > 0 else { return }
        for s in (last + 1)..<min(header.slabs.count, last + 1 + depth) { prefetch(id: id, slab: s, header: header, path: path) }
    }

    /// Waits for background decodes (tests, unmount).
    public func drain() {
        rebuilds.lock()
        while rebuilding > 0 { rebuilds.wait() }
        rebuilds.unlock()
        prefetchPool.drain()
        cache.waitIdle()
        prefetchPool.drain()
    }

    deinit { prefetchPool.stop() }

    public struct FSStats: Sendable {
        public var blockSize: UInt64 = 4096
        public var blocks: UInt64, files: UInt64
        public var free: UInt64 = 0, available: UInt64 = 0, freeFiles: UInt64 = 0
    }

    /// statfs: read-only, the original bytes as used space and nothing free; read-write, the
    /// disk the archive is on (its size, and what is free on it).
    public func fsStats() -> FSStats {
        tree.lock(); let files = UInt64(nodes.count); tree.unlock()
        if options.writable {
            var v = statvfs()
            if statvfs(PathName.parent(archive.path).isEmpty ? "." : PathName.parent(archive.path), &v) == 0 {
                return FSStats(blockSize: UInt64(v.f_frsize), blocks: UInt64(v.f_blocks), files: files,
                               free: UInt64(v.f_bfree), available: UInt64(v.f_bavail), freeFiles: UInt64(v.f_ffree))
            }
        }
        return FSStats(blocks: (originalBytes + 4095) / 4096, files: files)
    }
}
