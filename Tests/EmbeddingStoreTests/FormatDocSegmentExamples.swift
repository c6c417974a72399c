import EmbeddingCodecs
import Foundation
import Testing
import LMDB
@testable import EmbeddingStore

/// A segment's part 0 read the way FORMAT.md ("Segments") describes it. Every offset here is
/// computed from the document, not taken from `SegmentHeader`, and the examples print what this
/// reading finds; so a change of the code's layout changes the rendered examples (and fails
/// `formatExamplesMatchTheCode`), and the checks below compare this reading with `SegmentIndex`.
struct DocSegment {
    let part0: [UInt8]

    func u(_ offset: Int, _ size: Int) -> UInt64 {
        (0..<size).reduce(UInt64(0)) { $0 | UInt64(part0[offset + $1]) << (8 * $1) }
    }

    var kind: UInt64 { u(4, 4) }
    var n: Int { Int(u(8, 8)) }
    var first: UInt64 { u(16, 8) }
    var last: UInt64 { u(24, 8) }
    var stride: Int { Int(u(32, 4)) }
    var parts: Int { Int(u(36, 4)) }
    var rowsPerPart: Int { Int(u(40, 4)) }
    var classes: Int { Int(u(44, 4)) }
    var shift: UInt64 { u(48, 4) }
    var checksumAlgorithm: UInt64 { u(52, 4) }
    var checksum: UInt64 { u(56, 8) }
    var sparse: Bool { kind == 3 || kind == 4 || kind == 6 }
    /// Kinds 2 and 4: size classes and group offsets.
    var sized: Bool { kind == 2 || kind == 4 }
    /// Kinds 5 and 6: 64-byte group entries; field 44 is the end width W, G rows an entry.
    var grouped: Bool { kind == 5 || kind == 6 }
    var width: Int { classes }
    var groupRows: Int { width == 2 ? 29 : 14 }
    /// Where the entries start: the first offset ≡ 48 (mod 64) at or after the directory's end.
    var entriesAt: Int { (sizesAt...).first { $0 % 64 == 48 }! }
    var entriesPerPart: Int { (rowsPerPart + groupRows - 1) / groupRows }
    var entryCount: Int {
        Swift.stride(from: 0, to: n, by: rowsPerPart).reduce(0) { $0 + (min(rowsPerPart, n - $1) + groupRows - 1) / groupRows }
    }
    /// Directory buckets B (the directory has B + 1 entries).
    var buckets: Int { sparse ? Int((last - first) >> shift) + 1 : 0 }
    var idsAt: Int { 64 }
    var directoryAt: Int { idsAt + (sparse ? 8 * n : 0) }
    var sizesAt: Int { directoryAt + (sparse ? 4 * (buckets + 1) : 0) }
    var classesAt: Int { sizesAt + (sized ? 4 * classes : 0) }
    var groupsAt: Int { classesAt + (sized ? n : 0) }
    var end: Int { grouped ? entriesAt + 64 * entryCount : groupsAt + (sized ? 4 * ((n + 15) / 16) : 0) }

    func id(ofRow r: Int) -> UInt64 { sparse ? u(idsAt + 8 * r, 8) : first + UInt64(r) }
    func directory(_ b: Int) -> Int { Int(u(directoryAt + 4 * b, 4)) }
    func classSize(_ c: Int) -> Int { Int(u(sizesAt + 4 * c, 4)) }
    func sizeClass(ofRow r: Int) -> Int { Int(part0[classesAt + r]) }
    func groupOffset(_ g: Int) -> Int { Int(u(groupsAt + 4 * g, 4)) }
    func size(ofRow r: Int) -> Int { sized ? classSize(sizeClass(ofRow: r)) : stride }

    /// Kinds 5, 6: entry e's base, and the end of its slot k.
    func entryBase(_ e: Int) -> Int { Int(u(entriesAt + 64 * e, 4)) }
    func entryEnd(_ e: Int, _ k: Int) -> Int { Int(u(entriesAt + 64 * e + 4 + width * k, width)) }

