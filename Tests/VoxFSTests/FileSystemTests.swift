import Foundation
import XCTest
import VoxArchive
import VoxIngest
import VoxCodec
import VoxCore
import VoxFS
import VoxTestSupport

/// The FUSE-free filesystem core, in-process, on a packed tree of real data: DICOM series
/// (real CT pixels, headers written by scripts/make_test_series.py), real pydicom test files
/// (big-endian, multi-frame, JPEG 2000), a raw CT crop with its sidecar, notes, a symlink.
final class FileSystemTests: ScratchTestCase {

    func makeTree() throws -> String {
        let cache = RealData.cache
        for p in ["series/signed", "dicom/pydicom", "dicom/pydicom-data/emri_small.dcm", "volumes/ct_lung1.raw"] { _ = try RealData.require(p) }
        let fm = FileManager.default
        let src = dir.appendingPathComponent("study").path
        try fm.createDirectory(atPath: src + "/misc", withIntermediateDirectories: true)
        try fm.copyItem(atPath: cache + "/series/signed", toPath: src + "/ct")
        for n in ["CT_small.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm"] { try fm.copyItem(atPath: cache + "/dicom/pydicom/" + n, toPath: src + "/misc/" + n) }
        try fm.copyItem(atPath: cache + "/dicom/pydicom-data/emri_small.dcm", toPath: src + "/misc/emri_small.dcm")
        let all = try FileIO.read(cache + "/volumes/ct_lung1.raw")
        try FileIO.writeAtomically(src + "/misc/crop.raw", Array(all[(512 * 512 * 2 * 20)..<(512 * 512 * 2 * 45)]))
        try FileIO.writeAtomically(src + "/misc/crop.json", Array("{\"shape\":[512,512,25],\"dtype\":\"int16\"}".utf8))
        try FileIO.writeAtomically(src + "/notes.txt", Array("real data, see the test's comment\n".utf8))
        symlink("misc/CT_small.dcm", src + "/link.dcm")
        return src
    }

    func mount(_ src: String, cacheBytes: Int = 64 << 20, workers: Int = 2) throws -> (VoxFileSystem, String) {
        let path = dir.appendingPathComponent("t.voxfs").path
        let a = try Archive(path: path, create: true)
        _ = try Packer(preset: try Preset.named("classical-par")).pack([src], into: a, archivePath: path)
        let fs = try VoxFileSystem(archive: try Archive(path: path, create: false), options: .init(cacheBytes: cacheBytes, workers: workers))
        return (fs, path)
    }

    func readAll(_ fs: VoxFileSystem, _ ino: UInt64, chunk: Int) throws -> [UInt8] { try FileSystemTests.readAll(fs, ino, chunk: chunk) }

    static func readAll(_ fs: VoxFileSystem, _ ino: UInt64, chunk: Int) throws -> [UInt8] {
        let fh = try fs.open(ino)
        defer { fs.release(fh) }
        var out: [UInt8] = [], off: UInt64 = 0
        while true {
            let b = try fs.read(fh, offset: off, length: chunk)
            if b.isEmpty { break }
            out += b; off += UInt64(b.count)
        }
        return out
    }

