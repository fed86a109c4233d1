import Foundation
import XCTest
import VoxCore
import VoxFormats
import VoxTestSupport

/// Compressed volumes (issue 15): a gzip-wrapped file is coded as a volume only when zlib
/// rebuilds its compressed bytes exactly, and is otherwise kept opaque with the reason; never
/// rebuilt wrong. Real writers: CPython's gzip module (zlib) and GNU gzip, run on a NIfTI file
/// made from a real MR volume (real pixels, written header); ITK's gzip NRRDs in pyradiomics.
final class DeflateTests: ScratchTestCase {
    /// A NIfTI-1 file of the first 6 slices of the real brain MR.
    func niftiFromRealMR() throws -> [UInt8] {
        let raw = try FileIO.read(try RealData.require("volumes/mr_brain1.raw"))
        let n = 256 * 256 * 6
        let vals = (0..<n).map { Int16(bitPattern: UInt16(raw[2 * $0]) | UInt16(raw[2 * $0 + 1]) << 8) }
        return TestFiles.nifti1(vals, x: 256, y: 256, z: 6, big: false)
    }

    /// `niftiFromRealMR()` written to brain.nii in the scratch folder: its bytes and path.
    func writeRealMRNifti() throws -> (bytes: [UInt8], path: String) {
        let nii = try niftiFromRealMR()
        let p = path("brain.nii")
        try FileIO.writeAtomically(p, nii)
        return (nii, p)
    }

    func python(_ script: String, _ args: [String]) throws {
        let r = try run("/usr/bin/env", ["python3", "-c", script] + args)
        XCTAssertEqual(r.status, 0, r.err)
    }

    /// Recognises, then rebuilds from the parts: must be the original bytes, or opaque.
    func check(_ bytes: [UInt8], name: String, file: StaticString = #filePath, line: UInt = #line) -> Formats.Recognised {
        let r = Formats.recognise(path: name, bytes: bytes)
        if let s = r.source {
            XCTAssertEqual(s.parts.count, 1, file: file, line: line)
            let rebuilt = try? s.parts[0].rebuildFile(voxels: s.voxels[...], dtype: s.dtype)
            XCTAssertTrue(rebuilt == bytes, "\(name): rebuilt bytes differ", file: file, line: line)
        }
        return r
    }

    func testNiftiGzipFromZlibWritersIsCodedAndRebuildsExactly() throws {
        let (nii, src) = try writeRealMRNifti()
        // CPython's gzip (zlib) at nibabel's default level 1, zlib's default 6, and 9; with a
        // file name in the header (FNAME) and a fixed mtime
        try python("""
            import gzip, sys
            d = open(sys.argv[1], 'rb').read()
            for lvl in (1, 6, 9):
                with open(sys.argv[1] + '.%d.gz' % lvl, 'wb') as f:
                    with gzip.GzipFile(filename='brain.nii', mode='wb', fileobj=f, compresslevel=lvl, mtime=1700000000) as g:
                        g.write(d)
            """, [src])
        for lvl in [1, 6, 9] {
            let gz = try FileIO.read(src + ".\(lvl).gz")
            let r = check(gz, name: "brain\(lvl).nii.gz")
            XCTAssertEqual(r.kind, .nifti, "level \(lvl): \(r.reason ?? "")")
            XCTAssertEqual(r.source?.parts[0].wrapper?.level, lvl)
            XCTAssertTrue(r.source?.voxels == Array(nii[352...]), "level \(lvl): the voxels are the NIfTI's")
        }
    }

