import Foundation
import VoxArchive
import VoxCodec
import VoxCore
import VoxFormats

/// pack / unpack: a source tree into an archive and back, byte for byte, with modes, owners,
/// times and symlinks. Each volume (with all its files) and each opaque file is committed in
/// its own transaction, so an interrupted pack leaves everything before it readable, and a
/// second pack skips what is already in (same path, size and mtime).
public struct Packer {
    public struct Summary: Sendable {
        public var files = 0, volumes = 0, opaque = 0, skipped = 0, directories = 0, symlinks = 0
        /// Compressed files (.nii.gz, gzip NRRD) coded as volumes, rebuilt by recompressing.
        public var recompressed = 0
        /// Files that could not be packed (unreadable, vanished, kept changing): each has a warning.
        public var failed = 0
        /// Bytes of the files packed in this run, and what the archive spent on them.
        public var originalBytes: UInt64 = 0, storedBytes: UInt64 = 0
        public var warnings: [String] = []
    }

    /// Where a pack is: bytes and files done (packed or skipped as already in) of the totals
    /// surveyed before it started, and the stored bytes of what this run packed.
    public struct Progress: Sendable {
        public var bytesDone: UInt64 = 0, bytesTotal: UInt64 = 0
        public var filesDone = 0, filesTotal = 0
        public var packedBytes: UInt64 = 0, storedBytes: UInt64 = 0
        public var started = Date()
        public var elapsed: Double { Date().timeIntervalSince(started) }
        /// Seconds left, from the rate so far (nil until there is a rate).
        public var eta: Double? {
            guard bytesDone > 0, elapsed > 1 else { return nil }
            return elapsed * Double(bytesTotal - min(bytesTotal, bytesDone)) / Double(bytesDone)
        }
        public var ratio: Double { storedBytes == 0 ? 0 : Double(packedBytes) / Double(storedBytes) }
    }

    public var preset: Preset
    /// Adapts the preset's model to a volume (VoxTrain's Adapter), or nil for no adaptation.
    public var adapt: ((LoadedVolume, LSTMModel) throws -> LSTMModel)?
    public var threads: Int
    /// Where the sources are read from (the local file system; tests give a faulty one).
    public var tree: SourceTree = LocalTree()
    /// Called after each commit (and each skipped file) with where the pack is.
    public var progress: ((Progress) -> Void)?

    public init(preset: Preset, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                adapt: ((LoadedVolume, LSTMModel) throws -> LSTMModel)? = nil) {
        self.preset = preset; self.threads = threads; self.adapt = adapt
    }

    func lstatEntry(_ path: String, name: String) throws -> Archive.Entry? {
        let st = try tree.lstat(path)
        let fmt = st.st_mode & S_IFMT
        let kind: Archive.Kind
        var target = ""
        switch fmt {
        case S_IFDIR: kind = .directory
        case S_IFREG: kind = .file
        case S_IFLNK:
            kind = .symlink
            target = try tree.readlink(path)
        default: return nil
        }
        return Archive.Entry(path: name, kind: kind, mode: UInt32(st.st_mode & 0o7777), uid: st.st_uid, gid: st.st_gid,
                             mtimeSec: Int64(st.st_mtim.tv_sec), mtimeNsec: Int32(st.st_mtim.tv_nsec),
                             size: kind == .file ? UInt64(st.st_size) : 0, linkTarget: target, content: .none)
    }

    /// Regular files and their bytes under `sources` (for the progress totals; errors are
    /// left to the pack itself, which reports them).
    func survey(_ sources: [String]) -> (files: Int, bytes: UInt64) {
        var files = 0, bytes: UInt64 = 0
        func visit(_ p: String) {
            guard let st = try? tree.lstat(p) else { return }
            switch st.st_mode & S_IFMT {
            case S_IFREG: files += 1; bytes += UInt64(st.st_size)
            case S_IFDIR: for n in (try? tree.list(p)) ?? [] { visit(p + "/" + n) }
            default: break
            }
        }
        for s in sources { visit(URL(fileURLWithPath: s).standardizedFileURL.path) }
        return (files, bytes)
    }