    /// The row of `id` (nil when the segment does not hold it) and how it was found.
    func row(of id: UInt64) -> (row: Int?, steps: String) {
        guard id >= first, id <= last else { return (nil, "outside \(first)…\(last)") }
        guard sparse else { return (Int(id - first), "row \(id) − \(first) = \(id - first)") }
        let b = Int((id - first) >> shift)
        let low = directory(b), high = directory(b + 1)
        let found = (low..<high).first { self.id(ofRow: $0) == id }
        return (found, "bucket (\(id) − \(first)) >> \(shift) = \(b), ids[dir[\(b)] ..< dir[\(b + 1)]] = ids[\(low) ..< \(high)] "
                + (found.map { "has it at row \($0)" } ?? "does not have it"))
    }

    /// Data part, offset and length of row `r`'s record, and how they were computed.
    func location(ofRow r: Int) -> (part: Int, offset: Int, length: Int, steps: String) {
        let part = 1 + r / rowsPerPart
        let inPart = r % rowsPerPart
        if grouped {
            let e = (part - 1) * entriesPerPart + inPart / groupRows, k = inPart % groupRows
            let start = k == 0 ? 0 : entryEnd(e, k - 1)
            let offset = entryBase(e) + start, length = entryEnd(e, k) - start
            return (part, offset, length,
                    "part 1 + \(r) / \(rowsPerPart) = \(part), entry (\(part) − 1) × \(entriesPerPart) + (\(r) mod \(rowsPerPart)) / \(groupRows) = \(e), "
                    + "slot \(k): offset base \(entryBase(e)) + \(k == 0 ? "0" : "end[\(k - 1)] \(start)") = \(offset), "
                    + "end[\(k)] \(entryEnd(e, k)) − \(start) = \(length) bytes")
        }
        guard sized else {
            return (part, inPart * stride, stride,
                    "part 1 + \(r) / \(rowsPerPart) = \(part), offset (\(r) mod \(rowsPerPart)) × \(stride) = \(inPart * stride)")
        }
        let g = r / 16
        let before = (16 * g..<r).map { size(ofRow: $0) }
        let offset = groupOffset(g) + before.reduce(0, +)
        let sum = before.map { " + \($0)" }.joined()
        return (part, offset, size(ofRow: r),
                "part 1 + \(r) / \(rowsPerPart) = \(part), offset group[\(g)]\(sum) = \(offset), "
                + "\(size(ofRow: r)) bytes (class \(sizeClass(ofRow: r)))")
    }

