import ArgumentParser
import CEmbeddingKernels
import Dispatch
import EmbeddingCodecs
import EmbeddingStore
import Foundation
import NPY

/// `embstore bench`: the lookup and pooled workloads of ../shared/bench/README.md on the same
/// files, printed as the same JSON lines with `"system": "embstore"`.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure batched and pooled lookups on a workload's id streams (JSON lines like shared/bench).")

    @Argument(help: "The store directory.") var store: String
    @Option(help: "Table name.") var table: String
    @Option(help: "uint64 .npy id stream (the workload's ids.npy or ids_uniform.npy).") var ids: String
    @Option(help: "Ids per lookup batch.") var batch = 512
    @Option(help: "Reader threads; each runs the batch stream from its own starting batch.") var threads = 1
    @Option(help: "Pooled workload: the bags' ids (bags.npy).") var bags: String?
    @Option(help: "Pooled workload: CSR offsets of the bags (offsets.npy).") var offsets: String?
    @Option(help: "Bags per pooled batch.") var bagBatch = 512
    @Option(help: ArgumentHelp("Pooled workload as multi-table requests of K features (KeyedJaggedTensor style: each feature a bag batch of its own, K consecutive batches, pooled side by side), against the K single-table calls they replace, in the same run.", valueName: "K"))
    var features: Int?
    @Option(help: "Timed repetitions (the median is reported).") var reps = 5
    @Option(help: "Target seconds per repetition.") var repSeconds = 0.4
    @Option(help: "Name of the id stream in the output (default: zipf for ids.npy, uniform for ids_uniform.npy, else the file name).")
    var idsName: String?
    @Option(help: "float32 table.npy to report rel_l2_err of the first batch against.") var tableNpy: String?
    @Flag(help: "Also run the decode-only workload (needs --table-npy): each codec's decoder on B cache-resident rows.")
    var decodeOnly = false
    @Option(help: "Codecs of the decode-only workload, comma-separated (`embstore codecs` lists them); parameters are fitted on the table's first rows.")
    var decodeCodecs = "fp32,fp16,int8,int4,int4h,tc:2,tc:4"
    @Flag(help: "Print JSON lines only (no human summary on stderr).") var json = false
    @Option(help: ArgumentHelp("Count the lookup workload's ids (one in N) and add the counts to the store's access counts afterwards (opens the store writable); the lookup line then says track_every.", valueName: "N"))
    var trackEvery: Int?

    func run() throws {
        guard batch >= 1, bagBatch >= 1, threads >= 1, reps >= 1 else { throw InputError("--batch, --bag-batch, --threads and --reps must be at least 1") }
        let stream = try NPYFile(path: ids).readIDs()
        let batches = stream.count / batch
        guard batches >= 1 else { throw InputError("\(ids) has \(stream.count) ids, fewer than one batch of \(batch)") }

        if ShardManifest.exists(in: self.store) { return try runSharded(stream: stream) }

        // First: what a service pays to start serving (open, table, reader, first batch).
        if let trackEvery, trackEvery < 1 { throw InputError("--track-every must be at least 1") }
        let opening = DispatchTime.now().uptimeNanoseconds
        let store = try trackEvery == nil ? openReadOnly(self.store) : Store(path: self.store)
        let handle = try store.table(table)
        var firstOut = [Float](repeating: 0, count: batch * handle.dimension)
        try stream.withUnsafeBufferPointer { stream in
            try firstOut.withUnsafeMutableBufferPointer { out in
                _ = try store.makeReader().lookup(handle, ids: UnsafeBufferPointer(rebasing: stream[0..<batch]), into: out)
            }
        }
        let openSeconds = Double(DispatchTime.now().uptimeNanoseconds - opening) / 1e9

        let statistics = try store.statistics(handle)
        let codec = statistics.codecs.count == 1 ? statistics.codecs[0].codec : "mixed"
        let d = handle.dimension
        let common: [String: Any] = ["system": "embstore", "codec": codec, "bytes": store.fileSize, "N": statistics.rows, "d": d]
        var open = common
        open["workload"] = "open_first_batch"
        open["seconds"] = openSeconds
        open["batch"] = batch
        open["rows_per_s"] = Double(batch) / openSeconds
        try Self.emit(open)

        // lookup: batch j = ids[(j mod P)·B ..< +B], decoded into one reused [B, d] buffer per thread.
        var lookup = common
        lookup["workload"] = "lookup"
        let counter = trackEvery.map { AccessCounter(sampleEvery: $0) }
        let measured = try Self.measureLookups(store: store, table: handle, stream: stream, batch: batch, threads: threads, reps: reps,
                                               repSeconds: repSeconds, counter: counter)
        lookup.merge(measured) { $1 }
        if let counter {
            lookup["track_every"] = counter.sampleEvery
            lookup["tracked_ids_flushed"] = try counter.flush(to: store)   // the readers handed over when they ended
        }
        lookup["txn"] = "renew"
        lookup["batch"] = batch
        lookup["ids"] = idsName ?? Self.streamName(ids)
        lookup["threads"] = threads
        if threads > 1 { lookup["variant"] = "threads=\(threads)" }   // keeps report.py from merging it with 1 thread
        if let tableNpy {
            lookup["rel_l2_err"] = try Self.firstBatchError(store: store, table: handle, ids: Array(stream[0..<batch]), tableNpy: tableNpy)
        }
        try Self.emit(lookup)
        if decodeOnly {
            guard let tableNpy else { throw InputError("--decode-only needs --table-npy") }
            let codecs = try decodeCodecs.split(separator: ",").map { try parseCodec(String($0)) }
            try Self.decodeOnly(tableNpy: tableNpy, ids: Array(stream[0..<batch]), codecs: codecs, common: common, reps: reps,
                                repSeconds: repSeconds)
        }

        guard let (bagIDs, bagOffsets) = try readBags() else { return }
        try Self.emit(try Self.pooledLine(common: common, bagIDs: bagIDs, bagOffsets: bagOffsets, bagBatch: bagBatch, dimension: d,
                                          threads: threads, reps: reps, repSeconds: repSeconds) {
            let reader = try store.makeReader()
            return { ids, offsets, out in try reader.lookupPooled(handle, ids: ids, offsets: offsets, into: out) }
        })
        if let features {
            try Self.measureMultiTable(store: store, table: handle, features: features, bagIDs: bagIDs, bagOffsets: bagOffsets,
                                       bagBatch: bagBatch, common: common, reps: reps, repSeconds: repSeconds)
        }
    }

    /// Multi-table requests of `features` features, each feature's bags one bag batch (feature
    /// f of request r: batch r·K + f), against the K single-table pooled calls into K buffers
    /// that they replace (without the interleaving copy those would need), in one run, three
    /// alternating rounds of each; one JSON line each (the median round), ids per second.
    static func measureMultiTable(store: Store, table: Table, features: Int, bagIDs: [UInt64], bagOffsets: [Int], bagBatch: Int,
                                  common: [String: Any], reps: Int, repSeconds: Double) throws {
        let requests = (bagOffsets.count - 1) / bagBatch / max(features, 1)
        guard features >= 1, requests >= 1 else {
            throw InputError("--features \(features): the workload holds \((bagOffsets.count - 1) / bagBatch) bag batches, fewer than one request of \(features)")
        }
        let d = table.dimension
        // Each feature's offsets rebased to its own ids (a KeyedJaggedTensor's per-key offsets).
        var rebased: [Int] = []   // bagBatch + 1 per bag batch
        for batch in 0..<requests * features {
            let slice = bagOffsets[batch * bagBatch...(batch + 1) * bagBatch]
            rebased += slice.map { $0 - slice.first! }
        }
        let ids = bagIDs, offsets = rebased
        // Request r's features: feature f is bag batch r·K + f, its ids and its rebased offsets.
        func request(_ r: Int, ids: UnsafeBufferPointer<UInt64>, offsets: UnsafeBufferPointer<Int>) -> [PooledFeature] {
            (0..<features).map { f in
                let batch = r * features + f
                return PooledFeature(table: table, ids: UnsafeBufferPointer(rebasing: ids[bagOffsets[batch * bagBatch]..<bagOffsets[(batch + 1) * bagBatch]]),
                                     offsets: UnsafeBufferPointer(rebasing: offsets[batch * (bagBatch + 1)..<(batch + 1) * (bagBatch + 1)]))
            }
        }
        // Alternated, three rounds each (the machine's speed drifts over a run): each line
        // reports the median round, by rows_per_s.
        var rounds: [Bool: [[String: Any]]] = [:]
        for round in 0..<6 {
            let multi = round % 2 == 1
            let measured = try measure(threads: 1, reps: reps, repSeconds: repSeconds) { _ -> (Int) throws -> Int in
                let reader = try store.makeReader()
                var out = [Float](repeating: 0, count: bagBatch * d * features)
                var next = 0
                return { units in
                    try ids.withUnsafeBufferPointer { ids in
                        try offsets.withUnsafeBufferPointer { offsets in
                            try out.withUnsafeMutableBufferPointer { out in
                                var rows = 0
                                for _ in 0..<units {
                                    let pooled = request(next % requests, ids: ids, offsets: offsets)
                                    next += 1
                                    rows += pooled.reduce(0) { $0 + $1.ids.count }
                                    if multi {
                                        try reader.lookupPooled(pooled, batchSize: bagBatch, into: out)
                                    } else {
                                        for (f, feature) in pooled.enumerated() {
                                            try reader.lookupPooled(table, ids: feature.ids, offsets: feature.offsets,
                                                                    into: UnsafeMutableBufferPointer(rebasing: out[f * bagBatch * d..<(f + 1) * bagBatch * d]))
                                        }
                                    }
                                }
                                return rows
                            }
                        }
                    }
                }
            }
            rounds[multi, default: []].append(measured)
        }
        for multi in [false, true] {
            let sorted = rounds[multi, default: []].sorted { ($0["rows_per_s"] as? Double ?? 0) < ($1["rows_per_s"] as? Double ?? 0) }
            var line = common
            line["workload"] = "pooled"
            line["variant"] = multi ? "multi-table x\(features)" : "single-table x\(features)"
            line.merge(sorted[sorted.count / 2]) { $1 }
            line["rounds"] = sorted.count
            line["batch"] = bagBatch
            line["features"] = features
            try emit(line)
        }
    }

    /// shared/bench's lookup workload on `stream`: batch j = ids[(j mod P)·B ..< +B], P = ⌊count/B⌋,
    /// decoded into one reused [B, d] buffer per thread, one read transaction renewed per batch;
    /// each thread starts at its own batch. `measure`'s figures (rows_per_s is the median's).
    /// `embstore demo` measures its lookups with this too.
    static func measureLookups(store: Store, table: Table, stream: [UInt64], batch: Int, threads: Int, reps: Int,
                               repSeconds: Double, counter: AccessCounter? = nil) throws -> [String: Any] {
        try measureBatches(stream: stream, batch: batch, dimension: table.dimension, threads: threads, reps: reps, repSeconds: repSeconds) {
            let reader = try store.makeReader()
            reader.counter = counter
            return { ids, out in try reader.lookup(table, ids: ids, into: out) }
        }
    }

    /// The lookup workload through `makeLookup()`'s function (one made on each thread): batch j =
    /// stream[(j mod P)·B ..< +B], each thread from its own starting batch, into one reused
    /// [B, d] buffer.
    static func measureBatches(stream: [UInt64], batch: Int, dimension d: Int, threads: Int, reps: Int, repSeconds: Double,
                               makeLookup: @escaping () throws -> (UnsafeBufferPointer<UInt64>, UnsafeMutableBufferPointer<Float>) throws -> Void)
        throws -> [String: Any] {
        let batches = stream.count / batch
        guard batches >= 1 else { throw InputError("an id stream of \(stream.count) ids holds no batch of \(batch)") }
        return try measure(threads: threads, reps: reps, repSeconds: repSeconds) { thread -> (Int) throws -> Int in
            let lookup = try makeLookup()
            var out = [Float](repeating: 0, count: batch * d)
            var next = thread * batches / threads
            return { units in
                try stream.withUnsafeBufferPointer { stream in
                    try out.withUnsafeMutableBufferPointer { out in
                        for _ in 0..<units {
                            let j = next % batches
                            next += 1
                            try lookup(UnsafeBufferPointer(rebasing: stream[j * batch..<(j + 1) * batch]), out)
                        }
                    }
                }
                return units * batch
            }
        }
    }

    /// The pooled workload's bags (--bags, --offsets), checked; nil without them.
    func readBags() throws -> (ids: [UInt64], offsets: [Int])? {
        guard let bags, let offsets else {
            if (self.bags == nil) != (self.offsets == nil) { throw InputError("--bags and --offsets go together") }
            return nil
        }
        let bagIDs = try NPYFile(path: bags).readIDs()
        let offsetFile = try NPYFile(path: offsets)
        guard offsetFile.dtype == .int64 || offsetFile.dtype == .uint64 else { throw InputError("\(offsets) must hold int64 offsets") }
        let bagOffsets = try offsetFile.readIDs().map { Int($0) }
        guard (bagOffsets.count - 1) / bagBatch >= 1, bagOffsets.first == 0, bagOffsets.last == bagIDs.count else {
            throw InputError("\(offsets) must start at 0, end at \(bagIDs.count) and hold at least \(bagBatch) bags")
        }
        return (bagIDs, bagOffsets)
    }

    /// The pooled workload's JSON line: bag batch j (of `bagBatch` bags), each thread from its own
    /// starting batch, pooled by `makePool()`'s function (one made on each thread) into one reused
    /// [bagBatch, d] buffer; ids per second.
    static func pooledLine(common: [String: Any], bagIDs: [UInt64], bagOffsets: [Int], bagBatch: Int, dimension d: Int, threads: Int,
                           reps: Int, repSeconds: Double,
                           makePool: @escaping () throws -> (UnsafeBufferPointer<UInt64>, UnsafeBufferPointer<Int>, UnsafeMutableBufferPointer<Float>) throws -> Void)
        throws -> [String: Any] {
        let bagBatches = (bagOffsets.count - 1) / bagBatch
        let measured = try measure(threads: threads, reps: reps, repSeconds: repSeconds) { thread -> (Int) throws -> Int in
            let pool = try makePool()
            var out = [Float](repeating: 0, count: bagBatch * d)
            var next = thread * bagBatches / threads
            return { units in
                var rows = 0
                try bagIDs.withUnsafeBufferPointer { bagIDs in
                    try bagOffsets.withUnsafeBufferPointer { offsets in
                        try out.withUnsafeMutableBufferPointer { out in
                            for _ in 0..<units {
                                let j = next % bagBatches
                                next += 1
                                let slice = UnsafeBufferPointer(rebasing: offsets[j * bagBatch...(j + 1) * bagBatch])
                                try pool(bagIDs, slice, out)
                                rows += slice[slice.count - 1] - slice[0]
                            }
                        }
                    }
                }
                return rows
            }
        }
        var pooled = common
        pooled["workload"] = "pooled"
        pooled.merge(measured) { $1 }
        pooled["batch"] = bagBatch
        pooled["threads"] = threads
        if threads > 1 { pooled["variant"] = "threads=\(threads)" }
        if let rowsPerS = measured["rows_per_s"] as? Double, let rows = measured["rows_per_rep"] as? Int,
           let units = measured["units_per_rep"] as? Int, rows > 0 {
            pooled["bags_per_s"] = rowsPerS * Double(bagBatch) / (Double(rows) / Double(units))
        }
        return pooled
    }

    /// shared/bench's decode workload: the rows of the first B ids, encoded with each codec and
    /// packed into one cache-resident buffer, decoded into `[B, d]` per unit by the codec's
    /// decoder as lookups call it (runs of 8 rows per call, every value checked finite).
    /// Codecs with table parameters fit them on the table's first rows (at most 20,000).
    static func decodeOnly(tableNpy: String, ids: [UInt64], codecs: [Codec], common: [String: Any], reps: Int, repSeconds: Double) throws {
        let file = try NPYFile(path: tableNpy)
        let (count, d) = try file.matrixShape()
        var rows = [Float](repeating: 0, count: ids.count * d)
        try rows.withUnsafeMutableBufferPointer { rows in
            try requireRowPositions(ids, rows: count, tableNpy: tableNpy)
            for (i, id) in ids.enumerated() {
                try file.readFloatRows(Int(id)..<Int(id) + 1, into: UnsafeMutableBufferPointer(rebasing: rows[i * d..<(i + 1) * d]))
            }
        }
        let fitCount = min(count, 20_000)
        var fitRows = [Float](repeating: 0, count: fitCount * d)
        try fitRows.withUnsafeMutableBufferPointer { try file.readFloatRows(0..<fitCount, into: $0) }
        for codec in codecs {
            let table = InMemoryCodecTable(dimension: d)
            let plan = try fitRows.withUnsafeBufferPointer {
                try codec.rowCodec.planLoad(codec, rows: $0, count: fitCount, dimension: d, options: FitOptions())
            }
            let encoder = try table.apply(plan)
            var packed: [UInt8] = []
            var offsets: [Int] = []
            var record = [UInt8](repeating: 0, count: encoder.maximumRecordSize)
            try rows.withUnsafeBufferPointer { rows in
                for i in 0..<ids.count {
                    let size = try record.withUnsafeMutableBytes {
                        try encoder.encode(UnsafeBufferPointer(rebasing: rows[i * d..<(i + 1) * d]), index: nil, into: $0)
                    }
                    offsets.append(packed.count)
                    packed.append(contentsOf: record[0..<size])
                }
            }
            offsets.append(packed.count)
            // 64-byte aligned, like the peers' NumPy buffers. (Records in a store start at odd
            // addresses; the lookup figures include that.)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(1, packed.count), alignment: 64)
            defer { buffer.deallocate() }
            packed.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            let records = UnsafeMutablePointer<UnsafeRawBufferPointer>.allocate(capacity: ids.count)
            defer { records.deallocate() }
            for i in 0..<ids.count {
                records[i] = UnsafeRawBufferPointer(start: buffer + offsets[i], count: offsets[i + 1] - offsets[i])
            }
            nonisolated(unsafe) let shared = (UnsafePointer(records), table)
            // As a batched lookup's decoding pass: the self-contained fixed-size codecs in one
            // emb_decode_records call over the batch, the others in one call of their decoder
            // (lookups group a batch's records of such a codec, or decode its runs, likewise).
            var kinds = [UInt8](repeating: UInt8(EMB_ROW_KIND_NONE), count: 256)
            kinds[Int(codec.tag)] = codec.rowCodec.pooledRowKind
            let inKernel = codec.rowCodec.pooledRowKind != UInt8(EMB_ROW_KIND_NONE)
            let measured = try measure(threads: 1, reps: reps, repSeconds: repSeconds) { _ in
                let (records, table) = shared
                let decoder = codec.rowCodec.makeDecoder(dimension: d)
                let out = OutputRows(count: ids.count * d)
                return { units in
                    try kinds.withUnsafeBufferPointer { kinds in
                        for _ in 0..<units {
                            if inKernel {
                                var job = emb_decode_job(records: UnsafeRawPointer(records).assumingMemoryBound(to: emb_record.self), ids: nil,
                                                         dense: nil, count: ids.count, d: d, out: out.floats, kinds: kinds.baseAddress, missed: 0)
                                var position = 0
                                guard emb_decode_records(&job, &position) == EMB_POOL_DONE else {
                                    throw InputError("decode-only: a \(codec) record did not decode")
                                }
                            } else if try decoder.decode(records, count: ids.count, into: out.floats, parameters: table) != ids.count {
                                throw InputError("decode-only: a \(codec) record did not decode")
                            }
                        }
                    }
                    return units * ids.count
                }
            }
            var line = common
            line.merge(measured) { $1 }
            line["workload"] = "decode"
            line["codec"] = codec.description
            line["bytes"] = packed.count
            line["batch"] = ids.count
            try emit(line)
        }
    }

    static func streamName(_ path: String) -> String {
        switch URL(fileURLWithPath: path).lastPathComponent {
        case "ids.npy": "zipf"
        case "ids_uniform.npy": "uniform"
        case let name: URL(fileURLWithPath: name).deletingPathExtension().lastPathComponent
        }
    }

    /// shared/bench's protocol: grow the unit count until a run takes ≥ 30 ms, scale it to
    /// `repSeconds`, one untimed warm-up, re-scale, then `reps` timed runs; the median counts.
    /// `makeWorker(thread)` runs on that thread and returns its `run(units) -> rows`.
    static func measure(threads: Int, reps: Int, repSeconds: Double,
                        makeWorker: @escaping (Int) throws -> (Int) throws -> Int) throws -> [String: Any] {
        let pool = WorkerPool(threads: threads, makeWorker: makeWorker)
        defer { pool.stop() }
        var units = 1
        var (seconds, _) = try pool.run(units: units)
        while seconds < 0.03 && units < 1 << 40 {
            units = seconds < 0.002 ? units * 16 : max(units + 1, Int((Double(units) * 0.05 / seconds).rounded(.up)))
            (seconds, _) = try pool.run(units: units)
        }
        units = max(1, Int((Double(units) * repSeconds / max(seconds, 1e-9)).rounded()))
        (seconds, _) = try pool.run(units: units)
        units = max(1, Int((Double(units) * repSeconds / max(seconds, 1e-9)).rounded()))
        var times: [Double] = []
        var rows = 0
        for _ in 0..<reps {
            let (t, r) = try pool.run(units: units)
            times.append(t)
            rows = r
        }
        let median = times.sorted()[times.count / 2]
        return ["rows_per_s": Double(rows) / median, "median_s": median, "min_s": times.min()!, "max_s": times.max()!,
                "reps": reps, "units_per_rep": units, "rows_per_rep": rows]
    }

    /// ‖out − table[ids]‖ / ‖table[ids]‖ for one batch: the codec's loss.
    static func firstBatchError(store: Store, table: Table, ids: [UInt64], tableNpy: String) throws -> Double {
        let file = try NPYFile(path: tableNpy)
        let (rows, columns) = try file.matrixShape()
        guard columns == table.dimension else { throw InputError("\(tableNpy) has \(columns) columns, the table \(table.dimension)") }
        let got = try store.makeReader().lookup(table, ids: ids)
        var difference = 0.0, norm = 0.0
        var row = [Float](repeating: 0, count: columns)
        try requireRowPositions(ids, rows: rows, tableNpy: tableNpy)
        for (i, id) in ids.enumerated() {
            try row.withUnsafeMutableBufferPointer { try file.readFloatRows(Int(id)..<Int(id) + 1, into: $0) }
            for j in 0..<columns {
                let x = Double(row[j])
                difference += (Double(got[i * columns + j]) - x) * (Double(got[i * columns + j]) - x)
                norm += x * x
            }
        }
        return norm > 0 ? (difference / norm).squareRoot() : 0
    }

    /// --table-npy reads the rows of a batch's ids as row positions (shared/bench's layout: id i
    /// is row i of table.npy); an id past its rows (a store with sparse ids) is an error, not a trap.
    static func requireRowPositions(_ ids: [UInt64], rows: Int, tableNpy: String) throws {
        if let bad = ids.first(where: { $0 >= UInt64(rows) }) {
            throw InputError("--table-npy \(tableNpy): the stream's ids are read as its row positions (id i is row i), "
                + "but id \(bad) is past its \(rows) rows")
        }
    }

    /// Prints one JSON line in shared/bench's key order, numbers to 6 significant digits.
    static func emit(_ record: [String: Any]) throws {
        let first = ["system", "workload", "codec", "rows_per_s", "bytes", "N", "d"]
        let keys = first + record.keys.filter { !first.contains($0) }.sorted()
        let fields = keys.compactMap { key -> String? in
            guard let value = record[key] else { return nil }
            let text: String
            switch value {
            case let number as Double: text = String(format: "%.6g", number)
            case let number as Int: text = String(number)
            case let string as String: text = "\"\(string)\""
            default: text = "null"
            }
            return "\"\(key)\": \(text)"
        }
        FileHandle.standardOutput.write(Data(("{" + fields.joined(separator: ", ") + "}\n").utf8))
    }
}

