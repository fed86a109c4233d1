import Foundation
import XCTest
import VoxCore
import VoxCodec

/// The committed golden streams (Tests/VoxCodecTests/golden, README there): v1 streams written
/// by an earlier encoder must decode bit-exactly with every kernel, and today's encoder must
/// write the same bytes again. A missing golden file is a failure, never a skip.
final class GoldenStreamTests: XCTestCase {
    static let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("golden")

    static let streams: [(crop: String, tag: String)] =
        ["ct", "mr", "emri"].flatMap { c in ["classical", "classical-par", "fast", "parallel", "default", "large"].map { (c, $0) } }
        + [("ct", "default-adapted"), ("tiny", "paper")]
    /// Format v2 (issue 11): a stream and a checksum per slice; `fast-rows5` hands the coder
    /// state on after 5 rows; mr.fast, emri.default and tiny.paper have slices coded with the
    /// classical fallback.
    static let streamsV2: [(crop: String, tag: String)] =
        ["classical", "classical-par", "fast", "parallel", "default", "large", "default-adapted", "fast-rows5"].map { ("ct", $0 + ".v2") }
        + [("mr", "fast.v2"), ("mr", "default.v2"), ("emri", "default.v2"), ("tiny", "paper.v2")]
    /// Format v3 (issue 12): v2 plus the residual filter and sign-pattern contexts; mr.fast and
    /// tiny.paper have slices coded with the classical fallback (mr.fast: where the filter runs
    /// inside a row-parallel stream).
    static let streamsV3: [(crop: String, tag: String)] =
        [("ct", "classical.v3"), ("ct", "default.v3"), ("ct", "fast.v3"), ("mr", "default.v3"), ("mr", "fast.v3"),
         ("emri", "default.v3"), ("tiny", "paper.v3")]
    /// Model format 2 (issue 11): the shipped models with quadratic activations, stream format 3.
    static let streamsM2: [(crop: String, tag: String)] = ["fast", "parallel", "default", "large"].map { ("ct24", $0 + "-m2.v3") }
    /// Format v4 (issue 12): v3 plus the floor contexts, on two small crops: ct24 and icbm8 (the
    /// 8-bit ICBM template at the head's edge, 69% zero background); icbm8's default stream is
    /// coded with the LSTM on every slice (`--no-fallback`: on a crop this small the classical
    /// fallback takes them all), ct24.fast has one fallback slice.
    static let streamsV4: [(crop: String, tag: String)] =
        ["classical", "fast", "default"].map { ("ct24", $0 + ".v4") } + [("icbm8", "classical.v4"), ("icbm8", "default-nofb.v4")]
    static var all: [(crop: String, tag: String)] { streams + streamsV2 + streamsV3 + streamsM2 + streamsV4 }