    func testEveryFileReadsBackWithItsMetadata() throws {
        let src = try makeTree()
        let (fs, _) = try mount(src)
        let fm = FileManager.default
        var checked = 0
        for rel in try fm.subpathsOfDirectory(atPath: src) {
            let p = src + "/" + rel
            var st = stat()
            lstat(p, &st)
            let ino = try fs.resolve("study/" + rel)
            let a = try fs.attributes(ino)
            XCTAssertEqual(a.mode, UInt32(st.st_mode), rel)
            if st.st_mode & S_IFMT == S_IFLNK {
                XCTAssertEqual(try fs.readlink(ino), try fm.destinationOfSymbolicLink(atPath: p))
                continue
            }
            guard st.st_mode & S_IFMT == S_IFREG else { continue }
            XCTAssertEqual(a.size, UInt64(st.st_size), rel)
            XCTAssertEqual(a.mtimeSec, Int64(st.st_mtim.tv_sec), rel)
            XCTAssertEqual(a.mtimeNsec, Int32(st.st_mtim.tv_nsec), rel)
            let orig = try FileIO.read(p)
            for chunk in [4096, 131072, 777] { XCTAssertEqual(try readAll(fs, ino, chunk: chunk), orig, "\(rel) in \(chunk)-byte reads") }
            // random ranges, including ones past the end
            let fh = try fs.open(ino)
            var g = SplitMix64(seed: UInt64(rel.utf8.count))
            for _ in 0..<40 {
                let off = Int(g.next() % UInt64(orig.count + 10)), len = Int(g.next() % 300_000) + 1
                let want = off < orig.count ? Array(orig[off..<min(orig.count, off + len)]) : []
                XCTAssertEqual(try fs.read(fh, offset: UInt64(off), length: len), want, "\(rel) [\(off), +\(len))")
                // the zero-copy path the FUSE driver replies from gives the same bytes
                XCTAssertEqual(try fs.withRead(fh, offset: UInt64(off), length: len) { Array($0) }, want, "\(rel) withRead [\(off), +\(len))")
                let small = min(len, 4096)
                XCTAssertEqual(try fs.withRead(fh, offset: UInt64(off), length: small) { Array($0) },
                               off < orig.count ? Array(orig[off..<min(orig.count, off + small)]) : [], "\(rel) withRead [\(off), +\(small))")
            }
            fs.release(fh)
            // the SHA-256 recorded at pack time
            XCTAssertEqual(String(decoding: try fs.xattr(ino, "user.voxfs.sha256"), as: UTF8.self), Checksum.hex(Checksum.sha256(orig)), rel)
            checked += 1
        }
        XCTAssertEqual(checked, 16 + 4 + 2 + 1)
        // listings: ".", "..", then the children
        let names = try fs.list(try fs.resolve("study")).map(\.name)
        XCTAssertEqual(Array(names.prefix(2)), [".", ".."])
        XCTAssertEqual(Set(names.dropFirst(2)), Set(try fm.contentsOfDirectory(atPath: src)))
        XCTAssertThrowsError(try fs.lookup(parent: VoxFileSystem.rootIno, name: "nope")) { XCTAssertEqual($0 as? FSError, .noEntry) }
        XCTAssertThrowsError(try fs.open(try fs.resolve("study/notes.txt"), write: true)) { XCTAssertEqual($0 as? FSError, .readOnly) }
        XCTAssertThrowsError(try fs.open(try fs.resolve("study/ct"))) { XCTAssertEqual($0 as? FSError, .isDirectory) }
        XCTAssertThrowsError(try fs.xattr(VoxFileSystem.rootIno, "user.other")) { XCTAssertEqual($0 as? FSError, .noAttribute) }
        XCTAssertEqual(fs.openHandles, 0)
        let root = String(decoding: try fs.xattr(VoxFileSystem.rootIno, "user.voxfs.stored_bytes"), as: UTF8.self)
        XCTAssertGreaterThan(Int(root) ?? 0, 0)
        XCTAssertLessThan(UInt64(root) ?? .max, fs.originalBytes)
    }

