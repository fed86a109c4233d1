// Coverage-guided fuzz targets for the parsers and decoders that read stored or user input
// (issue 17): the DICOM, NIfTI, MetaImage, NRRD and gzip recognisers (with the property that a
// file recognised as a volume rebuilds to exactly its bytes), DICOM series grouping, the .vxz
// stream decoder, model files and the archive's record decoders.
//
// Two builds of the same targets:
//   - the normal build (`swift build`): `voxfuzz TARGET FILE|DIR...` replays inputs (the
//     committed corpus, a crash file) through one target; `make test` replays the corpus;
//   - the libFuzzer build (`make fuzz-swift`: -sanitize=fuzzer,address, -D VOXFUZZ_LIBFUZZER):
//     libFuzzer's main calls LLVMFuzzerTestOneInput, the target named by $VOXFUZZ_TARGET.
// A target fails by crashing: a trap, a sanitizer report, or a broken property (fatalError).
import Foundation
import VoxCore
import VoxCodec
import VoxFormats
import VoxArchive

enum FuzzTargets {
    /// Inputs that got past parsing to the checked property (a volume rebuilt, a slab decoded,
    /// a record decoded): the replay prints it, so a harness that checks nothing shows.
    nonisolated(unsafe) static var deep = 0
    static let names = ["dicom", "nifti", "metaimage", "nrrd", "gzip", "series", "stream", "model", "records"]

    /// Runs one input through target `name`; returns false for an unknown target.
    static func run(_ name: String, _ data: [UInt8]) -> Bool {
        switch name {
        case "dicom": recognise("f.dcm", data)
        case "nifti": recognise("f.nii", data)
        case "metaimage": recognise("f.mha", data)
        case "nrrd": recognise("f.nrrd", data)
        case "gzip": recognise("f.nii.gz", data)
        case "series": series(data)
        case "stream": stream(data)
        case "model": model(data)
        case "records": records(data)
        default: return false
        }
        return true
    }

    /// The property every recogniser keeps: a volume's parts and voxels rebuild its file exactly.
    static func recognise(_ path: String, _ data: [UInt8]) {
        let r = Formats.recognise(path: path, bytes: data)
        guard let s = r.source else {
            precondition(r.kind == .opaque && r.reason != nil, "\(path): not a volume, but no reason given")
            return
        }
        precondition(s.parts.count == 1, "\(path): one file, \(s.parts.count) parts")
        precondition(s.voxels.count == s.shape.voxels * s.dtype.bytesPerVoxel, "\(path): voxel bytes do not match the shape")
        let back: [UInt8]
        do { back = try s.parts[0].rebuildFile(voxels: s.voxels[...], dtype: s.dtype) } catch {
            fatalError("\(path): recognised as \(r.kind) but its rebuild throws: \(error)")
        }
        if back != data { fatalError("\(path): recognised as \(r.kind) but does not rebuild to its bytes") }
        deep += 1
    }

    /// Two or three DICOM files cut from one input (its first bytes say where): grouping into
    /// series, and every grouped file rebuilding exactly.
    static func series(_ data: [UInt8]) {
        guard data.count >= 4 else { return }
        let n = 2 + Int(data[0] % 2)
        let body = Array(data[2...])
        let cut = body.count * (1 + Int(data[1] % 7)) / 8
        var files: [(path: String, bytes: [UInt8])] = [("a/1.dcm", Array(body[..<cut])), ("a/2.dcm", Array(body[cut...]))]
        if n == 3 { files.append(("a/3.dcm", Array(body[cut...]))) }
        let g = DicomSeries.group(files)
        let byPath = Dictionary(files.map { ($0.path, $0.bytes) }, uniquingKeysWith: { a, _ in a })
        for v in g.volumes {
            let sliceBytes = v.shape.sliceVoxels * v.dtype.bytesPerVoxel
            precondition(v.voxels.count == v.shape.voxels * v.dtype.bytesPerVoxel, "series: voxel bytes do not match the shape")
            for p in v.parts {
                let lo = p.firstSlice * sliceBytes, hi = lo + p.slices * sliceBytes
                precondition(p.firstSlice >= 0 && p.slices > 0 && hi <= v.voxels.count, "series: a part outside its volume")
                guard let orig = byPath[p.path] else { fatalError("series: a part of a file that was not given") }
                let back = try? p.rebuildFile(voxels: v.voxels[lo..<hi], dtype: v.dtype)
                if back != orig { fatalError("series: \(p.path) does not rebuild to its bytes") }
                deep += 1
            }
        }
    }

    /// Puts back a CRC-32C over bytes[0 ..< at] at `at`, so that mutations reach the fields
    /// behind a checksum instead of stopping at it (the checksum itself is tested elsewhere).
    static func resealed(_ b: [UInt8], at: Int) -> [UInt8] {
        guard at >= 0, at + 4 <= b.count else { return b }
        var o = b
        let c = Checksum.crc32c(Array(b[0..<at]))
        for k in 0..<4 { o[at + k] = UInt8(truncatingIfNeeded: c >> (8 * k)) }
        return o
    }

