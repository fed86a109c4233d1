import Foundation
import VoxCore

/// Decoded slabs in an LRU bounded in bytes. Concurrent readers of one slab wait for a single
/// decode (single flight); hits, misses, decodes and evictions are counted.
public final class SlabCache: @unchecked Sendable {
    public struct Key: Hashable, Sendable {
        public var volume: UInt64
        public var slab: Int
        public init(volume: UInt64, slab: Int) { self.volume = volume; self.slab = slab }
    }

    public struct Stats: Sendable, Equatable {
        public var hits = 0, misses = 0, decodes = 0, evictions = 0, prefetches = 0
        public var bytes = 0, entries = 0
    }

    final class Flight {
        var bytes: [UInt8]?
        var error: Error?
        var done = false
    }

    public let capacity: Int
    private let cond = NSCondition()
    private var slabs: [Key: (bytes: [UInt8], used: UInt64)] = [:]
    private var flights: [Key: Flight] = [:]
    /// Slabs whose decode found damage (a damaged record cannot heal in a read-only archive):
    /// the error is remembered, so that every later read of the slab fails at once instead of
    /// decoding it again (a kernel retrying a failed page would otherwise wait seconds each time).
    private var failures: [Key: Error] = [:]
    static let maxFailures = 4096
    private var tick: UInt64 = 0
    private var stats = Stats()

    public init(capacity: Int) { self.capacity = max(0, capacity) }

    public var snapshot: Stats {
        cond.lock(); defer { cond.unlock() }
        var s = stats
        s.entries = slabs.count
        return s
    }

    public func contains(_ k: Key) -> Bool {
        cond.lock(); defer { cond.unlock() }
        return slabs[k] != nil || flights[k] != nil || failures[k] != nil
    }

    /// The slab for `key`, decoding it with `decode` when it is not cached. A decode that is
    /// already running for the key is waited for, not repeated. A decode that found damage
    /// (`VoxError.Kind.corrupt`) is remembered and its error thrown again without decoding;
    /// other failures (out of memory, an I/O error) are tried again next time.
    public func get(_ key: Key, prefetch: Bool = false, decode: () throws -> [UInt8]) throws -> [UInt8] {
        cond.lock()
        if let e = failures[key] {
            cond.unlock()
            throw e
        }
        if let hit = slabs[key] {
            tick += 1
            slabs[key] = (hit.bytes, tick)
            if !prefetch { stats.hits += 1 }
            cond.unlock()
            return hit.bytes
        }
        if let f = flights[key] {
            if !prefetch { stats.hits += 1 }
            while !f.done { cond.wait() }
            cond.unlock()
            if let e = f.error { throw e }
            return f.bytes!
        }
        let f = Flight()
        flights[key] = f
        if prefetch { stats.prefetches += 1 } else { stats.misses += 1 }
        cond.unlock()

        var result: [UInt8]? = nil
        var failure: Error? = nil
        do { result = try decode() } catch { failure = error }

        cond.lock()
        f.bytes = result; f.error = failure; f.done = true
        flights[key] = nil
        stats.decodes += 1
        if let e = failure as? VoxError, e.kind == .corrupt {
            if failures.count >= SlabCache.maxFailures, let any = failures.keys.first { failures[any] = nil }
            failures[key] = e
        }
        if let b = result, b.count <= capacity {
            tick += 1
            slabs[key] = (b, tick)
            stats.bytes += b.count
            while stats.bytes > capacity, let victim = slabs.min(by: { $0.value.used < $1.value.used }) {
                slabs[victim.key] = nil
                stats.bytes -= victim.value.bytes.count
                stats.evictions += 1
            }
        }
        cond.broadcast()
        cond.unlock()
        if let e = failure { throw e }
        return result!
    }
}

/// A fixed set of background threads running jobs in submission order (slab prefetch).
final class WorkerPool: @unchecked Sendable {
    private let cond = NSCondition()
    private var jobs: [() -> Void] = []
    private var busy = 0
    private var stopping = false

    init(threads: Int) {
        for i in 0..<threads {
            let t = Thread { [self] in loop() }
            t.name = "voxfs-prefetch-\(i)"
            t.start()
        }
    }

    func submit(_ job: @escaping () -> Void) {
        cond.lock(); jobs.append(job); cond.signal(); cond.unlock()
    }

    private func loop() {
        while true {
            cond.lock()
            while jobs.isEmpty && !stopping { cond.wait() }
            if jobs.isEmpty && stopping { cond.unlock(); return }
            let j = jobs.removeFirst()
            busy += 1
            cond.unlock()
            j()
            cond.lock(); busy -= 1; cond.broadcast(); cond.unlock()
        }
    }

    /// Waits until every submitted job has run.
    func drain() {
        cond.lock()
        while !jobs.isEmpty || busy > 0 { cond.wait() }
        cond.unlock()
    }

    /// Lets the threads finish the queued jobs and exit.
    func stop() {
        cond.lock(); stopping = true; cond.broadcast(); cond.unlock()
    }
}
