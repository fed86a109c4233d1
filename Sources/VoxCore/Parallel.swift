import Foundation

/// Runs `body(i)` for i in 0..<count on `threads` workers; stops at the first error.
public func parallelFor(_ count: Int, threads: Int, _ body: @Sendable (Int) throws -> Void) throws {
    final class State: @unchecked Sendable {
        let lock = NSLock()
        var next = 0
        var error: Error?
    }
    let st = State()
    let workers = max(1, min(threads, count))
    DispatchQueue.concurrentPerform(iterations: workers) { _ in
        while true {
            st.lock.lock()
            if st.error != nil || st.next >= count { st.lock.unlock(); return }
            let i = st.next
            st.next += 1
            st.lock.unlock()
            do { try body(i) } catch {
                st.lock.lock()
                if st.error == nil { st.error = error }
                st.lock.unlock()
                return
            }
        }
    }
    if let e = st.error { throw e }
}

private final class ParallelResults<T>: @unchecked Sendable {
    var items: [T?]
    let lock = NSLock()
    init(_ n: Int) { items = Array(repeating: nil, count: n) }
}

/// `transform(i)` for i in 0..<count on `threads` workers; the results in index order.
public func parallelMap<T>(_ count: Int, threads: Int, _ transform: @Sendable (Int) -> T) -> [T] {
    let out = ParallelResults<T>(count)
    try? parallelFor(count, threads: threads) { i in
        let v = transform(i)
        out.lock.lock(); out.items[i] = v; out.lock.unlock()
    }
    return out.items.map { $0! }
}
