import EmbeddingCodecs
import Foundation

/// How a bulk load chooses each row's codec.
public enum CodecPolicy: Sendable, CustomStringConvertible {
    /// Every row the same codec.
    case single(Codec)
    /// Tiers by access rank, hottest first: each tier a codec and a share of the rows.
    case tiers([Tier])
    /// Each row's codec (and rate) chosen to minimise Σ wᵢ·‖xᵢ − x̂ᵢ‖² within a byte budget.
    case budget(Budget, weighting: Weighting)

    /// One tier of `--tiers`.
    public struct Tier: Sendable, Equatable {
        public let codec: Codec
        /// Share of the rows (0...1); nil for the last tier, which takes the rest.
        public let fraction: Double?
        public init(codec: Codec, fraction: Double?) {
            self.codec = codec
            self.fraction = fraction
        }
    }

    /// The bytes a load may take on disk.
    public enum Budget: Sendable, Equatable {
        /// A fraction of the rows' float32 payload (count × dimension × 4 bytes).
        case fraction(Double)
        /// Bytes.
        case bytes(Int)

        func bytes(rows: Int, dimension: Int) -> Double {
            switch self {
            case .fraction(let fraction): fraction * Double(rows) * Double(dimension) * 4
            case .bytes(let bytes): Double(bytes)
            }
        }
    }

    /// What a row's error weighs in the budget's objective.
    public enum Weighting: String, Sendable, CaseIterable {
        /// wᵢ = countᵢ: the error lookups see, what a ranking model is served.
        case traffic
        /// wᵢ = log₂(2 + countᵢ): grows slowly with popularity, so rare rows, which are still the
        /// neighbours popular queries must find, keep enough precision.
        case retrieval

        /// The weight of a row with access count `count`.
        @inline(__always)
        public func weight(_ count: Double) -> Double {
            switch self {
            case .traffic: count
            case .retrieval: log2(2 + count)
            }
        }
    }

    public var description: String {
        switch self {
        case .single(let codec): codec.description
        case .tiers(let tiers):
            tiers.map { tier in tier.fraction.map { "\(tier.codec):\(Self.percent($0))%" } ?? tier.codec.description }
                .joined(separator: ",")
        case .budget(.fraction(let fraction), let weighting): "budget \(Self.percent(fraction))% (\(weighting.rawValue))"
        case .budget(.bytes(let bytes), let weighting): "budget \(bytes) bytes (\(weighting.rawValue))"
        }
    }

    static func percent(_ fraction: Double) -> String {
        let text = String(format: "%.6g", fraction * 100)
        return text
    }

    /// Parses `--tiers`: comma-separated `CODEC:P%` entries, hottest rows first (`fp16:1%,int8:9%,
    /// int4:40%,int2h`). The last entry may leave out `:P%` and takes the rows left; when every
    /// entry has one, they must add up to 100%.
    public static func parseTiers(_ text: String) throws(StoreError) -> [Tier] {
        let entries = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard !entries.isEmpty, !entries.contains(where: \.isEmpty) else {
            throw .invalidArgument("tier spec '\(text)': expected comma-separated CODEC:P% entries, e.g. fp16:1%,int8:9%,int4:40%,int2h")
        }
        var tiers: [Tier] = []
        for (index, entry) in entries.enumerated() {
            var codecText = entry
            var fraction: Double?
            if entry.hasSuffix("%") {
                guard let colon = entry.lastIndex(of: ":"),
                      let percent = Double(entry[entry.index(after: colon)..<entry.index(before: entry.endIndex)]),
                      percent.isFinite, percent > 0, percent <= 100 else {
                    throw .invalidArgument("tier '\(entry)' in '\(text)': expected CODEC:P% with P a percentage in (0, 100]")
                }
                codecText = String(entry[..<colon])
                fraction = percent / 100
            } else if index != entries.count - 1 {
                throw .invalidArgument("tier '\(entry)' in '\(text)': only the last tier may leave out its share (CODEC:P%)")
            }
            let codec: Codec
            do {
                codec = try Codec(parsing: codecText)
            } catch {
                throw .invalidArgument("tier '\(entry)' in '\(text)': \(error)")
            }
            if codec.tag == Codec.transformCoded(budget: 0.5).tag && codec.arguments.count == 2 {
                throw .invalidArgument("tier '\(entry)' in '\(text)': a tier takes tc:B, not a budget (tc:P%)")
            }
            if codec.rowCodec.name.hasPrefix("bucket") {
                throw .invalidArgument("tier '\(entry)' in '\(text)': bucket codecs cannot be a tier")
            }
            tiers.append(Tier(codec: codec, fraction: fraction))
        }
        try validate(tiers, spelled: text)
        return tiers
    }

    /// Checks tiers built in code as `parseTiers` checks a spec: at least one; every share in
    /// (0, 1], only the last one left out; shares adding up to 100% (at most, before a last one
    /// without a share).
    static func validate(_ tiers: [Tier], spelled text: String? = nil) throws(StoreError) {
        let text = text ?? CodecPolicy.tiers(tiers).description
        guard !tiers.isEmpty else { throw .invalidArgument("tiers: give at least one") }
        for (index, tier) in tiers.enumerated() {
            if let fraction = tier.fraction {
                guard fraction.isFinite, fraction > 0, fraction <= 1 else {
                    throw .invalidArgument("tiers '\(text)': a share must be in (0, 100%], not \(fraction * 100)%")
                }
            } else if index != tiers.count - 1 {
                throw .invalidArgument("tiers '\(text)': only the last tier may leave out its share")
            }
        }
        let total = tiers.compactMap(\.fraction).reduce(0, +)
        if tiers.last?.fraction != nil {
            guard abs(total - 1) < 1e-9 else {
                throw .invalidArgument("tiers '\(text)' add up to \(percent(total))% of the rows; make them 100% or leave out the last share")
            }
        } else if total > 1 + 1e-9 {
            throw .invalidArgument("tiers '\(text)' add up to \(percent(total))% before the last one; at most 100%")
        }
    }

    /// Parses `--budget`: a fraction (`0.125`) or a percentage (`12.5%`) of the float32 payload.
    public static func parseBudgetFraction(_ text: String) throws(StoreError) -> Double {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let value = trimmed.hasSuffix("%") ? Double(trimmed.dropLast()).map { $0 / 100 } : Double(trimmed)
        guard let value, value.isFinite, value > 0, value <= 1 else {
            throw .invalidArgument("budget '\(text)': expected a fraction of the float32 payload in (0, 1], e.g. 0.125 or 12.5%")
        }
        return value
    }
}
