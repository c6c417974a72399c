// Seeded randomness for k-means fitting. The generator is spelled out here instead of using the
// standard library's SystemRandomNumberGenerator so that a codebook is a pure function of
// (rows, parameters, seed) on every platform and toolchain: a store rebuilt from the same sample
// gets the same buckets.

/// SplitMix64 (Steele, Lea & Flood 2014): 64-bit state, statistically strong enough for sampling,
/// and every seed, including 0, gives a full-period stream. The one generator of the package:
/// k-means here, and evaluation's query draws and the demo's tables build on it.
package struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    package init(seed: UInt64) { state = seed }

    /// Stream `stream` of `seed`: independent draws for each use of one seed.
    package init(seed: UInt64, stream: UInt64) { state = seed ^ (stream &* 0xD1B5_4A32_D192_ED03) }

    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// SplitMix64 with the draws k-means uses.
struct KMeansRandom: RandomNumberGenerator {
    private var core: SplitMix64

    init(seed: UInt64) { core = SplitMix64(seed: seed) }

    mutating func next() -> UInt64 { core.next() }

    /// Uniform in 0 ..< bound by the multiply-high method; the bias, bound / 2⁶⁴, is irrelevant
    /// for sampling rows and keeps one draw per call (so streams stay reproducible).
    mutating func index(below bound: Int) -> Int {
        precondition(bound > 0, "bound must be positive")
        return Int(next().multipliedFullWidth(by: UInt64(bound)).high)
    }

    /// Uniform in [0, 1) with 53 random bits.
    mutating func unit() -> Double {
        Double(next() >> 11) * 0x1p-53
    }

    /// `count` distinct indices from 0 ..< population, in increasing order (Knuth's selection
    /// sampling, Algorithm S): one pass, no extra memory, and increasing order makes the copy of
    /// the selected rows a forward scan of the table.
    mutating func sortedSample(count: Int, from population: Int) -> [Int] {
        precondition(count >= 0 && count <= population, "sample larger than population")
        var chosen: [Int] = []
        chosen.reserveCapacity(count)
        var needed = count
        var candidate = 0
        while needed > 0 {
            // Selects the candidate with probability needed / remaining, which is exactly uniform
            // over all subsets and always finishes with `count` indices.
            if self.index(below: population - candidate) < needed {
                chosen.append(candidate)
                needed -= 1
            }
            candidate += 1
        }
        return chosen
    }
}
