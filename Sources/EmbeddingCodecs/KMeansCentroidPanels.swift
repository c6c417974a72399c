// The blocked nearest-centroid kernel behind k-means fitting and bucket assignment.
//
// For a row x the nearest centroid minimises ‖x − c‖² = ‖x‖² − 2x·c + ‖c‖², so the work is the
// matrix product of rows and centroids (2·d flops per pair) plus one compare. Centroids are
// packed into panels of `panelWidth` centroids, stored dimension-major ([t][w]), so that the
// inner loop broadcasts one row value against a contiguous run of centroid values: an axpy that
// auto-vectorises, with no reduction for the compiler to refuse without fast-math. A 4 × 8 tile
// of dot products (`KMeansDotTile`) lives in registers for the whole pass over the dimension; a
// panel (≤ 16 KiB) stays in L1 while a block of rows (≤ 128 KiB) streams past it from L2.
//
// Measured on the build machine (release, SSE baseline, one thread, d = 64, 1024 centroids, a
// busy shared VM): ~110k rows/s, ~14 GFlop/s.

import Dispatch
import Foundation

/// Centroids packed for the blocked distance kernel, with their squared norms.
struct KMeansCentroidPanels {
    /// Rows per register tile.
    static let tileRows = KMeansDotTile.rows
    /// Centroids per register tile (two SSE vectors).
    static let tileCentroids = KMeansDotTile.columns

    let dimension: Int
    let count: Int
    /// Centroids per panel, a multiple of `tileCentroids`.
    let panelWidth: Int
    let panelCount: Int
    /// Rows per block: a block of rows stays in L2 while every panel passes over it.
    let blockRows: Int
    /// `panelCount × dimension × panelWidth`; centroids past `count` are zero.
    private var packed: [Float]
    /// ‖c‖² per padded centroid; +∞ for padding, so padding never wins a nearest search.
    private var norms: [Float]
    /// 1 / ‖c‖² per padded centroid. 0 for zero centroids, which makes their projection score 0
    /// (a scale on a zero centroid cannot beat predicting zero); −∞ for padding, whose score is
    /// then 0 · −∞ = NaN and never wins, even for a NaN row that no real centroid scores.
    private var inverseNorms: [Float]

    /// Packs `count` centroids (row-major `count × dimension`).
    init(centroids: UnsafePointer<Float>, count: Int, dimension: Int) {
        precondition(count >= 1 && dimension >= 1, "need at least one centroid of dimension ≥ 1")
        self.dimension = dimension
        self.count = count
        let tile = Self.tileCentroids
        // 16 KiB of panel: 64 centroids at d = 64, 8 at d ≥ 512.
        panelWidth = min(64, max(tile, 4096 / dimension / tile * tile))
        panelCount = (count + panelWidth - 1) / panelWidth
        blockRows = max(Self.tileRows, 32768 / dimension / Self.tileRows * Self.tileRows)
        let padded = panelCount * panelWidth
        packed = [Float](repeating: 0, count: padded * dimension)
        norms = [Float](repeating: .infinity, count: padded)
        inverseNorms = [Float](repeating: -.infinity, count: padded)
        for j in 0..<count {
            let source = centroids + j * dimension
            let panel = j / panelWidth, lane = j % panelWidth
            let start = panel * dimension * panelWidth + lane
            var squaredNorm = 0.0
            for t in 0..<dimension {
                packed[start + t * panelWidth] = source[t]
                squaredNorm += Double(source[t]) * Double(source[t])
            }
            norms[j] = Float(squaredNorm)
            inverseNorms[j] = squaredNorm > 0 ? Float(1 / squaredNorm) : 0
        }
    }

