import EmbeddingCodecs
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

/// FBGEMM's fused rows in a uint8 `.npy` [N, row bytes] (as torch's prepack returns them), as
/// the payloads of the store's records: handed out from the file's map, never copied or changed.
struct NPYPackedRows: EncodedRowSource {
    let file: NPYFile
    let layout: FBGEMMFusedRows
    let count: Int
    let dimension: Int
    let payloadSize: Int
    var codec: Codec { layout.codec }

    /// `file` must be a uint8 [N, layout.rowBytes(dimension:)] array.
    init(_ file: NPYFile, layout: FBGEMMFusedRows, dimension: Int) {
        self.file = file
        self.layout = layout
        self.dimension = dimension
        payloadSize = layout.rowBytes(dimension: dimension)
        count = file.rawData.count / payloadSize
    }

    func withPayloads<R>(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        try body(UnsafeRawBufferPointer(rebasing: file.rawData[range.lowerBound * payloadSize..<range.upperBound * payloadSize]))
    }

    func release() { file.releaseResidentPages() }

    /// The first row the layout refuses (`FBGEMMFusedRows.problem`) and why; nil when none is.
    func firstProblem() -> (row: Int, problem: String)? {
        defer { release() }
        let data = file.rawData
        for row in 0..<count {
            if let problem = layout.problem(with: UnsafeRawBufferPointer(rebasing: data[row * payloadSize..<(row + 1) * payloadSize]),
                                            dimension: dimension) {
                return (row, problem)
            }
        }
        return nil
    }
}
