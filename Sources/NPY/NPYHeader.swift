/// The validated layout of a .npy file: what the header says and where the array bytes are.
struct NPYHeader {
    static let magic: [UInt8] = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]  // "\x93NUMPY"

    let dtype: NPYDType
    let shape: [Int]
    let dataOffset: Int
    let dataByteCount: Int

    /// Validates the whole file (magic, version, header dict, size) held in `file`. float64
    /// arrays are refused unless `allowFloat64`.
    init(parsing file: UnsafeRawBufferPointer, path: String, allowFloat64: Bool = false) throws(NPYError) {
        func fail(_ message: String) -> NPYError { NPYError(path: path, message: message) }

        guard file.count >= 6, file.prefix(6).elementsEqual(Self.magic) else {
            throw fail("not a .npy file: it does not start with the \\x93NUMPY magic")
        }
        guard file.count >= 8 else {
            throw fail("truncated header: the file is only \(file.count) bytes")
        }
        let (major, minor) = (file[6], file[7])
        let lengthSize: Int
        switch (major, minor) {
        case (1, 0): lengthSize = 2
        case (2, 0), (3, 0): lengthSize = 4
        default: throw fail("unsupported .npy format version \(major).\(minor); supported versions: 1.0, 2.0, 3.0")
        }
        let prefixSize = 8 + lengthSize
        guard file.count >= prefixSize else {
            throw fail("truncated header: the file is only \(file.count) bytes")
        }
        var headerLength = 0
        for i in (8..<prefixSize).reversed() { headerLength = headerLength << 8 | Int(file[i]) }
        guard headerLength <= file.count - prefixSize else {
            throw fail("truncated header: it claims \(headerLength) bytes but only \(file.count - prefixSize) follow")
        }
        let headerBytes = Array(file[prefixSize..<(prefixSize + headerLength)])

        var parser = PythonLiteralParser(bytes: headerBytes)
        let entries: [(key: String, value: PythonValue)]
        do throws(PythonLiteralParser.SyntaxError) {
            entries = try parser.parseHeaderDict()
        } catch {
            throw fail("header does not parse as a Python dict literal: \(error.message) at byte \(error.offset) "
                + "of header \(Self.preview(headerBytes))")
        }
        var fields: [String: PythonValue] = [:]
        for (key, value) in entries {
            guard ["descr", "fortran_order", "shape"].contains(key) else {
                throw fail("header has unexpected key '\(key)'; expected exactly 'descr', 'fortran_order', 'shape'")
            }
            guard fields.updateValue(value, forKey: key) == nil else { throw fail("header repeats key '\(key)'") }
        }
        guard let descr = fields["descr"], let fortranOrder = fields["fortran_order"], let shapeValue = fields["shape"]
        else {
            let missing = ["descr", "fortran_order", "shape"].filter { fields[$0] == nil }
            throw fail("header is missing \(missing.map { "'\($0)'" }.joined(separator: ", "))")
        }

        dtype = try Self.dtype(from: descr, allowFloat64: allowFloat64, fail: fail)
        guard case .tuple(let dimensions) = shapeValue else {
            throw fail("'shape' must be a tuple of integers, got \(shapeValue)")
        }
        var shape: [Int] = []
        for dimension in dimensions {
            guard case .int(let n) = dimension else {
                throw fail("'shape' must be a tuple of integers, got \(shapeValue)")
            }
            shape.append(n)
        }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw fail("shape \(pythonShape(shape)) has a negative dimension") }
        self.shape = shape
        guard case .bool(let isFortran) = fortranOrder else {
            throw fail("'fortran_order' must be True or False, got \(fortranOrder)")
        }
        // For fewer than two dimensions both orders lay out the bytes identically.
        if isFortran && shape.count >= 2 {
            throw fail("Fortran-order arrays are not supported; save with np.ascontiguousarray")
        }

        var byteCount = dtype.itemSize
        for n in shape {
            let (product, overflow) = byteCount.multipliedReportingOverflow(by: n)
            guard !overflow else { throw fail("shape \(pythonShape(shape)) is too large to address") }
            byteCount = product
        }
        dataOffset = prefixSize + headerLength
        dataByteCount = byteCount
        let available = file.count - dataOffset
        // Trailing bytes are tolerated, as numpy tolerates them.
        guard available >= byteCount else {
            throw fail("truncated: expected \(byteCount) bytes of data, found \(available)")
        }
    }

    private static func dtype(from value: PythonValue, allowFloat64: Bool, fail: (String) -> NPYError) throws(NPYError) -> NPYDType {
        guard case .string(let descr) = value else {
            if case .list = value {
                throw fail("structured dtypes are not supported (descr is a list of fields: \(value)); "
                    + NPYDType.supportedText)
            }
            throw fail("'descr' must be a string, got \(value); " + NPYDType.supportedText)
        }
        var code = Substring(descr)
        let order = code.first.flatMap { "<>=|".contains($0) ? $0 : nil }
        if order != nil { code = code.dropFirst() }
        if order == ">" {
            throw fail("big-endian dtype '\(descr)' is not supported; convert with arr.astype('<\(code)'); "
                + NPYDType.supportedText)
        }
        switch code {
        case "f4": return .float32
        case "f2": return .float16
        case "i8": return .int64
        case "u8": return .uint64
        case "f8" where allowFloat64: return .float64
        case "u1": return .uint8
        default:
            let names: [Substring: String] = [
                "f8": "float64", "f16": "float128", "i4": "int32", "i2": "int16", "i1": "int8",
                "u4": "uint32", "u2": "uint16", "u1": "uint8", "b1": "bool", "c8": "complex64",
                "c16": "complex128", "O": "object", "O8": "object",
            ]
            let name = names[code].map { " (\($0))" } ?? ""
            throw fail("unsupported dtype '\(descr)'\(name); " + NPYDType.supportedText)
        }
    }

    /// The header as printable text for messages, shortened so garbage cannot flood a log.
    private static func preview(_ bytes: [UInt8]) -> String {
        var text = ""
        for byte in bytes.prefix(120) {
            switch byte {
            case 0x0a: text += "\\n"
            case 0x5c: text += "\\\\"
            case 0x20..<0x7f: text.unicodeScalars.append(Unicode.Scalar(byte))
            default: text += "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
            }
        }
        return "\"" + text + (bytes.count > 120 ? "\"…" : "\"")
    }
}

