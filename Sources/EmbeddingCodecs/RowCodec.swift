import CEmbeddingKernels
// The codec descriptor: everything the store, the command line, verify and the benchmarks know
// about a row codec goes through these protocols, so adding a codec is its own file, its
// kernel, one line in `RowCodecs.all` and its section of FORMAT.md.

/// One row codec: its tag, how it is spelled, how a load fits its parameters, how rows are
/// encoded and how records are decoded.
///
/// A record is the tag byte followed by the codec's payload (FORMAT.md, "Row records").
/// Conforming types are small values registered once in `RowCodecs.all`.
public protocol RowCodec: Sendable {
    /// The tag byte that starts every record of this codec; unique among registered codecs.
    var tag: UInt8 { get }
    /// Its name in statistics and error messages ("int8", "bucket+scale").
    var name: String { get }
    /// Its spellings in general form, for help and errors ("reduced:K").
    var spelling: String { get }
    /// True when bucket rows may be stored with it (a self-contained codec: no table parameters).
    var canStoreBucketRows: Bool { get }
    /// The first format version whose readers know its records (FORMAT.md, "Format versions"):
    /// a store is raised to it by the commit that writes its first such record.
    var formatVersion: UInt32 { get }
    /// The `--codec` spellings it accepts and what a row costs with each at `dimension`.
    func forms(dimension: Int) -> [CodecForm]
    /// The codec that `parts` (a `--codec` text split at `:`, lower-cased) spells, or nil when
    /// the first part is not this codec's name. Throws for its name with bad arguments.
    func parse(_ parts: [Substring]) throws(CodecError) -> Codec?
    /// A decoder of this codec's records for a table of `dimension` values per row. Each reader
    /// makes its own: decoders cache what records point at (bases, bucket rows, models).
    func makeDecoder(dimension: Int) -> any RowDecoder
    /// Fits what a bulk load of `codec` needs on the rows and says what to store before the
    /// rows. `rows` is `count × dimension` floats and stays valid until the load ends.
    func planLoad(_ codec: Codec, rows: UnsafeBufferPointer<Float>, count: Int, dimension: Int,
                  options: FitOptions) throws -> LoadPlan
    /// An encoder for single puts of `codec`, using the table's current parameters.
    func putEncoder(_ codec: Codec, table: any CodecTableState) throws -> any RowEncoder
    /// The parameter record a record of this codec is encoded with, when records of one codec
    /// can differ in it (the model of a `tc` record), so statistics can tell rates apart; nil
    /// for codecs whose records all share their parameters, and for a malformed record.
    func parameterID(of record: UnsafeRawBufferPointer) -> UInt32?
    /// How statistics name this codec's rows encoded with parameter record `parameter` (the
    /// record's bytes), e.g. `tc:1.5` for a tc model fitted for 1.5 bits a value.
    func formName(parameter: UnsafeRawBufferPointer) -> String
    /// True when decoding many records in one call is much cheaper per record than one at a
    /// time (tc: four rows' rANS chains in lockstep, its tables warm): lookups then gather the
    /// batch's records of this codec, grouped by `parameterID`, and decode them together.
    var decodesInBatches: Bool { get }
    /// How `emb_pool_bags` adds this codec's records to a bag (an `EMB_ROW_KIND_` value): the
    /// payload layout of a self-contained fixed-size codec, or `EMB_ROW_KIND_NONE` (the default)
    /// for a record the pooled lookup hands to the codec's decoder.
    var pooledRowKind: UInt8 { get }
}

/// A codec and its arguments, as `--codec` spells it: what a load or a put does to a row.
public struct Codec: Hashable, Sendable, CustomStringConvertible {
    /// The tag of the codec's records.
    public let tag: UInt8
    /// The canonical spelling, which `init(parsing:)` accepts (`int8`, `reduced:16`, `tc:3`).
    public let description: String
    /// The numeric arguments of the spelling, in order (empty for codecs without any).
    public let arguments: [Double]

