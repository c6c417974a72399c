import EmbeddingCodecs
import Foundation
import Testing
@testable import EmbeddingStore

/// The tc ladder's per-row estimates (squared error and record bytes, without coding the row)
/// against the rows actually coded and decoded with each rate's model.
@Suite struct LadderEstimateTests {
    @Test func estimatesMatchTheCodedRows() throws {
        let d = 64, count = 3000
        let rows = embeddingRows(count: count, dimension: d, seed: 21)
        let ladder = try rows.withUnsafeBufferPointer {
            try TransformCodedLadder(rows: $0, count: count, dimension: d, lowestBits: 0.25, highestBits: 8, models: 12, options: FitOptions())
        }
        let table = InMemoryCodecTable(dimension: d)
        let basisID = table.addParameterRecord(ladder.basis.record)
        let models = try ladder.models(basisID: basisID)
        let modelIDs = models.map { table.addParameterRecord($0.record) }
        let estimator = TransformCodedLadder.Estimator(ladder)
        let decoder = TransformCodedRowCodec.descriptor.makeDecoder(dimension: d)
        var estimated = [Double](repeating: 0, count: models.count), actual = estimated
        var estimatedBytes = estimated, actualBytes = estimated
        var errors = [Float](repeating: 0, count: models.count), bytes = errors
        var record = [UInt8](repeating: 0, count: 4096)
        var decoded = [Float](repeating: 0, count: d)
        for i in 0..<count {
            let row = rows.withUnsafeBufferPointer { UnsafeBufferPointer(rebasing: $0[i * d..<(i + 1) * d]) }
            estimator.estimate(row.baseAddress!, idBytes: 1, errors: &errors, bytes: &bytes)
            for (r, model) in models.enumerated() {
                let encoder = ladder.encoder(model, modelID: modelIDs[r])
                let size = try record.withUnsafeMutableBytes { try encoder.encode(row, index: nil, into: $0) }
                let decodedCount = try record.withUnsafeBytes { raw in
                    var view = UnsafeRawBufferPointer(rebasing: raw[0..<size])
                    return try decoder.decode(&view, count: 1, into: &decoded, parameters: table)
                }
                #expect(decodedCount == 1)
                var e = 0.0
                for j in 0..<d { e += Double(decoded[j] - row[j]) * Double(decoded[j] - row[j]) }
                actual[r] += e
                estimated[r] += Double(errors[r])
                actualBytes[r] += Double(size)
                estimatedBytes[r] += Double(bytes[r])
            }
        }
        for r in models.indices {
            print("[ladder] rate \(ladder.rates[r]): error estimated \(estimated[r]) actual \(actual[r]); bytes \(estimatedBytes[r] / Double(count)) vs \(actualBytes[r] / Double(count))")
            #expect(abs(estimated[r] - actual[r]) <= 0.02 * actual[r], "rate \(ladder.rates[r]): error estimated \(estimated[r]), coded \(actual[r])")
            #expect(abs(estimatedBytes[r] - actualBytes[r]) <= 0.03 * actualBytes[r] + Double(count), "rate \(ladder.rates[r]): bytes")
        }
    }
}