    func load(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> [UInt8] {
        let p = GoldenStreamTests.dir.appendingPathComponent(name).path
        guard FileManager.default.fileExists(atPath: p) else {
            XCTFail("golden file missing: \(p)", file: file, line: line)
            throw VoxError(.io, "golden file missing: \(p)")
        }
        return try FileIO.read(p)
    }

    func testGoldenStreamsDecodeAndReencodeIdentically() throws {
        XCTAssertEqual(GoldenStreamTests.streams.count, 20)
        XCTAssertEqual(GoldenStreamTests.streamsV2.count, 12)
        XCTAssertEqual(GoldenStreamTests.streamsV3.count, 7)
        XCTAssertEqual(GoldenStreamTests.streamsM2.count, 4)
        XCTAssertEqual(GoldenStreamTests.streamsV4.count, 5)
        var crops: [String: [UInt8]] = [:]
        var fallbacks = 0, fallbacksV3 = 0, fallbacksV4 = 0
        for (crop, tag) in GoldenStreamTests.all {
            let name = "\(crop).\(tag).vxz"
            let stream = try load(name)
            if crops[crop] == nil { crops[crop] = try load("\(crop).raw") }
            let raw = crops[crop]!
            let h = try StreamHeader(parsing: stream, fileSize: stream.count, name: name)
            XCTAssertEqual(h.shape.voxels * h.dtype.bytesPerVoxel, raw.count, name)
            XCTAssertGreaterThan(h.slabs.count, 1, "\(name): several slabs")
            XCTAssertTrue(h.slabs.allSatisfy { $0.method == .coded }, "\(name): every slab coded, none stored")
            XCTAssertEqual(h.embeddedModel != nil, tag.hasPrefix("default-adapted"), name)
            XCTAssertEqual(h.formatVersion, tag.hasSuffix(".v4") ? 4 : tag.hasSuffix(".v3") ? 3 : tag.hasSuffix(".v2") ? 2 : 1, name)
            let fb = h.slabs.flatMap(\.slices).filter { $0.predictor == .classical }.count
            if h.formatVersion == 4 { fallbacksV4 += fb } else if h.formatVersion == 3 { fallbacksV3 += fb } else { fallbacks += fb }
            if tag.contains("-nofb") { XCTAssertEqual(fb, 0, "\(name): coded without the classical fallback") }
            for k in Kernel.available {
                let dec = try VXZ.Decoder(stream: stream, name: name, kernel: k)
                XCTAssertEqual(try dec.decodeVolume(threads: 2), raw, "\(name): decode with kernel \(k)")
                if h.formatVersion >= 2 {
                    for t in [1, 3] {
                        let got = try (0..<dec.slabCount).flatMap { try dec.decodeSlab($0, threads: t) }
                        XCTAssertTrue(got == raw, "\(name): kernel \(k), \(t) threads per slab")
                    }
                }
                // re-encode: same preset, slab size and model (the embedded one, if any, else the
                // one the stream names: a shipped model since replaced is kept in models/retired)
                let embedded = try h.embeddedModel.map { try LSTMModel(bytes: $0) }
                let named = embedded ?? ModelRegistry.shared.model(hash: h.modelHash)
                if h.preset != "classical" && h.preset != "classical-par" { XCTAssertNotNil(named, "\(name): the model it names is installed") }
                if tag.hasSuffix("-m2.v3") { XCTAssertEqual(named?.activation, .quadratic, "\(name): a model format 2 stream") }
                var opts = EncodeOptions(preset: try Preset.named(h.preset), model: named, slabThickness: h.slabThickness,
                                         threads: 2, kernel: k, embedModel: embedded != nil)
                opts.formatVersion = h.formatVersion
                if tag.contains("-nofb") { opts.classicalFallback = false }
                if h.formatVersion >= 2 { opts.stateRows = h.stateRows }
                let again = try raw.withUnsafeBytes { try VXZ.encode(raw: $0, shape: h.shape, dtype: h.dtype, options: opts) }
                XCTAssertEqual(again.count, stream.count, "\(name): re-encoded size with kernel \(k)")
                XCTAssertTrue(again == stream, "\(name): re-encoded bytes differ with kernel \(k)")
            }
        }
        XCTAssertGreaterThanOrEqual(fallbacks, 3, "the v2 goldens include slices coded with the classical fallback")
        XCTAssertGreaterThanOrEqual(fallbacksV3, 5, "the v3 goldens include slices coded with the classical fallback")
        XCTAssertGreaterThanOrEqual(fallbacksV4, 1, "the v4 goldens include a slice coded with the classical fallback")
    }

    func testGoldenChecksumsListEveryFile() throws {
        let sums = String(decoding: try load("SHA256SUMS"), as: UTF8.self)
        var listed: [String: String] = [:]
        for line in sums.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            if f.count == 2 { listed[String(f[1])] = String(f[0]) }
        }
        let names = GoldenStreamTests.all.map { "\($0.crop).\($0.tag).vxz" } + ["ct.raw", "mr.raw", "emri.raw", "tiny.raw", "ct24.raw", "icbm8.raw"]
        for n in names {
            XCTAssertEqual(listed[n], Checksum.hex(Checksum.sha256(try load(n))), "\(n) changed since it was committed")
        }
    }
}
