import CLMDB
import CVoxLMDB
import Foundation
import VoxCore

/// LMDB's error codes and errno values in one type (LMDB mixes both; `mdb_strerror` names them).
public struct LMDBError: Error, CustomStringConvertible, Equatable {
    public let code: Int32
    public let operation: String
    public init(_ code: Int32, _ operation: String) { self.code = code; self.operation = operation }
    public var message: String {
        code == VOXLMDB_FAULT ? "the archive is damaged (a database page points outside the file)" : String(cString: mdb_strerror(code))
    }
    /// A read faulted on a damaged page (caught by the guard in CVoxLMDB).
    public var isFault: Bool { code == VOXLMDB_FAULT }
    public var description: String { "\(operation): \(message)" }
    public var isMapFull: Bool { code == MDB_MAP_FULL }
    public var isDiskFull: Bool { code == ENOSPC }
}

/// The one place that turns an LMDB return code into a thrown error.
@inline(__always)
func check(_ rc: Int32, _ op: @autoclosure () -> String) throws {
    if rc != 0 { throw LMDBError(rc, op()) }
}

/// An LMDB environment in a single file (MDB_NOSUBDIR: `PATH` plus `PATH-lock`), with named
/// sub-databases. Write transactions grow the map when it fills (MDB_MAP_FULL is handled by
/// aborting, doubling the map size and running the transaction's body again).
public final class LMDBEnvironment: @unchecked Sendable {
    let env: OpaquePointer
    public let path: String
    public let readOnly: Bool
    private let lock = NSLock()
    private var dbis: [String: MDB_dbi] = [:]
    public private(set) var mapSize: Int

    /// Opens (creating when `readOnly` is false) the environment at `path`.
    public init(path: String, readOnly: Bool = false, maxDatabases: Int = 16, mapSize: Int = 1 << 24) throws {
        // set up with a local handle: nothing may throw once self is initialised (deinit
        // would then close the handle a second time)
        var e: OpaquePointer?
        try check(mdb_env_create(&e), "mdb_env_create")
        let handle = e!
        var size = mapSize
        do {
            try check(mdb_env_set_maxdbs(handle, MDB_dbi(maxDatabases)), "mdb_env_set_maxdbs")
            try check(mdb_env_set_mapsize(handle, mapSize), "mdb_env_set_mapsize")
            // MDB_NOTLS: a reader slot belongs to a transaction, not to a thread, so the mount's
            // many threads (FUSE loop, prefetch workers) hold slots only while they read
            try check(mdb_env_set_maxreaders(handle, 1024), "mdb_env_set_maxreaders")
            // read-only: MDB_NOLOCK, no lock file (a reader may not be able to create one, and
            // must not leave one beside whatever it was given); VoxFS's own flock on the archive
            // (Archive.lock) keeps writers away while it reads
            let flags = UInt32(MDB_NOSUBDIR) | UInt32(MDB_NOTLS) | (readOnly ? UInt32(MDB_RDONLY) | UInt32(MDB_NOLOCK) : 0)
            try check(mdb_env_open(handle, path, flags, 0o644), "mdb_env_open \(path)")
            // the file may be larger than asked for: use its size
            var info = MDB_envinfo()
            mdb_env_info(handle, &info)
            size = max(mapSize, info.me_mapsize)
        } catch {
            mdb_env_close(handle)
            throw error
        }
        env = handle
        self.path = path
        self.readOnly = readOnly
        self.mapSize = size
    }

    deinit { mdb_env_close(env) }

    /// The id of the newest committed transaction, from the meta page LMDB picked (`mdb_env_info`).
    public var lastTransactionID: UInt64 {
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        return UInt64(info.me_last_txnid)
    }

    private final class Weak { weak var env: LMDBEnvironment?; init(_ e: LMDBEnvironment) { env = e } }
    nonisolated(unsafe) private static var open: [String: Weak] = [:]
    private static let registryLock = NSLock()