/// A decode-only output buffer, 64-byte aligned and freed with its worker.
final class OutputRows {
    let floats: UnsafeMutablePointer<Float>

    init(count: Int) {
        floats = UnsafeMutableRawPointer.allocate(byteCount: 4 * max(1, count), alignment: 64)
            .initializeMemory(as: Float.self, repeating: 0, count: max(1, count))
    }

    deinit { floats.deallocate() }
}

/// Threads that each own a worker closure (and so a `Reader`), all started together per run.
final class WorkerPool: @unchecked Sendable {
    private let threads: Int
    private let start: [DispatchSemaphore]
    private let done = DispatchSemaphore(value: 0)
    // Written by `run` before it signals `start`, read by the threads after their wait.
    private var units = 0
    private var stopping = false
    /// Slot t is written only by thread t, and read by `run` after that thread signals `done`.
    /// (Not a Swift array: threads assigning their own elements of one array at once race on
    /// the array itself, as ThreadSanitizer found.)
    private let rows: UnsafeMutableBufferPointer<Int>
    private var failure: Error?
    private let lock = NSLock()

    init(threads: Int, makeWorker: @escaping (Int) throws -> (Int) throws -> Int) {
        self.threads = threads
        rows = .allocate(capacity: threads)
        rows.initialize(repeating: 0)
        start = (0..<threads).map { _ in DispatchSemaphore(value: 0) }
        // Each worker closure is made and used only on its own thread.
        nonisolated(unsafe) let makeWorker = makeWorker
        for t in 0..<threads {
            let thread = Thread { [self] in
                var worker: ((Int) throws -> Int)?
                do {
                    worker = try makeWorker(t)
                } catch {
                    record(error)
                }
                done.signal()
                while true {
                    start[t].wait()
                    if stopping { break }
                    do {
                        rows[t] = try worker?(units) ?? 0
                    } catch {
                        record(error)
                    }
                    done.signal()
                }
                worker = nil
                done.signal()
            }
            thread.stackSize = 1 << 22
            thread.start()
        }
        for _ in 0..<threads { done.wait() }
    }

    deinit { rows.deallocate() }

    private func record(_ error: Error) {
        lock.lock()
        if failure == nil { failure = error }
        lock.unlock()
    }

    /// Runs every worker for `units` units at once; returns wall seconds and total rows.
    func run(units: Int) throws -> (Double, Int) {
        if let failure { throw failure }
        self.units = units
        let begin = DispatchTime.now().uptimeNanoseconds
        for semaphore in start { semaphore.signal() }
        for _ in 0..<threads { done.wait() }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9
        if let failure { throw failure }
        return (seconds, rows.reduce(0, +))
    }

    func stop() {
        stopping = true
        for semaphore in start { semaphore.signal() }
        for _ in 0..<threads { done.wait() }
    }
}
