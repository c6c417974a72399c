/// The scratch space of a lookup's set-aside records (`Reader.decodeSetAside`).
struct DeferredRows {
    var positions = UnsafeMutablePointer<(key: UInt64, position: Int)>.allocate(capacity: 1)
    var records = UnsafeMutablePointer<UnsafeRawBufferPointer>.allocate(capacity: 1)
    var ids = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    var rows = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    private var capacity = 1
    private var rowCapacity = 1

    /// Room for `count` rows of `dimension` floats.
    @inline(__always)
    mutating func reserve(_ count: Int, dimension: Int) {
        if capacity < count {
            deallocateIndexes()
            capacity = count
            positions = .allocate(capacity: count)
            records = .allocate(capacity: count)
            ids = .allocate(capacity: count)
        }
        if rowCapacity < count * dimension {
            rows.deallocate()
            rowCapacity = count * dimension
            rows = .allocate(capacity: rowCapacity)
        }
    }

    private func deallocateIndexes() {
        positions.deallocate()
        records.deallocate()
        ids.deallocate()
    }

    func deallocate() {
        deallocateIndexes()
        rows.deallocate()
    }
}
