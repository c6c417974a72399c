import CLMDB
import Foundation
import Testing
@testable import LMDB

@Suite struct LMDBErrorTests {
    @Test(arguments: [
        (LMDBError.keyExists, MDB_KEYEXIST, "MDB_KEYEXIST"),
        (.notFound, MDB_NOTFOUND, "MDB_NOTFOUND"),
        (.corrupted, MDB_CORRUPTED, "MDB_CORRUPTED"),
        (.panic, MDB_PANIC, "MDB_PANIC"),
        (.versionMismatch, MDB_VERSION_MISMATCH, "MDB_VERSION_MISMATCH"),
        (.invalid, MDB_INVALID, "MDB_INVALID"),
        (.mapFull, MDB_MAP_FULL, "MDB_MAP_FULL"),
        (.databasesFull, MDB_DBS_FULL, "MDB_DBS_FULL"),
        (.readersFull, MDB_READERS_FULL, "MDB_READERS_FULL"),
        (.transactionFull, MDB_TXN_FULL, "MDB_TXN_FULL"),
        (.mapResized, MDB_MAP_RESIZED, "MDB_MAP_RESIZED"),
        (.incompatible, MDB_INCOMPATIBLE, "MDB_INCOMPATIBLE"),
        (.badReaderSlot, MDB_BAD_RSLOT, "MDB_BAD_RSLOT"),
        (.badTransaction, MDB_BAD_TXN, "MDB_BAD_TXN"),
        (.badValueSize, MDB_BAD_VALSIZE, "MDB_BAD_VALSIZE"),
        (.badDatabase, MDB_BAD_DBI, "MDB_BAD_DBI"),
    ])
    func staticMembersMatchLMDBCodes(error: LMDBError, code: Int32, name: String) {
        #expect(error.code == code)
        #expect(error.description.hasPrefix(name), "description is mdb_strerror's text: \(error.description)")
        #expect(error.description == String(cString: mdb_strerror(code)) + (error.hint.map { " (\($0))" } ?? ""))
    }

    @Test func descriptionHasContextStrerrorAndHint() {
        let error = LMDBError(code: MDB_MAP_FULL, context: "writing key 7 in vectors")
        #expect(error.description.hasPrefix("writing key 7 in vectors: "))
        #expect(error.description.contains(String(cString: mdb_strerror(MDB_MAP_FULL))))
        #expect(error.description.contains("larger map size"))
        #expect(error.description.hasSuffix("(\(error.hint!))"))
    }

    @Test func errnoCodesUseStrerror() {
        let error = LMDBError(code: EACCES, context: "x")
        #expect(error.description.contains("Permission denied"))
        #expect(error.description.contains("read-only"))
        #expect(LMDBError(code: ENOENT).description.contains("No such file or directory"))
    }

    @Test func unknownCodesArePreserved() {
        let error = LMDBError(code: 12345, context: "somewhere")
        #expect(error.code == 12345)
        #expect(error.hint == nil)
        #expect(error.description.hasPrefix("somewhere: "))
        #expect(error.description.contains("12345"))
        #expect(error != .notFound)
    }

    @Test func equalityAndHashingIgnoreContext() {
        let a = LMDBError(code: MDB_NOTFOUND, context: "one")
        let b = LMDBError(code: MDB_NOTFOUND, context: "two")
        #expect(a == b)
        #expect(a == .notFound)
        #expect(Set([a, b, .keyExists]).count == 2)
        #expect(a.context == "one")
    }

    @Test func resizeBlockedHasItsOwnText() {
        let error = LMDBError.resizeBlocked
        #expect(error.description.contains("could not be grown"))
        #expect(error.hint?.contains("larger map size") == true)
        #expect(error.description.contains(error.hint!))
        #expect(error != .mapFull)
    }

    @Test func everyHintedErrorHasAnActionableHint() {
        for code in [MDB_MAP_FULL, MDB_READERS_FULL, MDB_DBS_FULL, MDB_VERSION_MISMATCH, MDB_INVALID,
                     MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_BAD_VALSIZE, MDB_INCOMPATIBLE, EACCES, ENOENT, MDB_BAD_TXN,
                     EDEADLK] {
            let error = LMDBError(code: code)
            guard let hint = error.hint else {
                Issue.record("code \(code) has no hint")
                continue
            }
            #expect(error.description.contains(hint))
        }
    }
}
