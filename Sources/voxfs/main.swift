import ArgumentParser
import Foundation
import VoxCore

import VoxTrain

// A helper process that ends early (zgz, which rebuilds GNU gzip files) must give a write
// error (EPIPE), not kill voxfs with SIGPIPE.
signal(SIGPIPE, SIG_IGN)

// Training runs OpenBLAS, whose Debian build (0.3.21) falls back to its slowest kernel on
// CPUs it does not know (recent Xeons) unless OPENBLAS_CORETYPE is set before the process
// starts: when it picked a generic kernel on a CPU with AVX2/AVX-512, set it and re-execute once.
if let sub = CommandLine.arguments.dropFirst().first, sub == "train" || sub == "eval" || sub == "compress" || sub == "pack",
   BLAS.usesGenericKernel, let core = BLAS.preferredCoreType(), ProcessInfo.processInfo.environment["VOXFS_NO_REEXEC"] == nil {
    setenv("OPENBLAS_CORETYPE", core, 1)
    setenv("VOXFS_NO_REEXEC", "1", 1)
    var argv = CommandLine.arguments.map { strdup($0) } + [nil]
    execv("/proc/self/exe", &argv)
    // exec failed: carry on with the slow kernel
}

// Thin entry point: parse, run, and turn library errors into one-line messages.
do {
    var command = try VoxFSCommand.parseAsRoot()
    try command.run()
} catch let e as VoxError {
    FileHandle.standardError.write(Data("voxfs: \(e.message)\n".utf8))
    exit(e.kind == .invalidArgument ? 2 : 1)
} catch {
    // --help and --version: ArgumentParser prints them (to stdout, status 0); a command that
    // has said what went wrong itself (verify's problems, pack's failed files) ends with its status
    if error is ExitCode || VoxFSCommand.exitCode(for: error) == .success { VoxFSCommand.exit(withError: error) }
    FileHandle.standardError.write(Data((userFacingError(error) + "\n").utf8))
    exit(VoxFSCommand.exitCode(for: error) == .validationFailure ? 2 : 1)
}

/// Every failure in one format, "voxfs: what went wrong", on one line: a command line that
/// ArgumentParser rejects gets its usage in the same line instead of its own "Error:/Usage:" block
/// (and status 2, like every invalid argument).
func userFacingError(_ error: Error) -> String {
    let lines = VoxFSCommand.fullMessage(for: error).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
    var what = lines.first ?? "\(error)"
    if what.hasPrefix("Error: ") { what.removeFirst("Error: ".count) }
    var out = "voxfs: " + what
    if let usage = lines.first(where: { $0.hasPrefix("Usage: ") }) {
        out += " (usage: \(usage.dropFirst("Usage: ".count))"
        if let see = lines.first(where: { $0.hasPrefix("See '") }), let q = see.split(separator: "'").dropFirst().first { out += "; see '\(q)'" }
        out += ")"
    }
    return out
}