/// The subset of Python literals a .npy header can hold.
indirect enum PythonValue: CustomStringConvertible {
    case string(String), int(Int), bool(Bool), none
    case tuple([PythonValue]), list([PythonValue]), dict([(key: PythonValue, value: PythonValue)])

    var description: String {
        switch self {
        case .string(let s): "'\(s)'"
        case .int(let n): String(n)
        case .bool(let b): b ? "True" : "False"
        case .none: "None"
        case .tuple(let items) where items.count == 1: "(\(items[0]),)"
        case .tuple(let items): "(" + items.map(\.description).joined(separator: ", ") + ")"
        case .list(let items): "[" + items.map(\.description).joined(separator: ", ") + "]"
        case .dict(let entries): "{" + entries.map { "\($0.key): \($0.value)" }.joined(separator: ", ") + "}"
        }
    }
}

/// A recursive-descent parser for the header dict, tolerant of any spacing, key order and trailing commas.
struct PythonLiteralParser {
    struct SyntaxError: Error {
        let message: String
        let offset: Int
    }

    let bytes: [UInt8]
    var position = 0
    /// Bounds recursion so a hostile header like "((((…" cannot overflow the stack.
    private static let maxDepth = 16

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// Parses a dict with string keys followed only by whitespace (numpy's padding).
    mutating func parseHeaderDict() throws(SyntaxError) -> [(key: String, value: PythonValue)] {
        skipWhitespace()
        guard peek == UInt8(ascii: "{") else { throw error("expected '{'") }
        guard case .dict(let entries) = try parseValue(depth: 0) else { throw error("expected a dict") }
        skipWhitespace()
        guard position == bytes.count else { throw error("unexpected text after the dict") }
        var result: [(key: String, value: PythonValue)] = []
        for (key, value) in entries {
            guard case .string(let name) = key else { throw error("dict key \(key) is not a string") }
            result.append((name, value))
        }
        return result
    }

    private var peek: UInt8? { position < bytes.count ? bytes[position] : nil }

    private func error(_ message: String) -> SyntaxError { SyntaxError(message: message, offset: position) }

    private mutating func skipWhitespace() {
        while let byte = peek, byte == 0x20 || byte == 0x09 || byte == 0x0a || byte == 0x0d { position += 1 }
    }