    /// The pack in progress: the archive, the totals, the summary so far.
    final class Run {
        let archive: Archive
        let archiveReal: String
        var sum = Summary()
        var progress = Progress()
        init(archive: Archive, archiveReal: String) { self.archive = archive; self.archiveReal = archiveReal }
        func warn(_ w: String) { sum.warnings.append(w) }
    }

    /// Packs `sources` (files or folders; each stored under its base name) into `archive`.
    /// Problems with single files (unreadable, vanished, changing while read, special files)
    /// are warnings in the summary and do not stop the pack; a full disk or a damaged archive does.
    public func pack(_ sources: [String], into archive: Archive, archivePath: String) throws -> Summary {
        let run = Run(archive: archive, archiveReal: URL(fileURLWithPath: archivePath).standardizedFileURL.path)
        let t = survey(sources)
        run.progress.filesTotal = t.files; run.progress.bytesTotal = t.bytes
        for src in sources {
            let base = URL(fileURLWithPath: src).standardizedFileURL
            if let e = entry(base.path, name: base.lastPathComponent, run) { try walk(base.path, e, run) }
        }
        return run.sum
    }

    /// The entry for `path`, or nil (with a warning) for what is not packed: special files,
    /// the archive itself and its lock file, and paths that cannot be stat'ed.
    func entry(_ path: String, name: String, _ run: Run) -> Archive.Entry? {
        if path == run.archiveReal || path == run.archiveReal + "-lock" { run.warn("\(path): the archive itself, skipped"); return nil }
        do {
            guard let e = try lstatEntry(path, name: name) else { run.warn("\(path): special file (device, socket or pipe), skipped"); return nil }
            return e
        } catch let err as VoxError { run.warn(err.message); run.sum.failed += 1; return nil }
        catch { run.warn("\(path): \(error)"); run.sum.failed += 1; return nil }
    }

    func walk(_ path: String, _ e: Archive.Entry, _ run: Run) throws {
        switch e.kind {
        case .special: return       // pack skips special files (a read-write mount stores them)
        case .symlink:
            try run.archive.putEntry(e); run.sum.symlinks += 1
        case .file:
            try packFiles([(path, e)], run)
        case .directory:
            let names: [String]
            do { names = try tree.list(path).sorted() } catch let err as VoxError {
                run.warn("\(err.message), not packed"); run.sum.failed += 1; return
            } catch { run.warn("\(path): cannot list the folder (\(error)), not packed"); run.sum.failed += 1; return }
            try run.archive.putEntry(e); run.sum.directories += 1
            // a folder's files are packed together (DICOM series are grouped per folder)
            var files: [(String, Archive.Entry)] = []
            for n in names {
                let p = path + "/" + n
                guard let ce = entry(p, name: e.path + "/" + n, run) else { continue }
                if ce.kind == .file { files.append((p, ce)) } else { try walk(p, ce, run) }
            }
            try packFiles(files, run)
        }
    }

    /// Reads a file whose size and mtime are the same before and after the read (a file being
    /// written is re-read, up to three times); nil (with a warning) when it cannot be read.
    func readStable(_ p: String, _ e: inout Archive.Entry, _ run: Run) -> [UInt8]? {
        for _ in 0..<3 {
            let b: [UInt8]
            do { b = try tree.read(p) } catch let err as VoxError { run.warn("\(err.message), not packed"); run.sum.failed += 1; return nil }
            catch { run.warn("\(p): \(error), not packed"); run.sum.failed += 1; return nil }
            guard let now = try? lstatEntry(p, name: e.path), now.kind == .file else {
                run.warn("\(p): vanished while packing, not packed"); run.sum.failed += 1; return nil
            }
            if UInt64(b.count) == now.size, now.size == e.size, now.mtimeSec == e.mtimeSec, now.mtimeNsec == e.mtimeNsec { return b }
            e = now
        }
        run.warn("\(p): kept changing while being read, not packed"); run.sum.failed += 1
        return nil
    }

