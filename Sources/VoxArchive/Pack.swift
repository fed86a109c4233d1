import Foundation
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
        public var originalBytes: UInt64 = 0
        public var warnings: [String] = []
    }

    public var preset: Preset
    /// Adapts the preset's model to a volume (VoxTrain's Adapter), or nil for no adaptation.
    public var adapt: ((LoadedVolume, LSTMModel) throws -> LSTMModel)?
    public var threads: Int
    public var progress: ((String) -> Void)?

    public init(preset: Preset, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                adapt: ((LoadedVolume, LSTMModel) throws -> LSTMModel)? = nil) {
        self.preset = preset; self.threads = threads; self.adapt = adapt
    }

    static func lstatEntry(_ path: String, name: String) throws -> Archive.Entry? {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw VoxError(.io, "\(path): \(String(cString: strerror(errno)))") }
        let fmt = st.st_mode & S_IFMT
        let kind: Archive.Kind
        var target = ""
        switch fmt {
        case S_IFDIR: kind = .directory
        case S_IFREG: kind = .file
        case S_IFLNK:
            kind = .symlink
            var buf = [CChar](repeating: 0, count: 4097)
            let n = readlink(path, &buf, 4096)
            guard n >= 0 else { throw VoxError(.io, "\(path): cannot read link") }
            target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        default: return nil
        }
        return Archive.Entry(path: name, kind: kind, mode: UInt32(st.st_mode & 0o7777), uid: st.st_uid, gid: st.st_gid,
                             mtimeSec: Int64(st.st_mtim.tv_sec), mtimeNsec: Int32(st.st_mtim.tv_nsec),
                             size: kind == .file ? UInt64(st.st_size) : 0, linkTarget: target, content: .none)
    }

    /// Packs `sources` (files or folders; each stored under its base name) into `archive`.
    public func pack(_ sources: [String], into archive: Archive, archivePath: String) throws -> Summary {
        var sum = Summary()
        let archiveReal = URL(fileURLWithPath: archivePath).standardizedFileURL.path
        for src in sources {
            let base = URL(fileURLWithPath: src).standardizedFileURL
            try walk(base.path, name: base.lastPathComponent, archive: archive, archiveReal: archiveReal, sum: &sum)
        }
        return sum
    }

    func walk(_ path: String, name: String, archive: Archive, archiveReal: String, sum: inout Summary) throws {
        guard var e = try Packer.lstatEntry(path, name: name) else { sum.warnings.append("\(path): special file skipped"); return }
        switch e.kind {
        case .symlink:
            try archive.putEntry(e); sum.symlinks += 1
        case .file:
            try packFiles([(path, e)], archive: archive, sum: &sum)
        case .directory:
            try archive.putEntry(e); sum.directories += 1
            let names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
            var files: [(String, Archive.Entry)] = []
            for n in names {
                let p = path + "/" + n
                if p == archiveReal || p == archiveReal + "-lock" { sum.warnings.append("\(p): the archive itself, skipped"); continue }
                guard let ce = try Packer.lstatEntry(p, name: name + "/" + n) else { sum.warnings.append("\(p): special file skipped"); continue }
                if ce.kind == .file { files.append((p, ce)) } else { try walk(p, name: name + "/" + n, archive: archive, archiveReal: archiveReal, sum: &sum) }
            }
            try packFiles(files, archive: archive, sum: &sum)
            e.content = .none
        }
    }

    /// Packs the regular files of one folder: DICOM slices grouped into series, other
    /// recognised files as volumes of their own, the rest opaque.
    func packFiles(_ files: [(String, Archive.Entry)], archive: Archive, sum: inout Summary) throws {
        var todo: [(String, Archive.Entry, [UInt8])] = []
        for (p, e) in files {
            if let old = try archive.entry(e.path), old.size == e.size, old.mtimeSec == e.mtimeSec, old.mtimeNsec == e.mtimeNsec, old.content != .none {
                sum.skipped += 1; continue
            }
            let b = try FileIO.read(p)
            guard UInt64(b.count) == e.size else { sum.warnings.append("\(p): changed while packing, skipped"); continue }
            todo.append((p, e, b))
            sum.originalBytes += e.size
        }
        var dicom: [(path: String, bytes: [UInt8])] = []
        var entryByPath: [String: Archive.Entry] = [:]
        for (p, e, b) in todo {
            entryByPath[p] = e
            if p.hasSuffix(".raw"), let sc = try? Sidecar.load(forRaw: p) {
                let r = Formats.raw(path: p, bytes: b, sidecar: sc)
                if let s = r.source { try storeVolume(s, entries: [p: e], archive: archive, sum: &sum); continue }
            }
            let r = Formats.recognise(path: p, bytes: b)
            if r.kind == .dicom, let s = r.source, s.shape.z == 1 { dicom.append((p, b)); continue }
            if let s = r.source { try storeVolume(s, entries: [p: e], archive: archive, sum: &sum); continue }
            try archive.putOpaque(e, bytes: b); sum.opaque += 1; sum.files += 1
        }
        if !dicom.isEmpty {
            let g = DicomSeries.group(dicom)
            for v in g.volumes { try storeVolume(v, entries: entryByPath, archive: archive, sum: &sum) }
            for (p, _) in g.opaque { try archive.putOpaque(entryByPath[p]!, bytes: dicom.first { $0.path == p }!.bytes); sum.opaque += 1; sum.files += 1 }
        }
    }

    func storeVolume(_ s: VolumeSource, entries: [String: Archive.Entry], archive: Archive, sum: inout Summary) throws {
        var model: LSTMModel? = try preset.builtinModel()
        var embed = false
        if let base = model, let adapt, s.shape.voxels >= (1 << 20) {
            var vals = [Int32](repeating: 0, count: s.shape.voxels)
            s.voxels.withUnsafeBytes { b in vals.withUnsafeMutableBufferPointer { s.dtype.decode(b, into: $0) } }
            model = try adapt(LoadedVolume(name: "pack", path: "", shape: s.shape, dtype: s.dtype, values: vals), base)
            embed = true
        }
        progress?("coding \(s.shape) \(s.dtype) volume of \(s.parts.count) file(s)")
        let opts = EncodeOptions(preset: preset, model: model, slabThickness: 8, threads: threads, embedModel: embed)
        let stream = try s.voxels.withUnsafeBytes { try VXZ.encode(raw: $0, shape: s.shape, dtype: s.dtype, options: opts) }
        _ = try archive.putVolume(stream: stream, model: model, files: s.parts.map { (entries[$0.path]!, $0) })
        sum.volumes += 1
        sum.files += s.parts.count
    }

    /// Restores the whole archive under `dest` (created when missing).
    public static func unpack(_ archive: Archive, to dest: String) throws -> Int {
        try FileManager.default.createDirectory(atPath: dest, withIntermediateDirectories: true)
        var cache: [UInt64: Archive.DecodedVolume] = [:]
        let all = try archive.entries()
        var n = 0
        // folders first, then files grouped by volume (each volume is decoded once), then links
        func rank(_ e: Archive.Entry) -> (Int, UInt64, UInt32, String) {
            switch (e.kind, e.content) {
            case (.directory, _): return (0, 0, 0, e.path)
            case (.file, .volume(let id, let k)): return (1, id, k, e.path)
            case (.file, _): return (1, 0, 0, e.path)
            case (.symlink, _): return (2, 0, 0, e.path)
            }
        }
        let ordered = all.sorted { rank($0) < rank($1) }
        for e in ordered {
            guard !e.path.contains("/../"), !e.path.hasPrefix("../"), !e.path.hasPrefix("/") else { throw VoxError(.corrupt, "unsafe path \(e.path) in archive") }
            let p = dest + "/" + e.path
            switch e.kind {
            case .directory:
                try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
            case .symlink:
                unlink(p)
                guard symlink(e.linkTarget, p) == 0 else { throw VoxError(.io, "\(p): \(String(cString: strerror(errno)))") }
                var ts = [timespec(tv_sec: Int(e.mtimeSec), tv_nsec: Int(e.mtimeNsec)), timespec(tv_sec: Int(e.mtimeSec), tv_nsec: Int(e.mtimeNsec))]
                utimensat(AT_FDCWD, p, &ts, AT_SYMLINK_NOFOLLOW)
            case .file:
                let b = try archive.contents(e, decoded: &cache)
                try FileIO.writeAtomically(p, b)
                chmod(p, mode_t(e.mode))
                var ts = [timespec(tv_sec: Int(e.mtimeSec), tv_nsec: Int(e.mtimeNsec)), timespec(tv_sec: Int(e.mtimeSec), tv_nsec: Int(e.mtimeNsec))]
                utimensat(AT_FDCWD, p, &ts, 0)
                n += 1
            }
        }
        // directory modes and times last (writing files changes them)
        for e in all.reversed() where e.kind == .directory {
            let p = dest + "/" + e.path
            chmod(p, mode_t(e.mode))
            var ts = [timespec(tv_sec: Int(e.mtimeSec), tv_nsec: Int(e.mtimeNsec)), timespec(tv_sec: Int(e.mtimeSec), tv_nsec: Int(e.mtimeNsec))]
            utimensat(AT_FDCWD, p, &ts, 0)
        }
        return n
    }
}
