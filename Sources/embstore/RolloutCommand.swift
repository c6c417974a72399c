import ArgumentParser
import EmbeddingStore
import Foundation
import NPY

/// `embstore rollout`: a staged rollout's file (README, "Staged rollout").
struct RolloutCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollout",
        abstract: "Create a staged rollout of a candidate store against a baseline, move it through stages, roll it back, and audit its split.",
        subcommands: [Create.self, Advance.self, Rollback.self, Show.self, Assign.self, Thresholds.self, RolloutReportCommand.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a new rollout file (it must not exist).")
        @Argument(help: "The rollout file (JSON).") var file: String
        @Option(help: "The baseline store (or sharded store) directory; a relative path is taken from the rollout file's directory.") var baseline: String
        @Option(help: "The candidate store (or sharded store) directory; a relative path is taken from the rollout file's directory.") var candidate: String
        @Option(help: "The candidate's share of the units, 0 to 1.") var fraction: Double
        @Option(help: "The salt the split hashes units with (default: 16 random hex digits; keep it to keep the split).") var salt: String?
        @Option(help: "A readiness threshold NAME=VALUE (repeat; see `embstore rollout thresholds --help`); the defaults are recall_drop=0.01, p99_latency_ratio=1.1, rows_missing_max=0, miss_rate_increase=0.")
        var threshold: [String] = []

        func run() throws {
            guard !FileManager.default.fileExists(atPath: file) else { throw InputError("\(file) exists; advance or roll back that rollout instead") }
            let salt = self.salt ?? String(format: "%016llx", UInt64.random(in: .min ... .max))
            var thresholds = Rollout.defaultThresholds
            for (name, value) in try threshold.map(parseThreshold) { thresholds[name] = value }
            let rollout = try Rollout(baseline: baseline, candidate: candidate, fraction: fraction, salt: salt, thresholds: thresholds)
            try rollout.write(to: file)
            print(describe(rollout, file: file))
        }
    }

    struct Advance: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move to the next stage: the candidate's new share (the current stage is kept for rollback).")
        @Argument(help: "The rollout file.") var file: String
        @Option(help: "The candidate's new share, 0 to 1.") var fraction: Double

        func run() throws {
            var rollout = try Rollout.read(from: file)
            guard rollout.variants.count == 2 else { throw InputError("\(file) has \(rollout.variants.count - 1) candidates; --fraction sets one") }
            try rollout.advance(to: [fraction])
            try rollout.write(to: file)
            print(describe(rollout, file: file))
        }
    }

    struct Rollback: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Return to the previous stage.")
        @Argument(help: "The rollout file.") var file: String

        func run() throws {
            var rollout = try Rollout.read(from: file)
            try rollout.rollback()
            try rollout.write(to: file)
            print(describe(rollout, file: file))
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the current split and the stages before it.")
        @Argument(help: "The rollout file.") var file: String
        @Flag(help: "Print the file's JSON.") var json = false

        func run() throws {
            let rollout = try Rollout.read(from: file)
            if json {
                print(String(decoding: try Data(contentsOf: URL(fileURLWithPath: file)), as: UTF8.self))
                return
            }
            print(describe(rollout, file: file))
        }
    }

    struct Assign: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write each unit's variant (uint8, its index in the file's variants: 0 the baseline) for an audit of the split.")
        @Argument(help: "The rollout file.") var file: String
        @Option(help: "uint64 or int64 .npy of unit ids.") var units: String
        @Option(help: "Output uint8 .npy, one variant index per unit.") var out: String

        func run() throws {
            let rollout = try Rollout.read(from: file)
            let ids = try NPYFile(path: units).readIDs()
            let variants = rollout.variants(for: ids)
            try NPYWriter.writeUInt8(path: out, values: variants)
            var counts = [Int](repeating: 0, count: rollout.variants.count)
            for v in variants { counts[Int(v)] += 1 }
            let shares = zip(rollout.variants, counts).map { variant, count in
                String(format: "%@ %d (%.3f%%)", variant.name, count, 100 * Double(count) / Double(max(ids.count, 1)))
            }
            print("assigned \(ids.count) units to \(out): " + shares.joined(separator: ", "))
        }
    }

    struct Thresholds: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show or change the thresholds the readiness report checks (the split is not changed).",
            discussion: "Thresholds: " + Rollout.thresholdNames.map { "\($0.key): \($0.value)." }.joined(separator: " "))
        @Argument(help: "The rollout file.") var file: String
        @Option(help: "Set a threshold: NAME=VALUE (repeat).") var set: [String] = []
        @Option(help: "Remove a threshold (repeat).") var unset: [String] = []

        func run() throws {
            var rollout = try Rollout.read(from: file)
            for name in unset {
                guard rollout.thresholds.removeValue(forKey: name) != nil else { throw InputError("\(file) sets no threshold '\(name)'") }
            }
            for (name, value) in try set.map(parseThreshold) { rollout.thresholds[name] = value }
            if !set.isEmpty || !unset.isEmpty { try rollout.write(to: file) }
            for (name, value) in rollout.thresholds.sorted(by: { $0.key < $1.key }) { print("\(name) = \(value)") }
        }
    }
}

/// "recall_drop=0.01" as a name and a value; the name must be one a rollout knows.
private func parseThreshold(_ text: String) throws -> (String, Double) {
    let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
    guard parts.count == 2, let value = Double(parts[1]), value.isFinite else {
        throw InputError("threshold '\(text)' is not NAME=NUMBER")
    }
    guard Rollout.thresholdNames.contains(where: { $0.key == parts[0] }) else {
        throw InputError("unknown threshold '\(parts[0])'; a rollout knows " + Rollout.thresholdNames.map(\.key).joined(separator: ", "))
    }
    return (parts[0], value)
}

private func describe(_ rollout: Rollout, file: String) -> String {
    var lines = ["rollout \(file) (salt \(rollout.salt)), stage \(rollout.history.count + 1) since \(rollout.since):"]
    for variant in rollout.variants {
        lines.append(String(format: "  %-10@ %7.3f%%  %@", variant.name as NSString, 100 * variant.fraction, variant.store as NSString))
    }
    if let previous = rollout.history.last {
        lines.append("  previous stage (rollback returns to it): " + previous.fractions.map { String(format: "%.3f%%", 100 * $0) }.joined(separator: ", ")
                     + " since \(previous.since)")
    }
    return lines.joined(separator: "\n")
}
