import CLMDB
import Foundation
import VoxCore

/// The tables an archive keeps its records in (docs/archive.md).
public enum StoreTable: String, Sendable, CaseIterable {
    case meta, tree, volumes, slabs, parts, models, blobs
}

/// One transaction of a record store: reads see one consistent snapshot; in a write
/// transaction, puts and deletes become visible together when it commits, or not at all.
/// Failures are thrown as `LMDBError` (the stores' one error type: an errno, or a negative
/// code for a damaged store), which `Archive` turns into messages naming the archive.
public protocol StoreTransaction {
    /// The transaction's id; a write transaction commits under it (the archive stamps it).
    var id: UInt64 { get }
    /// The value under `key`, or nil. `once`: a large value read once (a slab), whose pages the
    /// store may release after the copy.
    func get(_ table: StoreTable, _ key: [UInt8], once: Bool) throws -> [UInt8]?
    func put(_ table: StoreTable, _ key: [UInt8], _ value: [UInt8]) throws
    /// Deletes `key`; whether it existed.
    @discardableResult func delete(_ table: StoreTable, _ key: [UInt8]) throws -> Bool
    /// Visits the records whose keys start with `prefix`, in key order; `body` returns false to stop.
    func scan(_ table: StoreTable, prefix: [UInt8], _ body: ([UInt8], [UInt8]) throws -> Bool) throws
    /// The size of the value under `key` without copying it, or nil.
    func size(_ table: StoreTable, _ key: [UInt8]) throws -> Int?
    func count(_ table: StoreTable) throws -> Int
}

extension StoreTransaction {
    public func get(_ table: StoreTable, _ key: [UInt8]) throws -> [UInt8]? { try get(table, key, once: false) }
    public func scan(_ table: StoreTable, _ body: ([UInt8], [UInt8]) throws -> Bool) throws { try scan(table, prefix: [], body) }
}

/// Where an archive's records live: the LMDB file (`LMDBStore`), or memory (`MemoryStore`, the
/// test double that injects faults). `Archive` and everything above it read and write only
/// through this.
public protocol RecordStore: AnyObject, Sendable {
    /// Runs `body` in a read transaction.
    func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T
    /// Runs `body` in a write transaction and commits it; a throw leaves no trace. `body` may run
    /// more than once (LMDB reruns it after growing its map), so it must have no other effects.
    func write<T>(_ body: (any StoreTransaction) throws -> T) throws -> T
    /// The id of the last committed write transaction.
    var lastTransactionID: UInt64 { get }
    /// Whether the store is a file that `Archive.lock` can take an advisory lock on.
    var isFile: Bool { get }
}

/// The archive's LMDB environment as a record store: one named database per table.
public final class LMDBStore: RecordStore, @unchecked Sendable {
    let env: LMDBEnvironment
    private let dbis: [MDB_dbi]

    public init(_ env: LMDBEnvironment) throws {
        self.env = env
        dbis = try StoreTable.allCases.map { try env.database($0.rawValue) }
    }

    struct Txn: StoreTransaction {
        let t: Transaction
        let dbis: [MDB_dbi]
        @inline(__always) func d(_ table: StoreTable) -> MDB_dbi { dbis[LMDBStore.index(table)] }
        var id: UInt64 { t.id }
        func get(_ table: StoreTable, _ key: [UInt8], once: Bool) throws -> [UInt8]? { try t.get(d(table), key, once: once) }
        func put(_ table: StoreTable, _ key: [UInt8], _ value: [UInt8]) throws { try t.put(d(table), key, value) }
        @discardableResult func delete(_ table: StoreTable, _ key: [UInt8]) throws -> Bool { try t.delete(d(table), key) }
        func scan(_ table: StoreTable, prefix: [UInt8], _ body: ([UInt8], [UInt8]) throws -> Bool) throws { try t.scan(d(table), prefix: prefix, body) }
        func size(_ table: StoreTable, _ key: [UInt8]) throws -> Int? { try t.size(d(table), key) }
        func count(_ table: StoreTable) throws -> Int { try t.count(d(table)) }
    }

    static func index(_ table: StoreTable) -> Int {
        switch table { case .meta: 0; case .tree: 1; case .volumes: 2; case .slabs: 3; case .parts: 4; case .models: 5; case .blobs: 6 }
    }

    public func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        let dbis = self.dbis
        return try env.read { t in try body(Txn(t: t, dbis: dbis)) }
    }
    public func write<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        let dbis = self.dbis
        return try env.write { t in try body(Txn(t: t, dbis: dbis)) }
    }
    public var lastTransactionID: UInt64 { env.lastTransactionID }
    public var isFile: Bool { true }
}

/// A record store in memory with the faults a disk and a crash produce, for tests: a read that
/// fails with EIO, a record that comes back cut short, a commit that fails (nothing written), a
/// commit torn after its first operations (what a store without LMDB's atomic commit would leave
/// after a crash). Writers are serialised; readers see the snapshot of the last commit.
public final class MemoryStore: RecordStore, @unchecked Sendable {
    public struct ReadFault: Sendable {
        public enum Kind: Sendable {
            case ioError        // the read fails with EIO
            case short(Int)     // the record comes back with only its first N bytes
        }
        public var table: StoreTable
        public var keyPrefix: [UInt8]
        public var kind: Kind
        public init(_ table: StoreTable, keyPrefix: [UInt8] = [], _ kind: Kind) { self.table = table; self.keyPrefix = keyPrefix; self.kind = kind }
    }

