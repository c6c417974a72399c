import Foundation

/// A staged rollout (README, "Staged rollout"): variants (a baseline and candidates, each a
/// store or a sharded store), a salt, and the share of units each candidate gets. A unit (a
/// user or request key) keeps its variant across processes and restarts: its variant depends
/// only on the salt, the unit and the shares. Raising a candidate's share only moves units into
/// it, and lowering one only moves units back to the baseline.
///
/// The rule: `u = mix(unit xor mix(fnv1a64(salt)))`, with `mix` the sharding rule's SplitMix64
/// step, read as a fraction `x = (u >> 11) / 2^53` in [0, 1). Candidate k (1 ... K) owns the
/// stretch [(k − 1) / K, (k − 1) / K + share_k) of it, and the baseline everything else; a
/// candidate's share is therefore at most 1 / K.
public struct Rollout: Codable, Sendable, Equatable {
    public static let formatName = "embstore-rollout"
    public static let currentVersion = 1

    public struct Variant: Codable, Sendable, Equatable {
        public var name: String
        /// The store or sharded store's directory (relative paths: to the rollout file's directory).
        public var store: String
        /// Its share of the units (the baseline's is what the candidates leave).
        public var fraction: Double

        public init(name: String, store: String, fraction: Double) {
            self.name = name
            self.store = store
            self.fraction = fraction
        }
    }

    /// A stage the rollout went through: its candidates' shares and when it began.
    public struct Stage: Codable, Sendable, Equatable {
        public var fractions: [Double]
        public var since: String
    }

    public var format: String
    public var version: Int
    public var salt: String
    /// The baseline first, then the candidates.
    public var variants: [Variant]
    /// Stages before this one, oldest first; `rollback` returns to the last.
    public var history: [Stage]
    /// When the current stage began (ISO 8601).
    public var since: String
    /// Thresholds the team sets for the readiness report, by name (`thresholdNames`).
    public var thresholds: [String: Double]

    /// The thresholds a rollout file may set, and what each bounds (README, "Staged rollout").
    public static let thresholdNames: KeyValuePairs<String, String> = [
        "recall_drop": "recall@10 against the source may fall by at most this, in every popularity decile with 20 query rows (in each query set without counts, or when no decile has 20)",
        "agreement_min": "top-10 neighbour agreement between baseline and candidate at least this, for every query set",
        "mean_cosine_min": "mean cosine between the baseline's and the candidate's rows at least this, in every popularity decile",
        "rows_missing_max": "rows the baseline has and the candidate lacks: at most this many",
        "bytes_ratio_max": "the candidate's bytes on disk over the baseline's: at most this",
        "p99_latency_ratio": "the candidate's p99 batch latency over the baseline's: at most this",
        "p999_latency_ratio": "the candidate's p99.9 batch latency over the baseline's: at most this",
        "miss_rate_increase": "the candidate's share of ids not found minus the baseline's: at most this",
    ]

    /// What `embstore rollout create` writes unless told otherwise.
    public static let defaultThresholds: [String: Double] = [
        "recall_drop": 0.01, "p99_latency_ratio": 1.10, "rows_missing_max": 0, "miss_rate_increase": 0,
    ]

    /// A rollout of one candidate against a baseline.
    public init(baseline: String, candidate: String, fraction: Double, salt: String, thresholds: [String: Double] = [:]) throws {
        format = Self.formatName
        version = Self.currentVersion
        self.salt = salt
        variants = [Variant(name: "baseline", store: baseline, fraction: 1 - fraction),
                    Variant(name: "candidate", store: candidate, fraction: fraction)]
        history = []
        since = Self.now()
        self.thresholds = thresholds
        try check()
    }

    static func now() -> String { ISO8601DateFormatter().string(from: Date()) }

    /// The candidates' shares, in order.
    public var candidateFractions: [Double] { variants.dropFirst().map(\.fraction) }

