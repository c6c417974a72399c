import EmbeddingCodecs
import Testing

@Suite("CodecError")
struct CodecErrorTests {
    @Test("error descriptions are one readable sentence")
    func descriptions() {
        let text = CodecError.outOfRange(codec: "fp16", index: 3, value: 1e5).description
        #expect(text.contains("index 3") && text.contains("65504") && text.contains("fp32"))
        let rowwise = CodecError.outOfRange(codec: "int8", index: 0, value: 3e38).description
        #expect(rowwise.contains("int8") && rowwise.contains("overflow"))
        #expect(CodecError.nonFinite(index: 2, value: .nan).description.contains("index 2"))
        #expect(CodecError.badPayloadSize(codec: "int8", expected: 72, actual: 71).description.contains("72"))
        #expect(CodecError.invalidParameter("dimension must be at least 1, got 0").description.contains("dimension"))
    }
}
