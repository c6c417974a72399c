import Testing
@testable import EmbeddingCodecs

/// The half arithmetic under the int4h / int2h encoders: rounding to the nearest half with
/// saturation, stepping between neighbouring halves, exact widening.
@Suite struct HalfRowwiseQuantizerTests {
    @Test func widenIsExactForEveryFiniteHalf() {
        for bits in UInt16.min...UInt16.max where bits & 0x7C00 != 0x7C00 {
            #expect(HalfBits.widen(bits) == HalfRowwiseCodecChecks.half(bits), "\(bits)")
            #expect(HalfBits.widen(bits).sign == (bits & 0x8000 != 0 ? .minus : .plus))
        }
        #expect(HalfBits.widen(0x7C00) == .infinity && HalfBits.widen(0xFC00) == -.infinity)
        #expect(HalfBits.widen(0x7C01).isNaN && HalfBits.widen(0x7C01).bitPattern & 0x0040_0000 != 0, "NaN comes out quiet")
    }

    @Test func nearestRoundsToNearestEvenAndSaturates() {
        // Every finite half rounds to itself, and midpoints between neighbours go to the even one.
        for magnitude in UInt16(0)...0x7BFF {
            for sign: UInt16 in [0, 0x8000] {
                let half = HalfBits(bits: sign | magnitude)
                #expect(HalfBits(nearest: Double(half.value)).value == half.value)
                guard magnitude < 0x7BFF else { continue }
                let next = HalfBits(bits: sign | (magnitude + 1))
                let midpoint = (Double(half.value) + Double(next.value)) / 2
                let even = magnitude & 1 == 0 ? half : next
                #expect(HalfBits(nearest: midpoint).value == even.value, "midpoint \(midpoint)")
                // Just inside the midpoint, towards `half`: `half`.
                let inside = sign == 0 ? midpoint.nextDown : midpoint.nextUp
                #expect(HalfBits(nearest: inside).bits == half.bits, "just inside \(midpoint)")
            }
        }
        for x in [65504.0, 65519.99, 65520, 1e6, 1e300] {
            #expect(HalfBits(nearest: x).bits == 0x7BFF && HalfBits(nearest: -x).bits == 0xFBFF, "\(x)")
        }
        #expect(HalfBits(nearest: 0x1p-26).bits == 0 && HalfBits(nearest: 0x1p-25 + 0x1p-60).bits == 1)
        #expect(HalfBits(nearest: -0.0).bits == 0x8000)
    }

    @Test func steppingWalksTheHalvesInValueOrder() {
        var current = HalfBits(bits: 0xFBFF) // −65504
        var count = 1
        while let next = current.stepped(by: 1) {
            #expect(next.value > current.value, "\(current.bits) → \(next.bits)")
            current = next
            count += 1
        }
        #expect(current.bits == 0x7BFF && count == 2 * 0x7BFF + 1, "±0 count once")
        #expect(HalfBits(bits: 0x7BFF).stepped(by: 1) == nil && HalfBits(bits: 0xFBFF).stepped(by: -1) == nil)
        #expect(HalfBits(bits: 0x8000).stepped(by: 1)?.bits == 1 && HalfBits(bits: 0).stepped(by: -1)?.bits == 0x8001)
    }
}