    public init(tag: UInt8, description: String, arguments: [Double] = []) {
        self.tag = tag
        self.description = description
        self.arguments = arguments
    }

    /// Parses a `--codec` spelling (case-insensitive); the error lists every codec.
    public init(parsing text: String) throws(CodecError) {
        self = try RowCodecs.parse(text)
    }

    /// The registered codec of this tag.
    public var rowCodec: any RowCodec {
        guard let codec = RowCodecs.codec(tag: tag) else { preconditionFailure("codec tag \(tag) is not registered") }
        return codec
    }
}

/// One spelling of a codec and the bytes a row costs with it.
public struct CodecForm: Sendable, Equatable, Codable {
    /// The exact text `--codec` takes.
    public let codec: String
    /// Record bytes per row at the dimension asked for, tag included; for entropy-coded codecs
    /// the target (the real size depends on the rows). Shared rows (bucket rows, bases) not included.
    public let bytesPerRow: Double
    /// One line on what it is.
    public let summary: String

    public init(codec: String, bytesPerRow: Double, summary: String) {
        self.codec = codec
        self.bytesPerRow = bytesPerRow
        self.summary = summary
    }
}

/// Settings of the fits a bulk load runs.
public struct FitOptions: Sendable {
    /// At most this many rows (an even stride through the input) fit k-means, and PCA too
    /// unless 100 × dimension is more.
    public var sampleLimit = 262_144
    /// Lloyd iterations for `bucket:B`.
    public var kMeansIterations = 20
    /// Codec of the bucket rows that `bucket:B` creates.
    public var bucketCodec = Codec(tag: 1, description: "fp32")
    /// Bytes on disk a row costs beyond its record (the store's index and page overhead for the
    /// layout the load writes), for codecs that fit a byte budget (`tc:P%`).
    public var overheadBytesPerRow = 10.5
    /// The rows of the table being loaded, when `planLoad` is given a sample of them rather than
    /// all of them (a budget is for the table; buckets are at most one a row).
    public var tableRows: Int?
    /// True when the rows `planLoad` is given are the load's rows, all of them in load order:
    /// an encoder may then work out every row's record ahead (bucket rows assign them all at
    /// once) and find it by the row's index. False for a sample, or rows fitted for other rows.
    public var fitRowsAreLoadRows = false
    /// A byte budget scores every candidate on at most this many rows (an even stride), and the
    /// rest of the table only under the candidates their choice used.
    public var policySampleRows = 65_536
    public init() {}
}

/// What a bulk load stores before its rows, and how it then encodes them.
public struct LoadPlan {
    /// Parameter records (`t<T>/bases`) to add, in order; each gets a new id. Each is made once
    /// the records before it have their ids (a tc model names its basis), which it is given.
    public var parameterRecords: [(_ earlierIDs: [UInt32]) throws -> [UInt8]] = []
    /// True when the last parameter record becomes the table's current basis.
    public var makesCurrentBasis = false
    /// Bucket rows to add (row-major, `dimension` floats each), stored with `bucketCodec`.
    public var bucketRows: [Float] = []
    public var bucketCodec: Codec?
    /// Refuses a row the codec cannot store; a load runs it on every row before it writes
    /// anything. Rows are already known to be finite and of the right width.
    public var checkRow: ((UnsafeBufferPointer<Float>) throws -> Void)?
    /// Makes the encoder once the above is stored: the ids the parameter records got, the bucket
    /// ids and the bucket rows as they decode from the store.
    public var makeEncoder: (_ parameterIDs: [UInt32], _ bucketIDs: Range<UInt32>?, _ storedBucketRows: [Float]) throws -> any RowEncoder

    public init(makeEncoder: @escaping (_ parameterIDs: [UInt32], _ bucketIDs: Range<UInt32>?, _ storedBucketRows: [Float]) throws -> any RowEncoder) {
        self.makeEncoder = makeEncoder
    }

