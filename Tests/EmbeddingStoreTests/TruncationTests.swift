import EmbeddingCodecs
import Foundation
import Testing
@testable import EmbeddingStore

/// A data file cut short, at any page boundary, is refused when the store opens with an error
/// that says so — never a SIGBUS on the first page read past the end of the map (which would
/// kill this test process).
@Suite struct TruncationTests {
    @Test func everyPageBoundaryShortOfTheFileIsRefusedOrReadsSoundly() throws {
        let source = TemporaryDirectory()
        let d = 16, count = 3_000
        let rows = embeddingRows(count: count, dimension: d)
        do {
            let store = try makeStore(source)
            try rows.withUnsafeBufferPointer {
                try store.load(table: "t", rows: $0, count: count, dimension: d, policy: .single(.int8))
            }
            try store.put(try store.table("t"), id: 1_000_000, vector: [Float](repeating: 0.5, count: d), codec: .fp16)
            try store.sync()
            store.close()
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: source.file("store/data.mdb")))
        let page = 4096
        #expect(data.count % page == 0 && data.count / page >= 8, "\(data.count) bytes")
        var refused = 0, opened = 0
        // From one page: an empty file is what a creation cut short leaves, and LMDB makes it
        // a new environment.
        for pages in 1..<(data.count / page) {
            let trial = TemporaryDirectory()
            try FileManager.default.createDirectory(atPath: trial.file("store"), withIntermediateDirectories: true)
            try data.prefix(pages * page).write(to: URL(fileURLWithPath: trial.file("store/data.mdb")))
            do {
                let store = try Store(path: trial.file("store"))
                // Opened: every page in use is inside the file, so reading all of it is safe.
                opened += 1
                _ = try? store.verify()
                if let table = try? store.table("t") { _ = try? store.export(table) }
                store.close()
            } catch {
                refused += 1
                let text = "\(error)"
                #expect(text.contains("truncated") || text.contains("not an embstore store"), "\(pages) pages: \(text)")
            }
        }
        // LMDB's file ends at its last page in use: every cut loses one, and is refused.
        #expect(refused == data.count / page - 1 && opened == 0, "refused \(refused), opened \(opened) of \(data.count / page - 1)")
    }
}
