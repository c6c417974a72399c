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

    /// A damaged node whose size field says the value runs past the end of the file: reading it
    /// through the map would be SIGBUS (the map is larger than the file). Every value LMDB hands
    /// out is checked against the file's extent first, so it is a clear error instead.
    @Test func aValueRunningPastTheFileIsRefusedNotSIGBUS() throws {
        let dir = TemporaryDirectory()
        let id: UInt64 = 0x1122_3344_5566_7788
        do {
            let store = try makeStore(dir)
            let table = try store.createTable("t", dimension: 4)
            try store.put(table, id: id, vector: [1, 2, 3, 4], codec: .fp32)
            try store.put(table, id: 5, vector: [5, 6, 7, 8], codec: .fp32)
            try store.sync()
            store.close()
        }
        // The node before the key: size (low u16, high u16), flags (u16), key size (u16).
        let path = dir.file("store/data.mdb")
        var data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let key = withUnsafeBytes(of: id.littleEndian) { Array($0) }
        func isNode(_ i: Int) -> Bool {
            let keySize = Int(data[i - 2]) | Int(data[i - 1]) << 8
            return keySize == 8 && Array(data[i..<(i + 8)]) == key
        }
        let found: Int? = (8..<(data.count - 8)).first(where: isNode)
        let at = try #require(found)
        let size = Int(data[at - 8]) | Int(data[at - 7]) << 8
        let high = Int(data[at - 6]) | Int(data[at - 5]) << 8
        #expect(size == 1 + 16 + RecordSeal.size && high == 0)
        data[at - 5] = 0x10   // + 2^28 bytes: far past the file, inside the map
        try Data(data).write(to: URL(fileURLWithPath: path))

        var options = Store.Options()
        options.readOnly = true
        let store = try Store(path: dir.file("store"), options: options)
        defer { store.close() }
        let table = try store.table("t")
        #expect(performing: { _ = try store.get(table, id: id) }, throws: { "\($0)".contains("runs past the end of the data file") })
        #expect(try store.get(table, id: 5) == [5, 6, 7, 8])
        #expect(performing: { _ = try store.export(table) }, throws: { "\($0)".contains("runs past the end of the data file") })
        let report = try store.verify()
        #expect(report.findings.contains { $0.table == "t" && $0.problem.contains("runs past the end of the data file") }, "\(report.problems)")
    }
}
