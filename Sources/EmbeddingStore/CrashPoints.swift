import Foundation
import Synchronization

/// Named steps of the writers where a test can have the process kill itself with SIGKILL, to
/// crash a write at an exact point instead of at a random time: `EMBSTORE_CRASH_AT=<point>`
/// kills at the point's first pass, `<point>:<n>` at its n-th. Used by the crash tests and
/// `tools/crash_loop.py`; unset, a point costs a load of a static and a compare.
///
/// Points: `load.table-created` (a load's `creating/<name>` committed), `load.parameters-stored`,
/// `segment.part-written` (after each data part's commit), `segment.before-commit`,
/// `segment.committed` (after the commit that made the segment visible), `perkey.committed`
/// (after each per-key transaction), `compact.copied`, `compact.before-publish`; a generation
/// swap (`compact --in-place`, `repack --in-place`): `swap.staged` (the new generation complete in
/// its staging directory), `swap.published` (renamed into place, `CURRENT` not yet written),
/// `swap.pointer-written` (`CURRENT` names it, the old generation not yet marked `retired`),
/// `swap.retired` (marked); repack: `repack.built` (the new store's tables written, before its
/// compacting copy and verify), `repack.verified` (before the rename to NEW, or to
/// `STORE/repack-<pid>` in place), `repack.staged` (in place: before the swap). The embstore
/// command also takes `lmdb.fault`: at its start it makes liblmdb read through a wild pointer,
/// for the test of `Environment.installDamageGuard`.
enum CrashPoints {
    private static let target: (point: String, pass: Int)? = {
        guard let text = ProcessInfo.processInfo.environment["EMBSTORE_CRASH_AT"], !text.isEmpty else { return nil }
        let parts = text.split(separator: ":", maxSplits: 1)
        return (String(parts[0]), parts.count == 2 ? max(1, Int(parts[1]) ?? 1) : 1)
    }()
    private static let passes = Atomic<Int>(0)

    /// Kills this process with SIGKILL when `point` is the one named, at the pass asked for.
    static func reach(_ point: String) {
        guard let target, target.point == point else { return }
        if passes.add(1, ordering: .relaxed).newValue == target.pass {
            kill(getpid(), SIGKILL)
        }
    }
}
