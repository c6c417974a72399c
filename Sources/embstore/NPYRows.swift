import EmbeddingStore
import NPY

/// The rows of a float32 or float16 `.npy` matrix as a load reads them: a stretch at a time
/// from the file's map (float32, aligned: no copy) or converted into a buffer (float16, or an
/// unaligned float32 payload), the map's pages dropped when the load releases them.
struct NPYRows: RowSource {
    let file: NPYFile
    let count: Int
    let dimension: Int

    init(_ file: NPYFile) throws {
        self.file = file
        (count, dimension) = try file.matrixShape()
    }

    func withRows<R>(_ range: Range<Int>, _ body: (UnsafeBufferPointer<Float>) throws -> R) throws -> R {
        let data = file.rawData
        if file.dtype == .float32, let base = data.baseAddress, Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 {
            let floats = base.assumingMemoryBound(to: Float.self)
            return try body(UnsafeBufferPointer(start: floats + range.lowerBound * dimension, count: range.count * dimension))
        }
        return try withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, range.count * dimension)) { buffer in
            try file.readFloatRows(range, into: buffer)
            return try body(UnsafeBufferPointer(rebasing: buffer[0..<range.count * dimension]))
        }
    }

    func release() { file.releaseResidentPages() }
}
