import CZlib
import Foundation
import VoxCore

/// How a compressed file is rebuilt from its decompressed content (issue 15): the bytes
/// before and after its deflate stream kept verbatim (a gzip member's header and trailer, a
/// NRRD or MetaImage text header, a zlib header and Adler-32), and the zlib parameters under
/// which deflating the content gives the original stream back byte for byte. Found by trying
/// them at pack time and comparing the whole stream (never assumed); docs/archive.md.
public struct DeflateWrapper: Sendable, Equatable {
    public var outerHeader: [UInt8]
    public var outerTrailer: [UInt8]
    /// zlib's deflateInit2 parameters (raw deflate, 2^windowBits window).
    public var level: Int, memLevel: Int, windowBits: Int, strategy: Int
    /// CRC-32C of each 2^chunkShift-byte chunk of the original (compressed) file, set when it
    /// is packed: a reader may serve a chunk of a file being recompressed once it matches.
    public var chunkShift: Int = 20
    public var chunkCRCs: [UInt32] = []
    /// 0: one zlib deflate stream. Otherwise pigz's layout: the content in blocks of this many
    /// bytes, each deflated after a reset with the previous block's last 32 KiB as dictionary
    /// and ended on a byte boundary (pigz's compress_thread, what dcm2niix writes through pigz).
    public var blockSize: Int = 0

    /// Sets `chunkCRCs` from the original file.
    public mutating func setChunks(of original: [UInt8]) {
        let n = 1 << chunkShift
        chunkCRCs = stride(from: 0, to: original.count, by: n).map { Checksum.crc32c(original[$0..<min(original.count, $0 + n)]) }
    }

    public init(outerHeader: [UInt8], outerTrailer: [UInt8], level: Int, memLevel: Int, windowBits: Int = 15, strategy: Int = 0) {
        self.outerHeader = outerHeader; self.outerTrailer = outerTrailer
        self.level = level; self.memLevel = memLevel; self.windowBits = windowBits; self.strategy = strategy
    }

    /// Parameters a reader accepts (from an untrusted archive record).
    public var isValid: Bool {
        (0...9).contains(level) && (1...9).contains(memLevel) && (9...15).contains(windowBits) && (0...4).contains(strategy)
            && (12...30).contains(chunkShift) && (blockSize == 0 || (32768...(1 << 28)).contains(blockSize))
    }

    /// "zlib level 6" (with the non-default parameters).
    public var summary: String {
        (blockSize > 0 ? "pigz blocks of \(blockSize >> 10) KiB, " : "") + "zlib level \(level)" + (memLevel != 8 ? ", memLevel \(memLevel)" : "") + (windowBits != 15 ? ", window 2^\(windowBits)" : "")
            + (strategy != 0 ? ", strategy \(strategy)" : "")
    }

    /// The original file: outer header, the content deflated with these parameters, outer trailer.
    public func wrap(_ content: [UInt8]) throws -> [UInt8] {
        guard isValid else { throw VoxError(.corrupt, "invalid deflate parameters") }
        if blockSize == 0 {
            guard let z = Deflate.deflateRaw(content[...], level: level, memLevel: memLevel, windowBits: windowBits, strategy: strategy) else {
                throw VoxError(.outOfMemory, "cannot recompress (zlib failed)")
            }
            return outerHeader + z + outerTrailer
        }
        var out = outerHeader
        let r = try makeRecompressor()
        try content.withUnsafeBytes { try r.write($0) { out.append(contentsOf: $0) } }
        try r.finish { out.append(contentsOf: $0) }
        return out + outerTrailer
    }

    /// A deflater fed piece by piece that produces this wrapper's stream.
    public func makeRecompressor() throws -> Recompressor {
        guard isValid else { throw VoxError(.corrupt, "invalid deflate parameters") }
        if blockSize > 0 {
            guard let b = BlockDeflater(level: level, memLevel: memLevel, strategy: strategy, blockSize: blockSize) else {
                throw VoxError(.outOfMemory, "cannot start recompressing")
            }
            return b
        }
        guard let d = DeflateStream(level: level, memLevel: memLevel, windowBits: windowBits, strategy: strategy) else {
            throw VoxError(.outOfMemory, "cannot start recompressing")
        }
        return d
    }
}

/// A deflater fed piece by piece (the mount recompresses a file while its slabs decode).
public protocol Recompressor: AnyObject {
    func write(_ data: UnsafeRawBufferPointer, sink: (UnsafeRawBufferPointer) throws -> Void) throws
    func finish(sink: (UnsafeRawBufferPointer) throws -> Void) throws
}

/// zlib deflate fed piece by piece.
public final class DeflateStream: Recompressor {
    private var s = z_stream()
    private var ok = false
    private var out = [UInt8](repeating: 0, count: 1 << 18)

