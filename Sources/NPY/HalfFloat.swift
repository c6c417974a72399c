// IEEE 754 binary16 conversions done on bit patterns rather than with Swift's `Float16`,
// which is unavailable on Intel macOS.

/// Widens a binary16 bit pattern to Float; exact for every input, NaN payloads kept.
func floatFromHalfBits(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = UInt32(h >> 10) & 0x1f
    let mantissa = UInt32(h & 0x3ff)
    switch exponent {
    case 0:
        // Zero or subnormal: mantissa × 2⁻²⁴, exact in Float.
        let magnitude = Float(mantissa) * 0x1p-24
        return sign == 0 ? magnitude : -magnitude
    case 0x1f:
        return Float(bitPattern: sign | 0x7f80_0000 | mantissa << 13)
    default:
        return Float(bitPattern: sign | (exponent + 112) << 23 | mantissa << 13)
    }
}

/// Narrows a Float to a binary16 bit pattern, rounding to nearest with ties to even (as numpy does).
func halfBitsFromFloat(_ f: Float) -> UInt16 {
    let bits = f.bitPattern
    let sign = UInt16(truncatingIfNeeded: bits >> 16) & 0x8000
    let biasedExponent = Int(bits >> 23) & 0xff
    let mantissa = bits & 0x7f_ffff
    if biasedExponent == 0xff {
        // Keep NaNs NaN (quiet, top payload bits kept) and infinities infinite.
        return sign | 0x7c00 | (mantissa == 0 ? 0 : 0x200 | UInt16(mantissa >> 13))
    }
    let exponent = biasedExponent - 127
    if exponent > 15 { return sign | 0x7c00 }
    if exponent < -25 { return sign }  // below half the smallest subnormal: rounds to zero
    // The significand with its implicit bit, and how many low bits binary16 has no room for.
    let significand = exponent >= -14 ? mantissa : mantissa | 0x80_0000
    let shift = exponent >= -14 ? 13 : -(exponent + 1)
    var result = UInt32(exponent >= -14 ? exponent + 15 : 0) << 10 | significand >> shift
    let dropped = significand & (1 << shift - 1)
    let half = UInt32(1) << (shift - 1)
    // A carry out of the mantissa correctly bumps the exponent, up to infinity.
    if dropped > half || (dropped == half && result & 1 == 1) { result += 1 }
    return sign | UInt16(result)
}
