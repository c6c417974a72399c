// Checks every encoder runs before it writes a byte, kept in one place so that all codecs name
// the same problems the same way.

enum CodecChecks {
    /// Refuses an empty row: a zero-dimension table is a caller bug, and the rowwise codecs
    /// would have no range to quantise.
    @inline(__always)
    static func requireNonEmpty(_ row: UnsafeBufferPointer<Float>) throws(CodecError) {
        guard !row.isEmpty else {
            throw .invalidParameter("dimension must be at least 1, got 0 (empty row)")
        }
    }

    @inline(__always)
    static func requirePayloadSize(
        _ payload: UnsafeMutableRawBufferPointer, expected: Int, codec: String
    ) throws(CodecError) {
        guard payload.count == expected else {
            throw .badPayloadSize(codec: codec, expected: expected, actual: payload.count)
        }
    }

    /// Throws `nonFinite` for the first NaN or ±infinity in `row`.
    static func requireFinite(_ row: UnsafeBufferPointer<Float>) throws(CodecError) {
        for index in row.indices where !row[index].isFinite {
            throw .nonFinite(index: index, value: row[index])
        }
    }
}
