import Foundation
import NPY

/// The float tables of a TorchRec state dict as `tools/torchrec_export.py` writes them from a
/// `.pt`: a directory of `TABLE.npy` files, or an `.npz` (numpy.savez) of them. Each
/// `embedding_bags.TABLE.weight` tensor [N, d] becomes `TABLE.npy`; row i is the embedding of
/// id i, so tables load with ids 0..N-1.
enum StateDictTables {
    /// The tables in `path`, by name (the file or member name without `.npy`), in name order.
    static func read(_ path: String) throws -> [(name: String, file: NPYFile)] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw InputError("\(path): no such file or directory (a state dict is a directory of TABLE.npy or an .npz; tools/torchrec_export.py writes both)")
        }
        if isDirectory.boolValue {
            let names = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".npy") }.sorted()
            return try names.map { (String($0.dropLast(4)), try NPYFile(path: (path as NSString).appendingPathComponent($0))) }
        }
        return try NPZArchive.members(path: path).filter { $0.name.hasSuffix(".npy") }.sorted { $0.name < $1.name }.map {
            (String($0.name.dropLast(4)), try NPYFile(path: path, member: $0))
        }
    }
}
