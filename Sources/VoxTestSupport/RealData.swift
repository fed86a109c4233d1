import Foundation
import XCTest

/// The real scans and DICOM files that scripts/fetch_data.sh puts in the data cache, for the
/// test targets. A missing file skips the test, except under `make test`
/// (VOXFS_REQUIRE_DATA=1), where it fails: CI must never pass by skipping real-data tests.
public enum RealData {
    public static var cache: String {
        ProcessInfo.processInfo.environment["VOXFS_CACHE"] ?? (NSHomeDirectory() + "/.cache/voxfs")
    }

    /// The full path of `relative` (e.g. "volumes/ct_lung1.raw", "series/gap") in the cache.
    public static func require(_ relative: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let p = cache + "/" + relative
        guard FileManager.default.fileExists(atPath: p) else {
            if ProcessInfo.processInfo.environment["VOXFS_REQUIRE_DATA"] == "1" {
                XCTFail("real test data missing: \(p); run scripts/fetch_data.sh", file: file, line: line)
            }
            throw XCTSkip("real test data missing (\(p)); run scripts/fetch_data.sh")
        }
        return p
    }
}
