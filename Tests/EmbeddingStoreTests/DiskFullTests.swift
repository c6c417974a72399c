import Foundation
import Testing
@testable import EmbeddingStore

/// A load that fills the disk says so (LMDB reports the cut-short write as EIO) and leaves the
/// store as it was: no empty table from the failed first load. Needs a small file system: a
/// 1 MiB tmpfs, which only root may mount (skipped otherwise).
@Suite struct DiskFullTests {
    static func mountSmallFileSystem(at path: String) -> Bool {
        guard getuid() == 0 else { return false }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/mount")
        process.arguments = ["-t", "tmpfs", "-o", "size=1m", "tmpfs", path]
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }

    static func unmount(_ path: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/umount")
        process.arguments = [path]
        try? process.run()
        process.waitUntilExit()
    }

    @Test func aFullDiskSaysSoAndLeavesNoHalfMadeTable() throws {
        let directory = TemporaryDirectory()
        let mount = directory.file("small")
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        guard Self.mountSmallFileSystem(at: mount) else {
            print("[disk full] skipped: cannot mount a tmpfs here (needs root)")
            return
        }
        defer {
            Self.unmount(mount)
            withExtendedLifetime(directory) {}   // removed only once unmounted
        }
        let d = 64, count = 20_000   // 5 MB of float32 rows, 1.3 MB as int8: more than fits
        let rows = embeddingRows(count: count, dimension: d)
        do {
            let store = try Store(path: mount + "/s")
            let small = embeddingRows(count: 100, dimension: d, seed: 2)
            _ = try small.withUnsafeBufferPointer { try store.load(table: "kept", rows: $0, count: 100, dimension: d, policy: .single(.fp32)) }
            #expect {
                try rows.withUnsafeBufferPointer { try store.load(table: "t", rows: $0, count: count, dimension: d, policy: .single(.int8)) }
            } throws: { error in
                "\(error)".contains("is full") && "\(error)".contains("No space left on device")
            }
            store.close()
        }
        let reopened = try Store(path: mount + "/s")
        #expect(try reopened.tableNames() == ["kept"])
        #expect(try reopened.verify().problems.isEmpty)
        #expect(try reopened.export(try reopened.table("kept")).ids.count == 100)
        reopened.close()
    }
}