    /// The process's one environment for `path`. LMDB forbids opening one environment twice
    /// in a process (reader slots and locks are per process: closing the second copy breaks
    /// the first), so every opener of a path shares it. A writable one serves read-only
    /// openers too; asking for a writable one while a read-only one is open is an error.
    public static func shared(path: String, readOnly: Bool) throws -> LMDBEnvironment {
        let key = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
        registryLock.lock(); defer { registryLock.unlock() }
        if let e = open[key]?.env {
            if readOnly || !e.readOnly { return e }
            throw LMDBError(EBUSY, "\(path) is open read-only in this process")
        }
        let e = try LMDBEnvironment(path: path, readOnly: readOnly)
        open[key] = Weak(e)
        return e
    }

    /// A named sub-database (created on first use unless read-only).
    public func database(_ name: String) throws -> MDB_dbi {
        lock.lock()
        if let d = dbis[name] { lock.unlock(); return d }
        lock.unlock()
        let d: MDB_dbi = try {
            if readOnly {
                return try read { t in try t.open(name, create: false) }
            }
            return try write { t in try t.open(name, create: true) }
        }()
        lock.lock(); dbis[name] = d; lock.unlock()
        return d
    }

    /// Runs `body` in a read-only transaction (`mdb_txn_begin` with MDB_RDONLY).
    public func read<T>(_ body: (Transaction) throws -> T) throws -> T {
        var t: OpaquePointer?
        try check(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &t), "mdb_txn_begin (read)")
        let r: T
        do { r = try body(Transaction(txn: t!, readOnly: true)) } catch {
            mdb_txn_abort(t)
            throw error
        }
        // committing (not aborting) a read transaction keeps database handles it opened;
        // mdb_txn_commit frees the transaction even when it fails
        try check(mdb_txn_commit(t), "mdb_txn_commit (read)")
        return r
    }

    /// Runs `body` in a write transaction and commits it; a throw aborts it (nothing written).
    /// On MDB_MAP_FULL the map is doubled and `body` runs again, so it must not have effects
    /// outside the transaction.
    public func write<T>(_ body: (Transaction) throws -> T) throws -> T {
        guard !readOnly else { throw LMDBError(EROFS, "a write transaction on an archive opened read-only") }
        while true {
            var t: OpaquePointer?
            try check(mdb_txn_begin(env, nil, 0, &t), "mdb_txn_begin (write)")
            let r: T
            do { r = try body(Transaction(txn: t!, readOnly: false)) } catch let e as LMDBError where e.isMapFull {
                mdb_txn_abort(t)
                try grow()
                continue
            } catch {
                mdb_txn_abort(t)
                throw error
            }
            // mdb_txn_commit frees the transaction whether it succeeds or fails (aborting it
            // again would be a double free)
            let rc = mdb_txn_commit(t)
            if rc == MDB_MAP_FULL { try grow(); continue }
            try check(rc, "mdb_txn_commit")
            return r
        }
    }

    func grow() throws {
        let next = mapSize * 2
        try check(mdb_env_set_mapsize(env, next), "mdb_env_set_mapsize")
        mapSize = next
    }
}

/// A transaction: get, put, delete and ordered iteration on named databases.
public struct Transaction {
    let txn: OpaquePointer
    /// A read-only transaction: every value it returns lies in the file's map (a write
    /// transaction's dirty pages are malloc'd memory, never released with madvise).
    let readOnly: Bool

    /// This transaction's id (`mdb_txn_id`): a write transaction commits under it.
    public var id: UInt64 { UInt64(mdb_txn_id(txn)) }

    func open(_ name: String, create: Bool) throws -> MDB_dbi {
        var d: MDB_dbi = 0
        try check(voxlmdb_dbi_open(txn, name, create ? UInt32(MDB_CREATE) : 0, &d), "mdb_dbi_open \(name)")
        return d
    }

