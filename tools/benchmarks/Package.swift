// swift-tools-version:6.1
import Foundation
import PackageDescription

// A path dependency's identity is its directory's name, whatever the clone is called.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let embstore = root.lastPathComponent

// Kernel and lookup micro-benchmarks (ordo-one/benchmark: wall clock, throughput, malloc
// counts). A package of its own so that `swift test` at the root never builds it.
//
//   cd tools/benchmarks && swift package benchmark
let package = Package(
    name: "embstore-benchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(path: "../.."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "Kernels",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "EmbeddingCodecs", package: embstore),
                .product(name: "EmbeddingStore", package: embstore),
            ],
            path: "Benchmarks/Kernels",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
