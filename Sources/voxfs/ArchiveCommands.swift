import ArgumentParser
import Foundation
import VoxArchive
import VoxIngest
import VoxCodec
import VoxCore
import VoxTrain

func humanBytes(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n), u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    return u == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[u])
}

func duration(_ s: Double) -> String {
    s < 60 ? String(format: "%.0f s", s) : String(format: "%d min %02d s", Int(s) / 60, Int(s) % 60)
}

/// What an interrupted pack says (prepared before the signal handler may need it).
nonisolated(unsafe) let packInterrupted: [UInt8] = Array("\nvoxfs: pack interrupted; everything packed so far is in the archive: run the same pack again to resume\n".utf8)

struct Pack: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pack files and folders into an archive (DICOM series, NIfTI, MetaImage, NRRD and raw volumes coded as volumes; everything else kept as is).",
        discussion: "Running pack again on the same sources resumes: files already in the archive (same path, size and mtime) are skipped, changed files are stored again, and nothing is removed. Special files (devices, sockets, pipes) are skipped with a warning. Exit status 1 when some file could not be read (each is named in a warning). Presets: \(Preset.all.map(\.name).joined(separator: ", ")).")
    @Argument(help: "Sources, then the archive (NAME.voxfs).") var paths: [String]
    @Option(help: "Preset for the volumes.") var preset: String = Preset.defaultName
    @Option(help: "Worker threads.") var jobs: Int?
    @Option(help: "Epochs of adapting the model to each volume of 1M+ voxels (0: off).") var adapt: Int = Adapter.autoEpochs
    @Flag(name: .shortAndLong, help: "Less output.") var quiet = false

    func run() throws {
        guard paths.count >= 2 else { throw VoxError(.invalidArgument, "usage: voxfs pack SRC... ARCHIVE") }
        let archivePath = paths.last!, sources = Array(paths.dropLast())
        for s in sources where !FileManager.default.fileExists(atPath: s) { throw VoxError(.io, "\(s): no such file or folder") }
        let pr = try Preset.named(preset)
        guard (0...1000).contains(adapt) else { throw VoxError(.invalidArgument, "--adapt must be 0 to 1000") }
        if let j = jobs, !(1...256).contains(j) { throw VoxError(.invalidArgument, "--jobs must be 1 to 256") }
        let epochs = adapt
        // adaptation trains: a missing OpenBLAS is an error before anything is packed, not at the first big volume
        if epochs > 0, try pr.builtinModel() != nil {
            do { try BLAS.load() } catch let e as VoxError { throw VoxError(e.kind, e.message + "; or pack with --adapt 0 (no adaptation)") }
        }
        var packer = Packer(preset: pr, threads: jobs ?? ProcessInfo.processInfo.activeProcessorCount,
                            adapt: epochs == 0 ? nil : { vol, base in try Adapter.adapt(base, to: vol, epochs: epochs) })
        let tty = isatty(2) != 0
        var lastLine = Date.distantPast
        if !quiet {
            packer.progress = { p in
                let pct = p.bytesTotal == 0 ? 100.0 : 100.0 * Double(p.bytesDone) / Double(p.bytesTotal)
                let eta = p.eta.map { "ETA " + duration($0) } ?? "ETA -"
                let ratio = p.storedBytes == 0 ? "-" : String(format: "%.2f", p.ratio)
                let text = String(format: "%5.1f%%  %@ / %@  %d/%d files  ratio %@  %@", pct, humanBytes(p.bytesDone), humanBytes(p.bytesTotal),
                                  p.filesDone, p.filesTotal, ratio, eta)
                if tty {
                    let width = 24, filled = Int(pct / 100 * Double(width))
                    let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
                    FileHandle.standardError.write(Data("\r\u{1B}[K[\(bar)] \(text)".utf8))
                } else if Date().timeIntervalSince(lastLine) >= 5 || p.bytesDone == p.bytesTotal {
                    lastLine = Date()
                    FileHandle.standardError.write(Data("pack: \(text)\n".utf8))
                }
            }
        }
        let t0 = Date()
        let archive = try Archive(path: archivePath, create: true)
        try archive.lock(exclusive: true)
        // every file is committed on its own: an interrupted pack keeps what it committed
        _ = packInterrupted.count                 // globals are lazy: initialise it outside the handler
        signal(SIGINT) { _ in
            // async-signal-safe: a prepared buffer, write(2), _exit
            _ = packInterrupted.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
            _exit(130)
        }
        let s = try packer.pack(sources, into: archive, archivePath: archivePath)
        if tty && !quiet { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        for w in s.warnings { FileHandle.standardError.write(Data("voxfs: warning: \(w)\n".utf8)) }
        var st = stat()
        stat(archivePath, &st)
        if !quiet {
            let ratio = s.storedBytes == 0 ? "-" : String(format: "%.2f", Double(s.originalBytes) / Double(s.storedBytes))
            print("\(archivePath): packed \(s.files) files (\(s.files - s.opaque) in \(s.volumes) volume\(s.volumes == 1 ? "" : "s")\(s.recompressed > 0 ? ", \(s.recompressed) of them compressed files rebuilt by recompressing" : ""), \(s.opaque) opaque), \(s.directories) folders, \(s.symlinks) symlinks; \(s.skipped) already in")
            print("  original \(humanBytes(s.originalBytes)) (\(s.originalBytes) bytes), stored \(humanBytes(s.storedBytes)) (\(s.storedBytes) bytes), ratio \(ratio); archive file \(humanBytes(UInt64(max(0, st.st_size)))); \(duration(Date().timeIntervalSince(t0)))")
        }
        if s.failed > 0 {
            FileHandle.standardError.write(Data("voxfs: \(s.failed) file(s) could not be packed (see the warnings above); run pack again once they are readable\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct Unpack: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Restore an archive's files (all, or those at or under PATHs), byte for byte, with modes, times and symlinks.")
    @Argument(help: "Archive.") var archive: String
    @Argument(help: "Destination folder.") var dest: String
    @Argument(help: "Archive paths to restore (folders include everything under them; default: all).") var only: [String] = []
    @Flag(name: .customLong("keep-setid"), help: "Restore setuid and setgid bits as stored (by default they are dropped: an archive is input from elsewhere).") var keepSetID = false
    func run() throws {
        let a = try Archive.reader(archive)
        if let note = a.protectionNote { FileHandle.standardError.write(Data("voxfs: note: \(note)\n".utf8)) }
        let r = try Packer.unpack(a, to: dest, paths: only, keepSetID: keepSetID)
        for f in r.failed { FileHandle.standardError.write(Data("voxfs: NOT RESTORED \(f)\n".utf8)) }
        print("\(dest): \(r.restored) files restored" + (r.failed.isEmpty ? "" : ", \(r.failed.count) problems (damaged or not restored)"))
        if !r.failed.isEmpty { throw ExitCode(1) }
    }
}

struct Ls: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List an archive (-l: mode, owner, size, stored size, ratio, time, how it is stored).")
    @Argument(help: "Archive.") var archive: String
    @Argument(help: "Archive paths to list (folders include everything under them; default: all).") var only: [String] = []
    @Flag(name: .short, help: "Long listing.") var long = false
    func run() throws {
        let a = try Archive.reader(archive)
        let entries = try Packer.select(try a.entries(), only)
        if !long { for e in entries { print(e.path) }; return }
        let vols = try a.volumeInfosByID()
        let fmt = DateFormatter()
        fmt.dateFormat = "yyyy-MM-dd HH:mm"
        for e in entries {
            let kind: String = switch e.content {
            case .special(let t, _): t == UInt32(S_IFIFO) ? "p" : t == UInt32(S_IFSOCK) ? "s" : t == UInt32(S_IFCHR) ? "c" : "b"
            default: e.kind == .directory ? "d" : (e.kind == .symlink ? "l" : "-")
            }
            var perms = ""
            for (i, c) in "rwxrwxrwx".enumerated() { perms.append(e.mode & (0o400 >> UInt32(i)) != 0 ? c : "-") }
            var how = "", stored = "", ratio = ""
            if e.kind == .file {
                let sz = try a.storedSize(e, volumes: vols)
                stored = "\(sz)"
                ratio = sz > 0 ? String(format: "%.2f", Double(e.size) / Double(sz)) : "-"
                switch e.content {
                case .volume(let id, _): how = "volume \(id)"
                case .blob: how = "blob"
                case .chunks(_, let hs): how = "stored (\(hs.count) chunk\(hs.count == 1 ? "" : "s"))"
                case .none, .special: how = ""
                }
            }
            let date = fmt.string(from: Date(timeIntervalSince1970: TimeInterval(e.mtimeSec)))
            let owner = String(format: "%5u %5u", e.uid, e.gid)
            let line = "\(kind)\(perms) \(owner) \(pad(e.kind == .file ? "\(e.size)" : "", 11)) \(pad(stored, 11)) \(pad(ratio, 6)) \(date) \(e.path)"
                + (e.kind == .symlink ? " -> " + e.linkTarget : "") + (how.isEmpty ? "" : "  [\(how)]")
            print(line)
        }
    }
    func pad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check an archive: decode every slab, check every checksum (--quick: structure and records only).")
    @Argument(help: "Archive.") var archive: String
    @Flag(help: "Structure and records only.") var quick = false
    func run() throws {
        let a = try Archive.reader(archive)
        let r = try a.verify(quick: quick)
        if let note = a.protectionNote { print("note: \(note)") }
        for p in r.problems { print("DAMAGED \(p)") }
        print("\(archive): \(r.files) files, \(r.volumes) volumes checked\(quick ? " (quick)" : ""): \(r.problems.isEmpty ? "sound" : "\(r.problems.count) problems")")
        if !r.problems.isEmpty { throw ExitCode(1) }
    }
}

struct Compact: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Drop stored data no file refers to any more (a read-write mount reclaims most of it on the fly).",
                                                    discussion: "Runs under the archive's exclusive lock: unmount it first. One transaction; LMDB reuses the freed pages for later writes (the file does not shrink).")
    @Argument(help: "Archive.") var archive: String
    func run() throws {
        guard FileManager.default.fileExists(atPath: archive) else { throw VoxError(.invalidArgument, "\(archive): no such archive") }
        let a = try Archive(path: archive, create: true)
        try a.lock(exclusive: true)
        let r = try a.compact()
        print("\(archive): \(r.blobs) unreferenced blobs and \(r.volumes) unreferenced volumes dropped")
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Totals and per-volume bpp, ratio, model and preset.")
    @Argument(help: "Archive.") var archive: String
    @Flag(help: "JSON output.") var json = false
    func run() throws {
        let a = try Archive.reader(archive)
        let infos = try a.volumeInfos()
        let entries = try a.entries()
        let files = entries.filter { $0.kind == .file }
        let original = files.reduce(UInt64(0)) { $0 + $1.size }
        var st = stat()
        stat(archive, &st)
        var vols: [[String: Any]] = []
        for v in infos {
            let h = v.header
            let raw = h.shape.voxels * h.dtype.bytesPerVoxel
            vols.append(["id": v.id, "shape": h.shape.description, "dtype": h.dtype.description, "preset": h.preset,
                         "model": h.usesLSTM ? Checksum.hex(h.modelHash) : "none", "adapted": h.embeddedModel != nil,
                         "bpp": Double(v.storedBytes * 8) / Double(h.shape.voxels), "ratio": Double(raw) / Double(v.storedBytes)])
        }
        let stored = try a.storedBytes(files, volumes: Dictionary(uniqueKeysWithValues: infos.map { ($0.id, $0) }))
        if json {
            let obj: [String: Any] = ["files": files.count, "volumes": infos.count, "original_bytes": original, "stored_bytes": stored,
                                      "archive_bytes": Int(st.st_size), "volume_details": vols]
            let d = try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: d, as: UTF8.self))
            return
        }
        print(String(format: "%@: %ld files, %ld volumes; original %llu bytes, stored %llu bytes (ratio %.2f); archive file %lld bytes (ratio %.2f, with LMDB's free pages and tree)",
                     archive, files.count, infos.count, original, stored, Double(original) / Double(max(1, stored)), Int64(st.st_size), Double(original) / Double(max(1, st.st_size))))
        for v in vols {
            print(String(format: "  volume %@  %@ %@  %.3f bpp  ratio %.2f  preset %@  model %@%@", "\(v["id"]!)", v["shape"] as! String, v["dtype"] as! String,
                         v["bpp"] as! Double, v["ratio"] as! Double, v["preset"] as! String, String((v["model"] as! String).prefix(16)), (v["adapted"] as! Bool) ? " (adapted)" : ""))
        }
    }
}
