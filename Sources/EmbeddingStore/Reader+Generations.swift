import LMDB

/// How a reader follows its store to a new generation (FORMAT.md, "Generations").
///
/// At the start of each batch, and only there, a reader compares the store's move count with
/// the one it saw last (one atomic load) and, at most every `Store.pointerCheckInterval` for the
/// whole store, has the store read its pointer. When the store moved, the reader begins its
/// read transaction on the new generation and drops the old one: a batch is always read from
/// one snapshot of one generation, wholly old or wholly new, and a batch in flight on another
/// reader finishes on the snapshot it began with. The old environment closes when the last
/// reader (and the store) let go of it.
extension Reader {
    /// The batch-boundary hook.
    @inline(__always)
    func followStoreIfMoved() {
        if store.pointerCheckDue() { store.followPointer() }
        if store.generationSerial.load(ordering: .acquiring) != generationSerial { moveToStoreGeneration() }
    }

    /// Moves to the store's current generation. On failure (the new environment cannot be read
    /// yet) it stays where it is, a complete snapshot still, and tries again at the next batch.
    func moveToStoreGeneration() {
        let serial = store.generationSerial.load(ordering: .acquiring)
        let next = store.generation
        guard next !== generation else {
            generationSerial = serial
            return
        }
        guard var fresh = try? next.environment.beginRead() else { return }
        fresh.reset()
        txn = fresh   // ends the old generation's transaction (it was reset: no snapshot held)
        views.removeAll()
        generation = next   // the old generation's last reader lets go here
        generationSerial = serial
    }

    /// True when this reader reads the store's current generation (an idle reader may lag until
    /// its next batch).
    var isOnCurrentGeneration: Bool {
        store.generationSerial.load(ordering: .acquiring) == generationSerial
    }
}
