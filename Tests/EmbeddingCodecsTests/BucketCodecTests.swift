import EmbeddingCodecs
import Testing

@Suite("bucket codec")
struct BucketCodecTests {
    /// Runs `body` on a `count`-byte slice starting at byte `offset` of a larger buffer, to test
    /// the unaligned addresses LMDB hands out.
    private func withSlice<R>(
        count: Int, offset: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R
    ) rethrows -> (result: R, bytes: [UInt8]) {
        var storage = [UInt8](repeating: 0xAB, count: count + offset + 4)
        let result = try storage.withUnsafeMutableBytes { all in
            try body(UnsafeMutableRawBufferPointer(rebasing: all[offset..<(offset + count)]))
        }
        return (result, Array(storage[offset..<(offset + count)]))
    }

    @Test("layout: uint32 id little-endian, then float32 scale little-endian")
    func layout() throws {
        let plain = try withSlice(count: 4, offset: 1) { try BucketCodec.encode(bucket: 0x0102_0304, into: $0) }
        #expect(plain.bytes == [0x04, 0x03, 0x02, 0x01])
        let scaled = try withSlice(count: 8, offset: 3) {
            try BucketCodec.encodeScaled(bucket: 7, scale: -2, into: $0)
        }
        #expect(scaled.bytes == [0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0])
        #expect(BucketCodec.payloadSize == 4 && BucketCodec.scaledPayloadSize == 8)
    }

    @Test("id and scale round-trip at every alignment", arguments: [0, 1, 2, 3])
    func roundTrip(offset: Int) throws {
        for (bucket, scale) in [(UInt32(0), Float(1)), (1, 0.5), (4095, -3.25), (.max, 1e-30), (123_456, 0)] {
            let read = try withSlice(count: 8, offset: offset) { payload in
                try BucketCodec.encodeScaled(bucket: bucket, scale: scale, into: payload)
                let bytes = UnsafeRawBufferPointer(payload)
                return (BucketCodec.bucketID(bytes), BucketCodec.scale(bytes))
            }.result
            #expect(read.0 == bucket && read.1 == scale)
            let plain = try withSlice(count: 4, offset: offset) { payload in
                try BucketCodec.encode(bucket: bucket, into: payload)
                let bytes = UnsafeRawBufferPointer(payload)
                return (BucketCodec.bucketID(bytes), BucketCodec.scale(bytes))
            }.result
            #expect(plain.0 == bucket && plain.1 == 1)
        }
    }

    @Test("encoders refuse wrong payload sizes and non-finite scales")
    func errors() {
        #expect(throws: CodecError.badPayloadSize(codec: "bucket", expected: 4, actual: 8)) {
            try withSlice(count: 8, offset: 0) { try BucketCodec.encode(bucket: 1, into: $0) }
        }
        #expect(throws: CodecError.badPayloadSize(codec: "bucket", expected: 8, actual: 4)) {
            try withSlice(count: 4, offset: 0) { try BucketCodec.encodeScaled(bucket: 1, scale: 1, into: $0) }
        }
        for scale in [Float.nan, .infinity, -.infinity] {
            #expect(throws: CodecError.self) {
                try withSlice(count: 8, offset: 0) { try BucketCodec.encodeScaled(bucket: 1, scale: scale, into: $0) }
            }
        }
    }

    @Test("decode writes scale · centroid at awkward widths",
          arguments: [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 1024])
    func decode(d: Int) {
        var random = FitTestRandom(seed: UInt64(d))
        let centroid = (0..<d).map { _ in Float(random.gaussian()) }
        for scale: Float in [1, 0, -0.75, 1e3] {
            var row = [Float](repeating: .nan, count: d)
            centroid.withUnsafeBufferPointer { source in
                row.withUnsafeMutableBufferPointer { BucketCodec.decode(centroid: source, scale: scale, into: $0) }
            }
            // The same single Float multiply per element: bit-exact.
            #expect(row == centroid.map { scale * $0 })
            #expect(row.allSatisfy { $0.isFinite })
        }
    }
}
