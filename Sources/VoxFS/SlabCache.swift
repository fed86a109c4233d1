import CVoxKernels
import Foundation
import VoxCore

/// One slab's decoded bytes. A slab being decoded is filled front to back; `SlabCache` says
/// how much of it is verified, and a reader only ever looks at verified bytes. The memory lives
/// as long as anyone holds the buffer (a reader replying from it, the cache).
public final class SlabBuffer: @unchecked Sendable {
    public let count: Int
    let base: UnsafeMutableRawPointer

    init(count: Int) {
        self.count = count
        base = .allocate(byteCount: max(1, count), alignment: 16)
    }
    deinit { base.deallocate() }

    public var mutableBytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: count) }

    /// Bytes [range] of the slab (the range must lie in what the cache returned as verified).
    public func withUnsafeBytes<R>(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        precondition(range.lowerBound >= 0 && range.upperBound <= count)
        return try body(UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count))
    }
}

/// Decoded slabs in an LRU bounded in bytes. Concurrent readers of one slab wait for a single
/// decode (single flight), and each waits only until the bytes it needs are verified: a v2
/// slab is verified slice by slice, so a read of its first slice returns while the rest is
/// still decoding. Hits, misses, decodes and evictions are counted.
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

    final class Entry: @unchecked Sendable {
        let buffer: SlabBuffer
        var verified = 0            // bytes [0, verified) are final and their checksums matched
        var done = false
        var error: Error?
        var used: UInt64 = 0
        var counted = false         // its bytes count against the capacity (from when it is decoded)
        init(_ b: SlabBuffer) { buffer = b }
    }

    public let capacity: Int
    private let cond = NSCondition()
    private var entries: [Key: Entry] = [:]
    /// Slabs whose decode found damage (a damaged record cannot heal in a read-only archive),
    /// with the bytes before the damage that did verify: a read beyond them fails at once
    /// instead of decoding again (a kernel retrying a failed page would otherwise wait seconds
    /// each time); a read before them is served.
    private var failures: [Key: (error: Error, verified: Int)] = [:]
    static let maxFailures = 4096
    private var tick: UInt64 = 0
    private var stats = Stats()

    public init(capacity: Int) { self.capacity = max(0, capacity) }

    public var snapshot: Stats {
        cond.lock(); defer { cond.unlock() }
        var s = stats
        s.entries = entries.count
        return s
    }

    public func contains(_ k: Key) -> Bool {
        cond.lock(); defer { cond.unlock() }
        return entries[k] != nil || failures[k] != nil
    }

    /// The slab for `key` with at least its first `need` bytes verified. When it is neither
    /// cached nor being decoded, `decode(buffer, publish)` fills a new buffer of `size` bytes
    /// and calls `publish(n)` whenever its first n bytes are verified. A reader's decode runs
    /// on a thread of its own, and the reader waits like every other reader of the slab: for
    /// the bytes it needs, not for the whole slab. A prefetch (`prefetch`) decodes on the
    /// calling thread and returns when the slab is done. A decode already running for the key
    /// is joined, not repeated. A decode that found damage (`VoxError.Kind.corrupt`) is
    /// remembered with what verified before it: reads beyond that throw its error without
    /// decoding; other failures (out of memory, an I/O error) are tried again next time.
    public func get(_ key: Key, need: Int, size: Int, prefetch: Bool = false,
                    decode: @escaping @Sendable (SlabBuffer, _ publish: @escaping @Sendable (Int) -> Void) throws -> Void) throws -> SlabBuffer {
        let need = prefetch ? size : min(max(0, need), size)
        cond.lock()
        if let f = failures[key], need > f.verified {
            cond.unlock()
            throw f.error
        }
        let e: Entry
        if let hit = entries[key] {
            e = hit
            tick += 1
            e.used = tick
            if !prefetch { stats.hits += 1 }
        } else {
            e = Entry(SlabBuffer(count: size))
            tick += 1
            e.used = tick
            entries[key] = e
            if prefetch { stats.prefetches += 1 } else { stats.misses += 1 }
            cond.unlock()
            let job = Job(cache: self, key: key, entry: e, decode: decode)
            if prefetch { job.run() } else {
                let t = Thread { job.run() }
                t.name = "voxfs-decode"
                t.start()
            }
            cond.lock()
        }
        while !e.done && e.verified < need { cond.wait() }
        let ok = e.verified >= need
        let err = e.error
        cond.unlock()
        if ok { return e.buffer }
        throw err ?? VoxError(.corrupt, "slab \(key.slab) could not be decoded")
    }

    /// The decode of `key` has its decode slot and starts filling its buffer: the buffer counts
    /// against the capacity from now (idle slabs are evicted to make room), not only once it is
    /// done, so that memory stays within the capacity plus the running decodes' working memory.
    /// (Decodes still queued for a slot do not count: under many readers they would evict every
    /// finished slab.)
    public func running(_ key: Key) {
        cond.lock(); defer { cond.unlock() }
        guard let e = entries[key], !e.done, !e.counted, e.buffer.count <= capacity else { return }
        e.counted = true
        stats.bytes += e.buffer.count
        evict()
    }

    /// Waits until no decode is running (a reader returns as soon as its bytes are verified,
    /// while the rest of its slab may still be decoding on a thread of its own).
    public func waitIdle() {
        cond.lock()
        while entries.values.contains(where: { !$0.done }) { cond.wait() }
        cond.unlock()
    }

    /// One slab decode and its bookkeeping.
    private struct Job: @unchecked Sendable {
        let cache: SlabCache
        let key: Key
        let entry: Entry
        let decode: @Sendable (SlabBuffer, @escaping @Sendable (Int) -> Void) throws -> Void

        func run() {
            let e = entry, size = entry.buffer.count, cond = cache.cond
            var failure: Error? = nil
            do {
                try decode(e.buffer) { n in
                    cond.lock()
                    if n > e.verified { e.verified = min(n, size) }
                    cond.broadcast()
                    cond.unlock()
                }
            } catch { failure = error }
            cache.finish(key, e, failure)
        }
    }

    private func finish(_ key: Key, _ e: Entry, _ failure: Error?) {
        cond.lock()
        e.done = true
        e.error = failure
        stats.decodes += 1
        if failure == nil { e.verified = e.buffer.count }
        if let err = failure {
            if let ve = err as? VoxError, ve.kind == .corrupt {
                if failures.count >= SlabCache.maxFailures, let any = failures.keys.first { failures[any] = nil }
                failures[key] = (err, e.verified)
            } else {
                drop(key)
            }
        }
        // a slab counts against the capacity once its decode runs (running) or is done:
        // counting decodes that are still queued for a decode slot would evict every finished
        // slab under many readers (the soak's 32 readers on a 64 MiB cache fell to a third of
        // the reads)
        if entries[key] === e, !e.counted, e.buffer.count <= capacity {
            e.counted = true
            stats.bytes += e.buffer.count
        } else if entries[key] === e, !e.counted {
            drop(key)
        }
        evict()
        cond.broadcast()
        cond.unlock()
    }

    /// Removes an entry (the cond lock is held).
    private func drop(_ key: Key) {
        guard let e = entries.removeValue(forKey: key) else { return }
        if e.counted { stats.bytes -= e.buffer.count }
    }

    /// Evicts least recently used finished slabs until the bytes fit (the cond lock is held).
    private func evict() {
        while stats.bytes > capacity,
              let victim = entries.filter({ $0.value.done && $0.value.counted }).min(by: { $0.value.used < $1.value.used }) {
            drop(victim.key)
            stats.evictions += 1
        }
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
            let t = Thread { [self] in
                _ = vox_thread_nice(10)   // prefetch yields the cores to the decode a reader waits for
                loop()
            }
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