    /// The plan of a codec that stores nothing first.
    public static func plain(_ encoder: any RowEncoder) -> LoadPlan {
        var plan = LoadPlan { _, _, _ in encoder }
        plan.checkRow = { row in try encoder.check(row) }
        return plan
    }
}

/// Encodes rows into records of one codec, with its parameters resolved.
public protocol RowEncoder: AnyObject {
    /// The largest record it writes, tag included.
    var maximumRecordSize: Int { get }
    /// True when its records may be followed by zero bytes (FORMAT.md says so of the codec), so
    /// that a segment can pad a record to a size it already has (at most 255 sizes a segment).
    var acceptsZeroPadding: Bool { get }
    /// Refuses a row this codec cannot store (fp16 beyond ±65504), so that a load checks every
    /// row before it writes anything. Rows are already known to be finite and of the right width.
    func check(_ row: UnsafeBufferPointer<Float>) throws(CodecError)
    /// Writes the record of `row` (row `index` of the load, nil for a put) into `record`, which
    /// holds `maximumRecordSize` bytes, and returns its length.
    func encode(_ row: UnsafeBufferPointer<Float>, index: Int?, into record: UnsafeMutableRawBufferPointer) throws(CodecError) -> Int
}

extension RowCodec {
    public var formatVersion: UInt32 { 1 }
    public func parameterID(of record: UnsafeRawBufferPointer) -> UInt32? { nil }
    public func formName(parameter: UnsafeRawBufferPointer) -> String { name }
    public var decodesInBatches: Bool { false }
    public var pooledRowKind: UInt8 { UInt8(EMB_ROW_KIND_NONE) }
}

extension RowEncoder {
    public func check(_ row: UnsafeBufferPointer<Float>) throws(CodecError) {}
    public var acceptsZeroPadding: Bool { false }
}

/// Where a decoder finds what a record points at, in the reader's snapshot. Buffers stay valid
/// while that snapshot does; decoders copy what they keep.
public protocol CodecParameterSource {
    /// Parameter record `id` of the table (`t<T>/bases`), nil when there is none.
    func parameterRecord(_ id: UInt32) throws -> UnsafeRawBufferPointer?
    /// Bucket row record `id` of the table (`t<T>/buckets`), nil when there is none.
    func bucketRecord(_ id: UInt32) throws -> UnsafeRawBufferPointer?
}

/// What a put needs to know of its table: the parameters it may encode with.
public protocol CodecTableState: CodecParameterSource {
    var dimension: Int { get }
    /// The basis new `reduced` rows use; 0 when there is none.
    var currentBasisID: UInt32 { get }
    /// Ids of the table's parameter records, ascending.
    func parameterIDs() throws -> [UInt32]
    /// Ids of the table's bucket rows, ascending.
    func bucketIDs() throws -> [UInt32]
}

/// Decodes one codec's records for one table. Not thread-safe: one per reader.
public protocol RowDecoder: AnyObject {
    /// Decodes `count` records (each starting with this codec's tag) into consecutive rows of the
    /// table's dimension at `out`, every value finite. Returns `count`, or the index of the first
    /// record it refused (damaged, or pointing at a missing parameter); rows from there on are
    /// unspecified. Throws only what `parameters` throws.
    func decode<P: CodecParameterSource>(_ records: UnsafePointer<UnsafeRawBufferPointer>, count: Int,
                                         into out: UnsafeMutablePointer<Float>, parameters: P) throws -> Int
    /// `acc[i] = acc[i] + w_r × x_r[i]` for each decoded record r in turn (an embedding bag),
    /// with the float operations of decoding and then adding; `weights` nil means every w_r = 1.
    /// Returns `count`, or the index of the first record refused (`acc` is then unspecified).
    func accumulate<P: CodecParameterSource>(_ records: UnsafePointer<UnsafeRawBufferPointer>, weights: UnsafePointer<Float>?,
                                             count: Int, into acc: UnsafeMutablePointer<Float>, parameters: P) throws -> Int
    /// Why `decode` refuses `record`, in words for an error message.
    func problem<P: CodecParameterSource>(with record: UnsafeRawBufferPointer, parameters: P) -> String
}

