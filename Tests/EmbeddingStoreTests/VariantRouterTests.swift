import EmbeddingCodecs
import Foundation
import Synchronization
import Testing
@testable import EmbeddingStore

/// Lookups through a rollout: each unit's go to its variant's store, bit for bit, and stages
/// change under running lookups without a failed one.
@Suite struct VariantRouterTests {
    /// Stores A (int8) and B (int4h) of the same 2,000 × 16 rows, and a rollout file of them.
    static func setUp(_ directory: TemporaryDirectory, fraction: Double) throws -> (a: Store, b: Store, file: String) {
        let rows = embeddingRows(count: 2_000, dimension: 16, seed: 31)
        var stores: [Store] = []
        for (name, codec) in [("A", Codec.int8), ("B", .int4h)] {
            let store = try makeStore(directory, name: name)
            _ = try rows.withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: 2_000, dimension: 16, codec: codec) }
            stores.append(store)
        }
        let file = directory.file("r.json")
        try Rollout(baseline: "A", candidate: "B", fraction: fraction, salt: "router").write(to: file)   // paths relative to the file
        return (stores[0], stores[1], file)
    }

    static func direct(_ store: Store, _ ids: [UInt64]) throws -> [Float] {
        try store.makeReader().lookup(try store.table("t"), ids: ids)
    }

    @Test func lookupsGoToTheUnitsVariantBitForBit() throws {
        let directory = TemporaryDirectory()
        let (a, b, file) = try Self.setUp(directory, fraction: 0.5)
        let router = try VariantRouter(path: file)
        let reader = router.makeReader()
        var served = [0, 0]
        for unit in UInt64(0)..<300 {
            let ids = (0..<16).map { UInt64((unit * 37 + $0 * 11) % 2_100) }   // some missing
            var out = [Float](repeating: .nan, count: ids.count * 16)
            let (variant, _) = try ids.withUnsafeBufferPointer { ids in
                try out.withUnsafeMutableBufferPointer { try reader.lookup(unit: unit, table: "t", ids: ids, into: $0) }
            }
            #expect(variant == router.rollout.variant(for: unit))
            #expect(out.map(\.bitPattern) == (try Self.direct(variant == 0 ? a : b, ids)).map(\.bitPattern), "unit \(unit)")
            served[variant] += 1
        }
        #expect(served[0] > 100 && served[1] > 100)
        let counters = router.counterSnapshot
        #expect(counters["baseline"]?.batches == served[0] && counters["candidate"]?.batches == served[1])
        #expect(counters.values.reduce(0) { $0 + $1.missing } > 0)
        let json = try JSONSerialization.jsonObject(with: Data(try router.metricsJSON().utf8)) as? [String: Any]
        #expect((json?["variants"] as? [String: Any])?.keys.sorted() == ["baseline", "candidate"])
        let text = router.prometheusText()
        #expect(text.contains("embstore_variant_batches_total{variant=\"candidate\"} \(served[1])") && text.contains("quantile=\"0.99\""))
    }

    /// Four threads look up while the file goes 5% → 50% → back, over and over: no lookup fails
    /// or returns rows of a store other than the variant it reports, and both stages serve.
    @Test func stagesChangeUnderRunningLookupsWithoutAFailure() throws {
        let directory = TemporaryDirectory()
        let (a, b, file) = try Self.setUp(directory, fraction: 0.05)
        let router = try VariantRouter(path: file, checkInterval: 0)
        let ids: [UInt64] = Array(0..<32)
        let expected = [try Self.direct(a, ids), try Self.direct(b, ids)]
        let stop = Atomic<Bool>(false), failures = Atomic<Int>(0), lookups = Atomic<Int>(0)
        let servedByCandidate = Atomic<Int>(0)
        let threads = (0..<4).map { t in
            Thread {
                let reader = router.makeReader()
                var unit = UInt64(t) << 40
                var out = [Float](repeating: 0, count: ids.count * 16)
                while !stop.load(ordering: .relaxed) {
                    unit += 1
                    do {
                        let (variant, _) = try ids.withUnsafeBufferPointer { ids in
                            try out.withUnsafeMutableBufferPointer { try reader.lookup(unit: unit, table: "t", ids: ids, into: $0) }
                        }
                        if out != expected[variant] { failures.add(1, ordering: .relaxed) }
                        if variant == 1 { servedByCandidate.add(1, ordering: .relaxed) }
                    } catch {
                        failures.add(1, ordering: .relaxed)
                    }
                    lookups.add(1, ordering: .relaxed)
                }
            }
        }
        threads.forEach { $0.start() }
        var rollout = try Rollout.read(from: file)
        for round in 0..<20 {
            if round % 2 == 0 { try rollout.advance(to: [0.5]) } else { try rollout.rollback() }
            try rollout.write(to: file)
            usleep(20_000)
        }
        stop.store(true, ordering: .relaxed)
        while threads.contains(where: { !$0.isFinished }) { usleep(1_000) }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(lookups.load(ordering: .relaxed) > 100)
        // Half the time at 50%: far more than the 5% stage alone would give the candidate.
        #expect(Double(servedByCandidate.load(ordering: .relaxed)) > 0.1 * Double(lookups.load(ordering: .relaxed)))
        _ = router.makeReader()
        #expect(router.currentState().rollout.candidateFractions == [0.05])   // the last stage written, a rollback
    }

    @Test func theHistogramReportsValuesWithinItsBucketWidth() {
        var histogram = LatencyHistogram()
        for v in UInt64(1)...10_000 { histogram.add(v * 1_000) }
        for (q, exact) in [(0.5, 5_000_000.0), (0.99, 9_900_000.0), (0.999, 9_990_000.0)] {
            let got = Double(histogram.percentile(q))
            #expect(got <= exact && got > exact * (1 - 1.0 / 16), "q \(q): \(got)")
        }
        #expect(LatencyHistogram().percentile(0.5) == 0)
    }
}