    public init?(level: Int, memLevel: Int, windowBits: Int = 15, strategy: Int = 0) {
        guard deflateInit2_(&s, Int32(level), Z_DEFLATED, -Int32(windowBits), Int32(memLevel), Int32(strategy), zlibVersion(),
                            Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
        ok = true
    }
    deinit { if ok { deflateEnd(&s) } }

    public func write(_ data: UnsafeRawBufferPointer, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        try write(data, finish: false, sink: sink)
    }
    public func finish(sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        try [UInt8]().withUnsafeBytes { try write($0, finish: true, sink: sink) }
    }

    /// Compresses `data` (finish: and ends the stream), handing each piece of output to `sink`.
    public func write(_ data: UnsafeRawBufferPointer, finish: Bool, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard ok else { throw VoxError(.invalidArgument, "deflate stream is not usable") }
        s.next_in = UnsafeMutablePointer(mutating: data.bindMemory(to: UInt8.self).baseAddress ?? UnsafePointer(bitPattern: 1)!)
        s.avail_in = UInt32(data.count)
        while true {
            let rc: Int32 = out.withUnsafeMutableBufferPointer { o in
                s.next_out = o.baseAddress
                s.avail_out = UInt32(o.count)
                return deflate(&s, finish ? Z_FINISH : Z_NO_FLUSH)
            }
            let n = out.count - Int(s.avail_out)
            if n > 0 { try out.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<n])) } }
            if finish {
                if rc == Z_STREAM_END { return }
                guard rc == Z_OK || rc == Z_BUF_ERROR else { throw VoxError(.io, "deflate failed (\(rc))") }
            } else {
                guard rc == Z_OK || rc == Z_BUF_ERROR else { throw VoxError(.io, "deflate failed (\(rc))") }
                if s.avail_in == 0 && s.avail_out != 0 { return }
            }
        }
    }
}

/// pigz's deflate layout (pigz.c, compress_thread; the same output for any thread count): the
/// content cut into blocks; each block deflated after deflateReset and deflateParams, with the
/// last 32 KiB of the previous block's input as dictionary; a block that is not the last ends
/// with Z_BLOCK, then a sync flush when one bit is pending, or empty static blocks up to the next
/// byte boundary (deflatePrime(10, 2)); the last block with Z_FINISH.
public final class BlockDeflater: Recompressor {
    private var s = z_stream()
    private var ok = false
    private let level: Int32, strategy: Int32, blockSize: Int
    private var block = [UInt8]()
    private var dict = [UInt8]()
    private var out = [UInt8](repeating: 0, count: 1 << 18)

    public init?(level: Int, memLevel: Int, strategy: Int, blockSize: Int) {
        self.level = Int32(level); self.strategy = Int32(strategy); self.blockSize = blockSize
        guard deflateInit2_(&s, 6, Z_DEFLATED, -15, Int32(memLevel), Int32(strategy), zlibVersion(),
                            Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
        ok = true
        block.reserveCapacity(blockSize)
    }
    deinit { if ok { deflateEnd(&s) } }

    public func write(_ data: UnsafeRawBufferPointer, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        var p = 0
        while p < data.count {
            if block.count == blockSize { try compress(last: false, sink: sink) }   // more follows: not the last
            let n = min(blockSize - block.count, data.count - p)
            block.append(contentsOf: UnsafeRawBufferPointer(rebasing: data[p..<(p + n)]))
            p += n
        }
    }

    public func finish(sink: (UnsafeRawBufferPointer) throws -> Void) throws { try compress(last: true, sink: sink) }

    private func engine(_ flush: Int32, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        repeat {
            let rc: Int32 = out.withUnsafeMutableBufferPointer { o in
                s.next_out = o.baseAddress
                s.avail_out = UInt32(o.count)
                return deflate(&s, flush)
            }
            guard rc == Z_OK || rc == Z_BUF_ERROR || rc == Z_STREAM_END else { throw VoxError(.io, "deflate failed (\(rc))") }
            let n = out.count - Int(s.avail_out)
            if n > 0 { try out.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<n])) } }
        } while s.avail_out == 0
    }

    private func compress(last: Bool, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard ok else { throw VoxError(.invalidArgument, "deflate stream is not usable") }
        _ = deflateReset(&s)
        _ = deflateParams(&s, level, strategy)
        if !dict.isEmpty { _ = dict.withUnsafeBufferPointer { deflateSetDictionary(&s, $0.baseAddress, UInt32($0.count)) } }
        try block.withUnsafeBufferPointer { b in
            s.next_in = UnsafeMutablePointer(mutating: b.baseAddress ?? UnsafePointer(bitPattern: 1)!)
            s.avail_in = UInt32(b.count)
            if last { try engine(Z_FINISH, sink: sink); return }
            try engine(Z_BLOCK, sink: sink)
            var bits: Int32 = 0
            _ = deflatePending(&s, nil, &bits)
            if bits & 1 != 0 { try engine(Z_SYNC_FLUSH, sink: sink) } else if bits & 7 != 0 {
                repeat {
                    _ = deflatePrime(&s, 10, 2)
                    _ = deflatePending(&s, nil, &bits)
                } while bits & 7 != 0
                try engine(Z_BLOCK, sink: sink)
            }
        }
        dict = Array(block.suffix(32768))
        block.removeAll(keepingCapacity: true)
    }
}

