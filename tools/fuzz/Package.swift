// swift-tools-version:6.1
import Foundation
import PackageDescription

// A path dependency's identity is its directory's name, whatever the clone is called.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let embstore = root.lastPathComponent

// libFuzzer targets over what reads untrusted bytes: row, parameter and metadata records
// (FuzzRecords), segment part 0 and data parts (FuzzSegments), .npy files (FuzzNPY). A package
// of its own so that `swift build` / `swift test` at the root never build it; tools/fuzz.sh
// builds it with `-sanitize=fuzzer,address` and `-enable-testing` (the targets reach internal
// decoders through `@testable import`) and runs each target on its corpus.
//
//   tools/fuzz.sh 120          # each target for 120 s
// Each target defines `<Target>_main` (SwiftPM's name for an executable's entry point on Linux),
// which runs libFuzzer's driver.
let fuzzTarget: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]
let package = Package(
    name: "embstore-fuzz",
    platforms: [.macOS(.v13)],
    dependencies: [.package(path: "../..")],
    targets: [
        .target(name: "CFuzzDriver", path: "Sources/CFuzzDriver"),
        .target(name: "FuzzSupport", dependencies: ["CFuzzDriver"], path: "Sources/FuzzSupport"),
        .executableTarget(
            name: "FuzzRecords",
            dependencies: ["FuzzSupport", .product(name: "EmbeddingCodecs", package: embstore),
                           .product(name: "EmbeddingStore", package: embstore)],
            path: "Sources/FuzzRecords", swiftSettings: fuzzTarget),
        .executableTarget(
            name: "FuzzSegments",
            dependencies: ["FuzzSupport", .product(name: "EmbeddingStore", package: embstore)],
            path: "Sources/FuzzSegments", swiftSettings: fuzzTarget),
        .executableTarget(
            name: "FuzzNPY",
            // NPY is not a product of its own: it comes with EmbeddingStore's.
            dependencies: ["FuzzSupport", .product(name: "EmbeddingStore", package: embstore)],
            path: "Sources/FuzzNPY", swiftSettings: fuzzTarget),
    ]
)
