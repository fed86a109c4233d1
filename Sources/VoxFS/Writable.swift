import Foundation
import VoxArchive
import VoxCore

/// A file's content in a read-write mount: chunks of 2^shift bytes, each either written and not
/// yet stored (`dirty`), stored (its SHA-256 in `hashes`), still the file's old stored content
/// (`base`: a blob or volume-backed file nothing has stored over yet), or zeros (a file made
/// longer by truncate or by a write past its end). Guarded by the filesystem's `tree` lock.
final class FileData {
    static let defaultShift: UInt8 = 20
    /// Largest file a read-write mount takes (its entry lists one 32-byte hash per chunk).
    static let maxSize: UInt64 = 64 << 30

    final class Chunk {
        var bytes: [UInt8]
        var gen: UInt64
        init(_ b: [UInt8], gen: UInt64) { bytes = b; self.gen = gen }
    }

    let shift: UInt8
    var size: UInt64
    /// The size of the entry as stored (the archive's record).
    var storedSize: UInt64
    var hashes: [[UInt8]?]
    var dirty: [Int: Chunk] = [:]
    var base: VoxFileSystem.Handle.Layout?
    var baseSize: UInt64 = 0
    private var gen: UInt64 = 0

    init(shift: UInt8, size: UInt64, hashes: [[UInt8]?]) {
        self.shift = shift; self.size = size; storedSize = size; self.hashes = hashes
    }

    var chunkSize: Int { 1 << Int(shift) }
    var chunkCount: Int { Int((size + UInt64(chunkSize) - 1) >> UInt64(shift)) }
    func length(_ i: Int) -> Int { Int(min(UInt64(chunkSize), size - (UInt64(i) << UInt64(shift)))) }
    func nextGen() -> UInt64 { gen += 1; return gen }
    func hash(_ i: Int) -> [UInt8]? { i < hashes.count ? hashes[i] : nil }

    /// Written (or truncated) and not yet stored.
    var pending: Bool {
        !dirty.isEmpty || base != nil || storedSize != size || hashes.count < chunkCount || hashes.prefix(chunkCount).contains { $0 == nil }
    }
    var dirtyBytes: Int { dirty.values.reduce(0) { $0 + $1.bytes.count } }
}

/// Recently read chunks of read-write files, by SHA-256 (checked when loaded).
final class ChunkCache: @unchecked Sendable {
    private let capacity: Int
    private var items: [[UInt8]: [UInt8]] = [:]
    private var order: [[UInt8]] = []
    private let lock = NSLock()
    init(capacity: Int) { self.capacity = capacity }
    func get(_ h: [UInt8]) -> [UInt8]? { lock.lock(); defer { lock.unlock() }; return items[h] }
    func put(_ h: [UInt8], _ b: [UInt8]) {
        lock.lock(); defer { lock.unlock() }
        if items.updateValue(b, forKey: h) == nil { order.append(h) }
        while order.count > capacity { items.removeValue(forKey: order.removeFirst()) }
    }
}

extension VoxFileSystem {
    /// Attribute changes (setattr); nil fields stay as they are.
    public struct AttributeChange: Sendable {
        public var mode: UInt32?, uid: UInt32?, gid: UInt32?, size: UInt64?
        /// Times to set; `now` sets the current time.
        public enum Time: Sendable { case now, at(Int64, Int32) }
        public var atime: Time?, mtime: Time?
        public init(mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil, size: UInt64? = nil, atime: Time? = nil, mtime: Time? = nil) {
            self.mode = mode; self.uid = uid; self.gid = gid; self.size = size; self.atime = atime; self.mtime = mtime
        }
    }