    /// For each of `count` rows: the centroid minimising ‖c‖² − 2x·c (the nearest), and when
    /// `projected` is given, the centroid maximising (x·c)² / ‖c‖² (the best least-squares scaled
    /// fit). Ties go to the lower centroid index; rows with NaN get centroid 0.
    ///
    /// - Parameters:
    ///   - rows: row-major `count × dimension`.
    ///   - nearestScore: if given, receives min ‖c‖² − 2x·c (add ‖x‖² for the squared distance).
    /// `scan`, with the rows split across the machine's cores. Rows are independent, so the
    /// result is the same as one `scan`; measured ~1.9× on 2 cores for 1M × 64 × 1024.
    func scanConcurrently(
        rows: UnsafePointer<Float>, count rowCount: Int,
        nearest: UnsafeMutablePointer<UInt32>, nearestScore: UnsafeMutablePointer<Float>?,
        projected: UnsafeMutablePointer<UInt32>?
    ) {
        let parts = max(1, min(ProcessInfo.processInfo.activeProcessorCount, rowCount / 4096))
        guard parts > 1 else {
            return scan(rows: rows, count: rowCount, nearest: nearest, nearestScore: nearestScore, projected: projected)
        }
        // Each part writes only its own rows' outputs.
        nonisolated(unsafe) let (rows, nearest, nearestScore, projected) = (rows, nearest, nearestScore, projected)
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            let start = rowCount * part / parts, end = rowCount * (part + 1) / parts
            scan(rows: rows + start * dimension, count: end - start, nearest: nearest + start,
                 nearestScore: nearestScore.map { $0 + start }, projected: projected.map { $0 + start })
        }
    }

    func scan(
        rows: UnsafePointer<Float>, count rowCount: Int,
        nearest: UnsafeMutablePointer<UInt32>, nearestScore: UnsafeMutablePointer<Float>?,
        projected: UnsafeMutablePointer<UInt32>?
    ) {
        let d = dimension
        let tileRows = Self.tileRows, tileCentroids = Self.tileCentroids
        let block = blockRows
        let bestScore = UnsafeMutablePointer<Float>.allocate(capacity: block)
        let bestID = UnsafeMutablePointer<UInt32>.allocate(capacity: block)
        let projectionScore = UnsafeMutablePointer<Float>.allocate(capacity: block)
        let projectionID = UnsafeMutablePointer<UInt32>.allocate(capacity: block)
        // Zero-padded copy of a final partial row tile, so the kernel never branches on it.
        let tailRows = UnsafeMutablePointer<Float>.allocate(capacity: tileRows * d)
        defer {
            bestScore.deallocate(); bestID.deallocate()
            projectionScore.deallocate(); projectionID.deallocate()
            tailRows.deallocate()
        }
        let wantProjection = projected != nil
        packed.withUnsafeBufferPointer { packedBuffer in
            norms.withUnsafeBufferPointer { normBuffer in
                inverseNorms.withUnsafeBufferPointer { inverseBuffer in
                    // Non-nil: count ≥ 1 and dimension ≥ 1, so every array is non-empty.
                    let panels = packedBuffer.baseAddress!
                    let norm = normBuffer.baseAddress!
                    let inverse = inverseBuffer.baseAddress!
                    var blockStart = 0
                    while blockStart < rowCount {
                        let blockEnd = min(blockStart + block, rowCount)
                        for r in 0..<(blockEnd - blockStart) {
                            bestScore[r] = .infinity; bestID[r] = 0
                            projectionScore[r] = -1; projectionID[r] = 0
                        }
                        for panelIndex in 0..<panelCount {
                            let panel = panels + panelIndex * d * panelWidth
                            let firstCentroid = panelIndex * panelWidth
                            var r0 = blockStart
                            while r0 < blockEnd {
                                let live = min(tileRows, blockEnd - r0)
                                var tile = rows + r0 * d
                                if live < tileRows {
                                    tailRows.initialize(repeating: 0, count: tileRows * d)
                                    tailRows.update(from: tile, count: live * d)
                                    tile = UnsafePointer(tailRows)
                                }
                                var w0 = 0
                                while w0 < panelWidth {
                                    let dots = KMeansDotTile.multiplyAccumulate(
                                        left: tile, leftRowStride: d,
                                        right: panel + w0, rightStep: panelWidth, depth: d)
                                    let first = firstCentroid + w0
                                    for r in 0..<live {
                                        let slot = r0 - blockStart + r
                                        var score = bestScore[slot], id = bestID[slot]
                                        for w in 0..<tileCentroids {
                                            let candidate = norm[first &+ w] - 2 * dots[r &* tileCentroids &+ w]
                                            if candidate < score {
                                                score = candidate
                                                id = UInt32(truncatingIfNeeded: first &+ w)
                                            }
                                        }
                                        bestScore[slot] = score; bestID[slot] = id
                                        if wantProjection {
                                            var best = projectionScore[slot], bestIndex = projectionID[slot]
                                            for w in 0..<tileCentroids {
                                                let dot = dots[r &* tileCentroids &+ w]
                                                let candidate = dot * dot * inverse[first &+ w]
                                                if candidate > best {
                                                    best = candidate
                                                    bestIndex = UInt32(truncatingIfNeeded: first &+ w)
                                                }
                                            }
                                            projectionScore[slot] = best; projectionID[slot] = bestIndex
                                        }
                                    }
                                    w0 += tileCentroids
                                }
                                r0 += tileRows
                            }
                        }
                        for r in 0..<(blockEnd - blockStart) {
                            nearest[blockStart + r] = bestID[r]
                            nearestScore?[blockStart + r] = bestScore[r]
                            projected?[blockStart + r] = projectionID[r]
                        }
                        blockStart = blockEnd
                    }
                }
            }
        }
    }
}