public enum Deflate {
    /// Decompressed content larger than this stays opaque (a decompression bomb must not take
    /// the packer's memory).
    public static let maxInflated = 1 << 30

    /// Inflates the raw deflate stream that starts at `offset`. Returns the content and the
    /// number of compressed bytes the stream took, or nil when it is damaged or incomplete.
    public static func inflateRaw(_ bytes: [UInt8], at offset: Int, windowBits: Int = 15, limit: Int = Deflate.maxInflated) -> (content: [UInt8], used: Int)? {
        guard offset >= 0, offset <= bytes.count else { return nil }
        var s = z_stream()
        guard inflateInit2_(&s, -Int32(windowBits), zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
        defer { inflateEnd(&s) }
        var out = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        let total = bytes.count - offset
        return bytes.withUnsafeBufferPointer { src -> (content: [UInt8], used: Int)? in
            s.next_in = UnsafeMutablePointer(mutating: src.baseAddress! + offset)
            s.avail_in = UInt32(min(total, Int(UInt32.max)))
            while true {
                let rc: Int32 = chunk.withUnsafeMutableBufferPointer { c in
                    s.next_out = c.baseAddress
                    s.avail_out = UInt32(c.count)
                    return inflate(&s, Z_NO_FLUSH)
                }
                let produced = chunk.count - Int(s.avail_out)
                if out.count + produced > limit { return nil }
                out += chunk[0..<produced]
                if rc == Z_STREAM_END { return (out, Int(s.total_in)) }
                guard rc == Z_OK || (rc == Z_BUF_ERROR && s.avail_out == 0) else { return nil }
                if s.avail_in == 0 && s.avail_out != 0 { return nil } // truncated
            }
        }
    }

    /// `content` deflated as a raw stream with these zlib parameters; with `finish` false,
    /// only the bytes zlib has emitted so far (a prefix of the finished stream).
    public static func deflateRaw(_ content: ArraySlice<UInt8>, level: Int, memLevel: Int, windowBits: Int = 15, strategy: Int = 0,
                                  finish: Bool = true) -> [UInt8]? {
        var s = z_stream()
        guard deflateInit2_(&s, Int32(level), Z_DEFLATED, -Int32(windowBits), Int32(memLevel), Int32(strategy), zlibVersion(),
                            Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
        defer { deflateEnd(&s) }
        let bound = Int(deflateBound(&s, UInt(content.count))) + 64
        var out = [UInt8](repeating: 0, count: bound)
        let ok: Bool = content.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                s.next_in = UnsafeMutablePointer(mutating: src.baseAddress ?? UnsafePointer(bitPattern: 1)!)
                s.avail_in = UInt32(src.count)
                s.next_out = dst.baseAddress
                s.avail_out = UInt32(dst.count)
                let rc = deflate(&s, finish ? Z_FINISH : Z_NO_FLUSH)
                return finish ? rc == Z_STREAM_END : rc == Z_OK || rc == Z_BUF_ERROR
            }
        }
        guard ok else { return nil }
        out.removeSubrange(Int(s.total_out)...)
        return out
    }

    /// The parameters writers use, most common first (zlib's default level 6; nibabel's 1;
    /// gzip -9), then the rest; memLevel 8 (zlib's default) before 9.
    static let candidates: [(level: Int, memLevel: Int)] =
        [6, 1, 9, 5, 4, 3, 2, 7, 8, 0].map { ($0, 8) } + [6, 1, 9, 5, 4, 3, 2, 7, 8, 0].map { ($0, 9) }

