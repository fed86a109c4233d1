import Foundation
import VoxCore

/// The source tree a pack reads (issue 13, item 3): the few file-system operations ingest needs,
/// behind a protocol so that permission errors, vanishing files and files that change while
/// they are read can be tested without root tricks (PackTreeFaultTests). `LocalTree` is the real
/// one; errors are VoxErrors naming the path and saying why (`Sys`).
public protocol SourceTree: Sendable {
    /// lstat(2) of `path` (a symlink is not followed).
    func lstat(_ path: String) throws -> stat
    func readlink(_ path: String) throws -> String
    /// The names in a folder (without "." and ".."), in no particular order.
    func list(_ path: String) throws -> [String]
    /// A whole regular file.
    func read(_ path: String) throws -> [UInt8]
}

/// The local file system.
public struct LocalTree: SourceTree {
    public init() {}
    public func lstat(_ path: String) throws -> stat { try Sys.lstat(path) }
    public func readlink(_ path: String) throws -> String { try Sys.readlink(path) }
    public func read(_ path: String) throws -> [UInt8] { try FileIO.read(path) }
    public func list(_ path: String) throws -> [String] {
        guard let d = opendir(path) else { throw Sys.error(path, "list the folder") }
        defer { closedir(d) }
        var names: [String] = []
        while true {
            errno = 0
            guard let ent = readdir(d) else {
                if errno != 0 { throw Sys.error(path, "list the folder") }
                break
            }
            let name = withUnsafePointer(to: ent.pointee.d_name) { p in
                p.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}
