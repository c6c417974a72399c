// swift-tools-version:6.1
import PackageDescription

// Arrows point one way: embstore, EmbStoreC → EmbeddingStore → {LMDB, EmbeddingCodecs, CEmbeddingKernels, NPY},
// LMDB → CLMDB, EmbeddingCodecs → CEmbeddingKernels (EmbeddingStore's evaluation calls the kernels too). Nothing below imports anything above it.
let package = Package(
    name: "embstore",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "EmbeddingStore", targets: ["EmbeddingStore"]),
        .library(name: "LMDB", targets: ["LMDB"]),
        .library(name: "EmbeddingCodecs", targets: ["EmbeddingCodecs"]),
        .executable(name: "embstore", targets: ["embstore"]),
        // The C API (Sources/CEmbStore/include/embstore.h) as a shared library, libEmbStoreC.so:
        // what C and C++ programs link and the Python package loads.
        .library(name: "EmbStoreC", type: .dynamic, targets: ["EmbStoreC"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // Debian's liblmdb-dev through pkg-config; no LMDB source lives in this repository.
        .systemLibrary(
            name: "CLMDB",
            pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]
        ),
        // What a process may install so that LMDB crashing on a damaged page ends it with a
        // message and status 3 (the embstore command does).
        .target(name: "CLMDBGuard", dependencies: ["CLMDB"]),
        .target(name: "LMDB", dependencies: ["CLMDB", "CLMDBGuard"]),
        // Small C kernels for what Swift cannot express without unsafe flags: F16C/AVX2 paths
        // selected at run time, and a prefetch hint.
        .target(name: "CEmbeddingKernels"),
        .target(name: "EmbeddingCodecs", dependencies: ["CEmbeddingKernels"]),
        .target(name: "NPY"),
        .target(name: "EmbeddingStore", dependencies: ["LMDB", "EmbeddingCodecs", "CEmbeddingKernels", "NPY"]),
        // The C API: its header (and the thread's last error, kept in C), and its Swift side.
        .target(name: "CEmbStore"),
        .target(name: "EmbStoreC", dependencies: ["CEmbStore", "EmbeddingStore", "EmbeddingCodecs", "LMDB"]),
        .executableTarget(
            name: "embstore",
            dependencies: [
                "EmbeddingStore", "EmbeddingCodecs", "NPY", "LMDB",
                // The bench's decode-only workload calls the lookup decoding pass directly.
                "CEmbeddingKernels",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "LMDBTests", dependencies: ["LMDB"]),
        .testTarget(name: "EmbeddingCodecsTests", dependencies: ["EmbeddingCodecs"]),
        .testTarget(name: "NPYTests", dependencies: ["NPY"]),
        .testTarget(name: "EmbeddingStoreTests", dependencies: ["EmbeddingStore", "LMDB", "EmbeddingCodecs", "CEmbeddingKernels", "NPY"]),
        .testTarget(name: "embstoreTests", dependencies: ["embstore", "NPY", "EmbeddingStore", "EmbeddingCodecs"]),
    ]
)