    /// The JSON sidecar of a raw volume (NAME.json or NAME.raw.json), read through the tree (a
    /// symlink to it is followed): the first candidate that exists decides; nil when there is
    /// none or it cannot be read or is not valid (the file is then packed as it is).
    func sidecar(forRaw p: String) -> Sidecar? {
        for c in Sidecar.candidates(for: p) where c != p {
            guard (try? tree.lstat(c)) != nil else { continue }
            guard let b = try? tree.read(c) else { return nil }
            return try? Sidecar.decode(b, path: c)
        }
        return nil
    }

    func advance(_ run: Run, files: Int, bytes: UInt64, stored: UInt64?) {
        run.progress.filesDone += files; run.progress.bytesDone += bytes
        if let stored { run.progress.packedBytes += bytes; run.progress.storedBytes += stored }
        progress?(run.progress)
    }

    /// Packs the regular files of one folder: DICOM slices grouped into series, other
    /// recognised files as volumes of their own, the rest opaque.
    func packFiles(_ files: [(String, Archive.Entry)], _ run: Run) throws {
        var todo: [(String, Archive.Entry, [UInt8])] = []
        for (p, e0) in files {
            var e = e0
            if let old = try run.archive.entry(e.path), old.size == e.size, old.mtimeSec == e.mtimeSec, old.mtimeNsec == e.mtimeNsec, old.content != .none {
                run.sum.skipped += 1; advance(run, files: 1, bytes: e.size, stored: nil); continue
            }
            guard let b = readStable(p, &e, run) else { advance(run, files: 1, bytes: e0.size, stored: nil); continue }
            todo.append((p, e, b))
        }
        var dicom: [(path: String, bytes: [UInt8])] = []
        var entryByPath: [String: Archive.Entry] = [:]
        var bytesByPath: [String: [UInt8]] = [:]
        var opaque: [(Archive.Entry, [UInt8])] = []
        for (p, e, b) in todo {
            entryByPath[p] = e; bytesByPath[p] = b
            if p.hasSuffix(".raw"), let sc = sidecar(forRaw: p) {
                let r = Formats.raw(path: p, bytes: b, sidecar: sc)
                if let s = r.source { try storeVolume(s, entries: [p: e], bytes: bytesByPath, run); continue }
            }
            let r = Formats.recognise(path: p, bytes: b)
            if r.kind == .dicom, let s = r.source, s.shape.z == 1 { dicom.append((p, b)); continue }
            if let s = r.source { try storeVolume(s, entries: [p: e], bytes: bytesByPath, run); continue }
            opaque.append((e, b))
        }
        if !dicom.isEmpty {
            let g = DicomSeries.group(dicom)
            for v in g.volumes { try storeVolume(v, entries: entryByPath, bytes: bytesByPath, run) }
            for (p, _) in g.opaque { opaque.append((entryByPath[p]!, bytesByPath[p]!)) }
        }
        try storeOpaque(opaque, run)
    }

    /// Stores opaque files: hashed and zstd-compressed on all cores, committed one by one.
    func storeOpaque(_ files: [(Archive.Entry, [UInt8])], _ run: Run) throws {
        let prepared = parallelMap(files.count, threads: threads) { i in Archive.PreparedBlob(files[i].1) }
        for (i, (e, _)) in files.enumerated() {
            let stored = try run.archive.putOpaque(e, prepared: prepared[i])
            run.sum.opaque += 1; run.sum.files += 1
            run.sum.originalBytes += e.size; run.sum.storedBytes += UInt64(stored)
            advance(run, files: 1, bytes: e.size, stored: UInt64(stored))
        }
    }