    /// Part 0 as hex, one field or index entry per line: offset, bytes, meaning.
    func annotated() -> String {
        let kinds: [UInt64: String] = [1: "dense fixed", 2: "dense sized", 3: "sparse fixed", 4: "sparse sized",
                                       5: "dense grouped", 6: "sparse grouped"]
        var fields: [(Int, Int, String)] = [
            (0, 4, "magic \"ESEG\""), (4, 4, "kind \(kind): \(kinds[kind] ?? "unknown")"), (8, 8, "row count N = \(n)"),
            (16, 8, "first id = \(first)"), (24, 8, "last id = \(last)"), (32, 4, "stride = \(stride)"),
            (36, 4, "part count P = \(parts)"), (40, 4, "rows per part R = \(rowsPerPart)"),
            (44, 4, grouped ? "end width W = \(classes) (\(groupRows) rows an entry)" : "size classes C = \(classes)"),
            (48, 4, "directory shift s = \(shift)"),
            (52, 4, "checksum algorithm = \(checksumAlgorithm)" + (checksumAlgorithm == 1 ? ": blockmix64" : checksumAlgorithm == 0 ? ": FNV-1a 64" : "")),
            (56, 8, "checksum = 0x" + String(checksum, radix: 16)),
        ]
        if sparse {
            for r in 0..<n { fields.append((idsAt + 8 * r, 8, "ids[\(r)] = \(id(ofRow: r))")) }
            for b in 0...buckets { fields.append((directoryAt + 4 * b, 4, "dir[\(b)] = \(directory(b))")) }
        }
        if grouped {
            if entriesAt > sizesAt { fields.append((sizesAt, entriesAt - sizesAt, "padding to offset \(entriesAt) (≡ 48 mod 64)")) }
            for e in 0..<entryCount {
                let at = entriesAt + 64 * e
                fields.append((at, 4, "entry \(e): base = \(entryBase(e))"))
                let used = min(groupRows, (0..<groupRows).firstIndex { entryEnd(e, $0) == 0 } ?? groupRows)
                for k in 0..<used { fields.append((at + 4 + width * k, width, "  end[\(k)] = \(entryEnd(e, k))")) }
                let unused = at + 4 + width * used
                if unused < at + 62 { fields.append((unused, at + 62 - unused, "  ends of rows it lacks, padding: 0")) }
                fields.append((at + 62, 2, "  check = 0x" + String(u(at + 62, 2), radix: 16) + ": the XOR of the entry's 32 u16 words is \(e)"))
            }
        }
        if sized {
            for c in 0..<classes { fields.append((sizesAt + 4 * c, 4, "size of class \(c) = \(classSize(c))")) }
            fields.append((classesAt, n, "class of rows 0…\(n - 1)"))
            for g in 0..<(n + 15) / 16 { fields.append((groupsAt + 4 * g, 4, "group[\(g)] = \(groupOffset(g))")) }
        }
        return fields.map { offset, size, meaning in
            let bytes = size > 8 ? FormatDocTests.hex(part0[offset..<offset + 8]) + " … (\(size) bytes)" : FormatDocTests.hex(part0[offset..<offset + size])
            return String(repeating: " ", count: max(0, 4 - String(offset).count)) + "\(offset)  "
                + bytes.padding(toLength: max(23, bytes.count), withPad: " ", startingAt: 0) + "  " + meaning
        }.joined(separator: "\n")
    }
}

