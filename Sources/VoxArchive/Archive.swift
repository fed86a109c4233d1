import CLMDB
import CZstd
import Foundation
import VoxCodec
import VoxCore
import VoxFormats

/// The VoxFS archive (schema v2, docs/archive.md): one LMDB environment with the tree, the
/// volumes (a .vxz header per volume, one record per slab), the models they need, each
/// volume-backed file's non-pixel bytes, and content-addressed opaque blobs. In v2 every
/// record is sealed (a CRC-32C over its database, key and value), an entry names the SHA-256
/// of the file its part record rebuilds, and a digest over the whole tree finds a missing or
/// added entry. Version 1 archives stay readable (with less protection: see `schema`).
public final class Archive: @unchecked Sendable {
    /// The newest schema this voxfs reads (and writes once a read-write mount changes an archive).
    public static let schemaVersion: UInt32 = 4
    /// The schema a new archive starts with (pack); the first record that needs a newer one
    /// (a wrapped part: 3; a chunked file, access and change times, the root's record: 4) turns it up.
    public static let createdSchema: UInt32 = 3
    /// The schema of this archive: 2 to 4, or 1 for an archive written by an older voxfs (read
    /// only; its records carry no seals, so readers check the whole file's SHA-256 instead).
    public var schema: UInt32 { schemaLock.lock(); defer { schemaLock.unlock() }; return schemaValue }
    private var schemaValue: UInt32
    private let schemaLock = NSLock()
    func raiseSchema(to v: UInt32) { schemaLock.lock(); schemaValue = max(schemaValue, v); schemaLock.unlock() }
    func resetSchema(_ v: UInt32) { schemaLock.lock(); schemaValue = v; schemaLock.unlock() }
    /// Where the records are: the LMDB file, or memory (tests).
    public let store: RecordStore
    public let path: String
    private var lockFD: Int32 = -1

    deinit { if lockFD >= 0 { close(lockFD) } }

