import CEmbeddingKernels
import EmbeddingCodecs
import Foundation
@testable import EmbeddingStore

extension FormatDocTests {
    /// The tc example of FORMAT.md: a tc basis (int8 rows), a tc model with two tables, and two
    /// records (one with escapes), each decoded step by step by the spec's rules and checked
    /// against the codec's own decoder.
    static func transformExample() throws -> String {
        let d = 4
        let pca = try PCABasis(dimension: d, rank: d, mean: [0.1, 0, 0, 0],
                               components: [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], variances: [4, 3, 2, 1])
        let basis = try TransformBasis(pca, rank: 3, precision: .int8Rowwise)
        let tables = [FrequencyTable(lo: -2, frequencies: [256, 768, 2048, 767, 256, 1], theta: 0),
                      FrequencyTable(lo: 0, frequencies: [4095, 1], theta: 0)]
        let model = try TransformModel(basisID: 1, basis: basis, k: 3, targetBits: 2, steps: [0.25, 0.5, 1.0],
                                       tableOf: [0, 0, 1], tables: tables)
        let table = InMemoryCodecTable(dimension: d)
        table.addParameterRecord(basis.record)
        table.addParameterRecord(model.record)
        let encoder = try TransformCodedRowCodec.descriptor.putEncoder(.transformCoded(bitsPerValue: 2), table: table)
        var text = """
            ### tc, d = 4: basis id 1, model id 2

            The tc basis (key 1 in `t<T>/bases`): typed record kind 1, d = 4, K = 3 rows, precision 3 (int8 rowwise),
            mean [0.1, 0, 0, 0], rows e₀, e₁, e₂ (each row: 4 codes, f32 scale, f32 bias):

            ```
            \(hex(basis.record))
            ```

            The tc model (key 2): kind 2, basis 1, K = 3, target 2 bits, steps [0.25, 0.5, 1.0], tables [0, 0, 1], T = 2;
            table 0: lo = −2, n = 5 (values −2…2), θ = 0, frequencies 256 768 2048 767 256 and 1 for the escape;
            table 1: lo = 0, n = 1 (value 0), θ = 0, frequencies 4095 and 1 for the escape:

            ```
            \(hex(model.record))
            ```


            """
        for row: [Float] in [[0.6, -0.4, 0.35, 0.9], [3.1, 0, 2.0, 0]] {
            var record = [UInt8](repeating: 0, count: encoder.maximumRecordSize)
            let size = try row.withUnsafeBufferPointer { row in try record.withUnsafeMutableBytes { try encoder.encode(row, index: nil, into: $0) } }
            record = Array(record[0..<size])
            let out = try RowRecord.decode(record, dimension: d, parameters: table)
            var kernel = model.kernelModel
            var q = [Int32](repeating: 0, count: 3)
            _ = record.withUnsafeBytes { emb_tc_decode_symbols(&kernel, $0.baseAddress! + 2, size - 2, &q) }
            text += """
                Row in \(floats(row)): coefficients c = v · (x − μ), q = round(c / step) = \(q.map(String.init).joined(separator: ", "))

                ```
                record: \(hex(record))
                out:    \(floats(out))
                ```


                """
        }
        return text
    }
}