    typealias Tables = [StoreTable: [[UInt8]: [UInt8]]]
    private let lock = NSLock(), writer = NSLock()
    private var tables: Tables = [:]
    private var txid: UInt64 = 1
    private var faults: [ReadFault] = []
    private var failing = 0
    private var tornAfter: Int? = nil

    public init() {}

    /// Reads that match a fault fail (or come back short) from now on, in every transaction.
    public func injectReadFault(_ f: ReadFault) { lock.lock(); faults.append(f); lock.unlock() }
    public func clearFaults() { lock.lock(); faults = []; failing = 0; tornAfter = nil; lock.unlock() }
    /// The next `n` commits fail with EIO and change nothing.
    public func failNextCommits(_ n: Int) { lock.lock(); failing = n; lock.unlock() }
    /// The next commit applies only its first `n` puts and deletes, then fails with EIO (with n at
    /// least its number of operations: all applied, and the writer still told it failed, as a
    /// crash between the write and its acknowledgement would leave it).
    public func tearNextCommit(after n: Int) { lock.lock(); tornAfter = n; lock.unlock() }
    /// Reads so far (for tests that check what a path touched).
    public var reads: Int { lock.lock(); defer { lock.unlock() }; return readCount }
    private var readCount = 0

    final class Txn: StoreTransaction {
        var tables: Tables
        let id: UInt64
        let writable: Bool
        let faults: [ReadFault]
        var log: [(StoreTable, [UInt8], [UInt8]?)] = []
        weak var store: MemoryStore?
        init(_ tables: Tables, id: UInt64, writable: Bool, faults: [ReadFault], store: MemoryStore) {
            self.tables = tables; self.id = id; self.writable = writable; self.faults = faults; self.store = store
        }
        private func fault(_ table: StoreTable, _ key: [UInt8]) -> ReadFault.Kind? {
            faults.first { $0.table == table && key.starts(with: $0.keyPrefix) }?.kind
        }
        private func value(_ table: StoreTable, _ key: [UInt8]) throws -> [UInt8]? {
            store?.countRead()
            guard let v = tables[table]?[key] else { return nil }
            switch fault(table, key) {
            case .ioError?: throw LMDBError(EIO, "get \(table.rawValue)")
            case .short(let n)?: return Array(v.prefix(n))
            case nil: return v
            }
        }
        func get(_ table: StoreTable, _ key: [UInt8], once: Bool) throws -> [UInt8]? { try value(table, key) }
        func put(_ table: StoreTable, _ key: [UInt8], _ v: [UInt8]) throws {
            guard writable else { throw LMDBError(EACCES, "put in a read transaction") }
            tables[table, default: [:]][key] = v
            log.append((table, key, v))
        }
        @discardableResult func delete(_ table: StoreTable, _ key: [UInt8]) throws -> Bool {
            guard writable else { throw LMDBError(EACCES, "delete in a read transaction") }
            let had = tables[table]?.removeValue(forKey: key) != nil
            if had { log.append((table, key, nil)) }
            return had
        }
        func scan(_ table: StoreTable, prefix: [UInt8], _ body: ([UInt8], [UInt8]) throws -> Bool) throws {
            let keys = (tables[table] ?? [:]).keys.filter { $0.starts(with: prefix) }.sorted { $0.lexicographicallyPrecedes($1) }
            for k in keys {
                guard let v = try value(table, k) else { continue }
                if try !body(k, v) { return }
            }
        }
        func size(_ table: StoreTable, _ key: [UInt8]) throws -> Int? { try value(table, key)?.count }
        func count(_ table: StoreTable) throws -> Int { tables[table]?.count ?? 0 }
    }

    private func countRead() { lock.lock(); readCount += 1; lock.unlock() }

    public func read<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        lock.lock()
        let t = Txn(tables, id: txid, writable: false, faults: faults, store: self)
        lock.unlock()
        return try body(t)
    }

    public func write<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        writer.lock(); defer { writer.unlock() }
        lock.lock()
        let t = Txn(tables, id: txid + 1, writable: true, faults: faults, store: self)
        lock.unlock()
        let r = try body(t)
        lock.lock(); defer { lock.unlock() }
        if failing > 0 {
            failing -= 1
            throw LMDBError(EIO, "commit")
        }
        if let n = tornAfter {
            tornAfter = nil
            for (table, key, v) in t.log.prefix(n) {
                if let v { tables[table, default: [:]][key] = v } else { tables[table]?.removeValue(forKey: key) }
            }
            txid = t.id
            throw LMDBError(EIO, "commit (torn after \(n) of \(t.log.count) operations)")
        }
        tables = t.tables
        txid = t.id
        return r
    }

    public var lastTransactionID: UInt64 { lock.lock(); defer { lock.unlock() }; return txid }
    public var isFile: Bool { false }
}