    /// Takes the archive's advisory lock (flock on the archive file) without waiting: `pack`
    /// holds it exclusively, a mount holds it shared. LMDB alone would let two packs
    /// interleave their transactions safely, but not sensibly, and a mount would not see
    /// what a pack adds; so the second one is refused with a message that says why.
    public func lock(exclusive: Bool) throws {
        guard lockFD < 0, store.isFile else { return }
        let fd = try Sys.open(path, O_RDONLY, operation: "open the archive")
        if flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            let e = errno
            Sys.closeQuietly(fd)
            if e == EWOULDBLOCK {
                throw VoxError(.busy, exclusive
                    ? "\(path) is in use by another voxfs process (a pack writing it, or a mount or reader of it: unmount it first)"
                    : "\(path) is locked by a writer (a voxfs pack running on it, or a read-write mount of it); try again when the pack has finished, or unmount it")
            }
            throw Sys.error(path, "lock the archive", e)
        }
        lockFD = fd
    }

    /// Opens an archive for reading (ls, stats, verify, unpack, mount) under the shared lock,
    /// so that no pack writes it meanwhile.
    public static func reader(_ path: String) throws -> Archive {
        let a = try Archive(path: path, create: false)
        try a.lock(exclusive: false)
        return a
    }

    static func freeBytes(near path: String) -> UInt64 {
        var st = statvfs()
        guard statvfs(path, &st) == 0 else { return .max }
        return UInt64(st.f_bavail) * UInt64(st.f_frsize)
    }

    /// After `path`'s entry was replaced inside transaction `t`: drops what its old content
    /// used when no entry refers to it any more (a volume's header, slabs and parts; a blob),
    /// so that re-packing changed files does not leave dead data behind.
    func releaseIfUnused(_ old: Entry, _ t: any StoreTransaction) throws {
        guard old.content != .none else { return }
        // blob records are shared by identical files and chunks: drop those no entry names
        var blobs = Set(old.content.blobKeys)
        var volume: UInt64? = nil
        if case .volume(let id, _) = old.content { volume = id }
        try t.scan(.tree) { k, v in
            guard let e = try? decodeEntry(k, v) else { return true }
            if case .volume(let id, _) = e.content, id == volume { volume = nil }
            if !blobs.isEmpty { for h in e.content.blobKeys { blobs.remove(h) } }
            return !blobs.isEmpty || volume != nil
        }
        for h in blobs { try t.delete(.blobs, h) }
        if let id = volume { try deleteVolume(id, t) }
    }

    /// Deletes a volume's header, slab and part records inside `t`.
    func deleteVolume(_ id: UInt64, _ t: any StoreTransaction) throws {
        try t.delete(.volumes, Archive.idKey(id))
        for db in [StoreTable.slabs, .parts] {
            var keys: [[UInt8]] = []
            try t.scan(db, prefix: Archive.idKey(id)) { k, _ in keys.append(k); return true }
            for k in keys { try t.delete(db, k) }
        }
    }

    /// Refuses a file that is not a sound LMDB environment before LMDB maps it: a file that does
    /// not start with LMDB's meta page (which would make LMDB create a lock file beside it), and
    /// one whose meta pages are damaged or which is shorter than its newest meta page says (an
    /// interrupted copy or download: mapping it would fault with SIGBUS on the missing pages).
    /// Layout (lmdb 0.9, 64-bit): two meta pages at offsets 0 and psize; each holds a 16-byte
    /// page header, then magic u32 0xBEEFC0DE (16), version u32 (20), address (24), mapsize (32),
    /// two 48-byte database records (40: the free DB, whose first u32 holds psize; 88: the main
    /// DB, root page at 128), last page u64 (136) and transaction id u64 (144).
    static func checkStructure(_ path: String) throws {
        let fd = try Sys.open(path, O_RDONLY, operation: "open the archive")
        defer { Sys.closeQuietly(fd) }
        let st = try Sys.fstat(fd, path: path)
        let size = UInt64(st.st_size)
        if size == 0 { return }                          // empty: a new archive
        func page(_ offset: UInt64) -> [UInt8]? {
            var b = [UInt8](repeating: 0, count: 152)
            let n = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 152, off_t(offset)) }
            return n == 152 ? b : nil
        }
        func u32(_ b: [UInt8], _ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * $1) } }
        func u64(_ b: [UInt8], _ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * $1) } }
        guard let m0 = page(0), u32(m0, 16) == 0xBEEF_C0DE else { throw VoxError(.badFormat, "\(path) is not a VoxFS archive") }
        let psize = UInt64(u32(m0, 40))
        guard psize >= 512, psize <= 65536, psize & (psize - 1) == 0, u32(m0, 20) == 1 else {
            throw VoxError(.corrupt, "\(path): the archive is damaged (its first LMDB meta page is not valid)")
        }
        guard size >= 2 * psize else {
            throw VoxError(.corrupt, "\(path): the archive is truncated: \(size) bytes, LMDB expects at least \(2 * psize)")
        }
        guard let m1 = page(psize), u32(m1, 16) == 0xBEEF_C0DE, u32(m1, 20) == 1, UInt64(u32(m1, 40)) == psize else {
            throw VoxError(.corrupt, "\(path): the archive is damaged (its second LMDB meta page is not valid)")
        }
        // LMDB uses the meta page with the higher transaction id
        let m = u64(m1, 144) > u64(m0, 144) ? m1 : m0
        let last = u64(m, 136)
        let root = u64(m, 128), freeRoot = u64(m, 80)
        guard last >= 1, last < UInt64(1) << 40 else {
            throw VoxError(.corrupt, "\(path): the archive is damaged (LMDB meta page: last page \(last))")
        }
        let need = (last + 1) * psize
        guard size >= need else {
            throw VoxError(.corrupt, "\(path): the archive is truncated: \(size) bytes, LMDB expects at least \(need)")
        }
        let none = UInt64.max                           // P_INVALID: an empty database
        guard (root == none || (root >= 2 && root <= last)), (freeRoot == none || (freeRoot >= 2 && freeRoot <= last)) else {
            throw VoxError(.corrupt, "\(path): the archive is damaged (LMDB meta page: root page outside the file)")
        }
    }

    /// A read transaction; LMDB's failures on a damaged file (a page it cannot find, a fault
    /// caught by the guard) become "damaged" errors naming the archive.
    func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        do { return try store.read(body) } catch let e as LMDBError {
            throw VoxError(e.code < 0 ? .corrupt : .io, "\(path): \(e.code < 0 ? "the archive is damaged: " : "")\(e)", errno: e.code > 0 ? e.code : nil)
        }
    }

    /// A write transaction whose disk-full failure says so (the transaction is aborted and the
    /// archive keeps everything committed before it).
    func write<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        do {
            return try store.write { t in
                let r = try body(t)
                if schema >= 2 { try t.put(.meta, Archive.transactionKey, Archive.transactionStamp(t)) }
                return r
            }
        } catch let e as LMDBError where e.isDiskFull || ((e.code == EIO || e.code == EDQUOT) && Archive.freeBytes(near: path) < 4 << 20) {
            // LMDB reports a short write on a full disk as EIO: the free space tells them apart
            throw VoxError(.io, "\(path): disk full (no space left on device); the last file was not stored, everything packed before it is intact; free space and run pack again to resume", errno: ENOSPC)
        } catch let e as LMDBError {
            // every other LMDB failure in the one error format too (the transaction was aborted)
            throw VoxError(e.code < 0 ? .corrupt : .io, "\(path): \(e.code < 0 ? "the archive is damaged: " : "")\(e)", errno: e.code > 0 ? e.code : nil)
        }
    }

    public convenience init(path: String, create: Bool) throws {
        var isDir: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDir)
        if !create && !exists { throw VoxError(.io, "\(path): no such archive") }
        if exists && isDir.boolValue { throw VoxError(.badFormat, "\(path) is a folder, not a VoxFS archive") }
        if exists { try Archive.checkStructure(path) }
        let env: LMDBEnvironment
        do { env = try LMDBEnvironment.shared(path: path, readOnly: !create) } catch let e as LMDBError {
            // an errno (no write permission in the folder, no space) is not a format problem
            if e.code > 0 { throw VoxError(.io, "\(path): cannot \(exists ? "open" : "create") the archive: \(e.message)") }
            throw VoxError(e.code == MDB_INVALID ? .badFormat : .io, "\(path) is not a VoxFS archive (\(e.message))")
        }
        let store: LMDBStore
        do { store = try LMDBStore(env) } catch let e as LMDBError { throw VoxError(.badFormat, "\(path) is not a VoxFS archive (\(e.message))") }
        try self.init(store: store, path: path, create: create)
    }

    /// An archive on any record store (`MemoryStore` in tests); `path` names it in messages.
    /// `create`: a new archive's schema record is written when the store has none.
    public init(store: RecordStore, path: String, create: Bool) throws {
        self.store = store
        self.path = path
        let environment = store
        let v: [UInt8]?
        do {
            if create {
                // a store that already has a schema record is left as it is (no empty commit)
                let has = try environment.read { t in try t.get(.meta, Array("schema".utf8)) } != nil
                if !has {
                    try environment.write { t in
                        guard try t.get(.meta, Array("schema".utf8)) == nil else { return } // another creator was first
                        var w = ByteWriter(); w.u32(Archive.createdSchema)
                        try t.put(.meta, Array("schema".utf8), w.bytes)
                        try t.put(.meta, Array("creator".utf8), Array("voxfs 0.1.0".utf8))
                        try t.put(.meta, Archive.transactionKey, Archive.transactionStamp(t))
                    }
                }
            }
            v = try environment.read { t in try t.get(.meta, Array("schema".utf8)) }
        } catch let e as LMDBError {
            throw VoxError(e.code < 0 ? .corrupt : .io, "\(path): cannot \(create ? "create" : "open") the archive: \(e)", errno: e.code > 0 ? e.code : nil)
        }
        guard let v, v.count == 4 else { throw VoxError(.badFormat, "\(path) is not a VoxFS archive (no schema record)") }
        var r = ByteReader(v)
        let ver = try r.u32()
        guard (1...Archive.schemaVersion).contains(ver) else {
            throw VoxError(.badFormat, "\(path) has archive schema \(ver); this voxfs reads schemas 1 to \(Archive.schemaVersion)")
        }
        schemaValue = ver
        try checkSnapshot()
        // schema 2 archives are added to as they are (schema 3 only adds wrapped file parts,
        // and the first one stored turns the archive's schema record to 3)
        if create && ver < 2 {
            throw VoxError(.badFormat, "\(path) has archive schema \(ver) (an older voxfs); it can be read, listed, verified, unpacked and mounted, but not added to: unpack it and pack it again into a new archive")
        }
    }

    /// What a reader should know about how well this archive is protected (nil: fully).
    public var protectionNote: String? {
        schema >= 2 ? nil : "archive schema 1 (an older voxfs): its records carry no seals, so a damaged tree entry may go unnoticed (file contents are still checked by their SHA-256); pack it again into a new archive for full protection"
    }

    // MARK: raw records

    /// The archive's databases, for raw record access.
    public typealias Database = StoreTable
    /// Key of a volume's record in `volumes`, and of its slab or file part `k` in `slabs`/`parts`.
    public static func recordKey(volume id: UInt64, index k: Int? = nil) -> [UInt8] { k.map { slabKey(id, $0) } ?? idKey(id) }

    /// A stored record exactly as it is (seal included), or nil. For repair tools and the
    /// damage tests; readers go through the checked accessors.
    public func rawRecord(_ d: Database, _ key: [UInt8]) throws -> [UInt8]? {
        try read { t in try t.get(d, key) }
    }

    /// Every record of database `d` exactly as stored (seals included), in key order, and the
    /// archive's schema: what `voxfuzz` seeds its record target with. Not a read path.
    public func rawRecords(_ d: Database) throws -> (schema: UInt32, records: [(key: [UInt8], value: [UInt8])]) {
        var out: [(key: [UInt8], value: [UInt8])] = []
        try read { t in try t.scan(d) { k, v in out.append((k, v)); return true } }
        return (schema, out)
    }

    /// Replaces (nil: deletes) a stored record as is, in one transaction, without sealing it or
    /// updating the tree digest: what damage to that one record does (the transaction stamp is
    /// kept up to date, so the archive is otherwise sound). For the damage tests.
    public func setRawRecord(_ d: Database, _ key: [UInt8], _ value: [UInt8]?) throws {
        try write { t in
            if let value { try t.put(d, key, value) } else { _ = try t.delete(d, key) }
        }
    }

    // MARK: seals (schema 2)

    /// The record stored for `value` under `key` in database `db`: the value, then a CRC-32C
    /// of the database's name, a zero byte, the key and the value. A record that was damaged,
    /// cut short, or moved under another key or into another database fails its seal.
    func seal(_ db: String, _ key: [UInt8], _ value: [UInt8]) -> [UInt8] {
        schema >= 2 ? Archive.sealed(db, key, value) : value
    }

    /// Public for the damage tests: a record that is wrong yet sealed, as a different writer
    /// (or a different zlib) would leave it.
    public static func sealed(_ db: String, _ key: [UInt8], _ value: [UInt8]) -> [UInt8] {
        var w = ByteWriter()
        w.raw(value)
        w.u32(sealCRC(db, key, value[...]))
        return w.bytes
    }

    /// CRC-32C(db ‖ 0x00 ‖ key ‖ value), chained piece by piece (no concatenated copy).
    static func sealCRC(_ db: String, _ key: [UInt8], _ value: ArraySlice<UInt8>) -> UInt32 {
        let head = Checksum.crc32c(key, seed: Checksum.crc32c(Array(db.utf8) + [0]))
        return Checksum.crc32c(value, seed: head)
    }

    /// The value of a sealed record (the record itself in a version 1 archive), or nil when
    /// its seal does not match.
    func unseal(_ db: String, _ key: [UInt8], _ record: [UInt8]) -> [UInt8]? {
        guard schema >= 2 else { return record }
        guard record.count >= 4 else { return nil }
        let value = record.dropLast(4)
        var r = ByteReader(Array(record.suffix(4)))
        guard let crc = try? r.u32(), crc == Archive.sealCRC(db, key, value) else { return nil }
        return Array(value)
    }

    /// The tree's digest: the XOR of SHA-256(key, 0, record) over every tree record, and their
    /// count. It changes with any entry added, removed or altered, and is kept up to date in
    /// the transaction that changes the tree, so a reader that scans the tree can tell a
    /// complete, undamaged tree from one that lost or gained a record.
    public struct TreeDigest: Equatable, Sendable {
        public var xor = [UInt8](repeating: 0, count: 32)
        public var count: UInt64 = 0
        mutating func toggle(_ key: [UInt8], _ record: [UInt8], adding: Bool) {
            let h = Checksum.sha256(key + [0] + record)
            for i in 0..<32 { xor[i] ^= h[i] }
            count = adding ? count &+ 1 : count &- 1
        }
        var encoded: [UInt8] { var w = ByteWriter(); w.raw(xor); w.u64(count); return w.bytes }
        init() {}
        init?(_ b: [UInt8]) {
            guard b.count == 40 else { return nil }
            xor = Array(b[0..<32])
            var r = ByteReader(Array(b[32...]))
            guard let c = try? r.u64() else { return nil }
            count = c
        }
    }
    static let digestKey = Array("tree-digest".utf8)
    static let transactionKey = Array("transaction".utf8)

    /// Schema 2: every write transaction records its own LMDB transaction id, so that a reader
    /// can tell LMDB's newest meta page from a damaged old one that claims to be newer (LMDB's
    /// meta pages carry no checksum; it would silently show an older state of the archive).
    static func transactionStamp(_ t: any StoreTransaction) -> [UInt8] {
        var w = ByteWriter(); w.u64(t.id)
        return sealed("meta", transactionKey, w.bytes)
    }

    /// Checks that the snapshot LMDB opened is the one the last transaction committed.
    func checkSnapshot() throws {
        guard schema >= 2 else { return }
        let newest = store.lastTransactionID
        let rec = try read { t in try t.get(.meta, Archive.transactionKey) }
        var stamped: UInt64? = nil
        if let rec, let v = unseal("meta", Archive.transactionKey, rec), v.count == 8 { var r = ByteReader(v); stamped = try r.u64() }
        guard let stamped else { throw VoxError(.corrupt, "\(path): the archive is damaged: its transaction record is missing or damaged") }
        guard stamped == newest else {
            throw VoxError(.corrupt, "\(path): the archive is damaged: LMDB's newest meta page names transaction \(newest), but the last transaction written was \(stamped) (a damaged meta page would show an older state of the archive, so nothing is read from it)")
        }
    }

    /// The digest recorded for the tree (nil in a version 1 archive; an error when damaged).
    func recordedDigest(_ t: any StoreTransaction) throws -> TreeDigest? {
        guard schema >= 2 else { return nil }
        guard let rec = try t.get(.meta, Archive.digestKey) else { return TreeDigest() }
        guard let v = unseal("meta", Archive.digestKey, rec), let d = TreeDigest(v) else {
            throw VoxError(.corrupt, "\(path): the tree digest record is damaged")
        }
        return d
    }

    /// Stores `e` in the tree inside `t`, keeping the tree digest up to date; returns the entry
    /// it replaced (nil when there was none or it was unreadable).
    @discardableResult
    func putTree(_ e: Entry, _ t: any StoreTransaction) throws -> Entry? {
        let key = Archive.treeKey(e.path)
        var value = e.encoded(schema: schema)
        if key.first == 0xFF {
            // a path longer than an LMDB key: schema 4 (the record carries the path)
            raiseSchema(to: 4)
            var sv = ByteWriter(); sv.u32(4)
            try t.put(.meta, Array("schema".utf8), sv.bytes)
            var w = ByteWriter()
            let p = Array(e.path.utf8)
            w.u32(UInt32(p.count)); w.raw(p)
            value = w.bytes + e.encoded(schema: 4)
        }
        let record = seal("tree", key, value)
        var digest = try recordedDigest(t)
        let old = try t.get(.tree, key)
        if let old { digest?.toggle(key, old, adding: false) }
        digest?.toggle(key, record, adding: true)
        try t.put(.tree, key, record)
        if let digest { try t.put(.meta, Archive.digestKey, seal("meta", Archive.digestKey, digest.encoded)) }
        return old.flatMap { try? decodeEntry(key, $0) }
    }

    /// A tree record as an entry; throws when its seal or its fields are damaged.
    func decodeEntry(_ key: [UInt8], _ record: [UInt8]) throws -> Entry {
        if key.first == 0xFF && schema >= 4 {
            // a long path's record: u32 length, the path, then the entry
            let name = "archive entry with key \(Checksum.hex(Array(key.dropFirst())).prefix(16))..."
            guard key.count == 33, let v = unseal("tree", key, record) else { throw VoxError(.corrupt, "\(name) is damaged (its seal does not match)") }
            var r = ByteReader(v, what: name)
            let n = Int(try r.u32())
            guard n > Archive.maxKeyPath, n <= 1 << 16 else { throw VoxError(.corrupt, "\(name): impossible path length \(n)") }
            let p = try r.raw(n)
            guard Checksum.sha256(p) == Array(key.dropFirst()) else { throw VoxError(.corrupt, "\(name): its path does not match its key") }
            return try Entry.decode(path: String(decoding: p, as: UTF8.self), Array(v[(4 + n)...]), schema: schema)
        }
        let path = String(decoding: key, as: UTF8.self)
        guard let v = unseal("tree", key, record) else { throw VoxError(.corrupt, "archive entry \(path) is damaged (its seal does not match)") }
        return try Entry.decode(path: path, v, schema: schema)
    }

    /// Paths up to this many bytes are their own tree key (LMDB keys are at most 511 bytes).
    static let maxKeyPath = 511

    /// A path's key in `tree`: its UTF-8, or for a longer path (schema 4) 0xFF (never the first
    /// byte of UTF-8) then the path's SHA-256.
    static func treeKey(_ path: String) -> [UInt8] {
        let b = Array(path.utf8)
        return b.count <= maxKeyPath ? b : [0xFF] + Checksum.sha256(b)
    }

    // MARK: entries

    /// special (v4): a FIFO, socket or device node (its type and device number are its content).
    public enum Kind: UInt8, Sendable { case directory = 1, file = 2, symlink = 3, special = 4 }
    public enum Content: Sendable, Equatable {
        case none
        case blob(sha256: [UInt8])                       // opaque file, content-addressed
        case volume(id: UInt64, part: UInt32)            // volume-backed file
        /// v4: a file written through a read-write mount, stored as is: 2^shift-byte chunks
        /// (the last one shorter), each a content-addressed record in `blobs`.
        case chunks(shift: UInt8, hashes: [[UInt8]])
        /// v4, a special file: S_IFIFO, S_IFSOCK, S_IFCHR or S_IFBLK, and the device number.
        case special(type: UInt32, rdev: UInt64)

        /// The `blobs` records this content refers to (with repeats).
        public var blobKeys: [[UInt8]] {
            switch self { case .blob(let h): [h]; case .chunks(_, let hs): hs; default: [] }
        }
    }

    /// v4: access and change times (without them both read as the modification time).
    public struct Times: Sendable, Equatable {
        public var atimeSec: Int64, atimeNsec: Int32
        public var ctimeSec: Int64, ctimeNsec: Int32
        public init(atimeSec: Int64, atimeNsec: Int32, ctimeSec: Int64, ctimeNsec: Int32) {
            self.atimeSec = atimeSec; self.atimeNsec = atimeNsec; self.ctimeSec = ctimeSec; self.ctimeNsec = ctimeNsec
        }
    }

    public struct Entry: Sendable, Equatable {
        public var path: String
        public var kind: Kind
        public var mode: UInt32, uid: UInt32, gid: UInt32
        public var mtimeSec: Int64, mtimeNsec: Int32
        public var size: UInt64
        public var linkTarget: String
        public var content: Content
        /// Schema 2, volume-backed files: the SHA-256 of the file, which its part record must
        /// name too (this ties the entry to its own part: a damaged part index cannot make it
        /// read another file's bytes). Nil otherwise.
        public var fileSHA256: [UInt8]?
        /// v4: access and change times; nil: both equal the modification time.
        public var times: Times?

        public init(path: String, kind: Kind, mode: UInt32, uid: UInt32, gid: UInt32, mtimeSec: Int64, mtimeNsec: Int32,
                    size: UInt64, linkTarget: String, content: Content) {
            self.path = path; self.kind = kind; self.mode = mode; self.uid = uid; self.gid = gid
            self.mtimeSec = mtimeSec; self.mtimeNsec = mtimeNsec; self.size = size; self.linkTarget = linkTarget; self.content = content
        }

        func encoded(schema: UInt32) -> [UInt8] {
            var w = ByteWriter()
            w.u8(kind.rawValue); w.u32(mode); w.u32(uid); w.u32(gid)
            w.u64(UInt64(bitPattern: mtimeSec)); w.i32(mtimeNsec); w.u64(size)
            let t = Array(linkTarget.utf8); w.u32(UInt32(t.count)); w.raw(t)
            switch content {
            case .none: w.u8(0)
            case .blob(let h): w.u8(1); w.raw(h)
            case .volume(let id, let part):
                w.u8(2); w.u64(id); w.u32(part)
                if schema >= 2 { precondition(fileSHA256?.count == 32, "a volume entry needs its file's SHA-256"); w.raw(fileSHA256!) }
            case .chunks(let shift, let hs):
                precondition(schema >= 4, "a chunked file needs schema 4")
                w.u8(3); w.u8(shift); w.u32(UInt32(hs.count))
                for h in hs { w.raw(h) }
            case .special(let type, let rdev):
                precondition(schema >= 4, "a special file needs schema 4")
                w.u8(4); w.u32(type); w.u64(rdev)
            }
            if let t = times {
                precondition(schema >= 4, "access and change times need schema 4")
                w.u8(1)
                w.u64(UInt64(bitPattern: t.atimeSec)); w.i32(t.atimeNsec)
                w.u64(UInt64(bitPattern: t.ctimeSec)); w.i32(t.ctimeNsec)
            }
            return w.bytes
        }

        static func decode(path: String, _ b: [UInt8], schema: UInt32) throws -> Entry {
            var r = ByteReader(b, what: "archive entry \(path)")
            guard let k = Kind(rawValue: try r.u8()), k != .special || schema >= 4 else { throw VoxError(.corrupt, "archive entry \(path): unknown kind") }
            let mode = try r.u32(), uid = try r.u32(), gid = try r.u32()
            let ms = Int64(bitPattern: try r.u64()), mn = try r.i32(), size = try r.u64()
            let tl = Int(try r.u32())
            guard tl <= 4096 else { throw VoxError(.corrupt, "archive entry \(path): symlink target of \(tl) bytes") }
            let target = String(decoding: try r.raw(tl), as: UTF8.self)
            let c: Content
            var sha: [UInt8]? = nil
            switch try r.u8() {
            case 0: c = .none
            case 1: c = .blob(sha256: try r.raw(32))
            case 2:
                c = .volume(id: try r.u64(), part: try r.u32())
                if schema >= 2 { sha = try r.raw(32) }
            case 3 where schema >= 4:
                let shift = try r.u8(), n = Int(try r.u32())
                guard (12...26).contains(shift), k == .file, UInt64(n) == (size + (UInt64(1) << shift) - 1) >> shift, n <= r.remaining / 32 else {
                    throw VoxError(.corrupt, "archive entry \(path): its chunk list does not match its size")
                }
                c = .chunks(shift: shift, hashes: try (0..<n).map { _ in try r.raw(32) })
            case 4 where schema >= 4:
                let type = try r.u32(), rdev = try r.u64()
                guard [S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK].map({ UInt32($0) }).contains(type) else {
                    throw VoxError(.corrupt, "archive entry \(path): unknown special file type")
                }
                c = .special(type: type, rdev: rdev)
            default: throw VoxError(.corrupt, "archive entry \(path): unknown content kind")
            }
            var times: Times? = nil
            if schema >= 4 && r.remaining > 0 {
                guard try r.u8() == 1 else { throw VoxError(.corrupt, "archive entry \(path): unknown extension") }
                let asec = Int64(bitPattern: try r.u64()), ans = try r.i32()
                let csec = Int64(bitPattern: try r.u64()), cns = try r.i32()
                guard ans >= 0, ans < 1_000_000_000, cns >= 0, cns < 1_000_000_000 else {
                    throw VoxError(.corrupt, "archive entry \(path): impossible access or change time")
                }
                times = Times(atimeSec: asec, atimeNsec: ans, ctimeSec: csec, ctimeNsec: cns)
            }
            guard r.remaining == 0 else { throw VoxError(.corrupt, "archive entry \(path): \(r.remaining) stray bytes") }
            // what each kind may hold: a file has content, a folder or symlink none; a symlink a target
            let agree: Bool = switch (k, c) {
            case (.file, .blob), (.file, .volume), (.file, .chunks), (.directory, .none), (.symlink, .none), (.special, .special): true
            default: false
            }
            guard agree else { throw VoxError(.corrupt, "archive entry \(path): its kind and content disagree") }
            guard (k == .symlink) == !target.isEmpty else {
                throw VoxError(.corrupt, "archive entry \(path): a link target on a non-link, or a link without one")
            }
            guard mode <= 0o7777, mn >= 0, mn < 1_000_000_000, k == .file || size == 0 else {
                throw VoxError(.corrupt, "archive entry \(path): impossible mode, time or size")
            }
            var e = Entry(path: path, kind: k, mode: mode, uid: uid, gid: gid, mtimeSec: ms, mtimeNsec: mn, size: size, linkTarget: target, content: c)
            e.fileSHA256 = sha
            e.times = times
            return e
        }
    }

    /// The tree as read: every sound entry in path order, the records that are damaged (each
    /// named by its key, and left out of `entries`), and whether the tree is whole (its digest
    /// matches; nil for a version 1 archive, which has none).
    public struct TreeScan: Sendable {
        public var entries: [Entry] = []
        public var damaged: [Problem] = []
        public var digestMatches: Bool?
        /// Every problem found: the damaged records, and a tree that lost or gained records.
        public var problems: [Problem] {
            damaged + (digestMatches == false
                ? [Problem(path: "tree", message: "the tree's digest does not match its records: an entry is missing or was added (the archive is damaged)")] : [])
        }
    }

    /// Reads the whole tree, keeping what is sound: damage costs only the entries it touches.
    /// `digest`: also check the tree digest (a SHA-256 per record; `entries()` skips it).
    public func scanTree(digest checkDigest: Bool = true) throws -> TreeScan {
        var out = TreeScan()
        try read { t in
            var digest = TreeDigest()
            try t.scan(.tree) { k, v in
                if checkDigest { digest.toggle(k, v, adding: true) }
                do { out.entries.append(try decodeEntry(k, v)) } catch let e as VoxError {
                    out.damaged.append(Problem(path: String(decoding: k, as: UTF8.self), message: e.message))
                }
                return true
            }
            if schema >= 2 && checkDigest {
                do { out.digestMatches = try recordedDigest(t) == digest } catch { out.digestMatches = false }
            }
        }
        return out
    }

    /// Every sound entry, in path order (damaged records are left out: see `scanTree`).
    public func entries() throws -> [Entry] { try scanTree(digest: false).entries }

    public func entry(_ path: String) throws -> Entry? {
        let key = Archive.treeKey(path)
        return try read { t in try t.get(.tree, key).map { try decodeEntry(key, $0) } }
    }

    // MARK: writing (each call is one transaction)

    public func putEntry(_ e: Entry) throws {
        try write { t in _ = try putTree(e, t) }
    }

    /// An opaque file's SHA-256 and blob record, computed away from the writer (pack prepares
    /// a folder's opaque files on all cores, then commits them one by one).
    public struct PreparedBlob: Sendable {
        public let sha256: [UInt8]
        public let record: [UInt8]
        public init(_ bytes: [UInt8]) { sha256 = Checksum.sha256(bytes); record = Archive.packBlob(bytes) }
    }

    /// Stores an opaque file (content-addressed: identical files are stored once) and its
    /// entry; returns the bytes this added to the archive (0 for a file already stored).
    @discardableResult
    public func putOpaque(_ e: Entry, prepared b: PreparedBlob) throws -> Int {
        var entry = e
        entry.content = .blob(sha256: b.sha256)
        return try write { t in
            var added = 0
            if try t.get(.blobs, b.sha256) == nil {
                try t.put(.blobs, b.sha256, b.record); added = b.record.count
            }
            if let old = try putTree(entry, t), old.content != entry.content { try releaseIfUnused(old, t) }
            return added
        }
    }

    /// Blob record: u8 method (0 stored, 1 zstd level 19) then the data.
    static func packBlob(_ b: [UInt8], level: Int32 = 19) -> [UInt8] {
        if b.count >= 64 {
            let cap = ZSTD_compressBound(b.count)
            var out = [UInt8](repeating: 0, count: cap + 1)
            out[0] = 1
            let n = out.withUnsafeMutableBytes { o in b.withUnsafeBytes { i in ZSTD_compress(o.baseAddress! + 1, cap, i.baseAddress, i.count, level) } }
            if ZSTD_isError(n) == 0 && n + 1 < b.count { return Array(out.prefix(n + 1)) }
        }
        return [0] + b
    }

    static func unpackBlob(_ r: [UInt8], size: UInt64, path: String) throws -> [UInt8] {
        guard let m = r.first else { throw VoxError(.corrupt, "\(path): empty blob record") }
        if m == 0 { return Array(r.dropFirst()) }
        guard m == 1, size <= 1 << 40 else { throw VoxError(.corrupt, "\(path): unknown blob method") }
        var out = [UInt8](repeating: 0, count: Int(size))
        let n = out.withUnsafeMutableBytes { o in r.withUnsafeBytes { i in ZSTD_decompress(o.baseAddress, o.count, i.baseAddress! + 1, i.count - 1) } }
        guard ZSTD_isError(n) == 0, n == Int(size) else { throw VoxError(.corrupt, "\(path): stored content damaged (zstd)") }
        return out
    }

    static func slabKey(_ id: UInt64, _ i: Int) -> [UInt8] {
        var w = ByteWriter(); for s in stride(from: 56, through: 0, by: -8) { w.u8(UInt8((id >> UInt64(s)) & 0xFF)) }
        w.u8(UInt8((i >> 24) & 0xFF)); w.u8(UInt8((i >> 16) & 0xFF)); w.u8(UInt8((i >> 8) & 0xFF)); w.u8(UInt8(i & 0xFF))
        return w.bytes
    }
    static func idKey(_ id: UInt64) -> [UInt8] { Array(slabKey(id, 0).prefix(8)) }

    /// A volume-backed file as pack stores it: its entry, its part of the volume, the SHA-256
    /// of the original file, and the file's bytes from the end of its header to its first 4 KiB
    /// page boundary (see `prefixLength`).
    public struct PackedFile: Sendable {
        public var entry: Entry
        public var part: VolumeFilePart
        public var sha256: [UInt8]
        public var prefix: [UInt8]
        public init(entry: Entry, part: VolumeFilePart, original: [UInt8]) {
            self.entry = entry; self.part = part
            sha256 = Checksum.sha256(original)
            // a wrapped file is served whole (recompressed), never page by page: no prefix
            if part.wrapper != nil {
                // served whole or chunk by chunk as it is recompressed, never page by page
                self.part.wrapper!.setChunks(of: original)
                prefix = []
                return
            }
            let n = Archive.prefixLength(headerBytes: part.header.count, voxelBytes: original.count - part.header.count - part.trailer.count)
            prefix = Array(original[part.header.count..<(part.header.count + n)])
        }
    }

    /// Voxel bytes kept beside a file's header: up to the file's first 4 KiB boundary. The
    /// kernel reads whole pages, so a header-only read (pydicom's stop_before_pixels, dcmdump)
    /// asks for them too; with them at hand it decodes no slab.
    public static func prefixLength(headerBytes: Int, voxelBytes: Int) -> Int {
        guard headerBytes > 0 else { return 0 }
        return min(max(0, voxelBytes), (4096 - headerBytes % 4096) % 4096)
    }

    static func encodePart(_ f: PackedFile) -> [UInt8] {
        let p = f.part
        precondition(f.sha256.count == 32)
        var w = ByteWriter()
        // flags: bit 0 big-endian voxels, bit 1 a wrapped (recompressed) file (schema 3)
        w.u32(UInt32(p.firstSlice)); w.u32(UInt32(p.slices)); w.u8((p.bigEndian ? 1 : 0) | (p.wrapper != nil ? 2 : 0))
        w.u32(UInt32(p.header.count)); w.u32(UInt32(p.trailer.count)); w.u32(UInt32(f.prefix.count))
        w.raw(f.sha256)
        var bytes = p.header + p.trailer + f.prefix
        if let z = p.wrapper {
            bytes += z.outerHeader + z.outerTrailer
            var c = ByteWriter()
            for v in z.chunkCRCs { c.u32(v) }
            bytes += c.bytes
        }
        w.u32(Checksum.crc32c(bytes))
        if let z = p.wrapper {
            w.u8(UInt8(z.level)); w.u8(UInt8(z.memLevel)); w.u8(UInt8(z.windowBits)); w.u8(UInt8(z.strategy))
            w.u32(UInt32(z.outerHeader.count)); w.u32(UInt32(z.outerTrailer.count))
            w.u8(UInt8(z.chunkShift)); w.u32(UInt32(z.chunkCRCs.count)); w.u32(UInt32(z.blockSize)); w.u8(UInt8(z.engine)); w.u32(UInt32(z.streamPrefix))
        }
        w.raw(packBlob(bytes))
        return w.bytes
    }

    /// Stores a coded volume (its stream split into header and slab records), the model it
    /// needs, each file's part record and entry, in one transaction. Returns the volume's id
    /// and the bytes of its records (stream and parts).
    @discardableResult
    public func putVolume(stream: [UInt8], model: LSTMModel?, files: [PackedFile]) throws -> (id: UInt64, storedBytes: Int) {
        let h = try StreamHeader(parsing: stream, fileSize: stream.count)
        let partRecords = files.map(Archive.encodePart)      // zstd: outside the transaction, once
        return try write { t in
            var id: UInt64 = 1
            let nextKey = Array("next-volume".utf8)
            if let n = try t.get(.meta, nextKey) {
                guard let v = unseal("meta", nextKey, n), v.count == 8 else { throw VoxError(.corrupt, "\(path): the next-volume record is damaged") }
                var r = ByteReader(v); id = try r.u64()
                // a damaged counter must never hand out the id of a stored volume
                guard id >= 1, id < UInt64(1) << 62, try t.get(.volumes, Archive.idKey(id)) == nil else {
                    throw VoxError(.corrupt, "\(path): the next-volume record names volume \(id), which is not free")
                }
            }
            var w = ByteWriter(); w.u64(id + 1)
            try t.put(.meta, nextKey, seal("meta", nextKey, w.bytes))
            if files.contains(where: { $0.part.wrapper != nil }), schema < 3 {
                // wrapped parts are schema 3: an older voxfs must refuse the archive, not misread
                // it (a schema 4 archive stays 4: writing 3 would make its v4 entries unreadable)
                raiseSchema(to: 3)
                var sv = ByteWriter(); sv.u32(3)
                try t.put(.meta, Array("schema".utf8), sv.bytes)
            }
            try t.put(.volumes, Archive.idKey(id), seal("volumes", Archive.idKey(id), Array(stream[0..<h.headerLength])))
            for (i, s) in h.slabs.enumerated() {
                try t.put(.slabs, Archive.slabKey(id, i), Array(stream[Int(s.offset)..<(Int(s.offset) + Int(s.length))]))
            }
            if let m = model, h.embeddedModel == nil, try t.get(.models, m.hash) == nil { try t.put(.models, m.hash, m.serialized()) }
            var replaced: [Entry] = []
            for (k, f) in files.enumerated() {
                let key = Archive.slabKey(id, k)
                try t.put(.parts, key, seal("parts", key, partRecords[k]))
                var entry = f.entry
                entry.content = .volume(id: id, part: UInt32(k))
                entry.fileSHA256 = f.sha256
                if let o = try putTree(entry, t) { replaced.append(o) }
            }
            for o in replaced { try releaseIfUnused(o, t) }
            return (id, stream.count + partRecords.reduce(0) { $0 + $1.count })
        }
    }

    // MARK: reading

    /// The stored .vxz header of a volume.
    public func volumeHeader(_ id: UInt64) throws -> StreamHeader {
        guard let rec = try read({ t in try t.get(.volumes, Archive.idKey(id)) }) else { throw VoxError(.corrupt, "volume \(id) is missing") }
        return try parseVolumeHeader(id, rec)
    }

    func parseVolumeHeader(_ id: UInt64, _ rec: [UInt8]) throws -> StreamHeader {
        guard let head = unseal("volumes", Archive.idKey(id), rec) else { throw VoxError(.corrupt, "volume \(id): its header record is damaged (seal mismatch)") }
        do { return try StreamHeader(parsing: head, name: "volume \(id)") } catch let e as VoxError { throw VoxError(.corrupt, e.message) }
    }

    /// A decoder for a stored volume that reads each slab's record when it decodes that slab
    /// (the volume is never reassembled in memory; a slab is read without touching others).
    public func decoder(volume id: UInt64) throws -> VXZ.Decoder {
        let h = try volumeHeader(id)
        var extra: [LSTMModel] = []
        if h.usesLSTM, h.embeddedModel == nil, let mb = try read({ t in try t.get(.models, h.modelHash) }) {
            let m: LSTMModel
            do { m = try LSTMModel(bytes: mb, name: "volume \(id): its model") } catch let e as VoxError { throw VoxError(.corrupt, e.message) }
            guard m.hash == h.modelHash else { throw VoxError(.corrupt, "volume \(id): its stored model is damaged (its hash differs from its key)") }
            extra.append(m)
        }

        return try VXZ.Decoder(header: h, name: "volume \(id)", extraModels: extra) { [self] i in
            guard let s = try read({ t in try t.get(.slabs, Archive.slabKey(id, i), once: true) }) else {
                throw VoxError(.corrupt, "volume \(id): slab \(i) is missing")
            }
            return s
        }
    }

    /// A volume-backed file's part: where its voxels are in the volume, its own non-voxel
    /// bytes, the SHA-256 of the original file, and its page prefix.
    public struct StoredPart: Sendable {
        public var part: VolumeFilePart
        public var sha256: [UInt8]
        /// The file's voxel bytes from the end of its header to its first 4 KiB boundary.
        public var prefix: [UInt8]
    }

    /// A file's part record. `entry` (schema 2): the entry that refers to it, whose file
    /// SHA-256 the part must name, else the part is another file's and this is an error.
    public func part(volume id: UInt64, part k: UInt32, for entry: Entry? = nil) throws -> StoredPart {
        let key = Archive.slabKey(id, Int(k))
        let sp: StoredPart = try read { t in
            guard let rec = try t.get(.parts, key) else { throw VoxError(.corrupt, "volume \(id): file part \(k) is missing") }
            guard let b = unseal("parts", key, rec) else { throw VoxError(.corrupt, "volume \(id) file part \(k) is damaged (seal mismatch)") }
            return try Archive.decodePart(b, volume: id, part: k, schema: schema, for: entry)
        }
        if let entry, schema >= 2, entry.fileSHA256 != sp.sha256 {
            throw VoxError(.corrupt, "\(entry.path): its part record (volume \(id) part \(k)) belongs to another file")
        }
        return sp
    }

    /// A part record's fields (after its seal has matched), every length and count bounded.
    static func decodePart(_ b: [UInt8], volume id: UInt64, part k: UInt32, schema: UInt32, for entry: Entry?) throws -> StoredPart {
        var r = ByteReader(b, what: "volume \(id) file part \(k)")
        let first = Int(try r.u32()), n = Int(try r.u32()), flags = try r.u8()
        guard flags & ~3 == 0 else { throw VoxError(.corrupt, "volume \(id) file part \(k) is damaged (unknown flags)") }
        let hl = Int(try r.u32()), tl = Int(try r.u32()), pl = Int(try r.u32())
        let sha = try r.raw(32)
        let crc = try r.u32()
        var wrapper: DeflateWrapper? = nil, ohl = 0, otl = 0, nch = 0
        if flags & 2 != 0 {
            let lv = Int(try r.u8()), ml = Int(try r.u8()), wb = Int(try r.u8()), st = Int(try r.u8())
            ohl = Int(try r.u32()); otl = Int(try r.u32())
            let cs = Int(try r.u8())
            nch = Int(try r.u32())
            let bsz = Int(try r.u32()), eng = Int(try r.u8()), spx = Int(try r.u32())
            wrapper = DeflateWrapper(outerHeader: [], outerTrailer: [], level: lv, memLevel: ml, windowBits: wb, strategy: st)
            wrapper!.chunkShift = cs
            wrapper!.blockSize = bsz
            wrapper!.engine = eng
            wrapper!.streamPrefix = spx
            guard wrapper!.isValid, ohl <= 1 << 30, otl <= 1 << 30, nch <= 1 << 22 else { throw VoxError(.corrupt, "volume \(id) file part \(k) is damaged (bad recompression parameters)") }
            guard schema >= 2 else { throw VoxError(.corrupt, "volume \(id) file part \(k) is damaged (a wrapped part in a schema 1 archive)") }
            if let entry {
                // a wrapped file is rebuilt in memory: its size is bounded (content at most 1 GiB)
                guard entry.size <= UInt64(1) << 31 else { throw VoxError(.corrupt, "\(entry.path): a compressed file of \(entry.size) bytes is larger than any voxfs packs") }
                if (Int(entry.size) + (1 << cs) - 1) >> cs != nch { throw VoxError(.corrupt, "\(entry.path): its part record's chunk checksums do not cover its size") }
            }
        }
        let total = hl + tl + pl + ohl + otl + 4 * nch
        guard hl <= 1 << 30, tl <= 1 << 30, total <= 1 << 30, pl <= 4096 else { throw VoxError(.corrupt, "volume \(id) file part \(k) is damaged") }
        let bytes = try Archive.unpackBlob(try r.raw(r.remaining), size: UInt64(total), path: "volume \(id) file part \(k)")
        guard bytes.count == total, Checksum.crc32c(bytes) == crc else { throw VoxError(.corrupt, "volume \(id) file part \(k) is damaged") }
        let o = hl + tl + pl
        wrapper?.outerHeader = Array(bytes[o..<(o + ohl)])
        wrapper?.outerTrailer = Array(bytes[(o + ohl)..<(o + ohl + otl)])
        if nch > 0 {
            var cr = ByteReader(Array(bytes[(o + ohl + otl)...]))
            wrapper?.chunkCRCs = try (0..<nch).map { _ in try cr.u32() }
        }
        return StoredPart(part: VolumeFilePart(path: "", header: Array(bytes[0..<hl]), trailer: Array(bytes[hl..<(hl + tl)]), firstSlice: first, slices: n,
                                               bigEndian: flags & 1 != 0, wrapper: wrapper),
                          sha256: sha, prefix: Array(bytes[(hl + tl)..<o]))
    }

    /// Fuzzing and tests: decodes one record's value (after its seal) as the read paths do,
    /// throwing a clear error for anything damaged. `db`: "tree" (an entry), "parts" (a file's
    /// part record), "volumes" (a volume header) or "blob" (an opaque file's stored bytes).
    public static func decodeRecord(db: String, _ value: [UInt8], schema: UInt32 = Archive.schemaVersion) throws {
        switch db {
        case "tree": _ = try Entry.decode(path: "fuzz", value, schema: schema)
        case "parts": _ = try decodePart(value, volume: 1, part: 0, schema: schema, for: nil)
        case "volumes": _ = try StreamHeader(parsing: value, name: "volume 1")
        case "blob": _ = try unpackBlob(value, size: UInt64(min(value.count * 64, 1 << 24)), path: "fuzz")
        default: throw VoxError(.invalidArgument, "unknown record kind \(db)")
        }
    }

    /// The decoded slabs of one volume (or why each damaged one failed), with its header:
    /// the files of a volume are rebuilt from the slabs their slices lie in, so one damaged slab
    /// costs only the files on it.
    public struct DecodedVolume: @unchecked Sendable {
        public let header: StreamHeader
        let decoder: VXZ.Decoder
        var slabs: [Int: Result<[UInt8], VoxError>] = [:]
    }

    /// Decodes slabs of a volume into `cache` (all when `only` is nil) on `threads` cores;
    /// a damaged slab is recorded, not thrown. The cache keeps one volume.
    public func decode(volume id: UInt64, slabs only: [Int]? = nil, into cache: inout [UInt64: DecodedVolume],
                       threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws {
        if cache[id] == nil { cache = [id: DecodedVolume(header: try volumeHeader(id), decoder: try decoder(volume: id))] }
        var vol = cache[id]!
        let want = (only ?? Array(0..<vol.header.slabs.count)).filter { $0 >= 0 && $0 < vol.header.slabs.count && vol.slabs[$0] == nil }
        let d = vol.decoder
        // fewer slabs than cores (a short volume, or one slab asked for): the rest of the
        // cores decode each slab's slices as a wavefront (format v2)
        let perSlab = VXZ.Decoder.sliceThreads(cores: threads, slabs: want.count)
        let decoded = parallelMap(want.count, threads: threads) { j -> Result<[UInt8], VoxError> in
            do { return .success(try d.decodeSlab(want[j], threads: perSlab)) } catch let e as VoxError { return .failure(e) } catch {
                return .failure(VoxError(.io, "volume \(id): slab \(want[j]): \(error)"))
            }
        }
        for (i, r) in zip(want, decoded) { vol.slabs[i] = r }
        cache[id] = vol
    }

    /// The original bytes of a file entry. `cache` keeps the decoded slabs of the last volume,
    /// so that the files of one volume (visited together) decode each slab once. A file whose
    /// slab is damaged is an error naming the file and the slab.
    public func contents(_ e: Entry, decoded cache: inout [UInt64: DecodedVolume]) throws -> [UInt8] {
        switch e.content {
        case .none: return []
        case .blob(let h):
            guard let r = try read({ t in try t.get(.blobs, h) }) else { throw VoxError(.corrupt, "\(e.path): blob missing") }
            let b = try Archive.unpackBlob(r, size: e.size, path: e.path)
            guard UInt64(b.count) == e.size else { throw VoxError(.corrupt, "\(e.path): stored content has \(b.count) bytes, the entry says \(e.size)") }
            guard Checksum.sha256(b) == h else { throw VoxError(.corrupt, "\(e.path): blob is damaged") }
            return b
        case .volume(let id, let k):
            let sp = try part(volume: id, part: k, for: e)
            let p = sp.part
            let h = try cache[id]?.header ?? volumeHeader(id)
            let L = try FileLayout(sp, header: h, path: e.path)
            if let need = L.slabs(0, L.size, prefix: false) { try decode(volume: id, slabs: Array(need), into: &cache) }
            // the content from the decoded voxels (not the stored prefix, which it must equal)
            let inner = try L.bytes(0, L.size, prefix: false, slab: { s, _, use in
                switch cache[id]!.slabs[s]! {
                case .failure(let err): throw VoxError(err.kind, "\(e.path): \(err.message)")
                case .success(let b): try b.withUnsafeBytes(use)
                }
            }, path: e.path)
            guard inner[L.pixStart..<L.preEnd].elementsEqual(sp.prefix) else {
                throw VoxError(.corrupt, "\(e.path): its stored page prefix differs from its decoded voxels")
            }
            let out: [UInt8]
            if let z = p.wrapper {
                do { out = try z.wrap(inner) } catch let err as VoxError { throw VoxError(err.kind, "\(e.path): \(err.message)") }
            } else { out = inner }
            guard UInt64(out.count) == e.size else { throw VoxError(.corrupt, "\(e.path): rebuilt size differs from the recorded size") }
            if Checksum.sha256(out) != sp.sha256 { throw VoxError(.corrupt, "\(e.path): rebuilt file differs from the original (SHA-256 mismatch)") }
            return out
        case .special: return []
        case .chunks(let shift, let hs):
            var out: [UInt8] = []
            out.reserveCapacity(Int(e.size))
            for (i, h) in hs.enumerated() {
                out += try chunk(h, size: Archive.chunkLength(i, shift: shift, size: e.size), path: e.path)
            }
            return out
        }
    }

    /// Bytes in chunk i of a chunked file of `size` bytes.
    public static func chunkLength(_ i: Int, shift: UInt8, size: UInt64) -> Int {
        Int(min(UInt64(1) << shift, size - (UInt64(i) << shift)))
    }

    /// One chunk of a chunked file, checked against its SHA-256 (its key).
    public func chunk(_ h: [UInt8], size: Int, path: String) throws -> [UInt8] {
        guard let r = try read({ t in try t.get(.blobs, h) }) else { throw VoxError(.corrupt, "\(path): a chunk of its content is missing") }
        let b = try Archive.unpackBlob(r, size: UInt64(size), path: path)
        guard b.count == size, Checksum.sha256(b) == h else { throw VoxError(.corrupt, "\(path): a chunk of its content is damaged (SHA-256 mismatch)") }
        return b
    }

    /// The stored bytes of one slab (read without touching any other record).
    public func slabRecord(volume id: UInt64, index i: Int) throws -> [UInt8]? {
        try read { t in try t.get(.slabs, Archive.slabKey(id, i)) }
    }

    // MARK: verify and stats

    public struct VolumeInfo: Sendable {
        public var id: UInt64
        public var header: StreamHeader
        public var storedBytes: Int
    }

    /// Every volume's header and stored size (header plus slab records), and the header
    /// records that are damaged (left out: they cost only their own volume's files).
    public func scanVolumes() throws -> (infos: [VolumeInfo], damaged: [Problem]) {
        var out: [VolumeInfo] = [], damaged: [Problem] = []
        try read { t in
            try t.scan(.volumes) { k, v in
                var id: UInt64 = 0
                for b in k { id = id << 8 | UInt64(b) }
                do {
                    guard k.count == 8 else { throw VoxError(.corrupt, "a volume record has a key of \(k.count) bytes") }
                    let h = try parseVolumeHeader(id, v)
                    out.append(VolumeInfo(id: id, header: h, storedBytes: v.count + h.slabs.reduce(0) { $0 + Int($1.length) }))
                } catch let e as VoxError { damaged.append(Problem(path: "volume \(id)", message: e.message)) }
                return true
            }
        }
        return (out, damaged)
    }

    /// Every sound volume's header and stored size (see `scanVolumes`).
    public func volumeInfos() throws -> [VolumeInfo] { try scanVolumes().infos }

    /// `volumeInfos()` by volume id.
    public func volumeInfosByID() throws -> [UInt64: VolumeInfo] {
        Dictionary(uniqueKeysWithValues: try volumeInfos().map { ($0.id, $0) })
    }

    /// Bytes the archive spends on one file: its blob record (shared by identical files), or
    /// its share of its volume's slab records (in proportion to its slices) plus the record
    /// that holds its own non-pixel bytes.
    public func storedSize(_ e: Entry, volumes: [UInt64: VolumeInfo]) throws -> Int {
        switch e.content {
        case .none, .special: return 0
        case .blob(let h): return try read { t in try t.size(.blobs, h) ?? 0 }
        case .chunks(_, let hs): return try read { t in try Set(hs).reduce(0) { $0 + (try t.size(.blobs, $1) ?? 0) } }
        case .volume(let id, let k):
            guard let v = volumes[id] else { return 0 }
            let rec = try read { t in try t.get(.parts, Archive.slabKey(id, Int(k))) }
            guard let rec, rec.count >= 8 else { return 0 }   // first slice, then slices
            var r = ByteReader(rec)
            _ = try r.u32()
            let slices = Int(try r.u32())
            return rec.count + Int((Double(v.storedBytes) * Double(slices) / Double(max(1, v.header.shape.z))).rounded())
        }
    }

    /// Bytes the archive spends on its files' contents: every volume's header and slab records,
    /// every file's part record, every blob once.
    public func storedBytes(_ files: [Entry], volumes: [UInt64: VolumeInfo]) throws -> UInt64 {
        var total = UInt64(volumes.values.reduce(0) { $0 + $1.storedBytes })
        var seen = Set<[UInt8]>()
        try read { t in
            for e in files {
                switch e.content {
                case .none, .special: break
                case .blob, .chunks:
                    for h in e.content.blobKeys where seen.insert(h).inserted { total += UInt64(try t.size(.blobs, h) ?? 0) }
                case .volume(let id, let k): total += UInt64(try t.size(.parts, Archive.slabKey(id, Int(k))) ?? 0)
                }
            }
        }
        return total
    }

    public struct Problem: Sendable, CustomStringConvertible {
        public var path: String
        public var message: String
        public var description: String { "\(path): \(message)" }
        public init(path: String, message: String) { self.path = path; self.message = message }
    }

    /// Checks the archive. Quick: every record parses and every referenced record exists.
    /// Full: also decodes every slab (its CRC), rebuilds every volume-backed file (its size)
    /// and hashes every blob.
    public func verify(quick: Bool, threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws -> (files: Int, volumes: Int, problems: [Problem]) {
        let (infos, damagedVolumes) = try scanVolumes()
        let scan = try scanTree()
        var problems = scan.problems + damagedVolumes
        let fileEntries = scan.entries.filter { $0.kind == .file }
        var byVolume: [UInt64: [Entry]] = [:]
        for e in fileEntries {
            switch e.content {
            case .none, .special: problems.append(Problem(path: e.path, message: "file without content"))
            case .blob, .chunks:
                if quick {
                    if try read({ t in try e.content.blobKeys.contains { try t.size(.blobs, $0) == nil } }) { problems.append(Problem(path: e.path, message: "stored content missing")) }
                } else {
                    var unused: [UInt64: DecodedVolume] = [:]
                    do { _ = try contents(e, decoded: &unused) } catch let err as VoxError { problems.append(Problem(path: e.path, message: err.message)) }
                }
            case .volume(let id, _): byVolume[id, default: []].append(e)
            }
        }
        let known = Set(infos.map(\.id))
        for (id, es) in byVolume where !known.contains(id) {
            for e in es { problems.append(Problem(path: e.path, message: "its volume \(id) is missing")) }
        }
        for v in infos {
            let es = byVolume[v.id] ?? []
            do {
                if quick {
                    _ = try decoder(volume: v.id)          // the header parses and its model is at hand
                    for e in es {
                        if case .volume(_, let k) = e.content {
                            do { _ = try part(volume: v.id, part: k, for: e) } catch let err as VoxError { problems.append(Problem(path: e.path, message: err.message)) }
                        }
                    }
                    continue
                }
                // decode every slab once, on all cores; report each damaged slab, then rebuild
                // every file of the volume (those on a damaged slab are reported by name)
                var cache: [UInt64: DecodedVolume] = [:]
                try decode(volume: v.id, into: &cache, threads: threads)
                for (_, r) in cache[v.id]!.slabs.sorted(by: { $0.key < $1.key }) {
                    if case .failure(let err) = r { problems.append(Problem(path: "volume \(v.id)", message: err.message)) }
                }
                for e in es {
                    do { _ = try contents(e, decoded: &cache) } catch let err as VoxError { problems.append(Problem(path: e.path, message: err.message)) }
                }
            } catch let e as VoxError {
                problems.append(Problem(path: "volume \(v.id)", message: e.message))
                for f in es { problems.append(Problem(path: f.path, message: "its volume \(v.id) is damaged")) }
            }
        }
        return (fileEntries.count, infos.count, problems)
    }
}
