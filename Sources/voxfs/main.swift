import ArgumentParser
import Foundation
import VoxCore

// Thin entry point: parse, run, and turn library errors into one-line messages.
do {
    var command = try VoxFSCommand.parseAsRoot()
    try command.run()
} catch let e as VoxError {
    FileHandle.standardError.write(Data("voxfs: \(e.message)\n".utf8))
    exit(e.kind == .invalidArgument ? 2 : 1)
} catch {
    VoxFSCommand.exit(withError: error)
}
