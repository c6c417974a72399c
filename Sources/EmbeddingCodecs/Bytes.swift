/// Little-endian field writing and bounds-checked reading for metadata, parameter and segment
/// records. (Row payloads are written by the codec kernels themselves.)

/// Appends `value` little-endian.
@inline(__always)
package func appendLE<I: FixedWidthInteger>(_ value: I, to bytes: inout [UInt8]) {
    withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
}

/// Reads a little-endian integer at `offset` (any alignment; the caller checks bounds).
@inline(__always)
package func loadLE<I: FixedWidthInteger>(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> I {
    I(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: I.self))
}

package struct ByteWriter {
    package private(set) var bytes: [UInt8] = []

    package init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    package mutating func append(_ value: UInt32) { appendLE(value, to: &bytes) }

    package mutating func append(_ value: Float) { append(value.bitPattern) }

    package mutating func append(_ values: [Float]) {
        for value in values { append(value) }
    }

    package mutating func append(ascii text: String) { bytes.append(contentsOf: Array(text.utf8)) }
}

/// Reads little-endian fields from an unaligned buffer; every read is bounds-checked and
/// throws a description of what was short.
package struct ByteReader {
    package let bytes: UnsafeRawBufferPointer
    package private(set) var offset = 0

    package init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    package var remaining: Int { bytes.count - offset }

    package mutating func uint32(_ field: String) throws(ByteReaderError) -> UInt32 {
        guard remaining >= 4 else { throw ByteReaderError(field: field, offset: offset, size: bytes.count) }
        defer { offset += 4 }
        return loadLE(bytes, offset)
    }

    package mutating func float(_ field: String) throws(ByteReaderError) -> Float {
        Float(bitPattern: try uint32(field))
    }

    package mutating func floats(_ count: Int, _ field: String) throws(ByteReaderError) -> [Float] {
        guard count >= 0, remaining >= 4 * count else { throw ByteReaderError(field: field, offset: offset, size: bytes.count) }
        var result = [Float](repeating: 0, count: count)
        for i in 0..<count { result[i] = Float(bitPattern: loadLE(bytes, offset + 4 * i)) }
        offset += 4 * count
        return result
    }

    package mutating func raw(_ count: Int, _ field: String) throws(ByteReaderError) -> UnsafeRawBufferPointer {
        guard remaining >= count else { throw ByteReaderError(field: field, offset: offset, size: bytes.count) }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + count])
    }
}

package struct ByteReaderError: Error, CustomStringConvertible {
    package let field: String
    package let offset: Int
    package let size: Int
    package var description: String { "record of \(size) bytes ends before field '\(field)' at offset \(offset)" }
}
