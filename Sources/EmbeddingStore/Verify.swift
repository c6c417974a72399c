/// What `Store.verify` found.
public struct VerifyReport: Sendable {
    public struct TableReport: Sendable {
        public let name: String
        /// Segments whose checksum and index were checked.
        public let segments: Int
        /// Live rows decoded (delta and segments merged).
        public let rows: Int
    }
    public let tables: [TableReport]
    /// One sentence per damaged table, naming what is wrong; empty when the store is sound.
    public let problems: [String]
}

extension Store {
    /// Checks every table: each live segment's checksum and index, and that every live row
    /// (delta and segments merged) decodes to finite values. Reads the whole store; damage is
    /// reported per table instead of thrown, so one bad table does not hide another.
    public func verify() throws -> VerifyReport {
        var tables: [VerifyReport.TableReport] = []
        var problems: [String] = []
        for name in try tableNames() {
            let table: Table
            do {
                table = try self.table(name)
            } catch {
                problems.append("table '\(name)': \(error)")
                continue
            }
            do {
                let segments = try verifySegments(table)
                let rows = try translatingErrors {
                    try environment.read { txn in
                        let decoders = TableDecoders(table: table)
                        let parameters = TableParameters(txn, table: table)
                        var row = [Float](repeating: 0, count: table.dimension)
                        var count = 0
                        try row.withUnsafeMutableBufferPointer { row in
                            try forEachLiveRow(table, in: txn) { id, record in
                                try decoders.decode(record, id: id, into: row.baseAddress!, parameters: parameters)
                                count += 1
                            }
                        }
                        return count
                    }
                }
                tables.append(.init(name: name, segments: segments, rows: rows))
            } catch {
                problems.append("\(error)")
            }
        }
        return VerifyReport(tables: tables, problems: problems)
    }
}