    /// Refuses what the rule cannot give: no candidate, a share outside [0, 1 / K], NaN, or a
    /// format or version this embstore does not read.
    public func check() throws {
        guard format == Self.formatName else { throw StoreError.invalidArgument("rollout format is '\(format)', not '\(Self.formatName)'") }
        guard (1...Self.currentVersion).contains(version) else {
            throw StoreError.invalidArgument("rollout version \(version); this embstore reads versions 1...\(Self.currentVersion)")
        }
        guard variants.count >= 2 else { throw StoreError.invalidArgument("a rollout needs a baseline and at least one candidate") }
        guard variants.count <= 256 else { throw StoreError.invalidArgument("a rollout of \(variants.count) variants: at most 256 (assign writes each unit's as one byte)") }
        let k = Double(variants.count - 1)
        for variant in variants.dropFirst() where !(variant.fraction >= 0 && variant.fraction <= 1 / k + 1e-12) {
            throw StoreError.invalidArgument("candidate '\(variant.name)' has the share \(variant.fraction); with \(variants.count - 1) candidate(s) each may have 0 to \(1 / k)")
        }
        let names = variants.map(\.name)
        guard Set(names).count == names.count else { throw StoreError.invalidArgument("two variants are called the same: \(names)") }
        for (name, value) in thresholds.sorted(by: { $0.key < $1.key }) {
            guard Self.thresholdNames.contains(where: { $0.key == name }) else {
                throw StoreError.invalidArgument("unknown threshold '\(name)'; a rollout knows " + Self.thresholdNames.map(\.key).joined(separator: ", "))
            }
            guard value.isFinite else { throw StoreError.invalidArgument("threshold '\(name)' is \(value); thresholds must be finite") }
        }
    }

    /// The salt's hash, which every unit's is mixed with.
    var saltKey: UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in salt.utf8 { h = (h ^ UInt64(byte)) &* 0x100_0000_01B3 }
        return ShardRule.mix(h)
    }

    /// The index in `variants` of the variant of `unit` (0: the baseline).
    public func variant(for unit: UInt64) -> Int {
        Self.variant(x: Self.position(unit, saltKey: saltKey), fractions: candidateFractions)
    }

    /// Variant indexes of many units (the salt hashed once).
    public func variants(for units: some Sequence<UInt64>) -> [UInt8] {
        let key = saltKey, fractions = candidateFractions
        return units.map { UInt8(Self.variant(x: Self.position($0, saltKey: key), fractions: fractions)) }
    }

    @inline(__always)
    static func position(_ unit: UInt64, saltKey: UInt64) -> Double {
        Double(ShardRule.mix(unit ^ saltKey) >> 11) * 0x1p-53
    }

    @inline(__always)
    static func variant(x: Double, fractions: [Double]) -> Int {
        let k = Double(fractions.count)
        for (i, fraction) in fractions.enumerated() {
            let start = Double(i) / k
            if x >= start && x < start + fraction { return i + 1 }
        }
        return 0
    }

    // MARK: - Stages

    /// Moves to a new stage with these candidate shares, keeping the current one for rollback.
    public mutating func advance(to fractions: [Double]) throws {
        guard fractions.count == variants.count - 1 else {
            throw StoreError.invalidArgument("\(fractions.count) share(s) for \(variants.count - 1) candidate(s)")
        }
        var next = self
        next.history.append(Stage(fractions: candidateFractions, since: since))
        for (i, fraction) in fractions.enumerated() { next.variants[i + 1].fraction = fraction }
        next.variants[0].fraction = 1 - fractions.reduce(0, +)
        next.since = Self.now()
        try next.check()
        self = next
    }

    /// Returns to the previous stage (it leaves the history).
    public mutating func rollback() throws {
        guard let previous = history.last else { throw StoreError.invalidArgument("the rollout has no earlier stage to roll back to") }
        for (i, fraction) in previous.fractions.enumerated() { variants[i + 1].fraction = fraction }
        variants[0].fraction = 1 - previous.fractions.reduce(0, +)
        history.removeLast()
        since = Self.now()
    }

    // MARK: - The file

    public static func read(from path: String) throws -> Rollout {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw StoreError.invalidArgument("cannot read the rollout file \(path)")
        }
        let rollout: Rollout
        do {
            rollout = try JSONDecoder().decode(Rollout.self, from: data)
        } catch {
            throw StoreError.invalidArgument("\(path) is not a rollout file: \(error)")
        }
        try rollout.check()
        return rollout
    }

    /// Writes the file atomically (beside, then renamed over the old one).
    public func write(to path: String) throws {
        try check()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(self)
        try replaceFile(path, with: Array(data), through: path + ".writing-\(getpid())")
    }
}
