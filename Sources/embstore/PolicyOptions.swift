import ArgumentParser
import EmbeddingCodecs
import EmbeddingStore

/// The codec policy options `ingest` and `repack` share: exactly one of --codec, --tiers,
/// --budget and --budget-bytes, what a budget weighs, its decode cap and the bucket rows' codec.
struct PolicyOptions: ParsableArguments {
    @Option(help: "The codec of every row; `embstore codecs` lists every spelling (\(RowCodecs.spellings)).",
            transform: parseCodec)
    var codec: Codec?
    @Option(help: ArgumentHelp("Codecs by access rank, hottest rows first: CODEC:P% entries, the last may take the rest (fp16:1%,int8:9%,int4:40%,int2h). Needs access counts.",
                               valueName: "spec"))
    var tiers: String?
    @Option(help: ArgumentHelp("Choose each row's codec to fit this share of the float32 payload on disk (0.125 or 12.5%).", valueName: "fraction"))
    var budget: String?
    @Option(help: ArgumentHelp("Choose each row's codec to fit this many bytes on disk.", valueName: "bytes"))
    var budgetBytes: Int?
    @Option(help: "What a row's error weighs in a budget: traffic (its access count) or retrieval (log2(2 + count)).")
    var weighting: CodecPolicy.Weighting = .retrieval
    @Option(help: ArgumentHelp("With a budget: the most a lookup may take to decode on average, in ns (default with counts: twice int8's, relaxed while it would make the mix worse than one tc rate).", valueName: "ns"))
    var maxDecodeNs: Double?
    @Option(help: "Codec of the bucket rows made by bucket:B (\(RowCodecs.bucketRowCodecNames); default fp32).", transform: parseCodec)
    var bucketCodec: Codec = .fp32

    /// True when none of --codec, --tiers, --budget and --budget-bytes is given.
    var isEmpty: Bool { codec == nil && tiers == nil && budget == nil && budgetBytes == nil }

    /// The policy the options name. `counts` names the option that gave access counts (which
    /// tiers need), nil when none did; `countOptions` the options that could have.
    func policy(counts: String?, countOptions: String = "--freq") throws -> CodecPolicy {
        let given = [codec != nil, tiers != nil, budget != nil, budgetBytes != nil].filter { $0 }.count
        guard given == 1 else {
            throw InputError(given == 0 ? "give one of --codec, --tiers, --budget or --budget-bytes"
                                        : "give only one of --codec, --tiers, --budget and --budget-bytes")
        }
        if let codec { return .single(codec) }
        if let tiers {
            let parsed = try CodecPolicy.parseTiers(tiers)
            guard counts != nil else { throw InputError("--tiers ranks rows by access count: give \(countOptions)") }
            return .tiers(parsed)
        }
        if let budget { return .budget(.fraction(try CodecPolicy.parseBudgetFraction(budget)), weighting: weighting) }
        guard let budgetBytes, budgetBytes > 0 else { throw InputError("--budget-bytes must be a positive number of bytes") }
        return .budget(.bytes(budgetBytes), weighting: weighting)
    }

    /// Puts --bucket-codec and --max-decode-ns into a load's options, checked.
    func apply(to options: inout LoadOptions) throws {
        guard bucketCodec.rowCodec.canStoreBucketRows else {
            throw InputError("--bucket-codec must be a codec without table parameters (\(RowCodecs.bucketRowCodecNames)), not '\(bucketCodec)'")
        }
        options.bucketCodec = bucketCodec
        if let maxDecodeNs {
            guard maxDecodeNs > 0, maxDecodeNs.isFinite else { throw InputError("--max-decode-ns must be a positive number of nanoseconds") }
            options.maxDecodeNanoseconds = maxDecodeNs
        }
    }
}
