/// The one error type of VoxFS's libraries: a kind a caller can switch on, and a one-line
/// message that names the problem (what the CLI prints after "voxfs: ").
public struct VoxError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable {
        case invalidArgument      // a flag or parameter that cannot work
        case io                   // reading or writing a file failed
        case badFormat            // not a VoxFS stream / model, or an unsupported version
        case truncated            // the data ends before its structure says
        case corrupt              // a checksum or a decoded value shows damage
        case missingModel         // the stream names a model that cannot be found
        case outOfMemory
        case busy                 // another process holds what this one needs (an archive being written)
    }

    public let kind: Kind
    public let message: String
    /// The system error behind an `.io` error, when there is one (`Sys` sets it).
    public let errno: Int32?

    public init(_ kind: Kind, _ message: String, errno: Int32? = nil) {
        self.kind = kind
        self.message = message
        self.errno = errno
    }

    public var description: String { message }
}
