@testable import EmbeddingCodecs
import Testing

@Suite("k-means random stream")
struct KMeansRandomTests {
    @Test("a seed fixes the stream; different seeds differ")
    func reproducible() {
        var a = KMeansRandom(seed: 0x5EED), b = KMeansRandom(seed: 0x5EED), c = KMeansRandom(seed: 0)
        let first = (0..<8).map { _ in a.next() }
        #expect(first == (0..<8).map { _ in b.next() })
        #expect(first != (0..<8).map { _ in c.next() })
    }

    @Test("index(below:) and unit() stay in range")
    func ranges() {
        var random = KMeansRandom(seed: 1)
        for bound in [1, 2, 3, 1000, Int(UInt32.max)] {
            for _ in 0..<200 { #expect((0..<bound).contains(random.index(below: bound))) }
        }
        for _ in 0..<1000 {
            let u = random.unit()
            #expect(u >= 0 && u < 1)
        }
    }

    @Test("sortedSample returns exactly count distinct increasing indices, roughly uniformly")
    func selectionSampling() {
        var random = KMeansRandom(seed: 2)
        for (count, population) in [(0, 5), (5, 5), (1, 1), (37, 100), (500, 3000)] {
            let sample = random.sortedSample(count: count, from: population)
            #expect(sample.count == count)
            #expect(zip(sample, sample.dropFirst()).allSatisfy { $0 < $1 })
            #expect(sample.allSatisfy { (0..<population).contains($0) })
        }
        // Each index of 0..<10 is drawn with probability 3/10; over 20,000 draws of 3 the counts
        // should sit within a few standard deviations (~65) of 6,000.
        var hits = [Int](repeating: 0, count: 10)
        for _ in 0..<20_000 {
            for index in random.sortedSample(count: 3, from: 10) { hits[index] += 1 }
        }
        #expect(hits.allSatisfy { abs($0 - 6000) < 400 }, "\(hits)")
    }
}
