/// Why a codec refused to encode a row or a payload.
///
/// Decoders never throw: the store validates payload sizes before it decodes, and every payload
/// an encoder writes decodes to finite values.
public enum CodecError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The input row holds NaN or ±infinity at `index`; every encoder checks.
    case nonFinite(index: Int, value: Float)
    /// `value` at `index` cannot be represented by `codec` (for example fp16 beyond ±65504).
    case outOfRange(codec: String, index: Int, value: Float)
    /// A payload buffer handed to an encoder has `actual` bytes where the row needs `expected`.
    case badPayloadSize(codec: String, expected: Int, actual: Int)
    /// A parameter is unusable; the text names the parameter and the bad value.
    case invalidParameter(String)
    /// The table lacks what the codec needs (a PCA basis, bucket rows, a fitted model); the
    /// text says what and how to make it.
    case missingParameters(String)

    /// One sentence saying what is wrong and, where there is one, what to do instead.
    public var description: String {
        switch self {
        case let .nonFinite(index, value):
            return "value \(value) at index \(index) is not a finite number; embedding rows must not contain NaN or infinity"
        case let .outOfRange(codec, index, value) where codec == "fp16":
            return "value \(value) at index \(index) is outside fp16's finite range (±65504); use fp32 or int8 for this row"
        case let .outOfRange(codec, index, value):
            return "value \(value) at index \(index) is out of range for \(codec)'s min/max rule: its decoded value would overflow Float; use encode(_:into:), which narrows the range, or fp32 for this row"
        case let .badPayloadSize(codec, expected, actual):
            return "\(codec) payload buffer has \(actual) bytes but this row needs exactly \(expected)"
        case let .missingParameters(text):
            return text
        case let .invalidParameter(text):
            return "invalid parameter: \(text)"
        }
    }
}
