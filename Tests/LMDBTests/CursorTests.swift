import Testing
@testable import LMDB

@Suite struct CursorTests {
    let fixture: Fixture
    init() throws { fixture = try Fixture() }

    /// Every key from the cursor's current position (after `start`) to the end.
    private func walk(_ cursor: inout Cursor, from start: CursorEntry?) throws -> [UInt64] {
        var keys: [UInt64] = []
        var entry = start
        while let current = entry {
            keys.append(try #require(current.integerKey))
            entry = try cursor.next()
        }
        return keys
    }

    @Test func integerKeysWalkInNumericOrder() throws {
        let env = try fixture.open()
        let db = try env.database("ints", integerKeys: true)
        let keys: [UInt64] = [1 << 40, 10, 1, 256, 2, 65_536, 255]
        try env.write { txn throws in
            for key in keys { try txn.put(integer: key * 2, forKey: key, in: db) }
        }
        try env.read { txn throws in
            try txn.withCursor(db) { cursor throws in
                let first = try #require(try cursor.first())
                #expect(first.integerKey == 1)
                #expect(first.value.loadUnaligned(as: UInt64.self) == 2)
                #expect(try walk(&cursor, from: first) == [1, 2, 10, 255, 256, 65_536, 1 << 40])
                #expect(try cursor.next() == nil, "stays at the end")
                let last = try #require(try cursor.last())
                #expect(last.integerKey == 1 << 40)
                #expect(last.value.loadUnaligned(as: UInt64.self) == 1 << 41)
            }
        }
    }

    @Test func nextOnAFreshCursorStartsAtTheFirstEntry() throws {
        let env = try fixture.open()
        let db = try env.database("ints", integerKeys: true)
        try env.write { txn throws in for key: UInt64 in [3, 1, 2] { try txn.put(integer: key, forKey: key, in: db) } }
        try env.read { txn throws in
            try txn.withCursor(db) { cursor throws in
                let start = try cursor.next()
                #expect(try walk(&cursor, from: start) == [1, 2, 3])
            }
        }
    }

    @Test func stringKeysWalkInByteOrder() throws {
        let env = try fixture.open()
        let db = try env.database("strings")
        try env.write { txn throws in
            for key in ["b", "a", "ab", "B", "é", "aa"] { try txn.put(key.uppercased(), forKey: key, in: db) }
        }
        try env.read { txn throws in
            try txn.withCursor(db) { cursor throws in
                var keys: [String] = []
                var entry = try cursor.first()
                while let current = entry {
                    keys.append(current.stringKey)
                    #expect(current.integerKey == nil)
                    #expect(String(decoding: current.value, as: UTF8.self) == current.stringKey.uppercased())
                    entry = try cursor.next()
                }
                // memcmp order of the UTF-8 bytes: "é" is 0xC3 0xA9, after all ASCII.
                #expect(keys == ["B", "a", "aa", "ab", "b", "é"])
                #expect(try cursor.last()?.stringKey == "é")
            }
        }
    }

    @Test func seekAtLeastAnIntegerKey() throws {
        let env = try fixture.open()
        let db = try env.database("ints", integerKeys: true)
        try env.write { txn throws in
            for key: UInt64 in [1, 2, 10, 256, 1 << 40] { try txn.put(integer: key, forKey: key, in: db) }
        }
        try env.read { txn throws in
            try txn.withCursor(db) { cursor throws in
                #expect(try cursor.seek(atLeast: 0)?.integerKey == 1)
                #expect(try cursor.seek(atLeast: 256)?.integerKey == 256, "an exact match")
                #expect(try cursor.seek(atLeast: 3)?.integerKey == 10)
                #expect(try cursor.next()?.integerKey == 256, "next continues from the sought position")
                #expect(try cursor.seek(atLeast: 257)?.integerKey == 1 << 40)
                #expect(try cursor.seek(atLeast: (1 << 40) + 1) == nil)
                #expect(try cursor.seek(atLeast: .max) == nil)
                let found = try #require(try cursor.seek(atLeast: 11))
                #expect(try walk(&cursor, from: found) == [256, 1 << 40])
            }
        }
    }

    @Test func seekAtLeastAStringKey() throws {
        let env = try fixture.open()
        let db = try env.database("strings")
        try env.write { txn throws in for key in ["apple", "banana", "cherry"] { try txn.put(key, forKey: key, in: db) } }
        try env.read { txn throws in
            try txn.withCursor(db) { cursor throws in
                #expect(try cursor.seek(atLeast: "b")?.stringKey == "banana")
                #expect(try cursor.seek(atLeast: "banana")?.stringKey == "banana")
                #expect(try cursor.seek(atLeast: "bananas")?.stringKey == "cherry")
                #expect(try cursor.next() == nil)
                #expect(try cursor.seek(atLeast: "d") == nil)
                #expect(try cursor.seek(atLeast: "A")?.stringKey == "apple")
                #expect(throws: LMDBError.badValueSize) { _ = try cursor.seek(atLeast: "") }
            }
        }
    }

    @Test func emptyDatabaseHasNoEntries() throws {
        let env = try fixture.open()
        let ints = try env.database("ints", integerKeys: true)
        let strings = try env.database("strings")
        try env.read { txn throws in
            try txn.withCursor(ints) { cursor throws in
                #expect(try cursor.first() == nil)
                #expect(try cursor.last() == nil)
                #expect(try cursor.next() == nil)
                #expect(try cursor.seek(atLeast: 0) == nil)
            }
            try txn.withCursor(strings) { cursor throws in
                #expect(try cursor.next() == nil)
                #expect(try cursor.first() == nil)
                #expect(try cursor.seek(atLeast: "a") == nil)
            }
        }
        // Same inside a write transaction.
        try env.write { txn throws in
            try txn.withCursor(ints) { cursor throws in
                #expect(try cursor.first() == nil)
                #expect(try cursor.last() == nil)
                #expect(try cursor.next() == nil)
            }
        }
    }

    @Test func cursorInAWriteTransactionSeesItsUncommittedPuts() throws {
        let env = try fixture.open()
        let db = try env.database("ints", integerKeys: true)
        try env.write { txn throws in
            try txn.put(integer: 5, forKey: 5, in: db)
            try txn.withCursor(db) { cursor throws in #expect(try cursor.first()?.integerKey == 5) }
            try txn.put(integer: 4, forKey: 4, in: db)
            let keys = try txn.withCursor(db) { cursor throws in
                let start = try cursor.first()
                return try walk(&cursor, from: start)
            }
            #expect(keys == [4, 5])
        }
        // Cursors opened (and closed) in read transactions many times do not leak anything
        // that breaks later transactions.
        for _ in 0..<1000 {
            try env.read { txn throws in try txn.withCursor(db) { cursor throws in _ = try cursor.last() } }
        }
    }

    @Test func walkingManyKeysMatchesSortedInsertion() throws {
        let env = try fixture.open(flags: .noSync)
        let db = try env.database("ints", integerKeys: true)
        var generator = SeededGenerator(seed: 42)
        let keys = Set((0..<3000).map { _ in UInt64.random(in: 0...UInt64.max, using: &generator) })
        try env.write { txn throws in for key in keys { try txn.put(integer: ~key, forKey: key, in: db) } }
        try env.read { txn throws in
            try txn.withCursor(db) { cursor throws in
                var walked: [UInt64] = []
                var entry = try cursor.first()
                while let current = entry {
                    let key = try #require(current.integerKey)
                    #expect(current.value.loadUnaligned(as: UInt64.self) == ~key)
                    walked.append(key)
                    entry = try cursor.next()
                }
                #expect(walked == keys.sorted())
            }
        }
    }
}
