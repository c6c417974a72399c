import Foundation
import Testing

/// The C API and the Python package, as their users meet them: README's C example compiled
/// against the header and linked with the libEmbStoreC.so this build made, then run; and the
/// Python package's tests (Tests/python) run with pytest on that library.
@Suite struct CAPITests {
    /// libEmbStoreC.so, built next to the `embstore` executable (`swift build` builds every
    /// product of the package).
    static func library() throws -> URL {
        guard let binary = Tooling.embstoreBinary else { throw TestFailure("cannot find the build directory (no embstore executable)") }
        let library = binary.deletingLastPathComponent().appendingPathComponent("libEmbStoreC.so")
        guard FileManager.default.fileExists(atPath: library.path) else {
            throw TestFailure("\(library.path) is missing: `swift build` makes it (product EmbStoreC)")
        }
        return library
    }

    /// The C program in README's "### C" section (its first ```c block).
    static func readmeExample() throws -> String {
        let readme = try String(contentsOf: Tooling.repoRoot.appendingPathComponent("README.md"), encoding: .utf8)
        guard let section = readme.range(of: "\n### C\n"),
              let start = readme.range(of: "```c\n", range: section.upperBound..<readme.endIndex),
              let end = readme.range(of: "\n```", range: start.upperBound..<readme.endIndex) else {
            throw TestFailure("README.md has no ```c block under a '### C' heading")
        }
        return String(readme[start.upperBound..<end.lowerBound]) + "\n"
    }

    @Test func theREADMEsCExampleCompilesAndRuns() throws {
        let library = try Self.library()
        try withTemporaryDirectory { dir in
            let source = dir.appendingPathComponent("example.c"), program = dir.appendingPathComponent("example")
            try Self.readmeExample().write(to: source, atomically: true, encoding: .utf8)
            let libraryDirectory = library.deletingLastPathComponent().path
            let compile = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), [
                "cc", "-std=c11", "-Wall", "-Werror", source.path, "-I", Tooling.repoRoot.appendingPathComponent("Sources/CEmbStore/include").path,
                "-L", libraryDirectory, "-lEmbStoreC", "-lm", "-Wl,-rpath," + libraryDirectory, "-o", program.path,
            ])
            #expect(compile.status == 0, "\(compile)")
            guard compile.status == 0 else { return }
            let run = try runProcess(program, [dir.appendingPathComponent("store").path])
            #expect(run.status == 0, "\(run)")
            #expect(run.stdout.contains("lookup: found 2 of 3 (mask 1 1 0)"), "\(run.stdout)")
            #expect(run.stdout.contains("error: status 2"), "\(run.stdout)")
            #expect(run.stdout.contains("multi: 2 samples x 32 floats"), "\(run.stdout)")
        }
    }

    /// Tests/python run twice: on the package as `pip install` lays it out (staged by the build
    /// backend, with the extension module _calls), and on Sources/python with cffi alone.
    @Test(arguments: ["extension", "cffi"]) func thePythonPackagesTestsPass(binding: String) throws {
        let library = try Self.library()
        try withTemporaryDirectory { dir in
            var environment = ProcessInfo.processInfo.environment
            var packageParent = Tooling.repoRoot.appendingPathComponent("Sources/python").path
            if binding == "extension" {
                let backend = Tooling.repoRoot.appendingPathComponent("tools/python_build").path
                let stage = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), [
                    "python3", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import embstore_build; sys.exit(0 if embstore_build.stage_package(sys.argv[2]) else 1)",
                    backend, dir.path,
                ])
                #expect(stage.status == 0, "the build backend did not compile the extension module: \(stage)")
                guard stage.status == 0 else { return }
                packageParent = dir.path
            } else {
                environment["EMBSTORE_NO_EXTENSION"] = "1"
            }
            environment["EMBSTORE_EXPECT_BINDING"] = binding
            environment["EMBSTORE_LIBRARY"] = library.path
            environment["PYTHONPATH"] = packageParent + (environment["PYTHONPATH"].map { ":" + $0 } ?? "")
            environment["PYTHONDONTWRITEBYTECODE"] = "1"
            // -X faulthandler: a crash in the process (once, at exit, after every test passed, in a
            // loaded CI run on 2026-11-30) prints the Python stacks of every thread with the failure.
            let pytest = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), [
                "python3", "-X", "faulthandler", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                Tooling.repoRoot.appendingPathComponent("Tests/python").path,
            ], environment: environment)
            #expect(pytest.status == 0, "pytest (python3 -m pip install pytest if it is missing): \(pytest)")
            #expect(!pytest.stdout.contains("skipped"), "\(pytest.stdout)")   // the binding check ran
            print("[python, \(binding)] " + (pytest.stdout.split(separator: "\n").last.map(String.init) ?? ""))
        }
    }
}