extension FormatDocTests {
    /// FNV-1a 64 exactly as FORMAT.md defines it.
    static func fnv1a64(_ chunks: [[UInt8]]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for chunk in chunks {
            for byte in chunk { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        }
        return h
    }

    /// blockmix64's mix exactly as FORMAT.md defines it.
    static func blockMix(_ x: UInt64) -> UInt64 {
        let y = x &* 0x9E37_79B9_7F4A_7C15
        return y ^ (y >> 32)
    }

    /// blockmix64's value of piece `q` exactly as FORMAT.md defines it, a byte at a time.
    static func blockMix64Piece(_ bytes: [UInt8], piece q: UInt64) -> UInt64 {
        var sum: UInt64 = 0
        var b = 0
        while 1024 * b < bytes.count {
            var h = blockMix(blockMix(UInt64(bytes.count)) ^ (q << 32 | UInt64(b)))
            for j in 0..<128 {
                var w: UInt64 = 0
                for k in 0..<8 {
                    let at = 1024 * b + 8 * j + k
                    w |= UInt64(at < bytes.count ? bytes[at] : 0) << (8 * k)
                }
                h = blockMix(h ^ w)
            }
            sum &+= h
            b += 1
        }
        return sum
    }

    /// blockmix64 of a segment's pieces in order (FORMAT.md "Checksum").
    static func blockMix64(_ pieces: [[UInt8]]) -> UInt64 {
        pieces.enumerated().reduce(UInt64(0)) { $0 &+ blockMix64Piece($1.element, piece: UInt64($1.offset)) }
    }

    static func record(_ values: [Float], _ encoding: RowEncoding) throws -> [UInt8] {
        try encoding.record(values)
    }

    /// Decodes a plain record (fp32, fp16, int8, int4) of dimension `d`.
    static func decodePlain(_ record: some Collection<UInt8>, d: Int) throws -> [Float] {
        try RowRecord.decode(record, dimension: d)
    }

    static func tagName(_ record: some Collection<UInt8>) -> String {
        guard let first = record.first else { return "empty" }
        if first == tombstoneTag && record.count == 1 { return "tombstone" }
        return RowCodecs.codec(tag: first)?.name ?? "tag \(first)"
    }

    static func key(_ key: UInt64) -> String { hex(withUnsafeBytes(of: key.littleEndian) { Array($0) }) }

    /// The example segment's rows: sparse ids, two record sizes (fp32: 13 bytes, int8: 12 bytes).
    static let segmentRows: [(id: UInt64, values: [Float], encoding: RowEncoding)] = [
        (5, [1.0, -2.0, 0.5], .fp32), (9, [-1.0, 0.0, 1.0], .int8), (12, [0.25, 0.5, 0.75], .fp32),
        (1000, [0.0, 2.0, 4.0], .int8), (1003, [3.0, -1.0, 0.0], .fp32),
    ]

    /// A sparse sized segment built with `SegmentWriter`, byte by byte, and lookups in it.
    static func segmentExample() throws -> String {
        let d = 3
        var writer = try SegmentWriter(rowsPerPart: 16, maximumRecordSize: 13)
        var parts: [[UInt8]] = []
        var records: [[UInt8]] = []
        for row in segmentRows {
            let record = try record(row.values, row.encoding)
            records.append(record)
            if let full = try record.withUnsafeBytes({ try writer.append(id: row.id, record: $0) }) { parts.append(full) }
        }
        let (lastPart, part0) = try writer.finish()
        if let lastPart { parts.append(lastPart) }
        let doc = DocSegment(part0: part0)
        #expect(part0.count == doc.end, "part 0 is \(part0.count) bytes; FORMAT.md's layout gives \(doc.end)")
        #expect(doc.parts == parts.count && parts.count == 1)
        let pieces = parts + [Array(part0[..<56]), Array(part0[64...])]
        #expect(doc.checksumAlgorithm == 1 && blockMix64(pieces) == doc.checksum,
                "the checksum is not blockmix64 over parts 1…P, then part 0's bytes 0..<56 and 64...")
        let pieceValues = pieces.enumerated().map { blockMix64Piece($1, piece: UInt64($0)) }

        var text = """
            ### Segment: sparse, grouped; d = 3, rows of fp32 (13 bytes) and int8 (12 bytes), R = 16

            Rows in: \(zip(segmentRows, records).map { "id \($0.id) \(tagName($1)) \(floats($0.values))" }.joined(separator: ", ")). Kind 6: the ids are not contiguous and the records have two sizes. \
            The records are small, so the ends are u16 (W = 2, 29 rows an entry): one entry holds all five rows. \
            The writer picks the smallest shift that leaves at most ⌈5 / 4⌉ = 2 buckets.

            Part 1 (key `(1 << 32) | 1`), \(parts[0].count) bytes: the records back to back in id order.

            ```

            """
        var offset = 0
        for (r, record) in records.enumerated() {
            text += String(repeating: " ", count: max(0, 4 - String(offset).count)) + "\(offset)  "
                + hex(record).padding(toLength: 38, withPad: " ", startingAt: 0) + "  row \(r): id \(segmentRows[r].id), \(tagName(record))\n"
            offset += record.count
        }
        #expect(parts[0] == records.flatMap { $0 })
        text += """
            ```

            Part 0 (key `(1 << 32) | 0`), \(part0.count) bytes. The checksum is blockmix64 (algorithm 1) over three pieces, \
            each one block: piece 0, part 1's \(parts[0].count) bytes (seed mix(mix(\(parts[0].count)) XOR 0)), value \
            0x\(String(pieceValues[0], radix: 16)); piece 1, part 0's bytes 0…55 (seed mix(mix(56) XOR 2³²)), value \
            0x\(String(pieceValues[1], radix: 16)); piece 2, part 0's bytes 64…\(part0.count - 1) \
            (seed mix(mix(\(part0.count - 64)) XOR 2·2³²)), value 0x\(String(pieceValues[2], radix: 16)); their sum mod 2⁶⁴ \
            is 0x\(String(doc.checksum, radix: 16)).

            ```
            \(doc.annotated())
            ```

            Lookups:

            ```

            """
        try part0.withUnsafeBytes { bytes in
            let index = try SegmentIndex(part0: bytes)
            for id: UInt64 in [5, 9, 12, 1000, 1003, 6, 700, 2000] {
                let (row, steps) = doc.row(of: id)
                #expect(row == index.row(of: id), "id \(id): FORMAT.md finds row \(row as Any), SegmentIndex \(index.row(of: id) as Any)")
                guard let row else {
                    text += "id \(id): \(steps): not in this segment\n"
                    continue
                }
                let location = doc.location(ofRow: row)
                let part = parts[location.part - 1]
                let code = index.record(ofRow: row, partLength: part.count)
                #expect(code?.offset == location.offset && code?.length == location.length, "id \(id): \(location) vs \(code as Any)")
                let record = part[location.offset..<location.offset + location.length]
                let values = try decodePlain(record, d: d)
                #expect(Array(record) == records[row])
                text += "id \(id): \(steps)\n    \(location.steps): \(tagName(record)) \(floats(values))\n"
            }
        }
        text += "```\n\n"
        return text
    }