    /// The value stored under `key`, or nil (`mdb_get`, copied under the fault guard). `once`:
    /// a large value read once (a slab), whose map pages are released after the copy, so that
    /// a long-running reader (the mount) does not keep every archive page it read resident.
    public func get(_ db: MDB_dbi, _ key: [UInt8], once: Bool = false) throws -> [UInt8]? {
        var v: UnsafeMutableRawPointer? = nil
        var n = 0
        let rc = key.withUnsafeBytes { kb in
            once && readOnly ? voxlmdb_get_once(txn, db, kb.baseAddress, kb.count, &v, &n) : voxlmdb_get(txn, db, kb.baseAddress, kb.count, &v, &n)
        }
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "mdb_get")
        defer { free(v) }
        return Array(UnsafeRawBufferPointer(start: v, count: n))
    }

    /// Stores `value` under `key` (`mdb_put`).
    public func put(_ db: MDB_dbi, _ key: [UInt8], _ value: [UInt8]) throws {
        var k = MDB_val(), v = MDB_val()
        try key.withUnsafeBytes { kb in
            try value.withUnsafeBytes { vb in
                k.mv_size = kb.count; k.mv_data = UnsafeMutableRawPointer(mutating: kb.baseAddress)
                v.mv_size = vb.count; v.mv_data = UnsafeMutableRawPointer(mutating: vb.baseAddress)
                try check(mdb_put(txn, db, &k, &v, 0), "mdb_put")
            }
        }
    }

    /// Deletes `key`; returns whether it existed (`mdb_del`).
    @discardableResult
    public func delete(_ db: MDB_dbi, _ key: [UInt8]) throws -> Bool {
        var k = MDB_val()
        return try key.withUnsafeBytes { kb in
            k.mv_size = kb.count; k.mv_data = UnsafeMutableRawPointer(mutating: kb.baseAddress)
            let rc = mdb_del(txn, db, &k, nil)
            if rc == MDB_NOTFOUND { return false }
            try check(rc, "mdb_del")
            return true
        }
    }

    /// Visits the entries whose keys start with `prefix`, in key order (an `mdb_cursor`);
    /// `body` returns false to stop.
    public func scan(_ db: MDB_dbi, prefix: [UInt8] = [], _ body: ([UInt8], [UInt8]) throws -> Bool) throws {
        var c: OpaquePointer?
        try check(mdb_cursor_open(txn, db, &c), "mdb_cursor_open")
        defer { mdb_cursor_close(c) }
        var kp: UnsafeMutableRawPointer? = nil, vp: UnsafeMutableRawPointer? = nil
        var kn = 0, vn = 0
        // keys come in strictly increasing order from a sound B-tree; a damaged one that leads
        // the cursor back to pages it has seen would otherwise repeat records (or never end)
        var last: [UInt8]? = nil
        var rc: Int32 = prefix.withUnsafeBytes { pb in
            voxlmdb_cursor_get(c, prefix.isEmpty ? MDB_FIRST : MDB_SET_RANGE, pb.baseAddress, pb.count, &kp, &kn, &vp, &vn)
        }
        while rc == 0 {
            let key = Array(UnsafeRawBufferPointer(start: kp, count: kn))
            let value = Array(UnsafeRawBufferPointer(start: vp, count: vn))
            free(kp); free(vp)
            if let last, !last.lexicographicallyPrecedes(key) { throw LMDBError(VOXLMDB_FAULT, "mdb_cursor_get") }
            last = key
            if !prefix.isEmpty && !key.starts(with: prefix) { return }
            if try !body(key, value) { return }
            rc = voxlmdb_cursor_get(c, MDB_NEXT, nil, 0, &kp, &kn, &vp, &vn)
        }
        if rc != MDB_NOTFOUND { try check(rc, "mdb_cursor_get") }
    }

    /// Size of the value stored under `key` without copying it, or nil.
    public func size(_ db: MDB_dbi, _ key: [UInt8]) throws -> Int? {
        var n = 0
        let rc = key.withUnsafeBytes { kb in voxlmdb_size(txn, db, kb.baseAddress, kb.count, &n) }
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "mdb_get")
        return n
    }

    /// Number of entries (`mdb_stat`).
    public func count(_ db: MDB_dbi) throws -> Int {
        var st = MDB_stat()
        try check(voxlmdb_stat(txn, db, &st), "mdb_stat")
        return Int(st.ms_entries)
    }
}