    func testGzipOddities() throws {
        let (nii, src) = try writeRealMRNifti()
        try python("""
            import gzip, sys
            d = open(sys.argv[1], 'rb').read()
            open(sys.argv[1] + '.gz', 'wb').write(gzip.compress(d, compresslevel=6, mtime=0))
            """, [src])
        let gz = try FileIO.read(src + ".gz")
        XCTAssertEqual(check(gz, name: "b.nii.gz").kind, .nifti)
        // extra header fields (FEXTRA, FCOMMENT, FHCRC) around the same deflate stream
        var extra = Array(gz[0..<10])
        extra[3] |= 4 | 16 | 2
        extra += [6, 0] + Array("VX\u{2}\u{0}ab".utf8) + Array("a comment\u{0}".utf8) + [0x12, 0x34] + gz[10...]
        XCTAssertEqual(check(extra, name: "extra.nii.gz").kind, .nifti)
        // a second member and trailing garbage after the first member: kept verbatim
        XCTAssertEqual(check(gz + gz, name: "two.nii.gz").kind, .nifti)
        XCTAssertEqual(check(gz + Array("garbage".utf8), name: "tail.nii.gz").kind, .nifti)
        // a wrong CRC-32 in the trailer: the bytes still come back exactly as they were
        var badcrc = gz
        badcrc[badcrc.count - 6] ^= 0xFF
        XCTAssertEqual(check(badcrc, name: "crc.nii.gz").kind, .nifti)
        // truncated: opaque, with the reason
        let cut = check(Array(gz.prefix(gz.count / 2)), name: "cut.nii.gz")
        XCTAssertEqual(cut.kind, .opaque)
        XCTAssertTrue(cut.reason?.contains("damaged, truncated") == true, cut.reason ?? "")
        // a flipped bit inside the deflate data: opaque or exact, never wrong (check asserts it)
        for k in stride(from: 20, to: gz.count - 8, by: gz.count / 7) {
            var f = gz
            f[k] ^= 0x10
            _ = check(f, name: "flip\(k).nii.gz")
        }
        // gzip of something that is not a volume
        let notes = Array(String(repeating: "not a volume\n", count: 100).utf8)
        let z = try XCTUnwrap(Deflate.deflateRaw(notes[...], level: 6, memLevel: 8))
        let nv = check(Array(gz[0..<10]) + z + [0, 0, 0, 0, 0, 0, 0, 0], name: "notes.txt.gz")
        XCTAssertEqual(nv.kind, .opaque)
        XCTAssertTrue(nv.reason?.contains("rebuilt by zlib level 6") == true, nv.reason ?? "")
    }

    /// pigz (what dcm2niix uses when it finds it): 128 KiB blocks, each with the previous
    /// block's last 32 KiB as dictionary; the same bytes for any thread count.
    func testPigzIsRebuiltExactly() throws {
        let src = try writeRealMRNifti().path
        for (flags, level) in [(["-p", "2"], 6), (["-p", "1"], 6), (["-p", "2", "-9"], 9), (["-p", "2", "-1", "-n"], 1)] {
            let r = try run("/bin/sh", ["-c", "pigz \"$@\" -c \"$0\" > \"$0.gz\"", src] + flags)
            XCTAssertEqual(r.status, 0, r.err)
            let got = check(try FileIO.read(src + ".gz"), name: "brain.nii.gz")
            XCTAssertEqual(got.kind, .nifti, "pigz \(flags): \(got.reason ?? "")")
            XCTAssertEqual(got.source?.parts[0].wrapper?.blockSize, 128 << 10, "pigz \(flags)")
            XCTAssertEqual(got.source?.parts[0].wrapper?.level, level, "pigz \(flags)")
        }
    }

    /// GNU gzip's deflate is its own (not zlib's); zgz (Debian's pristine-tar, installed by the
    /// Makefile) regenerates it byte for byte.
    func testGNUGzipIsRebuiltWithZgz() throws {
        XCTAssertNotNil(GNUGzipRecompressor.zgz, "zgz (Debian package pristine-tar) is installed by make deps")
        let src = try writeRealMRNifti().path
        for level in [1, 6, 9] {
            let r = try run("/bin/sh", ["-c", "gzip -\(level) -c \"$0\" > \"$0.gz\"", src])   // with the name and time in the header
            XCTAssertEqual(r.status, 0, r.err)
            let got = check(try FileIO.read(src + ".gz"), name: "brain.nii.gz")
            XCTAssertEqual(got.kind, .nifti, "gzip -\(level): \(got.reason ?? "")")
            XCTAssertEqual(got.source?.parts[0].wrapper?.engine, 1, "gzip -\(level)")
            XCTAssertEqual(got.source?.parts[0].wrapper?.level, level)
        }
    }