    /// Every key and value of an integer-keyed database.
    /// CRC-32 bit by bit as FORMAT.md "Record seals" defines it (reflected 0xEDB88320, initial
    /// value and final XOR 0xFFFFFFFF): an independent twin of the store's table-driven one.
    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            c ^= UInt32(byte)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        }
        return ~c
    }

    /// A sealed value's payload, after checking its seal over `key` ‖ payload by FORMAT.md's rule.
    static func unseal(_ value: [UInt8], key: [UInt8]) throws -> [UInt8] {
        try #require(value.count >= 4, "a sealed value of \(value.count) bytes")
        let payload = Array(value.dropLast(4))
        let seal = value.suffix(4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        #expect(seal == crc32(key + payload), "the seal of key \(hex(key)) does not match FORMAT.md's CRC-32")
        return payload
    }

    static func keyBytes(_ key: UInt64) -> [UInt8] { withUnsafeBytes(of: key.littleEndian) { Array($0) } }

    /// "payload ‖ seal" as the examples print a sealed value.
    static func sealedText(_ value: [UInt8], key: [UInt8]) throws -> String {
        let payload = try unseal(value, key: key)
        return "\(hex(payload)) ‖ seal \(hex(value.suffix(4)))"
    }

    static func entries(_ database: Database, in txn: borrowing Transaction) throws -> [(key: UInt64, value: [UInt8])] {
        try txn.withCursor(database) { cursor in
            var result: [(key: UInt64, value: [UInt8])] = []
            var entry = try cursor.first()
            while let current = entry {
                result.append((current.integerKey!, Array(current.value)))
                entry = try cursor.next()
            }
            return result
        }
    }

    /// A table with two segments, a tombstone and a delta row, written through `Store`, printed
    /// key by key, resolved by FORMAT.md's rules and checked against `Store.get` and `export`.
    static func layersExample() throws -> String {
        let d = 3
        let directory = TemporaryDirectory()
        let store = try makeStore(directory)
        defer { store.close() }
        let table = try store.createTable("example", dimension: d)
        try store.writeSegment(table, ids: segmentRows.map(\.id), records: segmentRows.map { try record($0.values, $0.encoding) }, rowsPerPart: 16)
        let second: [(UInt64, [Float])] = [(9, [0.5, 0.25, -0.5]), (10, [1.5, -1.5, 2.0])]
        try store.writeSegment(table, ids: second.map(\.0), records: second.map { try record($0.1, .fp16) }, rowsPerPart: 16)
        #expect(try store.delete(table, id: 12))
        try store.put(table, id: 1003, vector: [4.0, 4.0, 4.0], codec: .fp32)
        let (segments, delta) = try store.environment.read { txn in
            (try entries(table.segments!, in: txn), try entries(table.rows, in: txn))
        }

        // FORMAT.md's rules, from the raw entries: the manifest and delta values are sealed.
        let values = Dictionary(uniqueKeysWithValues: segments.map { ($0.key, $0.value) })
        let manifestBytes = try unseal(try #require(values[0]), key: keyBytes(0))
        let count = Int(DocSegment(part0: manifestBytes).u(0, 4))
        let manifest = (0..<count).map { UInt64(DocSegment(part0: manifestBytes).u(4 + 4 * $0, 4)) }
        #expect(manifestBytes.count == 4 + 4 * count)
        let docs = try manifest.map { DocSegment(part0: try #require(values[$0 << 32])) }
        let deltaByID = Dictionary(uniqueKeysWithValues: try delta.map { ($0.key, try unseal($0.value, key: keyBytes($0.key))) })
        func resolve(_ id: UInt64) -> (record: [UInt8]?, source: String, steps: String) {
            if let record = deltaByID[id] {
                if record == [tombstoneTag] { return (nil, "", "delta: tombstone → missing") }
                return (record, "delta", "delta: \(tagName(record))")
            }
            var steps = "delta: none"
            for (segment, doc) in zip(manifest, docs) {
                let (row, how) = doc.row(of: id)
                guard let row else {
                    steps += "; segment \(segment): \(how)"
                    continue
                }
                let location = doc.location(ofRow: row)
                let part = values[segment << 32 | UInt64(location.part)]!
                let record = Array(part[location.offset..<location.offset + location.length])
                return (record, "segment \(segment)", steps + "; segment \(segment): row \(row), \(tagName(record))")
            }
            return (nil, "", steps + " → missing")
        }

        let described: [UInt64: String] = [0: "manifest"]
        var text = """
            ### A table with two segments, a tombstone and a delta row

            Table 1 (d = 3) after four writes: the segment above (it becomes segment 1); a segment of ids 9 and 10 as \
            fp16 (segment 2; dense and fixed, so its part 0 is the header alone); deleting id 12 (segment 1 holds it, \
            so the delta gets a tombstone); putting id 1003 again as fp32 [4.0, 4.0, 4.0] (a delta row).

            `t1/segments`, every key in order:

            ```

            """
        for (key, value) in segments {
            let what = described[key] ?? "segment \(key >> 32) part \(key & 0xffff_ffff)"
            let shown = key >> 32 == 1 ? "\(value.count) bytes, as above"
                : key == 2 << 32 ? "\(value.count) bytes, below"
                : key == 0 ? "\(value.count) bytes: \(try sealedText(value, key: keyBytes(key)))" : "\(value.count) bytes: \(hex(value))"
            text += "\(Self.key(key))  \(what): \(shown)\n"
        }
        text += """
            ```

            The manifest lists 2 segments, segment 2 first (newest); its seal is the CRC-32 of its key's 8 bytes (all 0) \
            followed by the 12 bytes before it. Segment parts carry no seal (their checksum covers them). Segment 2's part 0:

            ```
            \(docs[0].annotated())
            ```

            `t1/rows`, the delta (each value sealed under its id's 8 key bytes):

            ```

            """
        for (key, value) in delta {
            text += "\(Self.key(key))  id \(key): \(try sealedText(value, key: keyBytes(key)))  \(tagName(deltaByID[key]!))\n"
        }
        text += "```\n\nLookups (delta, then segments 2 and 1):\n\n```\n"
        for id: UInt64 in [5, 9, 12, 1003, 11] {
            let (record, _, steps) = resolve(id)
            let decoded = try record.map { try decodePlain($0, d: d) }
            #expect(try store.get(table, id: id) == decoded, "id \(id): Store.get differs from FORMAT.md's rules")
            text += "id \(id): \(steps)" + (decoded.map { " \(floats($0))" } ?? "") + "\n"
        }
        let candidates = Set(delta.map(\.key) + docs.flatMap { doc in (0..<doc.n).map { doc.id(ofRow: $0) } }).sorted()
        var live: [(UInt64, String, [Float])] = []
        for id in candidates {
            let (record, source, _) = resolve(id)
            if let record { live.append((id, source, try decodePlain(record, d: d))) }
        }
        let exported = try store.export(table)
        #expect(exported.ids == live.map(\.0), "export's ids differ from FORMAT.md's merge")
        #expect(exported.values == live.flatMap(\.2), "export's rows differ from FORMAT.md's merge")
        text += "```\n\nEvery live row in id order (the merge): "
            + live.map { "\($0.0) (\($0.1))" }.joined(separator: ", ") + ".\n\n"
        return text
    }
}