    func testHeaderReadsDecodeNothingAndSlabsDecodeOnceUnderConcurrency() throws {
        let src = try makeTree()
        let (fs, _) = try mount(src, workers: 0)
        let ct = try fs.list(try fs.resolve("study/ct")).dropFirst(2)
        // header-only scan of the series as the kernel asks for it: the first 4 KiB page of every
        // file (the header, then voxel bytes kept beside it)
        for e in ct {
            let fh = try fs.open(e.ino)
            let orig = try FileIO.read(src + "/ct/" + e.name)
            let head = orig.count - 512 * 512 * 2
            XCTAssertGreaterThan(head, 128)
            XCTAssertLessThan(head, 4096)
            XCTAssertEqual(try fs.read(fh, offset: 0, length: 4096), Array(orig.prefix(4096)))
            fs.release(fh)
        }
        XCTAssertEqual(fs.cache.snapshot.decodes, 0, "a header-only scan decoded pixels")
        // 8 threads read the whole series at once: each slab is decoded once
        let files = ct.map { ($0.ino, $0.name) }
        let failures = Locked(0)
        let dir = src
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            for (ino, name) in files.shuffled() {
                let ok = (try? FileSystemTests.readAll(fs, ino, chunk: 65536)) == (try? FileIO.read(dir + "/ct/" + name))
                if !ok { failures.mutate { $0 += 1 } }
            }
            _ = t
        }
        XCTAssertEqual(failures.value, 0)
        let vols = Set(try files.map { f -> String in String(decoding: try fs.xattr(f.0, "user.voxfs.volume"), as: UTF8.self) })
        XCTAssertEqual(vols.count, 1)
        fs.cache.waitIdle()     // readers return once their bytes verify; the decodes end just after
        XCTAssertEqual(fs.cache.snapshot.decodes, 2, "16 slices in slabs of 8: two decodes, whatever the readers")
    }

    func testSequentialReadsPrefetchAndTheCacheStaysBounded() throws {
        let src = try makeTree()
        // room for two 512x512x8 int16 slabs (4 MiB each)
        let (fs, _) = try mount(src, cacheBytes: 9 << 20, workers: 1)
        let crop = try fs.resolve("study/misc/crop.raw")
        XCTAssertEqual(try readAll(fs, crop, chunk: 131072), try FileIO.read(src + "/misc/crop.raw"))
        fs.drain()
        let s = fs.cache.snapshot
        XCTAssertGreaterThan(s.prefetches, 0, "\(s)")
        XCTAssertLessThanOrEqual(s.bytes, 9 << 20)
        XCTAssertGreaterThan(s.evictions, 0, "\(s)")
        // 25 slices: 4 slabs, each decoded once (by the reader or ahead of it)
        XCTAssertEqual(s.misses + s.prefetches, 4, "\(s)")
        XCTAssertEqual(s.decodes, 4, "\(s)")
        XCTAssertGreaterThan(s.hits, 0)
    }

    func testADamagedSlabIsAnErrorNamingFileAndSlabAndOtherFilesStillRead() throws {
        let src = try makeTree()
        // (the first filesystem, and with it the archive, is closed before the file is damaged)
        let (crop, path, rec): (UInt64, String, [UInt8]) = try {
            let (fs0, path) = try mount(src)
            let crop = try fs0.resolve("study/misc/crop.raw")
            let vol = UInt64(String(decoding: try fs0.xattr(crop, "user.voxfs.volume"), as: UTF8.self))!
            return (crop, path, try fs0.archive.slabRecord(volume: vol, index: 1)!)
        }()
        var file = try FileIO.read(path)
        let needle = Array(rec[200..<264])
        guard let at = (0..<(file.count - needle.count)).first(where: { file[$0] == needle[0] && Array(file[$0..<($0 + needle.count)]) == needle }) else {
            return XCTFail("slab bytes not found")
        }
        for k in 0..<16 { file[at + k] ^= 0x5A }
        try FileIO.writeAtomically(path, file)
        let fs = try VoxFileSystem(archive: try Archive(path: path, create: false), options: .init(cacheBytes: 64 << 20, workers: 0))
        let fh = try fs.open(crop)
        let sliceBytes = 512 * 512 * 2
        // slab 0 (slices 0-7) reads; slab 1 (8-15) is an error that names the file and the slab
        XCTAssertEqual(try fs.read(fh, offset: 0, length: sliceBytes), Array(try FileIO.read(src + "/misc/crop.raw").prefix(sliceBytes)))
        XCTAssertThrowsError(try fs.read(fh, offset: UInt64(9 * sliceBytes), length: 100)) { e in
            let m = (e as? VoxError)?.message ?? "\(e)"
            XCTAssertTrue(m.contains("misc/crop.raw") && m.contains("slab 1"), m)
        }
        fs.release(fh)
        let notes = try fs.resolve("study/notes.txt")
        XCTAssertEqual(try readAll(fs, notes, chunk: 4096), try FileIO.read(src + "/notes.txt"))
    }
}

extension FileSystemTests {
    /// The crop's archive with slice 10 (slab 1 holds slices 8-15) damaged inside its own
    /// stream (format v2: a stream and a checksum per slice); returns the archive's path.
    func archiveWithDamagedSlice10(_ src: String) throws -> String {
        let (path, vol, header): (String, UInt64, StreamHeader) = try {
            let (fs0, path) = try mount(src)
            let crop = try fs0.resolve("study/misc/crop.raw")
            let vol = UInt64(String(decoding: try fs0.xattr(crop, "user.voxfs.volume"), as: UTF8.self))!
            return (path, vol, try fs0.archive.volumeHeader(vol))
        }()
        XCTAssertEqual(header.formatVersion, StreamHeader.version)   // a stream and a checksum per slice (v2 and later)
        XCTAssertEqual(header.slabThickness, 8)
        let a = try Archive(path: path, create: true)
        let key = Archive.recordKey(volume: vol, index: 1)
        var rec = try XCTUnwrap(try a.rawRecord(.slabs, key))
        let at = header.slabs[1].slices[0..<2].reduce(0) { $0 + Int($1.length) }   // where slice 10's stream starts
        XCTAssertGreaterThan(Int(header.slabs[1].slices[2].length), 40)
        for k in 20..<36 { rec[at + k] ^= 0x5A }
        try a.setRawRecord(.slabs, key, rec)
        return path
    }