    /// zlib parameters under which `content` deflates to exactly `stream`, or nil. Each
    /// candidate is first tried on a prefix of the content (deflate emits its output in order,
    /// so a wrong candidate usually shows in the first blocks), then on the whole.
    public static func findParameters(content: [UInt8], stream: ArraySlice<UInt8>) -> (level: Int, memLevel: Int, blockSize: Int)? {
        if let c = findZlib(content: content, stream: stream) { return (c.level, c.memLevel, 0) }
        // pigz (as dcm2niix runs it): its default 128 KiB blocks, levels most common first
        let bs = 128 << 10
        for level in [6, 9, 1, 2, 3, 4, 5, 7, 8] {
            let w = DeflateWrapper(outerHeader: [], outerTrailer: [], level: level, memLevel: 8)
            var wb = w
            wb.blockSize = bs
            guard let r = try? wb.makeRecompressor() else { continue }
            // three blocks and one byte more: the third block is then known not to be the last,
            // and everything emitted so far must be the stream's first bytes
            var head = [UInt8]()
            let n = min(content.count, 3 * bs + 1)
            do {
                try content.withUnsafeBytes { try r.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) { head.append(contentsOf: $0) } }
            } catch { continue }
            guard head.count <= stream.count, stream.prefix(head.count).elementsEqual(head) else { continue }
            if let all = try? wb.wrap(content), all.count == stream.count, all.elementsEqual(stream) { return (level, 8, bs) }
        }
        return nil
    }

    static func findZlib(content: [UInt8], stream: ArraySlice<UInt8>) -> (level: Int, memLevel: Int)? {
        let probe = min(content.count, 1 << 20)
        for c in candidates {
            if probe < content.count {
                guard let head = deflateRaw(content[0..<probe], level: c.level, memLevel: c.memLevel, finish: false) else { continue }
                guard head.count <= stream.count, stream.prefix(head.count).elementsEqual(head) else { continue }
            }
            if let all = deflateRaw(content[...], level: c.level, memLevel: c.memLevel), all.count == stream.count, all.elementsEqual(stream) {
                return c
            }
        }
        return nil
    }

    /// Length of the gzip member header (RFC 1952) at `offset`, or nil if there is none.
    public static func gzipHeaderLength(_ b: [UInt8], at offset: Int = 0) -> Int? {
        var p = offset
        guard b.count >= p + 10, b[p] == 0x1F, b[p + 1] == 0x8B, b[p + 2] == 8 else { return nil }
        let flg = b[p + 3]
        guard flg & 0xE0 == 0 else { return nil }
        p += 10
        if flg & 4 != 0 {
            guard b.count >= p + 2 else { return nil }
            p += 2 + (Int(b[p]) | Int(b[p + 1]) << 8)
        }
        for bit: UInt8 in [8, 16] where flg & bit != 0 {
            guard let z = b[min(p, b.count)...].firstIndex(of: 0) else { return nil }
            p = z + 1
        }
        if flg & 2 != 0 { p += 2 }
        return p <= b.count ? p - offset : nil
    }

    public enum Unwrapped {
        case ok(content: [UInt8], wrapper: DeflateWrapper)
        case no(String)
    }

    /// Unwraps a compressed stream at `offset` (`gzip`: a gzip member; else a zlib stream,
    /// RFC 1950): the content and the wrapper that rebuilds `bytes` exactly from it (with
    /// `bytes[0..<offset]` in its outer header, and everything after the deflate stream in its
    /// outer trailer), or why it cannot be.
    public static func unwrapStream(_ bytes: [UInt8], at offset: Int, gzip: Bool) -> Unwrapped {
        var start = offset
        if gzip {
            guard let h = gzipHeaderLength(bytes, at: offset) else { return .no("not a gzip stream") }
            start += h
        } else {
            guard bytes.count >= offset + 2 else { return .no("truncated zlib stream") }
            let cmf = bytes[offset], flg = bytes[offset + 1]
            guard cmf & 0x0F == 8, (UInt16(cmf) << 8 | UInt16(flg)) % 31 == 0, flg & 0x20 == 0 else { return .no("not a zlib stream") }
            guard cmf >> 4 == 7 else { return .no("zlib stream with a window of 2^\(Int(cmf >> 4) + 8)") }
            start += 2
        }
        guard let (content, used) = inflateRaw(bytes, at: start) else {
            return .no("the compressed data is damaged, truncated or larger than \(maxInflated >> 20) MiB decompressed")
        }
        let stream = bytes[start..<(start + used)]
        guard let p = findParameters(content: content, stream: stream) else {
            let who = gzip && bytes.count > offset + 9 ? " (gzip header: XFL \(bytes[offset + 8]), OS \(bytes[offset + 9]); GNU gzip's deflate is not zlib's)" : ""
            return .no("its deflate stream is not what zlib writes at any level 0-9, memLevel 8-9, nor pigz's 128 KiB blocks\(who)")
        }
        var w = DeflateWrapper(outerHeader: Array(bytes[0..<start]), outerTrailer: Array(bytes[(start + used)...]),
                               level: p.level, memLevel: p.memLevel)
        w.blockSize = p.blockSize
        return .ok(content: content, wrapper: w)
    }
}
