import ArgumentParser
import EmbeddingCodecs
import EmbeddingStore
import Foundation
import NPY

struct Ingest: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load rows from a .npy file into a table (or every table of a TorchRec state dict), creating the store and table if missing.",
        discussion: """
            --format fbgemm-int8 and fbgemm-int4 take FBGEMM's fused rowwise rows, a uint8 [N, row bytes] .npy as \
            torch.ops.quantized.embedding_bag_byte_prepack and embedding_bag_4bit_prepack return them, and store \
            them as int8 and int4h records byte for byte (no policy: nothing is re-quantized). \
            --state-dict takes the float tables tools/torchrec_export.py writes from a TorchRec state dict.
            """)

    @Argument(help: "The store directory.") var store: String
    @Option(help: "Table name (with --state-dict: only this table of it; default every table).") var table: String?
    @Option(help: "The rows: float32 or float16 .npy [N, d]; with --format fbgemm-*, uint8 [N, row bytes].") var vectors: String?
    @Option(help: "What --vectors holds.") var format: Format = .float
    @Option(help: ArgumentHelp("The rows' width for --format fbgemm-int4, required: a row of ⌈d/2⌉ + 4 bytes holds 2k or 2k − 1 values (torch reads 2k). Checked against fbgemm-int8 rows (d + 8 bytes) when given.",
                               valueName: "d"))
    var dimension: Int?
    @Option(help: ArgumentHelp("A TorchRec state dict as tools/torchrec_export.py writes it: a directory of TABLE.npy files, or an .npz of them (numpy.savez). Every table, ids 0..N-1, with the policy given.",
                               valueName: "dir-or-npz"))
    var stateDict: String?
    @Option(help: "int64 or uint64 .npy file of N ids (default 0..N-1).") var ids: String?
    @OptionGroup var policyOptions: PolicyOptions
    @Option(help: "Access counts of the rows, in the order of --vectors (.npy uint64, int64, float32 or float64).")
    var freq: String?
    @Option(help: "Where the rows go.") var layout: Layout = .segment
    @Option(help: ArgumentHelp("Fit the codecs' parameters (PCA bases, tc models, bucket rows) on these rows (a float32 or float16 .npy [S, d]) instead of a sample of --vectors: tools/shard_build.py gives every shard the same sample, so all shards store the same parameters.", valueName: "npy"))
    var fitSample: String?
    @Option(help: ArgumentHelp("Fit for a table of this many rows (tc:P% rates, bucket counts) instead of the rows loaded: the whole table's count, for a shard.", valueName: "rows"))
    var fitTableRows: Int?
    @Flag(help: "fsync every transaction instead of once at the end.") var durable = false
    @Flag(help: "No progress on stderr (by default a bar on a terminal, a line every 5 s otherwise).") var quiet = false
    @Flag(help: "Leave out rows with a NaN or infinite value (counted and reported) instead of refusing the file.") var skipInvalid = false

    enum Layout: String, ExpressibleByArgument, CaseIterable {
        /// One packed, indexed segment.
        case segment
        /// One LMDB key per row.
        case perKey = "per-key"
    }

    /// What `--vectors` holds.
    enum Format: String, ExpressibleByArgument, CaseIterable {
        /// float32 or float16 rows, encoded by the policy.
        case float
        /// FBGEMM's 8-bit fused rows, stored as int8 records.
        case fbgemmInt8 = "fbgemm-int8"
        /// FBGEMM's 4-bit fused rows, stored as int4h records.
        case fbgemmInt4 = "fbgemm-int4"

        var fusedRows: FBGEMMFusedRows? {
            switch self {
            case .float: nil
            case .fbgemmInt8: .int8
            case .fbgemmInt4: .int4
            }
        }
    }

    func validate() throws {
        guard (vectors != nil) != (stateDict != nil) else { throw ValidationError("give either --vectors FILE or --state-dict DIR_OR_NPZ") }
        if stateDict != nil {
            guard ids == nil, freq == nil, format == .float else {
                throw ValidationError("--state-dict loads float tables with ids 0..N-1: --ids, --freq and --format do not apply")
            }
        } else if table == nil {
            throw ValidationError("--vectors needs --table NAME")
        }
        if format != .float {
            guard policyOptions.isEmpty, freq == nil, !skipInvalid else {
                throw ValidationError("--format \(format.rawValue) stores the rows as given: --codec, --tiers, --budget, --budget-bytes, --freq and --skip-invalid do not apply")
            }
        } else if dimension != nil {
            throw ValidationError("--dimension is for --format fbgemm-int8 and fbgemm-int4; float rows have theirs in the file")
        }
    }

    func run() throws {
        let started = Date()
        // Inputs are read and checked before the store is opened (and so created).
        if let stateDict {
            let tables = try StateDictTables.read(stateDict)
            let chosen = table.map { name in tables.filter { $0.name == name } } ?? tables
            guard !chosen.isEmpty else {
                throw InputError("\(stateDict) holds no table" + (table.map { " '\($0)'" } ?? "") + "; it has: "
                                 + (tables.isEmpty ? "none" : tables.map(\.name).joined(separator: ", ")))
            }
            let policy = try policyOptions.policy(counts: nil)
            let store = try openStore()
            for (name, file) in chosen { try ingestFloat(file, into: store, table: name, policy: policy, ids: nil, counts: nil, started: Date()) }
            try store.sync()
            if chosen.count > 1 { print(String(format: "ingested %d tables from %@ in %.2f s", chosen.count, stateDict, Date().timeIntervalSince(started))) }
        } else if let fused = format.fusedRows {
            try ingestFused(fused, started: started)
        } else {
            let file = try NPYFile(path: vectors!)
            let (count, _) = try file.matrixShape()
            let ids = try readIDs(count: count), counts = try readCounts(count: count)
            let policy = try policyOptions.policy(counts: counts != nil ? "--freq" : nil)
            let store = try openStore()
            try ingestFloat(file, into: store, table: table!, policy: policy, ids: ids, counts: counts, started: started)
            try store.sync()
        }
    }

    private func openStore() throws -> Store {
        var options = Store.Options()
        options.durable = durable
        return try Store(path: store, options: options)
    }

    /// `--ids`, checked against the rows' count; nil without it.
    private func readIDs(count: Int) throws -> [UInt64]? {
        guard let ids else { return nil }
        let read = try NPYFile(path: ids).readIDs()
        guard read.count == count else { throw InputError("\(ids) has \(read.count) ids but \(vectors!) has \(count) rows") }
        return read
    }

    /// `--freq`, checked against the rows' count; nil without it.
    private func readCounts(count: Int) throws -> [Double]? {
        guard let freq else { return nil }
        let read = try NPYFile(path: freq, allowFloat64: true).readCounts()
        guard read.count == count else { throw InputError("\(freq) has \(read.count) access counts but \(vectors!) has \(count) rows") }
        return read
    }

    private func loadOptions() throws -> LoadOptions {
        var options = LoadOptions()
        try policyOptions.apply(to: &options)
        options.layout = layout == .segment ? .segment : .perKey
        options.skipInvalid = skipInvalid
        if let fitSample {
            let file = try NPYFile(path: fitSample)
            _ = try file.matrixShape()
            options.fitSample = try NPYRows(file)
        }
        if let fitTableRows {
            guard fitTableRows >= 1 else { throw InputError("--fit-table-rows must be at least 1") }
            options.fitTableRows = fitTableRows
        }
        return options
    }

    /// Float rows under the policy.
    private func ingestFloat(_ file: NPYFile, into store: Store, table: String, policy: CodecPolicy, ids: [UInt64]?, counts: [Double]?,
                             started: Date) throws {
        let (count, dimension) = try file.matrixShape()
        guard dimension >= 1 else { throw InputError("\(file.path) has shape [\(count), 0]: rows need at least one value") }
        var options = try loadOptions()
        let progress = ProgressLines(prefix: "ingest", quiet: quiet)
        options.progress = { progress.report($0) }
        let report = try store.load(table: table, ids: ids, source: try NPYRows(file), policy: policy, counts: counts, options: options)
        progress.finish(String(format: "%d rows in %.2f s", report.rows, Date().timeIntervalSince(started)))
        var line = "ingested \(report.rows) rows of dimension \(dimension) into table '\(table)' as \(policy)"
        if let buckets = report.bucketIDs { line += " (\(buckets.count) bucket rows)" }
        if let basis = report.basisID {
            line += " (PCA basis \(basis))"
        } else if !report.parameterIDs.isEmpty {
            line += " (parameter record\(report.parameterIDs.count == 1 ? "" : "s") \(report.parameterIDs.map(String.init).joined(separator: ", ")))"
        }
        line += String(format: " in %.2f s", Date().timeIntervalSince(started))
        print(line)
        if let first = report.firstSkipped {
            print("skipped \(report.skippedRows) row\(report.skippedRows == 1 ? "" : "s") with a NaN or infinite value (the first: row \(first.row), id \(first.id))")
        }
        if report.summary.shares.count > 1 || report.summary.budgetBytes != nil { print(describe(report.summary, rows: count, dimension: dimension)) }
    }

    /// FBGEMM's fused rows, stored as given.
    private func ingestFused(_ fused: FBGEMMFusedRows, started: Date) throws {
        let path = vectors!, table = table!
        let file = try NPYFile(path: path)
        let (count, rowBytes) = try file.byteMatrixShape()
        let widths = fused.dimensions(rowBytes: rowBytes)
        let dimension: Int
        if let given = self.dimension {
            guard widths.contains(given) else {
                throw InputError("--dimension \(given) takes \(format.rawValue) rows of \(fused.rowBytes(dimension: given)) bytes; \(path) has rows of \(rowBytes) bytes"
                                 + (widths.isEmpty ? "" : " (dimension " + widths.map(String.init).joined(separator: " or ") + ")"))
            }
            dimension = given
        } else if widths.count == 1 {
            dimension = widths[0]
        } else if widths.isEmpty {
            throw InputError("\(path) has rows of \(rowBytes) bytes, too few for \(format.rawValue) rows (\(fused.rowBytes(dimension: 1)) bytes at dimension 1)")
        } else {
            throw InputError("\(format.rawValue) rows of \(rowBytes) bytes hold \(widths[0]) or \(widths[1]) values: give --dimension \(widths[0]) "
                             + "(what torch's lookups read) or --dimension \(widths[1])")
        }
        let ids = try readIDs(count: count)
        let rows = NPYPackedRows(file, layout: fused, dimension: dimension)
        if let (row, problem) = rows.firstProblem() {
            throw InputError("\(path): row \(row)" + (ids.map { " (id \($0[row]))" } ?? "") + " is not a \(format.rawValue) row the store can hold: "
                             + problem + "; nothing was written")
        }
        var options = try loadOptions()
        let store = try openStore()
        let progress = ProgressLines(prefix: "ingest", quiet: quiet)
        options.progress = { progress.report($0) }
        let report = try store.load(table: table, ids: ids, encoded: rows, options: options)
        try store.sync()
        progress.finish(String(format: "%d rows in %.2f s", report.rows, Date().timeIntervalSince(started)))
        print("ingested \(report.rows) rows of dimension \(dimension) into table '\(table)' as \(fused.codec) records "
              + "(\(format.rawValue) rows of \(rowBytes) bytes, stored as given)" + String(format: " in %.2f s", Date().timeIntervalSince(started)))
    }
}