    private mutating func parseValue(depth: Int) throws(SyntaxError) -> PythonValue {
        guard depth < Self.maxDepth else { throw error("nesting deeper than \(Self.maxDepth)") }
        skipWhitespace()
        guard let byte = peek else { throw error("unexpected end of header") }
        switch byte {
        case UInt8(ascii: "'"), UInt8(ascii: "\""):
            return try parseString()
        case UInt8(ascii: "("):
            let (items, trailingComma) = try parseSequence(closer: ")", depth: depth)
            // As in Python, "(5)" is just 5; only a comma makes a one-element tuple.
            return items.count == 1 && !trailingComma ? items[0] : .tuple(items)
        case UInt8(ascii: "["):
            return .list(try parseSequence(closer: "]", depth: depth).items)
        case UInt8(ascii: "{"):
            return try parseDict(depth: depth)
        case UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return try parseInt()
        default:
            let start = position
            while let b = peek, Self.isNameByte(b) { position += 1 }
            switch String(decoding: bytes[start..<position], as: UTF8.self) {
            case "True": return .bool(true)
            case "False": return .bool(false)
            case "None": return .none
            case "":
                let shown = (0x21..<0x7f).contains(byte) ? "'\(Unicode.Scalar(byte))'" : "byte 0x" + String(byte, radix: 16)
                throw error("unexpected \(shown)")
            case let name:
                position = start
                throw error("unexpected name '\(name)'")
            }
        }
    }

    private static func isNameByte(_ b: UInt8) -> Bool {
        let lower = b | 0x20
        return b == UInt8(ascii: "_") || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(lower)
    }

    private mutating func parseString() throws(SyntaxError) -> PythonValue {
        let quote = bytes[position]
        let start = position
        position += 1
        var content: [UInt8] = []
        while let byte = peek {
            position += 1
            if byte == quote { return .string(String(decoding: content, as: UTF8.self)) }
            // Escapes only matter for keeping quotes inside strings; no valid descr uses them.
            if byte == UInt8(ascii: "\\"), let next = peek {
                content.append(next)
                position += 1
            } else {
                content.append(byte)
            }
        }
        position = start
        throw error("unterminated string")
    }

    private mutating func parseInt() throws(SyntaxError) -> PythonValue {
        let start = position
        let negative = bytes[position] == UInt8(ascii: "-")
        if !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) { position += 1 }
        var value = 0
        var digits = 0
        while let byte = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) {
            let digit = Int(byte - UInt8(ascii: "0"))
            let (shifted, o1) = value.multipliedReportingOverflow(by: 10)
            let (next, o2) = negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
            guard !o1 && !o2 else {
                position = start
                throw error("integer too large")
            }
            value = next
            digits += 1
            position += 1
        }
        guard digits > 0 else { throw error("expected digits") }
        // Python 2 wrote long integers in shapes as "3L".
        if peek == UInt8(ascii: "L") || peek == UInt8(ascii: "l") { position += 1 }
        return .int(value)
    }

    private mutating func parseSequence(closer: Character, depth: Int) throws(SyntaxError) -> (items: [PythonValue], trailingComma: Bool) {
        let close = UInt8(ascii: closer.unicodeScalars.first!)
        position += 1
        var items: [PythonValue] = []
        var afterComma = false
        while true {
            skipWhitespace()
            if peek == close {
                position += 1
                return (items, afterComma)
            }
            guard items.isEmpty || afterComma else { throw error("expected ',' or '\(closer)'") }
            items.append(try parseValue(depth: depth + 1))
            skipWhitespace()
            afterComma = peek == UInt8(ascii: ",")
            if afterComma { position += 1 }
        }
    }

    private mutating func parseDict(depth: Int) throws(SyntaxError) -> PythonValue {
        position += 1
        var entries: [(key: PythonValue, value: PythonValue)] = []
        var afterComma = false
        while true {
            skipWhitespace()
            if peek == UInt8(ascii: "}") {
                position += 1
                return .dict(entries)
            }
            guard entries.isEmpty || afterComma else { throw error("expected ',' or '}'") }
            let key = try parseValue(depth: depth + 1)
            skipWhitespace()
            guard peek == UInt8(ascii: ":") else { throw error("expected ':'") }
            position += 1
            entries.append((key, try parseValue(depth: depth + 1)))
            skipWhitespace()
            afterComma = peek == UInt8(ascii: ",")
            if afterComma { position += 1 }
        }
    }
}