    /// The whole lung1 CT as a NIfTI, GNU gzip -6: zgz (gzip 1.3.12's algorithm) and gzip 1.12
    /// differ in its last blocks here, so the stream's unmatched tail is stored as a correction
    /// (at most 0.5% of the content); the file still comes back exactly.
    func testGNUGzipOfARealCTRebuildsExactlyWithACorrection() throws {
        let raw = try FileIO.read(try RealData.require("volumes/ct_lung1.raw"))
        let vals = (0..<(raw.count / 2)).map { Int16(bitPattern: UInt16(raw[2 * $0]) | UInt16(raw[2 * $0 + 1]) << 8) }
        let src = path("lung1.nii")
        try FileIO.writeAtomically(src, TestFiles.nifti1(vals, x: 512, y: 512, z: 48, big: false))
        XCTAssertEqual(try run("/bin/sh", ["-c", "gzip -6 -c \"$0\" > \"$0.gz\"", src]).status, 0)
        let gz = try FileIO.read(src + ".gz")
        let got = check(gz, name: "lung1.nii.gz")
        XCTAssertEqual(got.kind, .nifti, got.reason ?? "")
        let w = try XCTUnwrap(got.source?.parts[0].wrapper)
        XCTAssertEqual(w.engine, 1)
        if w.streamPrefix > 0 {
            XCTAssertLessThanOrEqual(w.outerTrailer.count - 8, raw.count / 200, "the correction is at most 0.5% of the content")
            XCTAssertTrue(w.summary.contains("correction"), w.summary)
        }
    }

    /// pyradiomics' NRRDs (written by ITK with gzip encoding, zlib level 6): coded as volumes.
    func testRealGzipNRRDsAreCodedAndRebuildExactly() throws {
        for name in ["brain1_image.nrrd", "breast1_image.nrrd"] {
            let p = try RealData.require("src/pyradiomics-3.0.1/data/\(name)")
            let bytes = try FileIO.read(p)
            let r = check(bytes, name: name)
            XCTAssertEqual(r.kind, .nrrd, "\(name): \(r.reason ?? "")")
            XCTAssertEqual(r.source?.parts[0].wrapper?.level, 6, name)
            XCTAssertGreaterThan(r.source?.parts[0].wrapper?.outerHeader.count ?? 0, 100, "\(name): the NRRD text header is kept verbatim")
        }
        // the label maps are int32, a type the codec does not take: opaque, and said why
        let lab = check(try FileIO.read(try RealData.require("src/pyradiomics-3.0.1/data/brain1_label.nrrd")), name: "brain1_label.nrrd")
        XCTAssertEqual(lab.kind, .opaque)
        XCTAssertTrue(lab.reason?.contains("type") == true, lab.reason ?? "")
    }

    /// MetaImage with CompressedData (a zlib stream, RFC 1950) from a real volume.
    func testCompressedMetaImage() throws {
        let raw = try FileIO.read(try RealData.require("volumes/mr_brain1.raw"))
        let vox = Array(raw.prefix(256 * 256 * 4 * 2))
        let z = try XCTUnwrap(Deflate.deflateRaw(vox[...], level: 6, memLevel: 8))
        var adler: UInt32 = 1
        do {
            var a: UInt32 = 1, b: UInt32 = 0
            for v in vox { a = (a + UInt32(v)) % 65521; b = (b + a) % 65521 }
            adler = b << 16 | a
        }
        let header = Array("""
            ObjectType = Image
            NDims = 3
            DimSize = 256 256 4
            ElementType = MET_SHORT
            CompressedData = True
            CompressedDataSize = \(z.count + 6)
            ElementDataFile = LOCAL

            """.utf8)
        let file = header + [0x78, 0x9C] + z + [UInt8(adler >> 24), UInt8((adler >> 16) & 0xFF), UInt8((adler >> 8) & 0xFF), UInt8(adler & 0xFF)]
        let r = check(file, name: "brain.mha")
        XCTAssertEqual(r.kind, .metaImage, r.reason ?? "")
        XCTAssertTrue(r.source?.voxels == vox)
    }
}