/// A decoder without an accumulate kernel: each record of a bag is decoded into `scratch` (one
/// row of the table's dimension), then added.
protocol AccumulatingByDecoding: RowDecoder {
    var scratch: [Float] { get set }
}

extension AccumulatingByDecoding {
    func accumulate<P: CodecParameterSource>(_ records: UnsafePointer<UnsafeRawBufferPointer>, weights: UnsafePointer<Float>?,
                                             count: Int, into acc: UnsafeMutablePointer<Float>, parameters: P) throws -> Int {
        try scratch.withUnsafeMutableBufferPointer { scratch in
            for r in 0..<count {
                guard try decode(records + r, count: 1, into: scratch.baseAddress!, parameters: parameters) == 1 else { return r }
                RowDecoding.add(scratch.baseAddress!, weight: weights?[r] ?? 1, into: acc, count: scratch.count)
            }
            return count
        }
    }
}

/// The registered codecs.
public enum RowCodecs {
    /// Every codec the store reads and writes, in tag order.
    public static let all: [any RowCodec] = [
        Float32Codec.descriptor, Float16Codec.descriptor, Int8RowwiseCodec.descriptor, Int4RowwiseCodec.descriptor,
        ReducedDimensionCodec.descriptor, BucketCodec.descriptor, BucketCodec.scaledDescriptor, TransformCodedRowCodec.descriptor,
        Int4HalfRowwiseCodec.descriptor, Int2HalfRowwiseCodec.descriptor,
    ]

    private static let byTag: [(any RowCodec)?] = {
        var table = [(any RowCodec)?](repeating: nil, count: 256)
        for codec in all {
            precondition(table[Int(codec.tag)] == nil, "two codecs registered with tag \(codec.tag)")
            table[Int(codec.tag)] = codec
        }
        return table
    }()

    /// The codec whose records start with `tag`, nil for an unknown tag.
    @inline(__always)
    public static func codec(tag: UInt8) -> (any RowCodec)? { byTag[Int(tag)] }

    /// The name of `tag`'s codec, or "unknown tag N".
    public static func name(tag: UInt8) -> String { codec(tag: tag)?.name ?? "unknown tag \(tag)" }

    /// Parses a `--codec` spelling (case-insensitive).
    public static func parse(_ text: String) throws(CodecError) -> Codec {
        let lowered = text.lowercased()
        let parts = lowered.split(separator: ":", omittingEmptySubsequences: false)
        for codec in all {
            if let parsed = try codec.parse(parts) { return parsed }
        }
        throw .invalidParameter("unknown codec '\(text)'; expected one of: " + spellings)
    }

    /// Every spelling `--codec` accepts at `dimension`, codec by codec.
    public static func forms(dimension: Int) -> [CodecForm] {
        all.flatMap { $0.forms(dimension: dimension) }
    }

    /// The spellings in general form, for error messages and help.
    public static var spellings: String { all.map(\.spelling).joined(separator: ", ") }

    /// The names of the codecs bucket rows may use (`canStoreBucketRows`), for error messages
    /// and help: "fp32, fp16, int8, int4, int4h, int2h".
    public static var bucketRowCodecNames: String { all.filter(\.canStoreBucketRows).map(\.name).joined(separator: ", ") }

    /// Parses a positive integer argument of `codec`.
    static func positiveInteger(_ part: Substring, of text: String) throws(CodecError) -> Int {
        guard let value = Int(part), value > 0 else {
            throw .invalidParameter("codec '\(text)': '\(part)' is not a positive integer")
        }
        return value
    }
}

/// Hints the CPU to pull the cache line at `address` into every cache level for reading (never
/// faults): lookups prefetch index entries and records ahead of decoding them. Inlinable, so
/// that it is one instruction in the lookup loop of another module, not a call.
@inlinable @inline(__always)
public func prefetchForReading(_ address: UnsafeRawPointer) {
    emb_prefetch(address)
}
