import EmbeddingCodecs
import Foundation
import Testing

/// Inputs tools/fuzz.sh found that crashed a reader (each a trap in a debug and a release
/// build), kept so that they stay errors. The fuzz targets are in tools/fuzz.
@Suite struct FuzzFoundTests {
    static func littleEndian(_ values: [UInt32]) -> [UInt8] {
        values.flatMap { value in withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    }

    /// A damaged PCA basis record (FuzzRecords: a load note's JSON read as one) whose dimension
    /// and rank are near 2³²: computing its expected length overflowed.
    @Test func aBasisRecordOfAHugeDimensionIsRefused() {
        let records = [
            Self.littleEndian([0xFFFF_FFFF, 0xFFFF_FFFF]) + [UInt8](repeating: 0, count: 64),
            Self.littleEndian([1 << 20 + 1, 1]) + [UInt8](repeating: 0, count: 64),
            Array(#"{"summary":{"policy":"int8","shares":[{"bytes":73,"codec":"int8","rows":1}]},"version":1}"#.utf8),
        ]
        for record in records {
            #expect(throws: CodecError.self) { try record.withUnsafeBytes { try PCABasis(record: $0) } }
        }
    }

    /// Statistics name tc rows by their model's target bits: a damaged model record whose
    /// target is huge or not finite made the name's `Int(_:)` trap.
    @Test(arguments: [Float(1e30), -1e30, .infinity, -.infinity, .nan, 1.5, 2])
    func aTCModelWithAnyTargetBitsHasAFormName(bits: Float) {
        let record = Self.littleEndian([0, 2, 1, 4, bits.bitPattern])   // marker, kind (model), basis id, K, target bits
        let name = record.withUnsafeBytes { RowCodecs.codec(tag: 9)!.formName(parameter: $0) }
        #expect(name.hasPrefix("tc:"), "\(name)")
        if bits == 1.5 { #expect(name == "tc:1.5") }
        if bits == 2 { #expect(name == "tc:2") }
    }

    /// A tc model whose steps are finite but so large that a row could decode past float32's
    /// range (FuzzRecords: a row decoded to inf): refused when the model is read, so that
    /// decoding needs no check per row. The fitted model of the same basis is accepted.
    @Test func aTCModelThatCouldDecodeToInfinityIsRefused() throws {
        let d = 16, count = 300
        let rows = TransformCodedCodecTests.rows(count: count, dimension: d, seed: 3)
        let (table, _, _) = try TransformCodedCodecTests.roundTrip(rows, count: count, dimension: d, codec: .transformCoded(bitsPerValue: 3))
        let basis = try TransformBasis(record: try #require(table.parameterRecord(1)))
        let fitted = try TransformModel(record: try #require(table.parameterRecord(2))) { _ in basis }
        func model(steps: [Float]) throws -> TransformModel {
            try TransformModel(basisID: fitted.basisID, basis: basis, k: fitted.k, targetBits: fitted.targetBits, steps: steps,
                               tableOf: fitted.tableOf, tables: fitted.tables)
        }
        _ = try model(steps: fitted.steps)
        for huge: Float in [3e38, 1e36, 1e35] {
            var steps = fitted.steps
            steps[0] = huge
            #expect(throws: CodecError.self, "step \(huge)") { try model(steps: steps) }
        }
    }
}
