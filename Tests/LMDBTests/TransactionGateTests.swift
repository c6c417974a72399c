import Foundation
import Synchronization
import Testing
@testable import LMDB

@Suite struct TransactionGateTests {
    @Test func exclusiveRunsImmediatelyWhenNothingIsActive() {
        let gate = TransactionGate()
        #expect(gate.exclusive(timeout: 0) { 42 } == 42)
        #expect(gate.enter())
        gate.leave()
        #expect(gate.exclusive(timeout: 0) { "again" } == "again")
    }

    @Test func exclusiveTimesOutWhileATransactionIsActive() {
        let gate = TransactionGate()
        #expect(gate.enter())
        var ran = false
        let elapsed = seconds { #expect(gate.exclusive(timeout: 0.1) { ran = true } == nil) }
        #expect(!ran)
        #expect(elapsed >= 0.1, "gave up before the timeout")
        // The gate reopened after the timeout.
        #expect(gate.enter())
        gate.leave()
        gate.leave()
        #expect(gate.exclusive(timeout: 0) { true } == true)
    }

    @Test func exclusiveWaitsForAnotherThreadToLeave() {
        let gate = TransactionGate()
        let left = Atomic<Bool>(false)
        #expect(gate.enter())
        let thread = TestThread {
            usleep(100_000)   // lets exclusive start waiting; the outcome does not depend on it
            left.store(true, ordering: .sequentiallyConsistent)
            gate.leave()
        }
        #expect(gate.exclusive(timeout: patience) { left.load(ordering: .sequentiallyConsistent) } == true)
        #expect(thread.join())
    }

    @Test func enterWaitsWhileExclusiveRuns() {
        let gate = TransactionGate()
        let inside = DispatchSemaphore(value: 0)
        let exclusiveDone = Atomic<Bool>(false)
        let thread = TestThread {
            gate.exclusive(timeout: patience) {
                inside.signal()
                usleep(100_000)   // lets enter start waiting; the outcome does not depend on it
                exclusiveDone.store(true, ordering: .sequentiallyConsistent)
            }
        }
        inside.wait()
        #expect(gate.enter())
        #expect(exclusiveDone.load(ordering: .sequentiallyConsistent) == true, "entered while the exclusive body ran")
        gate.leave()
        #expect(thread.join())
    }

    @Test func closedGateRefusesEveryone() {
        let gate = TransactionGate()
        #expect(gate.exclusive(timeout: 0, close: true) { 1 } == 1)
        #expect(gate.isClosed)
        #expect(!gate.enter())
        #expect(gate.exclusive(timeout: 0) { 2 } == nil)
    }

    @Test func failedCloseLeavesTheGateOpen() {
        let gate = TransactionGate()
        #expect(gate.enter())
        #expect(gate.exclusive(timeout: 0.01, close: true) { 1 } == nil)
        #expect(!gate.isClosed)
        gate.leave()
        #expect(gate.enter())
        gate.leave()
    }

    @Test func exclusiveBodyMayEnterOnItsOwnThreadAndNest() {
        let gate = TransactionGate()
        let otherEntered = Atomic<Bool>(false)
        var other: TestThread?
        let result: Int? = gate.exclusive(timeout: patience) {
            #expect(gate.enter(), "the owner thread enters its own exclusive section")
            // Another thread still waits.
            other = TestThread {
                if gate.enter() {
                    otherEntered.store(true, ordering: .sequentiallyConsistent)
                    gate.leave()
                }
            }
            usleep(50_000)   // gives the other thread time to try; it must not get in either way
            #expect(otherEntered.load(ordering: .sequentiallyConsistent) == false)
            // Nested exclusive: refused at once while this thread's own transaction is active...
            #expect(gate.exclusive(timeout: 5) { 1 } == nil)
            gate.leave()
            // ...and run at once when it is not.
            let nested = gate.exclusive(timeout: patience) { 2 }
            return nested ?? -1
        }
        #expect(result == 2)
        #expect(other?.join() == true)
        #expect(otherEntered.load(ordering: .sequentiallyConsistent) == true)
    }

    @Test func finishingOnlyWaitsForClose() {
        let gate = TransactionGate()
        // A map growth in progress does not hold up freeing a reset transaction.
        let finished = Atomic<Bool>(false)
        let finishedDuringGrowth = Atomic<Bool>(false)
        let inside = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
        let grower = TestThread {
            gate.exclusive(timeout: patience) {
                inside.signal()
                // Holds the exclusive section until the finishing transaction is through (were
                // it held up by the section, `patience` would run out and the check fail).
                _ = done.wait(timeout: .now() + patience)
                finishedDuringGrowth.store(finished.load(ordering: .sequentiallyConsistent), ordering: .sequentiallyConsistent)
            }
        }
        inside.wait()
        #expect(gate.enterFinishing())
        gate.leaveFinishing()
        finished.store(true, ordering: .sequentiallyConsistent)
        done.signal()
        #expect(grower.join())
        #expect(finishedDuringGrowth.load(ordering: .sequentiallyConsistent) == true)
        // After a close it fails.
        #expect(gate.exclusive(timeout: patience, close: true) { true } == true)
        #expect(!gate.enterFinishing())
        #expect(finished.load(ordering: .sequentiallyConsistent) == true)
    }

    /// Many threads entering and leaving while others run exclusive sections: an exclusive body
    /// never overlaps an active transaction.
    @Test func exclusiveNeverOverlapsActiveTransactions() {
        let gate = TransactionGate()
        let active = Atomic<Int>(0)
        let overlaps = Atomic<Int>(0)
        let exclusives = Atomic<Int>(0)
        let threads = (0..<4).map { index in
            TestThread {
                for _ in 0..<2000 {
                    if index == 0 {
                        _ = gate.exclusive(timeout: patience) {
                            if active.load(ordering: .sequentiallyConsistent) != 0 { overlaps.add(1, ordering: .relaxed) }
                            exclusives.add(1, ordering: .relaxed)
                        }
                    } else {
                        guard gate.enter() else { return }
                        active.add(1, ordering: .sequentiallyConsistent)
                        active.subtract(1, ordering: .sequentiallyConsistent)
                        gate.leave()
                    }
                }
            }
        }
        for thread in threads { #expect(thread.join()) }
        #expect(overlaps.load(ordering: .relaxed) == 0)
        #expect(exclusives.load(ordering: .relaxed) == 2000)
    }
}