    func testADamagedSliceFailsAloneAndTheSlicesBeforeItInItsSlabRead() throws {
        let src = try makeTree()
        let path = try archiveWithDamagedSlice10(src)
        let original = try FileIO.read(src + "/misc/crop.raw")
        let sliceBytes = 512 * 512 * 2
        func slice(_ k: Int) -> [UInt8] { Array(original[(k * sliceBytes)..<((k + 1) * sliceBytes)]) }
        let fs = try VoxFileSystem(archive: try Archive(path: path, create: false), options: .init(cacheBytes: 64 << 20, workers: 0))
        let fh = try fs.open(try fs.resolve("study/misc/crop.raw"))
        defer { fs.release(fh) }
        // cold slab 1: its first two slices verify and read, although the slab's decode fails
        for k in [8, 9, 0, 7, 16, 24] {
            XCTAssertEqual(try fs.read(fh, offset: UInt64(k * sliceBytes), length: sliceBytes), slice(k), "slice \(k) reads")
        }
        for k in [10, 11, 15] {
            XCTAssertThrowsError(try fs.read(fh, offset: UInt64(k * sliceBytes) + 100, length: 4096), "slice \(k)") { e in
                let m = (e as? VoxError)?.message ?? "\(e)"
                XCTAssertEqual((e as? VoxError)?.kind, .corrupt)
                XCTAssertTrue(m.contains("misc/crop.raw") && m.contains("slab 1") && m.contains("slice 10"), m)
            }
        }
        // a read that spans the last good slice and the damaged one is an error, not a short read
        XCTAssertThrowsError(try fs.read(fh, offset: UInt64(10 * sliceBytes - 10), length: 20))
        // remembered: the slab is not decoded again for later reads of either kind (a reader
        // returns once its slices verify, while its slab may still be decoding: count from idle)
        fs.cache.waitIdle()
        let decodes = fs.cache.snapshot.decodes
        XCTAssertEqual(try fs.read(fh, offset: UInt64(9 * sliceBytes), length: 64), Array(slice(9).prefix(64)))
        XCTAssertThrowsError(try fs.read(fh, offset: UInt64(12 * sliceBytes), length: 64))
        XCTAssertEqual(fs.cache.snapshot.decodes, decodes)
    }

    /// Readers of one cold slab wait for a single decode and get each slice as soon as its
    /// checksum has matched; the test hook holds the decoder where a slice's bytes are written
    /// but not yet checked, so a reader served from unverified bytes would be caught.
    func testConcurrentReadersOfAColdSlabNeverSeeUnverifiedBytes() throws {
        let src = try makeTree()
        let path = try archiveWithDamagedSlice10(src)
        let original = try FileIO.read(src + "/misc/crop.raw")
        let sliceBytes = 512 * 512 * 2
        let fs = try VoxFileSystem(archive: try Archive(path: path, create: false), options: .init(cacheBytes: 64 << 20, workers: 0))
        let fh = try fs.open(try fs.resolve("study/misc/crop.raw"))
        defer { fs.release(fh) }
        let slice8Served = DispatchSemaphore(value: 0)
        let heldUntilSlice8Served = Locked<Bool?>(nil)
        VXZ.Decoder.sliceHook = { _, slab, k in
            guard slab == 1 else { return }
            if k == 1 {
                // slice 9 is written, unchecked: the reader of slice 8 must be served by now
                heldUntilSlice8Served.mutate { $0 = slice8Served.wait(timeout: .now() + 30) == .success }
            }
            if k >= 1 { usleep(20_000) }   // the damaged slice 10 sits unverified for a while
        }
        defer { VXZ.Decoder.sliceHook = nil }
        let results = Locked<[Int: [Result<[UInt8], Error>]]>([:])
        let group = DispatchGroup()
        func reader(_ k: Int) {
            group.enter()
            Thread {
                let r = Result { try fs.read(fh, offset: UInt64(k * sliceBytes), length: sliceBytes) }
                if k == 8, case .success = r { slice8Served.signal() }
                results.mutate { $0[k, default: []].append(r) }
                group.leave()
            }.start()
        }
        reader(13)              // this reader's thread runs the decode; the others join it
        usleep(50_000)
        for k in [8, 9, 10, 11, 8, 9, 10, 11] { reader(k) }
        XCTAssertEqual(group.wait(timeout: .now() + 120), .success)
        XCTAssertEqual(heldUntilSlice8Served.value, true, "slice 8 was served while slice 9 was still unchecked")
        fs.cache.waitIdle()
        XCTAssertEqual(fs.cache.snapshot.decodes, 1, "one decode for all readers")
        for (k, rs) in results.value {
            for r in rs {
                switch r {
                case .success(let b):
                    XCTAssertTrue(k < 10, "slice \(k) must not be served")
                    XCTAssertTrue(b == Array(original[(k * sliceBytes)..<((k + 1) * sliceBytes)]), "slice \(k): exact bytes")
                case .failure(let e):
                    XCTAssertTrue(k >= 10, "slice \(k) must be served: \(e)")
                }
            }
        }
    }
}

