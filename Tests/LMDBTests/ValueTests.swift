import Testing
@testable import LMDB

@Suite struct ValueTests {
    let fixture: Fixture
    init() throws { fixture = try Fixture() }

    /// Values are only 2-byte aligned in the map; odd lengths shift every later one.
    @Test func oddLengthValuesReadBackByteExact() throws {
        let env = try fixture.open(flags: .noSync)
        let db = try env.database("d", integerKeys: true)
        var generator = SeededGenerator(seed: 2024)
        let lengths: [Int] = Array(1...64) + (0..<200).map { _ in 2 * Int.random(in: 0...3000, using: &generator) + 1 }
            + [2029, 2030, 2031, 2037, 2039, 4095, 4097, 8193]
        try env.write { txn throws in
            for (index, length) in lengths.enumerated() {
                try txn.put(bytes: pattern(length, seed: UInt64(index)), forKey: UInt64(index), in: db)
            }
        }
        try env.read { txn throws in
            for (index, length) in lengths.enumerated() {
                try txn.withValue(forKey: UInt64(index), in: db) { buffer in
                    let buffer = try #require(buffer)
                    #expect(buffer.count == length)
                    #expect(Array(buffer) == pattern(length, seed: UInt64(index)), "value \(index) of length \(length)")
                    if length >= 9 {
                        // Misaligned 8-byte loads must use loadUnaligned.
                        let expected = pattern(length, seed: UInt64(index))
                        let word = buffer.loadUnaligned(fromByteOffset: 1, as: UInt64.self)
                        let bytes = expected[1..<9].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                        #expect(word == bytes)
                    }
                }
            }
        }
    }

    @Test func oddLengthStringKeysAndValues() throws {
        let env = try fixture.open()
        let db = try env.database("d")
        let keys = (1...41).map { String(repeating: "k", count: $0) }
        try env.write { txn throws in
            for (index, key) in keys.enumerated() { try txn.put(bytes: pattern(index * 2 + 1, seed: UInt64(index)), forKey: key, in: db) }
        }
        try env.read { txn throws in
            for (index, key) in keys.enumerated() {
                #expect(try txn.bytes(forKey: key, in: db) == pattern(index * 2 + 1, seed: UInt64(index)))
            }
        }
    }

    @Test func integerKeysAreNativeEndianEightBytes() throws {
        withIntegerKey(0x0102_0304_0506_0708) { value in
            #expect(value.mv_size == 8)
            let bytes = Array(UnsafeRawBufferPointer(value))
            #expect(bytes == withUnsafeBytes(of: UInt64(0x0102_0304_0506_0708)) { Array($0) })
            #expect(integerKey(value) == 0x0102_0304_0506_0708)
        }
        withStringKey("héllo") { value in
            #expect(Array(UnsafeRawBufferPointer(value)) == Array("héllo".utf8))
            #expect(integerKey(value) == nil)
        }
        withStringKey("") { value in #expect(value.mv_size == 0) }
        let stored: [UInt8] = [1, 2, 3]
        stored.withUnsafeBytes { buffer in
            withBytesValue(buffer) { value in
                #expect(value.mv_size == 3)
                #expect(value.mv_data == UnsafeMutableRawPointer(mutating: buffer.baseAddress))
            }
        }
    }
}
