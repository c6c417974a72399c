import Foundation

/// `embstore stats --json` (and the C API's embstore_stats_json): the figures of
/// `storageStatistics` and `environmentStatistics` with shares and totals spelled out (keys in
/// snake case; README, "embstore stats").
public struct StatsReport: Encodable {
    struct Database: Encodable {
        let name: String
        let role: String
        let depth: Int
        let branchPages: Int
        let leafPages: Int
        let overflowPages: Int
        let entries: Int
        let pages: Int

        init(_ d: DatabasePages) {
            name = d.name; role = d.role; depth = d.depth; branchPages = d.branchPages; leafPages = d.leafPages
            overflowPages = d.overflowPages; entries = d.entries; pages = d.pages
        }
    }

    struct Environment: Encodable {
        let pageSize: Int
        let pagesInUse: Int
        let freePages: Int
        let mapSize: Int
        let fileBytes: Int
        let transaction: Int
        let metaPages: Int
        let freeList: Database
        let mainDatabase: Database
        let metaDatabase: Database
        let tablePages: [String: Int]
        let unaccountedPages: Int

        init(_ e: EnvironmentStorage) {
            pageSize = e.pageSize; pagesInUse = e.pagesInUse; freePages = e.freePages; mapSize = e.mapSize
            fileBytes = e.fileBytes; transaction = e.transaction; metaPages = e.metaPages
            freeList = Database(e.freeList); mainDatabase = Database(e.mainDatabase); metaDatabase = Database(e.metaDatabase)
            tablePages = Dictionary(uniqueKeysWithValues: e.tables.map { ($0.table, $0.pages) })
            unaccountedPages = e.unaccountedPages
        }
    }

    struct Form: Encodable {
        let form: String
        let codec: String
        let rows: Int
        let recordBytes: Int
        let diskBytes: Int
        let diskBytesPerRow: Double
        let rowShare: Double
        let byteShare: Double
        let lookups: Double?
        let lookupShare: Double?
    }

    struct Shared: Encodable {
        let kind: String
        let label: String
        let entries: Int
        let recordBytes: Int
        let diskBytes: Int
        let byteShare: Double
    }

    struct Milestone: Encodable {
        let lookupShare: Double
        let rows: Int
        let diskBytes: Double
        let byteShare: Double
    }

    struct Table: Encodable {
        let table: String
        let dimension: Int
        let rows: Int
        let pageSize: Int
        let pages: Int
        let diskBytes: Int
        let recordBytes: Int
        let forms: [Form]
        let shared: [Shared]
        let databases: [Database]
        let lookups: TableStorage.Lookups?
        let milestones: [Milestone]?
        let curve: [TableStorage.CurvePoint]?

        init(_ s: TableStorage) {
            let bytes = Double(max(s.diskBytes, 1))
            table = s.table; dimension = s.dimension; rows = s.rows; pageSize = s.pageSize; pages = s.pages
            diskBytes = s.diskBytes; recordBytes = s.recordBytes
            forms = s.forms.map { f in
                Form(form: f.form, codec: f.codec, rows: f.rows, recordBytes: f.recordBytes, diskBytes: f.diskBytes,
                     diskBytesPerRow: f.diskBytesPerRow, rowShare: s.rows > 0 ? Double(f.rows) / Double(s.rows) : 0,
                     byteShare: Double(f.diskBytes) / bytes, lookups: f.lookups,
                     lookupShare: f.lookups.map { served in (s.lookups?.total ?? 0) > 0 ? served / s.lookups!.total : 0 })
            }
            shared = s.shared.map {
                Shared(kind: $0.kind.rawValue, label: $0.label, entries: $0.entries, recordBytes: $0.recordBytes,
                       diskBytes: $0.diskBytes, byteShare: Double($0.diskBytes) / bytes)
            }
            databases = s.databases.map(Database.init)
            lookups = s.lookups
            milestones = s.lookups == nil ? nil : s.milestones.map {
                Milestone(lookupShare: $0.lookupShare, rows: $0.rows, diskBytes: $0.diskBytes, byteShare: $0.diskBytes / bytes)
            }
            curve = s.lookups == nil ? nil : s.curve
        }
    }

    let store: String
    let environment: Environment
    let tables: [Table]

    public init(store: String, environment: EnvironmentStorage, tables: [TableStorage]) {
        self.store = store
        self.environment = Environment(environment)
        self.tables = tables.map(Table.init)
    }

    /// The report as `embstore stats --json` prints it: keys sorted, in snake case.
    public func json(pretty: Bool = false) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
