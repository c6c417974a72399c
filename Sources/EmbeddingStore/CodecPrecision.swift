import EmbeddingCodecs

/// The order of precision in which repack tells a promotion from a demotion: the bits a value
/// of a row nominally keeps in a codec's records.
///
/// | codec | bits a value |
/// |---|---|
/// | `fp32` | 32 |
/// | `fp16` | 16 |
/// | `int8` | 8 |
/// | `int4`, `int4h` | 4 |
/// | `tc:B` | B (the rate its model was fitted for; `tc:P%` counts as 32·P/100) |
/// | `int2h` | 2 |
/// | `reduced:K` | 32·K/d (K float32 coefficients for d values) |
/// | `bucket`, `bucket+scale` | 0 (the row keeps nothing of its own but a pointer) |
///
/// Repack without the full-precision row moves a row only to a codec of fewer bits than it has:
/// re-encoding a decoded row with more bits (or as many, in another codec) cannot bring back
/// what its codec dropped, so the row keeps its record. Codecs of equal bits (`int4` and
/// `int4h`, `tc:8` and `int8`) are neither more nor less precise than each other here.
enum CodecPrecision {
    /// Bits a value of rows `codec` writes at `dimension`; nil for a codec this order does not know.
    static func bits(_ codec: Codec, dimension: Int) -> Double? {
        let arguments = codec.arguments
        switch codec.rowCodec.name {
        case "tc":
            // tc:B is [B]; tc:P% is [0, P/100]: a share of float32's 32 bits.
            return arguments.count == 2 ? 32 * arguments[1] : arguments.first
        case "reduced":
            return arguments.first.map { 32 * $0 / Double(max(dimension, 1)) }
        default:
            return bits(named: codec.rowCodec.name)
        }
    }

    /// Bits a value of a stored record of `form` (as `FormClassifier` names it: `int8`, `tc:1.5`)
    /// at `dimension`; nil for a form this order does not know.
    static func bits(ofRecord record: UnsafeRawBufferPointer, form: LiveRowCodecs.Form, dimension: Int) -> Double? {
        guard let codec = RowCodecs.codec(tag: form.tag) else { return nil }
        switch codec.name {
        case "tc":
            // The form is `tc:B`, B the rate the record's model was fitted for.
            return form.name.split(separator: ":").dropFirst().first.flatMap { Double($0) }
        case "reduced":
            // Tag, u32 basis id, then K f32 coefficients (FORMAT.md, "Row records").
            return 32 * Double(max(record.count - 5, 0) / 4) / Double(max(dimension, 1))
        default:
            return bits(named: codec.name)
        }
    }

    private static func bits(named name: String) -> Double? {
        switch name {
        case "fp32": 32
        case "fp16": 16
        case "int8": 8
        case "int4", "int4h": 4
        case "int2h": 2
        case "bucket", "bucket+scale": 0
        default: nil
        }
    }
}
