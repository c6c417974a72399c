#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Array bytes are copied straight between the file and Swift values.
#if _endian(big)
#error("NPY assumes a little-endian host")
#endif

/// An element type this module can read and write. `float64` is read only where a caller asks
/// for it (`NPYFile(path:allowFloat64:)`, for counts); rows and ids are never float64.
public enum NPYDType: String, Sendable, Equatable {
    case float32, float16, int64, uint64, float64, uint8

    /// Bytes per element.
    public var itemSize: Int {
        switch self {
        case .float32: 4
        case .float16: 2
        case .int64, .uint64, .float64: 8
        case .uint8: 1
        }
    }

    /// The little-endian numpy descr string, e.g. `"<f4"`.
    public var descr: String {
        switch self {
        case .float32: "<f4"
        case .float16: "<f2"
        case .int64: "<i8"
        case .uint64: "<u8"
        case .float64: "<f8"
        case .uint8: "|u1"
        }
    }

    /// The human-readable list used in error messages.
    static let supportedText =
        "supported: '<f4' (float32), '<f2' (float16), '<i8' (int64), '<u8' (uint64), '<f8' (float64, for counts), '|u1' (uint8, for FBGEMM's packed rows), little-endian, C order"
}

/// A failure to read or write a .npy file; `message` says what is wrong and what is supported.
public struct NPYError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file the error is about.
    public let path: String
    /// What is wrong, e.g. `"truncated: expected 48 bytes of data, found 45"`.
    public let message: String

    /// Creates an error about `path`.
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }

    /// `"PATH: MESSAGE"`.
    public var description: String { "\(path): \(message)" }
}

/// The text for the current `errno`; call it before anything else can overwrite `errno`.
func errnoText() -> String {
    String(cString: strerror(errno))
}

/// Python's rendering of a shape tuple, so messages match what numpy users see: `(5,)`, `(3, 4)`, `()`.
func pythonShape(_ shape: [Int]) -> String {
    shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
}