    /// A .vxz stream: its header (resealed) parsed, then, for volumes of at most 4096 voxels, every slab decoded
    /// (each must decode or throw; a decoded slab passed its checksum).
    static func stream(_ data: [UInt8]) {
        var b = data
        if b.count >= 16 {
            let hlen = Int(b[12]) | Int(b[13]) << 8 | Int(b[14]) << 16 | Int(b[15]) << 24
            b = resealed(b, at: hlen - 4)
        }
        guard let h = try? StreamHeader(parsing: b, fileSize: b.count, name: "fuzz") else { return }
        // bounded work per input: the limits of real streams are far larger
        guard h.shape.voxels <= 1 << 12 else { return }
        guard let d = try? VXZ.Decoder(stream: b, name: "fuzz") else { return }
        for i in 0..<d.slabCount {
            if let out = try? d.decodeSlab(i) {
                precondition(out.count == d.slabByteCount(i), "stream: slab \(i) has the wrong size")
                deep += 1
            }
        }
    }

    /// A model file (resealed): parsed, and a parsed model's serialisation parses to the same hash.
    static func model(_ data: [UInt8]) {
        let b = resealed(data, at: data.count - 4)
        guard let m = try? LSTMModel(bytes: b, name: "fuzz") else { return }
        guard let again = try? LSTMModel(bytes: m.serialized(), name: "fuzz again") else { fatalError("model: a parsed model does not parse again") }
        precondition(again.hash == m.hash, "model: serialisation changes the model")
        deep += 1
    }

    /// Archive records after their seal: the first byte picks the kind and schema.
    static func records(_ data: [UInt8]) {
        guard let k = data.first else { return }
        let kinds = ["tree", "parts", "volumes", "blob"]
        let schema = UInt32(1 + (Int(k) >> 2) % Int(Archive.schemaVersion))
        var v = Array(data.dropFirst())
        if kinds[Int(k) & 3] == "volumes", v.count >= 16 {
            let hlen = Int(v[12]) | Int(v[13]) << 8 | Int(v[14]) << 16 | Int(v[15]) << 24
            v = resealed(v, at: hlen - 4)
        }
        if (try? Archive.decodeRecord(db: kinds[Int(k) & 3], v, schema: schema)) != nil { deep += 1 }
    }
}

#if VOXFUZZ_LIBFUZZER
// libFuzzer's driver, called from main (SwiftPM gives an executable its own entry point, so
// libFuzzer's main is not linked; its driver is)
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ cb: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

nonisolated(unsafe) private var fuzzTarget = ""

@main
struct VoxFuzzLibFuzzer {
    static func main() {
        let t = ProcessInfo.processInfo.environment["VOXFUZZ_TARGET"] ?? ""
        guard FuzzTargets.names.contains(t) else {
            FileHandle.standardError.write(Data("set VOXFUZZ_TARGET to one of: \(FuzzTargets.names.joined(separator: " "))\n".utf8))
            exit(2)
        }
        fuzzTarget = t
        // no zgz processes per input (the recognisers' GNU gzip search); the replay keeps them
        GNUGzipRecompressor.disabled = true
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            let bytes = size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : []
            _ = FuzzTargets.run(fuzzTarget, bytes)
            return 0
        })
    }
}
#else
@main
struct VoxFuzzReplay {
    static func main() {
        let args = Array(CommandLine.arguments.dropFirst())
        if args.count == 3, args[0] == "--seed-records" { seedRecords(archive: args[1], into: args[2]); return }
        if args == ["--list"] { print(FuzzTargets.names.joined(separator: " ")); return }
        guard args.count >= 2, FuzzTargets.names.contains(args[0]) else {
            print("usage: voxfuzz TARGET FILE|DIR...   (targets: \(FuzzTargets.names.joined(separator: " ")))")
            print("       voxfuzz --seed-records ARCHIVE DIR   (the records target's seeds: each record of ARCHIVE)")
            print("       voxfuzz --list   (the targets' names)")
            print("Replays inputs through a fuzz target; a broken property or a crash ends the run.")
            exit(2)
        }
        var n = 0
        let fm = FileManager.default
        for a in args.dropFirst() {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: a, isDirectory: &isDir) else { print("voxfuzz: \(a): no such file"); exit(1) }
            var files = [a]
            if isDir.boolValue {
                files = ((try? fm.subpathsOfDirectory(atPath: a)) ?? []).sorted().map { a + "/" + $0 }
                    .filter { var d: ObjCBool = false; return fm.fileExists(atPath: $0, isDirectory: &d) && !d.boolValue }
            }
            for f in files {
                guard let d = fm.contents(atPath: f) else { print("voxfuzz: cannot read \(f)"); exit(1) }
                _ = FuzzTargets.run(args[0], [UInt8](d))
                n += 1
            }
        }
        print("voxfuzz \(args[0]): \(n) inputs replayed (\(FuzzTargets.deep) reached the checked property), no crash: \(n) checks ok, 0 failed")
    }

    /// Writes each tree, part, volume and blob record of an archive, its seal removed and the
    /// records target's kind byte in front, as one seed file.
    static func seedRecords(archive: String, into dir: String) {
        do {
            let a = try Archive.reader(archive)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            var n = 0
            for (i, d) in [Archive.Database.tree, .parts, .volumes, .blobs].enumerated() {
                let (schema, recs) = try a.rawRecords(d)
                let kind = UInt8(i) | UInt8((Int(schema) - 1) % Int(Archive.schemaVersion)) << 2
                for r in recs.prefix(16) {
                    let v = schema >= 2 ? Array(r.value.dropLast(4)) : r.value
                    guard v.count <= 1 << 16 else { continue }
                    try Data([kind] + v).write(to: URL(fileURLWithPath: "\(dir)/\(i)-\(n)"))
                    n += 1
                }
            }
            print("voxfuzz: \(n) record seeds from \(archive) in \(dir)")
        } catch {
            print("voxfuzz: \(error)")
            exit(1)
        }
    }
}
#endif