extension FileSystemTests {
    /// Compressed volumes (issue 15) through pack, verify, unpack and the filesystem: a real
    /// gzip NRRD (ITK, from pyradiomics), a .nii.gz that CPython's gzip (zlib) wrote from a real
    /// MR crop, and the same .nii.gz from GNU gzip (kept opaque): every file byte-identical.
    func testGzipWrappedVolumesReadBackExactly() throws {
        let src = dir.appendingPathComponent("gz").path
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: try RealData.require("src/pyradiomics-3.0.1/data/breast1_image.nrrd"), toPath: src + "/breast1_image.nrrd")
        let raw = try FileIO.read(try RealData.require("volumes/mr_brain1.raw"))
        let vals = (0..<(256 * 256 * 5)).map { Int16(bitPattern: UInt16(raw[2 * $0]) | UInt16(raw[2 * $0 + 1]) << 8) }
        let nii = dir.appendingPathComponent("brain.nii").path     // outside the tree
        try FileIO.writeAtomically(nii, TestFiles.nifti1(vals, x: 256, y: 256, z: 5, big: false))
        let py = try run("/usr/bin/env", ["python3", "-c", "import gzip,sys; d=open(sys.argv[1],'rb').read(); open(sys.argv[2],'wb').write(gzip.compress(d, compresslevel=1, mtime=0))", nii, src + "/zlib.nii.gz"])
        XCTAssertEqual(py.status, 0, py.err)
        let gnu = try run("/bin/sh", ["-c", "gzip -9 -n -c \"$0\" > \"$1\"", nii, src + "/gnu.nii.gz"])
        XCTAssertEqual(gnu.status, 0, gnu.err)
        let z = try FileIO.read(src + "/zlib.nii.gz")
        try FileIO.writeAtomically(src + "/cut.nii.gz", Array(z.prefix(z.count / 2)))   // truncated: opaque
        let pz = try run("/bin/sh", ["-c", "pigz -p 2 -c \"$0\" > \"$1\"", nii, src + "/pigz.nii.gz"])           // dcm2niix's way
        XCTAssertEqual(pz.status, 0, pz.err)
        let path = dir.appendingPathComponent("gz.voxfs").path
        let a = try Archive(path: path, create: true)
        let sum = try Packer(preset: try Preset.named("fast")).pack([src], into: a, archivePath: path)
        // GNU gzip's deflate is not zlib's, but for some inputs they agree: then it is coded too
        XCTAssertGreaterThanOrEqual(sum.volumes, 3, "the NRRD, the zlib and the pigz .nii.gz are coded: \(sum)")
        XCTAssertEqual(sum.opaque, sum.files - sum.volumes)
        XCTAssertGreaterThanOrEqual(sum.opaque, 1, "the truncated one is opaque: \(sum)")
        XCTAssertEqual(a.schema, 3)
        let fs = try VoxFileSystem(archive: try Archive(path: path, create: false), options: .init(cacheBytes: 64 << 20, workers: 0))
        for n in ["breast1_image.nrrd", "zlib.nii.gz", "pigz.nii.gz", "gnu.nii.gz", "cut.nii.gz"] {
            let ino = try fs.resolve("gz/" + n)
            XCTAssertTrue(try readAll(fs, ino, chunk: 65536) == FileIO.read(src + "/" + n), "\(n) reads back exactly through the filesystem")
            let storage = String(decoding: try fs.xattr(ino, "user.voxfs.storage"), as: UTF8.self)
            if n == "cut.nii.gz" { XCTAssertEqual(storage, "blob (zstd)") }
            if n == "breast1_image.nrrd" || n == "zlib.nii.gz" || n == "pigz.nii.gz" {
                XCTAssertEqual(storage, "volume", n)
                XCTAssertTrue(String(decoding: try fs.xattr(ino, "user.voxfs.compressed"), as: UTF8.self).contains("zlib level"), n)
            }
        }
        // reads as the file is recompressed: a first read far into the file, then the start
        do {
            let fs2 = try VoxFileSystem(archive: try Archive(path: path, create: false), options: .init(cacheBytes: 64 << 20, workers: 2))
            let ino = try fs2.resolve("gz/zlib.nii.gz")
            let fh = try fs2.open(ino)
            let orig = try FileIO.read(src + "/zlib.nii.gz")
            XCTAssertEqual(try fs2.read(fh, offset: UInt64(orig.count - 100), length: 4096), Array(orig.suffix(100)))
            XCTAssertEqual(try fs2.read(fh, offset: 0, length: 1000), Array(orig.prefix(1000)))
            fs2.release(fh)
            fs2.drain()
            // closed early (its rebuild may stop) and opened again: rebuilt again, exactly
            let fh2 = try fs2.open(ino)
            XCTAssertEqual(try fs2.read(fh2, offset: 0, length: 100), Array(orig.prefix(100)))
            fs2.release(fh2)
            XCTAssertTrue(try readAll(fs2, ino, chunk: 1 << 20) == orig, "reopened after an early close")
            fs2.drain()
        }
        let out = dir.appendingPathComponent("out").path
        _ = try Packer.unpack(try Archive(path: path, create: false), to: out)
        for n in ["breast1_image.nrrd", "zlib.nii.gz", "pigz.nii.gz", "gnu.nii.gz", "cut.nii.gz"] {
            XCTAssertTrue(try FileIO.read(out + "/gz/" + n) == FileIO.read(src + "/" + n), "\(n) unpacks exactly")
        }
        // a part record whose recompression no longer reproduces the file (here its zlib level,
        // as a different zlib would): the chunk checksums catch it, the read is an error
        do {
            let e = try XCTUnwrap(try Archive(path: path, create: false).entries().first { $0.path == "gz/zlib.nii.gz" })
            guard case .volume(let id, let k) = e.content else { return XCTFail("zlib.nii.gz is not a volume") }
            let a = try Archive(path: path, create: true)
            let key = Archive.recordKey(volume: id, index: Int(k))
            var v = Array(try XCTUnwrap(try a.rawRecord(.parts, key)).dropLast(4))
            XCTAssertEqual(v[57], 1, "the level byte (CPython's gzip at level 1)")
            v[57] = 2
            try a.setRawRecord(.parts, key, Archive.sealed("parts", key, v))
        }
        let fs3 = try VoxFileSystem(archive: try Archive(path: path, create: false), options: .init(cacheBytes: 64 << 20, workers: 0))
        XCTAssertThrowsError(try readAll(fs3, try fs3.resolve("gz/zlib.nii.gz"), chunk: 65536)) { e in
            // a longer stream fails when it outgrows the file, a shorter one at its end, a same-size
            // one at its first chunk's checksum: each an error naming the file, never bytes
            XCTAssertEqual((e as? VoxError)?.kind, .corrupt)
            XCTAssertTrue("\(e)".contains("zlib.nii.gz") && ("\(e)".contains("chunk checksum mismatch") || "\(e)".contains("rebuilt file")), "\(e)")
        }
        XCTAssertTrue(try readAll(fs3, try fs3.resolve("gz/breast1_image.nrrd"), chunk: 65536) == FileIO.read(src + "/breast1_image.nrrd"))
    }
}

final class Locked<T>: @unchecked Sendable {
    private var v: T
    private let l = NSLock()
    init(_ v: T) { self.v = v }
    var value: T { l.lock(); defer { l.unlock() }; return v }
    func mutate(_ f: (inout T) -> Void) { l.lock(); f(&v); l.unlock() }
}
