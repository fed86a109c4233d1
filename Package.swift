// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "VoxFS",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "voxfs", targets: ["voxfs"]),
        .library(name: "VoxCodec", targets: ["VoxCodec"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // C libraries of the system (Debian: libfuse3-dev, liblmdb-dev; libopenblas0 is loaded at
        // run time by CVoxBLAS). Used by the archive and filesystem modules; declared here once.
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CLMDB", providers: [.apt(["liblmdb-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        // zlib: gzip-wrapped volumes (.nii.gz, NRRD gzip) are rebuilt by recompressing with it
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        // Integer hot paths: checksums, fixed-point LSTM kernels, slab coder.
        .target(name: "CVoxKernels", cSettings: [.define("_GNU_SOURCE")]),

        .target(name: "VoxCore", dependencies: ["CVoxKernels"]),
        .target(name: "VoxCodec", dependencies: ["VoxCore", "CVoxKernels"]),
        .target(name: "VoxFormats", dependencies: ["VoxCore", "CZlib"]),
        // LMDB reads under a fault guard (a damaged archive must not crash a reader)
        .target(name: "CVoxLMDB", dependencies: ["CLMDB"]),
        .target(name: "VoxArchive", dependencies: ["VoxCore", "VoxCodec", "VoxFormats", "CLMDB", "CVoxLMDB", "CZstd"]),
        // OpenBLAS for training, loaded on first use (dlopen): no BLAS thread pool in the processes
        // that only code, read or mount
        .target(name: "CVoxBLAS", linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "VoxTrain", dependencies: ["VoxCore", "VoxCodec", "CVoxBLAS"]),
        // ingest (walk a source tree through SourceTree, recognise formats, group series, pack)
        // and extract (unpack to disk), above the archive
        .target(name: "VoxIngest", dependencies: ["VoxCore", "VoxCodec", "VoxFormats", "VoxArchive"]),
        // the filesystem without FUSE (testable in-process), and the only module that imports libfuse3
        .target(name: "VoxFS", dependencies: ["VoxCore", "VoxCodec", "VoxArchive", "VoxFormats", "CVoxKernels"]),
        .target(name: "VoxFuse", dependencies: ["VoxFS", "VoxCore", "CFuse3"]),
        .executableTarget(name: "voxfs", dependencies: [
            "VoxCore", "VoxCodec", "VoxTrain", "VoxFormats", "VoxArchive", "VoxIngest", "VoxFS", "VoxFuse",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // fuzz targets (issue 17): replays a corpus in the normal build, libFuzzer's entry point
        // in `make fuzz-swift`'s build (-D VOXFUZZ_LIBFUZZER)
        .executableTarget(name: "voxfuzz", dependencies: ["VoxCore", "VoxCodec", "VoxFormats", "VoxArchive"]),

        // shared by the test targets: where the real data is, skip-or-fail when it is missing
        .target(name: "VoxTestSupport", path: "Sources/VoxTestSupport"),

        .testTarget(name: "VoxCoreTests", dependencies: ["VoxCore"]),
        // golden/: v1 streams read through #filePath by GoldenStreamTests (not bundle resources)
        .testTarget(name: "VoxCodecTests", dependencies: ["VoxTestSupport", "VoxCodec", "VoxCore", "CVoxKernels"], exclude: ["golden"]),
        .testTarget(name: "VoxArchiveTests", dependencies: ["VoxTestSupport", "VoxArchive", "VoxIngest", "VoxCore", "VoxCodec", "VoxFormats", "CVoxLMDB"]),
        .testTarget(name: "VoxFormatsTests", dependencies: ["VoxTestSupport", "VoxFormats", "VoxCore"]),
        .testTarget(name: "VoxTrainTests", dependencies: ["VoxTestSupport", "VoxTrain", "VoxCodec", "VoxCore"]),
        .testTarget(name: "VoxFSTests", dependencies: ["VoxTestSupport", "VoxFS", "VoxArchive", "VoxIngest", "VoxCodec", "VoxCore"]),
        .testTarget(name: "VoxCLITests", dependencies: ["VoxTestSupport", "VoxCore", "VoxArchive", "voxfs"]),
    ]
)