    static func now() -> (Int64, Int32) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return (Int64(ts.tv_sec), Int32(ts.tv_nsec))
    }

    /// Sets an entry's times: modification (and change) or change only.
    static func touch(_ e: inout Archive.Entry, modified: Bool, at t: (Int64, Int32) = now()) {
        var times = e.times ?? Archive.Times(atimeSec: e.mtimeSec, atimeNsec: e.mtimeNsec, ctimeSec: e.mtimeSec, ctimeNsec: e.mtimeNsec)
        if modified { e.mtimeSec = t.0; e.mtimeNsec = t.1 }
        times.ctimeSec = t.0; times.ctimeNsec = t.1
        e.times = times
    }

    private func requireWritable() throws { guard options.writable else { throw FSError.readOnly } }

    private static func checkName(_ name: String) throws {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/") else { throw FSError.invalid }
        guard name.utf8.count <= 255 else { throw FSError.nameTooLong }
    }

    private func childPath(_ parent: UInt64, _ name: String) -> String {
        let p = nodes[Int(parent - 1)].entry.path
        return p.isEmpty ? name : p + "/" + name
    }

    /// The entry as it is stored: the live attributes with the stored size and content (a
    /// metadata change is stored at once, a file's new bytes when it is flushed). Under `tree`.
    private func storedEntry(_ ino: UInt64) -> Archive.Entry {
        var e = nodes[Int(ino - 1)].entry
        if let d = nodes[Int(ino - 1)].data { e.size = d.storedSize }
        return e
    }

    /// Adds the stored form of `ino` to a change (the root folder goes to its own record).
    private func record(_ ino: UInt64, into c: inout Archive.Change) {
        if ino == VoxFileSystem.rootIno { c.root = storedEntry(ino) } else { c.put.append(storedEntry(ino)) }
    }

    /// Under `commitLock`: computes a change under `tree`, stores it, then makes it visible.
    private func mutate<R>(_ plan: () throws -> (Archive.Change, () -> R)) throws -> R {
        commitLock.lock(); defer { commitLock.unlock() }
        tree.lock()
        let planned: (Archive.Change, () -> R)
        do { planned = try plan() } catch { tree.unlock(); throw error }
        tree.unlock()
        try archive.apply(planned.0)
        tree.lock(); defer { tree.unlock() }
        return planned.1()
    }

    /// What dropping references to `content` frees (records no other entry names), given
    /// pending reference changes `delta`.
    private func release(_ content: Archive.Content, _ delta: inout [[UInt8]: Int], _ volumes: inout [UInt64: Int]) {
        for h in content.blobKeys { delta[h, default: 0] -= 1 }
        if case .volume(let id, _) = content { volumes[id, default: 0] -= 1 }
    }

    private func freed(_ delta: [[UInt8]: Int], _ volumes: [UInt64: Int]) -> (blobs: [[UInt8]], volumes: [UInt64]) {
        (delta.filter { $0.value < 0 && (blobRefs[$0.key] ?? 0) + $0.value <= 0 }.map(\.key),
         volumes.filter { $0.value < 0 && (volumeRefs[$0.key] ?? 0) + $0.value <= 0 }.map(\.key))
    }

    private func applyRefs(_ delta: [[UInt8]: Int], _ volumes: [UInt64: Int]) {
        for (h, d) in delta {
            let n = (blobRefs[h] ?? 0) + d
            if n > 0 { blobRefs[h] = n } else { blobRefs.removeValue(forKey: h) }
        }
        for (id, d) in volumes {
            let n = (volumeRefs[id] ?? 0) + d
            if n > 0 { volumeRefs[id] = n } else { volumeRefs.removeValue(forKey: id); volumeInfos.removeValue(forKey: id) }
        }
    }

    // MARK: content

    /// The file's content state, made on first use. Under `tree`.
    func fileData(_ ino: UInt64) throws -> FileData {
        let i = Int(ino - 1)
        if let d = nodes[i].data { return d }
        let e = nodes[i].entry
        guard e.kind == .file else { throw FSError.isDirectory }
        let d: FileData
        switch e.content {
        case .chunks(let shift, let hs): d = FileData(shift: shift, size: e.size, hashes: hs)
        case .none, .special: d = FileData(shift: FileData.defaultShift, size: e.size, hashes: [])
        case .blob, .volume:
            d = FileData(shift: FileData.defaultShift, size: e.size, hashes: [])
            d.base = try layout(of: e, ino: ino)
            d.baseSize = e.size
        }
        nodes[i].data = d
        return d
    }

    private func loadChunk(_ h: [UInt8], size: Int, path: String) throws -> [UInt8] {
        if let b = chunkCache.get(h), b.count == size { return b }
        let b = try archive.chunk(h, size: size, path: path)
        chunkCache.put(h, b)
        return b
    }

    /// Chunk i's bytes as the file has them now. Under `tree`.
    private func current(_ d: FileData, _ i: Int, path: String) throws -> [UInt8] {
        let L = d.length(i)
        if let c = d.dirty[i] { return c.bytes }
        if let h = d.hash(i) { return try loadChunk(h, size: L, path: path) }
        var out = [UInt8](repeating: 0, count: L)
        let lo = UInt64(i) << UInt64(d.shift)
        if let base = d.base, lo < d.baseSize {
            let n = Int(min(UInt64(L), d.baseSize - lo))
            try withRead(base, size: d.baseSize, path: path, offset: lo, length: n) { p in
                out.withUnsafeMutableBytes { o in o.baseAddress!.copyMemory(from: p.baseAddress!, byteCount: p.count) }
            }
        }
        return out
    }

    /// Changes the file's size: the chunk whose length changes becomes written (cut, or
    /// padded with zeros); chunks past the old end read as zeros. Under `tree`.
    private func resize(_ d: FileData, to newSize: UInt64, path: String) throws {
        let old = d.size
        guard newSize != old else { return }
        let cs = UInt64(d.chunkSize)
        if newSize < old {
            let n = Int((newSize + cs - 1) / cs)
            for k in d.dirty.keys where k >= n { d.dirty.removeValue(forKey: k) }
            if d.hashes.count > n { d.hashes.removeLast(d.hashes.count - n) }
            d.baseSize = min(d.baseSize, newSize)
            if newSize % cs != 0 {
                let i = n - 1
                var b = try current(d, i, path: path)
                b.removeLast(b.count - Int(newSize - UInt64(i) * cs))
                d.dirty[i] = FileData.Chunk(b, gen: d.nextGen())
            }
        } else if old % cs != 0 {
            let i = Int(old / cs)
            var b = try current(d, i, path: path)
            b += [UInt8](repeating: 0, count: Int(min(cs, newSize - UInt64(i) * cs)) - b.count)
            d.dirty[i] = FileData.Chunk(b, gen: d.nextGen())
        }
        d.size = newSize
    }

    /// Bytes [offset, offset + length) of a read-write file as it is now (fewer at its end).
    func liveRead(_ ino: UInt64, offset: UInt64, length: Int) throws -> [UInt8] {
        tree.lock(); defer { tree.unlock() }
        let d = try fileData(ino)
        let path = nodes[Int(ino - 1)].entry.path
        guard offset < d.size, length > 0 else { return [] }
        let end = min(d.size, offset + UInt64(length))
        var out = [UInt8]()
        out.reserveCapacity(Int(end - offset))
        let cs = UInt64(d.chunkSize)
        var pos = offset
        while pos < end {
            let i = Int(pos / cs)
            let lo = Int(pos - UInt64(i) * cs), hi = Int(min(end, UInt64(i + 1) * cs) - UInt64(i) * cs)
            let b = try current(d, i, path: path)
            out += b[lo..<hi]
            pos = UInt64(i) * cs + UInt64(hi)
        }
        return out
    }

    /// Whether a handle reads the file's live state (written, or stored in chunks) instead of
    /// its stored layout. A read-only mount never writes, so its stored layouts stay valid and
    /// its reads take no tree lock here.
    func isLive(_ h: Handle) -> Bool {
        if case .live = h.layout { return true }
        guard options.writable else { return false }
        tree.lock(); defer { tree.unlock() }
        return nodes[Int(h.ino - 1)].data != nil
    }

    /// Writes `bytes` at `offset` of an open file (kept in memory until the file is flushed,
    /// closed or synced; a file with more than 16 chunks written is stored there and then).
    public func write(_ fh: UInt64, offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws -> Int {
        try requireWritable()
        guard let h = handle(fh), h.write else { throw FSError.badHandle }
        let ino = h.ino
        let count = bytes.count
        let full: Bool
        do {
            tree.lock(); defer { tree.unlock() }
            let d = try fileData(ino)
            let path = nodes[Int(ino - 1)].entry.path
            let end = offset + UInt64(count)
            guard end <= FileData.maxSize else { throw FSError.fileTooBig }
            if count > 0 {
                if end > d.size { try resize(d, to: end, path: path) }
                let cs = UInt64(d.chunkSize)
                var pos = offset
                while pos < end {
                    let i = Int(pos / cs)
                    let L = d.length(i)
                    let lo = Int(pos - UInt64(i) * cs), hi = Int(min(end, UInt64(i) * cs + UInt64(L)) - UInt64(i) * cs)
                    let c: FileData.Chunk
                    if let have = d.dirty[i] { c = have }
                    else if lo == 0 && hi == L { c = FileData.Chunk([UInt8](repeating: 0, count: L), gen: 0) }
                    else { c = FileData.Chunk(try current(d, i, path: path), gen: 0) }
                    c.gen = d.nextGen()
                    d.dirty[i] = c
                    let src = bytes.baseAddress! + Int(pos - offset)
                    c.bytes.withUnsafeMutableBytes { o in (o.baseAddress! + lo).copyMemory(from: src, byteCount: hi - lo) }
                    pos = UInt64(i) * cs + UInt64(hi)
                }
            }
            nodes[Int(ino - 1)].entry.size = d.size
            VoxFileSystem.touch(&nodes[Int(ino - 1)].entry, modified: true)
            full = d.dirty.count > 16
        }
        if full { try store(ino) }
        return count
    }

    /// Stores a file's written bytes and its attributes in one transaction (flush, fsync,
    /// close): chunks not stored before are written, chunks and volumes nothing refers to any
    /// more are dropped. Nothing to store: nothing happens.
    public func store(_ ino: UInt64) throws {
        guard options.writable else { return }
        commitLock.lock(); defer { commitLock.unlock() }
        tree.lock()
        let i = Int(ino - 1)
        guard i >= 0, i < nodes.count, !nodes[i].removed, let d = nodes[i].data, d.pending else { tree.unlock(); return }
        let path = nodes[i].entry.path
        let n = d.chunkCount, size = d.size
        var hashes = [[UInt8]](repeating: [], count: n)
        var plan: [(i: Int, bytes: [UInt8], gen: UInt64)] = []
        do {
            for k in 0..<n {
                if let c = d.dirty[k] { plan.append((k, c.bytes, c.gen)) }
                else if let h = d.hash(k) { hashes[k] = h }
                else { plan.append((k, try current(d, k, path: path), 0)) }
            }
        } catch { tree.unlock(); throw error }
        var entry = nodes[i].entry
        let old = entry.content
        tree.unlock()

        // hash and compress outside the tree lock (readers and writers go on meanwhile)
        var records: [(key: [UInt8], record: [UInt8])] = []
        var fresh = Set<[UInt8]>()
        for p in plan {
            let h = Checksum.sha256(p.bytes)
            hashes[p.i] = h
            tree.lock(); let known = blobRefs[h] != nil; tree.unlock()
            if !known && fresh.insert(h).inserted { records.append((h, Archive.chunkBlob(p.bytes))) }
        }
        entry.content = .chunks(shift: d.shift, hashes: hashes)
        entry.size = size
        entry.fileSHA256 = nil

        tree.lock()
        var delta: [[UInt8]: Int] = [:], vdelta: [UInt64: Int] = [:]
        for h in hashes { delta[h, default: 0] += 1 }
        release(old, &delta, &vdelta)
        let (dropB, dropV) = freed(delta, vdelta)
        tree.unlock()
        var c = Archive.Change()
        c.put = [entry]; c.blobs = records; c.dropBlobs = dropB; c.dropVolumes = dropV
        try archive.apply(c)

        tree.lock(); defer { tree.unlock() }
        applyRefs(delta, vdelta)
        for p in plan { chunkCache.put(hashes[p.i], p.bytes) }
        d.hashes = Array(hashes.prefix(d.chunkCount))
        for p in plan where p.gen != 0 && d.dirty[p.i]?.gen == p.gen { d.dirty.removeValue(forKey: p.i) }
        if case .stream(let f) = d.base { f.releaseHandle() }
        d.base = nil
        d.baseSize = 0
        d.storedSize = size
        nodes[i].entry.content = entry.content
    }

    /// flush (every close) and fsync: the file's written bytes are stored before it returns.
    public func flush(_ fh: UInt64) throws {
        guard let h = handle(fh) else { throw FSError.badHandle }
        if options.writable { try store(h.ino) }
    }

    /// The last close of a handle: what it wrote is stored; an unlinked file's content goes
    /// with its last handle.
    func closed(_ h: Handle) {
        if h.write {
            do { try store(h.ino) } catch { options.log("close \(h.entry.path): \(error) (written bytes kept in memory until the next flush)") }
        }
        commitLock.lock(); defer { commitLock.unlock() }
        tree.lock()
        let i = Int(h.ino - 1)
        nodes[i].opens -= 1
        guard nodes[i].removed, nodes[i].opens == 0 else { tree.unlock(); return }
        var delta: [[UInt8]: Int] = [:], vdelta: [UInt64: Int] = [:]
        release(nodes[i].entry.content, &delta, &vdelta)
        let (dropB, dropV) = freed(delta, vdelta)
        nodes[i].data = nil
        nodes[i].entry.content = .none
        tree.unlock()
        var c = Archive.Change()
        c.dropBlobs = dropB; c.dropVolumes = dropV
        do { try archive.apply(c) } catch { options.log("close \(h.entry.path): its content could not be dropped: \(error) (voxfs compact reclaims it)") }
        tree.lock(); applyRefs(delta, vdelta); tree.unlock()
    }

    // MARK: namespace

    /// Creates a file, folder or symlink in `parent`, owned by `uid` and `gid` (a folder with
    /// the set-group-ID bit hands its group, and to folders the bit, down).
    /// `special`: a FIFO, socket or device node's type (S_IFIFO ...) and device number.
    public func create(parent: UInt64, name: String, kind: FileKind, mode: UInt32, uid: UInt32, gid: UInt32, target: String = "",
                       special: (type: UInt32, rdev: UInt64)? = nil) throws -> Attributes {
        guard (kind == .special) == (special != nil) else { throw FSError.invalid }
        try requireWritable()
        try VoxFileSystem.checkName(name)
        if kind == .symlink { guard !target.isEmpty else { throw FSError.noEntry }; guard target.utf8.count <= 4095 else { throw FSError.nameTooLong } }
        let ino: UInt64 = try mutate {
            let p = try node(parent)
            guard p.entry.kind == .directory, !p.removed else { throw p.removed ? FSError.noEntry : FSError.notDirectory }
            guard p.index[name] == nil else { throw FSError.exists }
            let t = VoxFileSystem.now()
            var m = mode & 0o7777
            var g = gid
            if p.entry.mode & UInt32(S_ISGID) != 0 { g = p.entry.gid; if kind == .directory { m |= UInt32(S_ISGID) } }
            let k: Archive.Kind = switch kind { case .directory: .directory; case .file: .file; case .symlink: .symlink; case .special: .special }
            let content: Archive.Content = switch kind {
            case .file: .chunks(shift: FileData.defaultShift, hashes: [])
            case .special: .special(type: special!.type, rdev: special!.rdev)
            default: .none
            }
            var e = Archive.Entry(path: childPath(parent, name), kind: k, mode: kind == .symlink ? 0o777 : m, uid: uid, gid: g,
                                  mtimeSec: t.0, mtimeNsec: t.1, size: 0, linkTarget: kind == .symlink ? target : "",
                                  content: content)
            e.times = Archive.Times(atimeSec: t.0, atimeNsec: t.1, ctimeSec: t.0, ctimeNsec: t.1)
            var pe = nodes[Int(parent - 1)].entry
            VoxFileSystem.touch(&pe, modified: true, at: t)
            var c = Archive.Change()
            c.put = [e]
            let savedParent = nodes[Int(parent - 1)].entry
            nodes[Int(parent - 1)].entry = pe
            record(parent, into: &c)
            nodes[Int(parent - 1)].entry = savedParent
            return (c, { [self] in
                var n = Node(entry: e, parent: parent)
                if kind == .file { n.data = FileData(shift: FileData.defaultShift, size: 0, hashes: []) }
                nodes.append(n)
                let ino = UInt64(nodes.count)
                nodes[Int(parent - 1)].entry = pe
                nodes[Int(parent - 1)].children.append((name, ino))
                nodes[Int(parent - 1)].index[name] = ino
                if kind == .directory { nodes[Int(parent - 1)].subdirs += 1 }
                return ino
            })
        }
        return try attributes(ino)
    }

    /// Every inode in the subtree at `ino` (itself first). Under `tree`.
    private func subtree(_ ino: UInt64) -> [UInt64] {
        var out = [ino], k = 0
        while k < out.count { out += nodes[Int(out[k] - 1)].children.map(\.ino); k += 1 }
        return out
    }

    /// Drops a name (unlink, rmdir, a rename's target). Its content goes now, or with the last
    /// handle of an open file. Under `tree`, inside a `mutate` plan.
    private func removal(_ ino: UInt64, into c: inout Archive.Change, _ delta: inout [[UInt8]: Int], _ vdelta: inout [UInt64: Int]) {
        let n = nodes[Int(ino - 1)]
        c.remove.append(n.entry.path)
        if n.opens == 0 { release(n.entry.content, &delta, &vdelta) }
    }

    private func detach(_ ino: UInt64) {
        let n = nodes[Int(ino - 1)]
        let p = Int(n.parent - 1)
        let name = PathName.name(n.entry.path)
        nodes[p].children.removeAll { $0.ino == ino }
        nodes[p].index.removeValue(forKey: name)
        if n.entry.kind == .directory { nodes[p].subdirs -= 1 }
    }

    private func forget(_ ino: UInt64) {
        detach(ino)
        let i = Int(ino - 1)
        nodes[i].removed = true
        VoxFileSystem.touch(&nodes[i].entry, modified: false)
        if nodes[i].opens == 0 { nodes[i].data = nil; nodes[i].entry.content = .none }
    }

    /// unlink (a file or symlink) and rmdir (an empty folder).
    public func remove(parent: UInt64, name: String, directory: Bool) throws {
        try requireWritable()
        try mutate {
            let p = try node(parent)
            guard p.entry.kind == .directory else { throw FSError.notDirectory }
            guard let ino = p.index[name] else { throw FSError.noEntry }
            let n = nodes[Int(ino - 1)]
            if directory {
                guard n.entry.kind == .directory else { throw FSError.notDirectory }
                guard n.children.isEmpty else { throw FSError.notEmpty }
            } else if n.entry.kind == .directory { throw FSError.isDirectory }
            var c = Archive.Change()
            var delta: [[UInt8]: Int] = [:], vdelta: [UInt64: Int] = [:]
            removal(ino, into: &c, &delta, &vdelta)
            (c.dropBlobs, c.dropVolumes) = freed(delta, vdelta)
            let t = VoxFileSystem.now()
            var pe = p.entry
            VoxFileSystem.touch(&pe, modified: true, at: t)
            nodes[Int(parent - 1)].entry = pe
            record(parent, into: &c)
            nodes[Int(parent - 1)].entry = p.entry
            return (c, { [self] in
                applyRefs(delta, vdelta)
                nodes[Int(parent - 1)].entry = pe
                forget(ino)
            })
        }
    }

    /// rename(2): files and folders, over an existing file or empty folder too; `noReplace`
    /// (RENAME_NOREPLACE) refuses an existing target. A folder's whole subtree moves in the
    /// same transaction.
    public func rename(parent: UInt64, name: String, newParent: UInt64, newName: String, noReplace: Bool = false) throws {
        try requireWritable()
        try VoxFileSystem.checkName(newName)
        try mutate {
            let p = try node(parent), q = try node(newParent)
            guard p.entry.kind == .directory, q.entry.kind == .directory, !q.removed else { throw FSError.notDirectory }
            guard let ino = p.index[name] else { throw FSError.noEntry }
            let target = q.index[newName]
            if target == ino { return (Archive.Change(), {}) }
            let moving = nodes[Int(ino - 1)]
            // a folder may not move into itself
            var a = newParent
            while true {
                if a == ino { throw FSError.invalid }
                if a == VoxFileSystem.rootIno { break }
                a = nodes[Int(a - 1)].parent
            }
            var c = Archive.Change()
            var delta: [[UInt8]: Int] = [:], vdelta: [UInt64: Int] = [:]
            if let target {
                if noReplace { throw FSError.exists }
                let tn = nodes[Int(target - 1)]
                if moving.entry.kind == .directory {
                    guard tn.entry.kind == .directory else { throw FSError.notDirectory }
                    guard tn.children.isEmpty else { throw FSError.notEmpty }
                } else if tn.entry.kind == .directory { throw FSError.isDirectory }
                removal(target, into: &c, &delta, &vdelta)
            }
            (c.dropBlobs, c.dropVolumes) = freed(delta, vdelta)
            let t = VoxFileSystem.now()
            let oldPrefix = moving.entry.path
            let newPath = childPath(newParent, newName)
            let moved = subtree(ino)
            var newEntries: [UInt64: Archive.Entry] = [:]
            for m in moved {
                c.remove.append(nodes[Int(m - 1)].entry.path)
                var e = storedEntry(m)
                e.path = newPath + e.path.dropFirst(oldPrefix.count)
                if m == ino { VoxFileSystem.touch(&e, modified: false, at: t) }
                c.put.append(e)
                var live = nodes[Int(m - 1)].entry
                live.path = e.path
                if m == ino { live.times = e.times }
                newEntries[m] = live
            }
            var pe = p.entry, qe = q.entry
            VoxFileSystem.touch(&pe, modified: true, at: t)
            VoxFileSystem.touch(&qe, modified: true, at: t)
            let saved = (nodes[Int(parent - 1)].entry, nodes[Int(newParent - 1)].entry)
            nodes[Int(parent - 1)].entry = pe
            record(parent, into: &c)
            if newParent != parent { nodes[Int(newParent - 1)].entry = qe; record(newParent, into: &c) }
            nodes[Int(parent - 1)].entry = saved.0
            nodes[Int(newParent - 1)].entry = saved.1
            // a replaced target's path must not be put back: remove first, put after (apply's order)
            return (c, { [self] in
                applyRefs(delta, vdelta)
                if let target { forget(target) }
                detach(ino)
                for (m, e) in newEntries { nodes[Int(m - 1)].entry = e }
                nodes[Int(ino - 1)].parent = newParent
                nodes[Int(parent - 1)].entry = pe
                if newParent != parent { nodes[Int(newParent - 1)].entry = qe }
                nodes[Int(newParent - 1)].children.append((newName, ino))
                nodes[Int(newParent - 1)].index[newName] = ino
                if moving.entry.kind == .directory { nodes[Int(newParent - 1)].subdirs += 1 }
            })
        }
    }

    /// setattr: mode, owner, size (truncate), times. The change time is set too; a size change
    /// also sets the modification time. Stored before it returns.
    public func setAttributes(_ ino: UInt64, _ ch: AttributeChange) throws -> Attributes {
        try requireWritable()
        commitLock.lock(); defer { commitLock.unlock() }
        do {
            tree.lock(); defer { tree.unlock() }
            let n = try node(ino)
            guard !n.removed || n.opens > 0 else { throw FSError.noEntry }
            var e = n.entry
            let t = VoxFileSystem.now()
            if let size = ch.size {
                guard e.kind == .file else { throw e.kind == .directory ? FSError.isDirectory : FSError.invalid }
                guard size <= FileData.maxSize else { throw FSError.fileTooBig }
                let d = try fileData(ino)
                if size != d.size {
                    try resize(d, to: size, path: e.path)
                    e.size = size
                }
                VoxFileSystem.touch(&e, modified: true, at: t)
            }
            if let m = ch.mode { e.mode = m & 0o7777 }
            if let u = ch.uid { e.uid = u }
            if let g = ch.gid { e.gid = g }
            VoxFileSystem.touch(&e, modified: false, at: t)
            func value(_ x: AttributeChange.Time) -> (Int64, Int32) { if case .at(let s, let ns) = x { return (s, ns) }; return t }
            if let a = ch.atime { let v = value(a); e.times!.atimeSec = v.0; e.times!.atimeNsec = v.1 }
            if let m = ch.mtime { let v = value(m); e.mtimeSec = v.0; e.mtimeNsec = v.1 }
            nodes[Int(ino - 1)].entry = e
        }
        try storeAttributes(ino)
        return try attributes(ino)
    }

    /// Stores a node's attributes (and its written bytes, if any). Under `commitLock`.
    private func storeAttributes(_ ino: UInt64) throws {
        tree.lock()
        let n = nodes[Int(ino - 1)]
        let pending = n.data?.pending ?? false
        tree.unlock()
        if n.removed { return }
        if pending { try store(ino); return }
        var c = Archive.Change()
        tree.lock(); record(ino, into: &c); tree.unlock()
        try archive.apply(c)
    }
}