    func storeVolume(_ s: VolumeSource, entries: [String: Archive.Entry], bytes: [String: [UInt8]], _ run: Run) throws {
        do {
            var model: LSTMModel? = try preset.builtinModel()
            var embed = false
            if let base = model, let adapt, s.shape.voxels >= (1 << 20) {
                var vals = [Int32](repeating: 0, count: s.shape.voxels)
                s.voxels.withUnsafeBytes { b in vals.withUnsafeMutableBufferPointer { s.dtype.decode(b, into: $0) } }
                model = try adapt(LoadedVolume(name: "pack", path: "", shape: s.shape, dtype: s.dtype, values: vals), base)
                embed = true
            }
            let opts = EncodeOptions(preset: preset, model: model, slabThickness: 8, threads: threads, embedModel: embed)
            let stream = try s.voxels.withUnsafeBytes { try VXZ.encode(raw: $0, shape: s.shape, dtype: s.dtype, options: opts) }
            let files = s.parts.map { Archive.PackedFile(entry: entries[$0.path]!, part: $0, original: bytes[$0.path]!) }
            let stored = UInt64(try run.archive.putVolume(stream: stream, model: model, files: files).storedBytes)
            let original = files.reduce(UInt64(0)) { $0 + $1.entry.size }
            run.sum.volumes += 1; run.sum.files += s.parts.count
            run.sum.recompressed += s.parts.filter { $0.wrapper != nil }.count
            run.sum.originalBytes += original; run.sum.storedBytes += stored
            advance(run, files: s.parts.count, bytes: original, stored: stored)
        } catch let e as VoxError where e.kind != .io && e.kind != .busy {
            // a volume the codec cannot take (an unusual dtype or size): its files are kept as they are
            run.warn("\(s.parts.first?.path ?? "volume"): not coded as a volume (\(e.message)); stored as plain files")
            try storeOpaque(s.parts.map { (entries[$0.path]!, bytes[$0.path]!) }, run)
        }
    }

    /// The entries at or under each of `paths` (archive paths; all when empty). A path that
    /// names nothing in the archive is an error.
    public static func select(_ entries: [Archive.Entry], _ paths: [String]) throws -> [Archive.Entry] {
        if paths.isEmpty { return entries }
        var keep = Set<String>()
        for raw in paths {
            var q = raw
            while q.hasPrefix("./") || q.hasPrefix("/") { q.removeFirst(q.hasPrefix("/") ? 1 : 2) }
            while q.count > 1 && q.hasSuffix("/") { q.removeLast() }
            let hits = entries.filter { $0.path == q || $0.path.hasPrefix(q + "/") }
            guard !hits.isEmpty else { throw VoxError(.invalidArgument, "\(raw): not in the archive") }
            for h in hits { keep.insert(h.path) }
        }
        return entries.filter { keep.contains($0.path) }
    }

    public struct UnpackResult: Sendable {
        public var restored = 0
        /// Files that could not be rebuilt (a damaged slab or record), with why; everything
        /// else was restored.
        public var failed: [Archive.Problem] = []
    }

