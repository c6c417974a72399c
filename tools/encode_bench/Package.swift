// swift-tools-version:6.1
import Foundation
import PackageDescription

// A path dependency's identity is its directory's name, whatever the clone is called.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let embstore = root.lastPathComponent

// Encode-only timing of the rowwise encoders, and a dump of every payload they write (to check
// that a change to the encoders leaves their output byte for byte the same). A package of its
// own so that `swift build` / `swift test` at the root never build it.
//
//   cd tools/encode_bench && swift run -c release encode-bench --help
let package = Package(
    name: "encode-bench",
    platforms: [.macOS(.v13)],
    dependencies: [.package(path: "../..")],
    targets: [
        .executableTarget(
            name: "encode-bench",
            dependencies: [.product(name: "EmbeddingCodecs", package: embstore)],
            path: "Sources/encode-bench"
        ),
    ]
)
