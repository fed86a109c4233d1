import ArgumentParser
import Foundation
import VoxArchive
import VoxCodec
import VoxCore
import VoxTrain

struct Pack: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pack files and folders into an archive (DICOM series, NIfTI, MetaImage, NRRD and raw volumes coded as volumes; everything else kept as is).")
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
        let epochs = adapt
        var packer = Packer(preset: pr, threads: jobs ?? ProcessInfo.processInfo.activeProcessorCount,
                            adapt: epochs == 0 ? nil : { vol, base in try Adapter.adapt(base, to: vol, epochs: epochs) })
        if !quiet { packer.progress = { print($0) } }
        let t0 = Date()
        let archive = try Archive(path: archivePath, create: true)
        let s = try packer.pack(sources, into: archive, archivePath: archivePath)
        for w in s.warnings { FileHandle.standardError.write(Data("voxfs: warning: \(w)\n".utf8)) }
        var st = stat()
        stat(archivePath, &st)
        if !quiet {
            print(String(format: "%@: %ld files (%ld in %ld volumes, %ld opaque), %ld skipped as already packed, %ld folders, %ld symlinks; %llu bytes read, archive %lld bytes; %.1f s",
                         archivePath, s.files, s.files - s.opaque, s.volumes, s.opaque, s.skipped, s.directories, s.symlinks, s.originalBytes, Int64(st.st_size), Date().timeIntervalSince(t0)))
        }
    }
}

struct Unpack: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Restore an archive's files, byte for byte, with modes, times and symlinks.")
    @Argument(help: "Archive.") var archive: String
    @Argument(help: "Destination folder.") var dest: String
    func run() throws {
        let a = try Archive(path: archive, create: false)
        let n = try Packer.unpack(a, to: dest)
        print("\(dest): \(n) files restored")
    }
}

struct Ls: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List an archive.")
    @Argument(help: "Archive.") var archive: String
    @Flag(name: .short, help: "Long listing.") var long = false
    func run() throws {
        let a = try Archive(path: archive, create: false)
        for e in try a.entries() {
            if !long { print(e.path); continue }
            let kind = e.kind == .directory ? "d" : (e.kind == .symlink ? "l" : "-")
            var how = ""
            switch e.content { case .volume(let id, _): how = "volume \(id)"; case .blob: how = "stored"; case .none: how = "" }
            let date = Date(timeIntervalSince1970: TimeInterval(e.mtimeSec))
            print(String(format: "%@%@ %5u %5u %12llu %@ %@%@%@", kind, String(e.mode, radix: 8), e.uid, e.gid, e.size,
                         ISO8601DateFormatter().string(from: date), e.path, e.kind == .symlink ? " -> " + e.linkTarget : "", how.isEmpty ? "" : "  [\(how)]"))
        }
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check an archive: decode every slab, check every checksum (--quick: structure and records only).")
    @Argument(help: "Archive.") var archive: String
    @Flag(help: "Structure and records only.") var quick = false
    func run() throws {
        let a = try Archive(path: archive, create: false)
        let r = try a.verify(quick: quick)
        for p in r.problems { print("DAMAGED \(p)") }
        print("\(archive): \(r.files) files, \(r.volumes) volumes checked\(quick ? " (quick)" : ""): \(r.problems.isEmpty ? "sound" : "\(r.problems.count) problems")")
        if !r.problems.isEmpty { throw ExitCode(1) }
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Totals and per-volume bpp, ratio, model and preset.")
    @Argument(help: "Archive.") var archive: String
    @Flag(help: "JSON output.") var json = false
    func run() throws {
        let a = try Archive(path: archive, create: false)
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
        if json {
            let obj: [String: Any] = ["files": files.count, "volumes": infos.count, "original_bytes": original, "archive_bytes": Int(st.st_size), "volume_details": vols]
            let d = try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: d, as: UTF8.self))
            return
        }
        print(String(format: "%@: %ld files, %ld volumes, %llu original bytes, archive file %lld bytes (ratio %.2f)", archive, files.count, infos.count, original, Int64(st.st_size), Double(original) / Double(max(1, st.st_size))))
        for v in vols {
            print(String(format: "  volume %@  %@ %@  %.3f bpp  ratio %.2f  preset %@  model %@%@", "\(v["id"]!)", v["shape"] as! String, v["dtype"] as! String,
                         v["bpp"] as! Double, v["ratio"] as! Double, v["preset"] as! String, String((v["model"] as! String).prefix(16)), (v["adapted"] as! Bool) ? " (adapted)" : ""))
        }
    }
}
