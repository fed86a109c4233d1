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
    @Flag(name: .shortAndLong, help: "Less output.") var quiet = false

    func run() throws {
        guard paths.count >= 2 else { throw VoxError(.invalidArgument, "usage: voxfs pack SRC... ARCHIVE") }
        let archivePath = paths.last!, sources = Array(paths.dropLast())
        for s in sources where !FileManager.default.fileExists(atPath: s) { throw VoxError(.io, "\(s): no such file or folder") }
        let pr = try Preset.named(preset)
        var packer = Packer(preset: pr, threads: jobs ?? ProcessInfo.processInfo.activeProcessorCount) { vol, base in
            try Adapter.adapt(base, to: vol, epochs: Adapter.autoEpochs)
        }
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
