import ArgumentParser
import EmbeddingStore
import Foundation
import NPY

/// `embstore stats`: where a store's bytes go, per table and codec form, from LMDB's page counts;
/// with lookup counts, the share of lookups each form serves; optionally a chart.
struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show each table's rows and bytes on disk per codec form, its LMDB pages, and (with --freq) the lookups each form serves.")

    @Argument(help: "The store directory.") var store: String
    @Option(help: "Only this table (needed with --freq or --plot when the store has more than one).") var table: String?
    @Flag(help: "Print one JSON object (README: \"embstore stats\").") var json = false
    @Option(help: "Write a chart (SVG) of bytes and lookups by codec, and the cumulative lookups against bytes curve.")
    var plot: String?
    @Option(help: "Lookup counts: a 1-D uint64, int64, float32 or float64 .npy, one count per id.") var freq: String?
    @Option(help: "int64 or uint64 .npy of the ids the counts belong to, same order (default 0..N-1).") var ids: String?
    @Flag(help: "Lookup counts: the access counts kept in the store (bench --track-every, AccessCounter), instead of --freq.")
    var tracked = false

    func run() throws {
        if ids != nil && freq == nil { throw InputError("--ids gives the ids of --freq's counts; pass --freq too") }
        if tracked && freq != nil { throw InputError("--tracked and --freq are two sources of counts: give one") }
        let store = try openReadOnly(self.store)
        var names = try store.tableNames()
        if let table {
            guard names.contains(table) else {
                throw InputError("no table named '\(table)' in \(self.store)" + (names.isEmpty ? " (it has no tables)" : "; tables: \(names.joined(separator: ", "))"))
            }
            names = [table]
        } else if (freq != nil || tracked || plot != nil) && names.count != 1 {
            throw InputError(names.isEmpty ? "\(self.store) has no tables"
                : "\(self.store) has \(names.count) tables (\(names.joined(separator: ", "))): name one with --table for --freq or --plot")
        }
        var counts = try freq.map { try readCounts(freq: $0) }
        if tracked {
            let kept = try store.accessCounts(store.table(names[0])).sorted { $0.key < $1.key }
            guard !kept.isEmpty else { throw InputError("table '\(names[0])' has no access counts kept (embstore bench --track-every N, or an AccessCounter, keeps them)") }
            counts = try LookupCounts(ids: kept.map(\.key), counts: kept.map { Double($0.value) })
        }
        let countsSource = tracked ? "access counts kept in the store" : freq
        var tables: [TableStorage] = []
        for name in names {
            do {
                tables.append(try store.storageStatistics(store.table(name), counts: counts))
            } catch let error as StoreError {
                if case .invalidArgument(let text) = error, let freq { throw InputError("--freq \(freq): \(text)") }
                throw error
            }
        }
        if let freq, let lookups = tables.first?.lookups, lookups.total <= 0 {
            throw InputError("--freq \(freq): the counts of table '\(names[0])' add up to 0, so there are no lookups to share out")
        }
        let environment = try store.environmentStatistics()

        if let plot, let storage = tables.first {
            try StatsPlot(storage: storage, storePath: self.store, countsSource: countsSource).write(to: plot)
        }
        if json {
            print(try StatsReport(store: self.store, environment: environment, tables: tables).json(pretty: true))
        } else {
            printHuman(tables: tables, environment: environment)
            if counts == nil {
                // Without counts, those the loads were given, as their notes keep them.
                for name in names {
                    for (segment, note) in try store.loadNotes(store.table(name)) where note.shares.contains(where: { $0.lookupShare != nil }) {
                        print("\ntable '\(name)', segment \(segment), loaded with \(note.policy): lookups served by codec form, from the load's counts")
                        for share in note.shares {
                            print("  " + share.codec.padding(toLength: 12, withPad: " ", startingAt: 0)
                                  + String(format: "%10d rows  %6.2f%% of lookups", share.rows, 100 * (share.lookupShare ?? 0)))
                        }
                        if let decode = note.expectedDecodeNanoseconds {
                            print(String(format: "  expected decode time %.1f ns a lookup (DecodeCost's model)", decode))
                        }
                    }
                }
            }
            if let plot { print("\nchart written to \(plot)") }
        }
    }

    /// The counts of --freq paired with --ids (or 0..N-1), checked.
    private func readCounts(freq: String) throws -> LookupCounts {
        let values = try NPYFile(path: freq, allowFloat64: true).readCounts()
        let idValues: [UInt64]
        if let ids {
            idValues = try NPYFile(path: ids).readIDs()
            guard idValues.count == values.count else {
                throw InputError("--freq \(freq) has \(values.count) counts but --ids \(ids) has \(idValues.count) ids: they must pair up one to one")
            }
        } else {
            idValues = (0..<UInt64(values.count)).map { $0 }
        }
        do {
            return try LookupCounts(ids: idValues, counts: values)
        } catch {
            throw InputError("--freq \(freq): \(error)")
        }
    }

    // MARK: - Human output

    private func printHuman(tables: [TableStorage], environment: EnvironmentStorage) {
        for (t, storage) in tables.enumerated() {
            if t > 0 { print("") }
            let total = Double(max(storage.diskBytes, 1))
            print("table '\(storage.table)': \(formatCount(storage.rows)) rows × \(storage.dimension), "
                  + "\(formatCount(storage.pages)) pages = \(formatCount(storage.diskBytes)) bytes on disk"
                  + (storage.rows > 0 ? String(format: " (%.1f bytes/row)", Double(storage.diskBytes) / Double(storage.rows)) : ""))
            let lookups = storage.lookups
            var header = ["form", "rows", "rows%", "record bytes", "disk bytes", "disk%", "disk B/row"]
            if lookups != nil { header += ["lookups", "lookups%"] }
            var rows: [[String]] = [header]
            for form in storage.forms {
                var row = [form.form, formatCount(form.rows), percent(Double(form.rows), Double(storage.rows)),
                           formatCount(form.recordBytes), formatCount(form.diskBytes), percent(Double(form.diskBytes), total),
                           String(format: "%.1f", form.diskBytesPerRow)]
                if let lookups, let served = form.lookups {
                    row += [formatLookups(served), percent(served, lookups.total)]
                }
                rows.append(row)
            }
            for shared in storage.shared {
                var row = [shared.label, "(\(formatCount(shared.entries)))", "", formatCount(shared.recordBytes),
                           formatCount(shared.diskBytes), percent(Double(shared.diskBytes), total), ""]
                if lookups != nil { row += ["", ""] }
                rows.append(row)
            }
            var totalRow = ["total", formatCount(storage.rows), storage.rows > 0 ? "100.0%" : "",
                            formatCount(storage.recordBytes + storage.shared.reduce(0) { $0 + $1.recordBytes }),
                            formatCount(storage.diskBytes), "100.0%", ""]
            if let lookups { totalRow += [formatLookups(lookups.total), "100.0%"] }
            rows.append(totalRow)
            printTable(rows, indent: "  ", rule: [1, rows.count - 1 - (storage.shared.isEmpty ? 0 : storage.shared.count), rows.count - 1])
            if !storage.shared.isEmpty {
                print("  (shared lines: entries in parentheses; they serve no lookups by themselves)")
            }
            if let lookups {
                var line = "  lookups: \(formatLookups(lookups.total)) over \(formatCount(lookups.rowsCounted)) rows with a count"
                if lookups.unknownIDCount > 0 { line += "; \(formatCount(lookups.unknownIDCount)) counted ids not in the table left out" }
                print(line)
                for milestone in storage.milestones {
                    print("  " + String(format: "%4.0f%%", milestone.lookupShare * 100) + " of lookups from "
                          + String(format: "%6.2f%%", milestone.diskBytes / total * 100) + " of the bytes (the \(formatCount(milestone.rows)) hottest rows)")
                }
            }
            print("  LMDB databases")
            var dbRows = [["database", "depth", "branch", "leaf", "overflow", "entries", "pages", "bytes"]]
            for database in storage.databases {
                dbRows.append([database.name, "\(database.depth)", formatCount(database.branchPages), formatCount(database.leafPages),
                               formatCount(database.overflowPages), formatCount(database.entries), formatCount(database.pages),
                               formatCount(database.pages * storage.pageSize)])
            }
            printTable(dbRows, indent: "    ", rule: [1])
        }
        let e = environment
        print("")
        print("environment: page size \(e.pageSize) bytes, \(formatCount(e.pagesInUse)) pages in use (last page + 1) = "
              + "\(formatCount(e.pagesInUse * e.pageSize)) bytes; \(formatCount(e.freePages)) free pages; "
              + "map \(formatCount(e.mapSize)) bytes; data.mdb \(formatCount(e.fileBytes)) bytes")
        var parts = ["\(e.metaPages) meta", "\(formatCount(e.mainDatabase.pages)) main db", "\(formatCount(e.freeList.pages)) free list",
                     "\(formatCount(e.metaDatabase.pages)) 'meta' db"]
        parts += e.tables.map { "\(formatCount($0.pages)) table '\($0.table)'" }
        parts.append("\(formatCount(e.freePages)) free")
        var line = "  pages in use = " + parts.joined(separator: " + ")
        if e.unaccountedPages != 0 { line += " + \(formatCount(e.unaccountedPages)) unaccounted (the store changed while it was read)" }
        print(line)
    }

    private func percent(_ part: Double, _ whole: Double) -> String {
        whole > 0 ? String(format: "%.1f%%", part / whole * 100) : ""
    }

    /// Columns padded to their widest cell: the first left-aligned, the rest right-aligned; a
    /// rule before each row index in `rule`.
    private func printTable(_ rows: [[String]], indent: String, rule: [Int]) {
        let columns = rows.map(\.count).max() ?? 0
        let widths = (0..<columns).map { c in rows.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
        let ruleLine = indent + String(repeating: "-", count: widths.reduce(0, +) + 2 * (columns - 1))
        for (r, row) in rows.enumerated() {
            if rule.contains(r) && r > 0 { print(ruleLine) }
            let cells = row.enumerated().map { c, cell in
                let pad = String(repeating: " ", count: widths[c] - cell.count)
                return c == 0 ? cell + pad : pad + cell
            }
            print(indent + cells.joined(separator: "  "))
        }
    }
}
