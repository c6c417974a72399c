import Foundation
import LMDB

/// Writes a segment's full data parts on a thread of its own while the loading thread encodes
/// the next part, each part in its own write transaction (begun and committed on this thread:
/// a write transaction's mutex belongs to the OS thread that began it).
///
/// Why: committing a 16 MiB part is LMDB copying it into its dirty pages and `pwrite` copying
/// those into the page cache — 27% of a 2M × 64 fp32 ingest, during which the encoding stood
/// still. At most one part waits while one is written, so a load holds three part buffers, and
/// the buffers come back to the caller for reuse (a fresh 16 MiB buffer a part cost page faults).
final class SegmentPartWriter: @unchecked Sendable {
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var pending: [(number: Int, bytes: [UInt8])] = []
    private var spares: [[UInt8]] = []
    private var busy = false
    private var closed = false
    private var failure: (any Error)?
    private var done = false

    /// `write` runs on the writer thread with each part's number and bytes, in order.
    init(write: @escaping @Sendable (_ number: Int, _ bytes: [UInt8]) throws -> Void) {
        // The thread holds the writer until `finish` ends it; `finish` must be called.
        let thread = Thread { self.run(write) }
        thread.name = "embstore segment part writer"
        thread.stackSize = 1 << 20
        thread.start()
    }

    private func run(_ write: (Int, [UInt8]) throws -> Void) {
        while true {
            condition.lock()
            while pending.isEmpty && !closed { condition.wait() }
            if pending.isEmpty {
                done = true
                condition.broadcast()
                condition.unlock()
                return
            }
            var job = pending.removeFirst()
            busy = true
            let failed = failure != nil
            condition.unlock()
            var error: (any Error)?
            if !failed {
                do { try write(job.number, job.bytes) } catch let thrown { error = thrown }
            }
            job.bytes.removeAll(keepingCapacity: true)
            condition.lock()
            if let error, failure == nil { failure = error }
            spares.append(job.bytes)
            busy = false
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Queues part `number`; waits while another part is already waiting. Returns an empty
    /// buffer to build the next part in (a written part's, capacity kept, once there is one).
    /// Throws the writer thread's error, if it had one.
    func send(_ number: Int, _ bytes: [UInt8]) throws -> [UInt8] {
        condition.lock()
        defer { condition.unlock() }
        while !pending.isEmpty && failure == nil { condition.wait() }
        if let failure { throw failure }
        pending.append((number, bytes))
        condition.broadcast()
        return spares.popLast() ?? []
    }

    /// Waits until every queued part is written and the thread has ended; throws its error.
    func finish() throws {
        condition.lock()
        defer { condition.unlock() }
        closed = true
        condition.broadcast()
        while !done { condition.wait() }
        if let failure { throw failure }
    }

}
