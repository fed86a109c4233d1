import XCTest
import VoxCore

final class CoreTests: XCTestCase {
    func testCRC32CKnownVector() {
        // RFC 3720 test vector: CRC-32C of "123456789" is 0xE3069283
        XCTAssertEqual(Checksum.crc32c(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(Checksum.crc32c([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
    }

    func testCRC32CIncremental() {
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let whole = Checksum.crc32c(data)
        let part = Checksum.crc32c(Array(data[300...]), seed: Checksum.crc32c(Array(data[..<300])))
        XCTAssertEqual(whole, part)
    }

    func testSHA256KnownVectors() {
        XCTAssertEqual(Checksum.hex(Checksum.sha256([])), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(Checksum.hex(Checksum.sha256(Array("abc".utf8))), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        XCTAssertEqual(Checksum.hex(Checksum.sha256(long)), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    func testDTypeRoundTripAndRanges() {
        for dt in DType.allCases {
            let values: [Int32] = [dt.minValue, dt.maxValue, dt.minValue + 1, dt.maxValue - 1, (dt.minValue + dt.maxValue) / 2]
            var bytes = [UInt8](repeating: 0, count: values.count * dt.bytesPerVoxel)
            values.withUnsafeBufferPointer { v in bytes.withUnsafeMutableBytes { dt.encode(v, into: $0) } }
            var back = [Int32](repeating: 0, count: values.count)
            bytes.withUnsafeBytes { b in back.withUnsafeMutableBufferPointer { dt.decode(b, into: $0) } }
            XCTAssertEqual(back, values, "\(dt)")
        }
        XCTAssertEqual(DType(name: "<i2"), .int16)
        XCTAssertNil(DType(name: "float32"))
    }

    func testShapeParsing() {
        XCTAssertEqual(Shape(parsing: "512x511x3"), Shape(512, 511, 3))
        XCTAssertNil(Shape(parsing: "512x511"))
        XCTAssertNil(Shape(parsing: "axbxc"))
        XCTAssertFalse(Shape(0, 1, 1).isValid)
        XCTAssertFalse(Shape(1 << 21, 1, 1).isValid)
        XCTAssertFalse(Shape(1 << 20, 1 << 20, 1 << 20).isValid)
        XCTAssertTrue(Shape(1, 1, 1).isValid)
    }

    func testByteReaderThrowsOnTruncation() {
        var r = ByteReader([1, 2, 3], what: "thing")
        XCTAssertEqual(try r.u16(), 0x0201)
        XCTAssertThrowsError(try r.u32()) { e in
            XCTAssertEqual((e as? VoxError)?.kind, .truncated)
        }
    }
}