    /// Restores the archive (or the entries at or under `paths`) under `dest` (created when
    /// missing), like tar: existing files are replaced; as root, owners are restored too. A
    /// file that cannot be rebuilt or written is reported in the result and the others are
    /// still restored. An archive is input like any other: nothing is written outside `dest`
    /// (no ".." or absolute paths, and no path is followed through a symlink, whether the
    /// archive made it or it was there before), and setuid/setgid bits are dropped unless
    /// `keepSetID`.
    public static func unpack(_ archive: Archive, to dest: String, paths: [String] = [], keepSetID: Bool = false) throws -> UnpackResult {
        let scan = try archive.scanTree()
        let all = try select(scan.entries, paths)
        var result = UnpackResult()
        if paths.isEmpty { result.failed += scan.problems }
        if let st = try Sys.statIfExists(dest) {      // (the destination itself may be a link to a folder)
            guard (st.st_mode & S_IFMT) == S_IFDIR else { throw VoxError(.io, "\(dest) exists and is not a folder: give a folder to unpack into") }
        } else {
            var p = dest.hasPrefix("/") ? "" : "."
            for c in dest.split(separator: "/") {
                p += "/" + c
                do { try Sys.mkdir(p) } catch let e as VoxError where e.errno == EEXIST {}
            }
        }
        var cache: [UInt64: Archive.DecodedVolume] = [:]
        let asRoot = getuid() == 0
        func modeBits(_ e: Archive.Entry) -> mode_t { mode_t(keepSetID ? e.mode & 0o7777 : e.mode & 0o1777) }
        func fail(_ e: Archive.Entry, _ why: String) { result.failed.append(Archive.Problem(path: e.path, message: why)) }
        /// Owner (as root), mode (not for symlinks) and times of what was just restored at `p`;
        /// a failure is reported for the entry (it was restored, but not as it was packed).
        func setAttributes(_ p: String, _ e: Archive.Entry) {
            do {
                if asRoot { try Sys.lchown(p, uid: e.uid, gid: e.gid) }
                if e.kind != .symlink { try Sys.chmod(p, modeBits(e)) }
                try Sys.setTimes(p, seconds: Int(e.mtimeSec), nanoseconds: Int(e.mtimeNsec))
            } catch let err as VoxError { fail(e, err.message) } catch { fail(e, "\(error)") }
        }
        func isDirectory(_ p: String) -> Bool { Sys.isDirectory(p) }

        // folders first, then files grouped by volume (each volume is decoded once), then links
        func rank(_ e: Archive.Entry) -> (Int, UInt64, UInt32, String) {
            switch (e.kind, e.content) {
            case (.directory, _): return (0, 0, 0, e.path)
            case (.file, .volume(let id, let k)): return (1, id, k, e.path)
            case (.file, _): return (1, 0, 0, e.path)
            case (.symlink, _), (.special, _): return (2, 0, 0, e.path)
            }
        }
        let ordered = all.sorted { rank($0) < rank($1) }
        for e in ordered {
            let comps = e.path.split(separator: "/", omittingEmptySubsequences: false)
            guard !e.path.isEmpty, !comps.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
                fail(e, "unsafe path in the archive (not restored)"); continue
            }
            // every folder above the entry must be a real folder under dest, never a symlink
            var parent = dest, safe = true
            for c in comps.dropLast() {
                parent += "/" + c
                if isDirectory(parent) { continue }
                if (try? Sys.mkdir(parent)) == nil && !isDirectory(parent) { safe = false; break }
            }
            guard safe else { fail(e, "not restored: \(parent) is not a folder (a file or a symlink is in the way)"); continue }
            let p = dest + "/" + e.path
            switch e.kind {
            case .special:
                // FIFOs, sockets and device nodes (devices need root, as with tar)
                guard case .special(let type, let rdev) = e.content else { continue }
                do {
                    if !isDirectory(p) { try Sys.unlinkIfExists(p) }
                    guard mknod(p, mode_t(type) | modeBits(e), dev_t(rdev)) == 0 else { throw Sys.error(p, "create the special file") }
                } catch let err as VoxError { fail(e, err.message); continue }
                setAttributes(p, e)
            case .directory:
                if !isDirectory(p) { do { try Sys.mkdir(p) } catch let err as VoxError { fail(e, err.message) } }
            case .symlink:
                do {
                    if !isDirectory(p) { try Sys.unlinkIfExists(p) }
                    try Sys.symlink(e.linkTarget, at: p)
                } catch let err as VoxError { fail(e, err.message); continue }
                setAttributes(p, e)
            case .file:
                // unpacking everything: all of a volume's slabs on all cores before its first file
                // (a subset decodes only the slabs its files need, file by file)
                if paths.isEmpty, case .volume(let id, _) = e.content, cache[id] == nil {
                    try? archive.decode(volume: id, into: &cache)
                }
                let b: [UInt8]
                do { b = try archive.contents(e, decoded: &cache) } catch let err as VoxError { fail(e, err.message); continue }
                if isDirectory(p) { fail(e, "not restored: a folder of that name is in the way"); continue }
                do { try FileIO.writeAtomically(p, b) } catch let err as VoxError { fail(e, err.message); continue }
                setAttributes(p, e)
                result.restored += 1
            }
        }
        // directory owners, modes and times last (writing files changes them)
        for e in all.reversed() where e.kind == .directory {
            let p = dest + "/" + e.path
            guard isDirectory(p) else { continue }
            setAttributes(p, e)
        }
        return result
    }
}
