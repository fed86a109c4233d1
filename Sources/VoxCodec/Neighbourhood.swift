import VoxCore

/// A causal neighbourhood and the order in which its voxels are fed to the LSTM.
///
/// Spec grammar (docs/format.md, "Neighbourhoods"):
///
///     pyramid:K0,K1,...[/GROUPING][/left|/noleft]   diamond windows, K0 on the current slice,
///                                                   K1 on the previous one, ... (K odd)
///     cube:K[:D][/GROUPING][/left|/noleft]          K x K square windows on the current slice
///                                                   and on D previous slices (default (K-1)/2)
///
/// GROUPING is `voxel` (the paper: one voxel per LSTM step, I = 1), `row` (one window row
/// per step) or `slice` (one slice of the window per step). Default: slice, noleft.
/// On the current slice only the causal part is used: rows above the target, and with
/// `left` also the voxels before it in its own row.
public struct Neighbourhood: Equatable, Sendable, CustomStringConvertible {
    public enum Shape: Equatable, Sendable {
        case pyramid([Int])
        case cube(Int, depth: Int)
    }

    public enum Grouping: String, Sendable, CaseIterable {
        case voxel, row, slice
    }

    public let shape: Shape
    public let grouping: Grouping
    public let left: Bool

    /// Offsets in sequence order, and each one's input slot (step * I + i).
    public let dx: [Int32], dy: [Int32], dz: [Int32], slot: [Int32]
    /// Sequence length T and step input size I.
    public let steps: Int, stepInputs: Int

    public var count: Int { dx.count }

    public init(shape: Shape, grouping: Grouping = .slice, left: Bool = false) throws {
        self.shape = shape
        self.grouping = grouping
        self.left = left
        // windows per slice: (dz, radius, diamond?)
        var windows: [(dz: Int, r: Int, diamond: Bool)] = []
        switch shape {
        case .pyramid(let ks):
            guard !ks.isEmpty, ks.count <= 16 else { throw VoxError(.invalidArgument, "pyramid needs 1 to 16 window sizes") }
            for (i, k) in ks.enumerated() {
                guard k >= 1, k <= 31, k % 2 == 1 else { throw VoxError(.invalidArgument, "pyramid window sizes must be odd, 1 to 31 (got \(k))") }
                windows.append((dz: -i, r: (k - 1) / 2, diamond: true))
            }
        case .cube(let k, let d):
            guard k >= 3, k <= 31, k % 2 == 1 else { throw VoxError(.invalidArgument, "cube size must be odd, 3 to 31 (got \(k))") }
            guard d >= 0, d <= 15 else { throw VoxError(.invalidArgument, "cube depth must be 0 to 15 (got \(d))") }
            for i in 0...d { windows.append((dz: -i, r: (k - 1) / 2, diamond: false)) }
        }
        // Collect offsets, oldest slice first; rows top to bottom; x ascending.
        var groups: [[(Int, Int, Int)]] = []
        for w in windows.sorted(by: { $0.dz < $1.dz }) {
            var sliceGroup: [[(Int, Int, Int)]] = []
            for yy in -w.r...w.r {
                var row: [(Int, Int, Int)] = []
                for xx in -w.r...w.r {
                    if w.diamond && abs(xx) + abs(yy) > w.r { continue }
                    if w.dz == 0 && !(yy < 0 || (yy == 0 && xx < 0 && left)) { continue }
                    row.append((xx, yy, w.dz))
                }
                if !row.isEmpty { sliceGroup.append(row) }
            }
            switch grouping {
            case .voxel: groups += sliceGroup.flatMap { $0 }.map { [$0] }
            case .row: groups += sliceGroup
            case .slice: if !sliceGroup.isEmpty { groups.append(sliceGroup.flatMap { $0 }) }
            }
        }
        guard !groups.isEmpty else { throw VoxError(.invalidArgument, "neighbourhood is empty") }
        let I = groups.map(\.count).max()!
        var dx: [Int32] = [], dy: [Int32] = [], dz: [Int32] = [], slot: [Int32] = []
        for (t, g) in groups.enumerated() {
            for (i, o) in g.enumerated() {
                dx.append(Int32(o.0)); dy.append(Int32(o.1)); dz.append(Int32(o.2)); slot.append(Int32(t * I + i))
            }
        }
        self.dx = dx; self.dy = dy; self.dz = dz; self.slot = slot
        self.steps = groups.count
        self.stepInputs = I
    }

    /// Parses a spec string (see the type's documentation).
    public init(spec: String) throws {
        let parts = spec.split(separator: "/").map(String.init)
        guard let head = parts.first else { throw VoxError(.invalidArgument, "empty neighbourhood spec") }
        var grouping = Grouping.slice
        var left = false
        for opt in parts.dropFirst() {
            if let g = Grouping(rawValue: opt) { grouping = g }
            else if opt == "left" { left = true }
            else if opt == "noleft" { left = false }
            else { throw VoxError(.invalidArgument, "unknown neighbourhood option '\(opt)' in '\(spec)' (voxel, row, slice, left, noleft)") }
        }
        let hp = head.split(separator: ":").map(String.init)
        let bad = VoxError(.invalidArgument, "bad neighbourhood '\(spec)': expected pyramid:13,9,5,1 or cube:5[:2], then /voxel|/row|/slice and /left|/noleft")
        guard hp.count >= 2 else { throw bad }
        switch hp[0] {
        case "pyramid":
            guard hp.count == 2 else { throw bad }
            let ks = hp[1].split(separator: ",").map { Int($0) }
            guard !ks.contains(nil) else { throw bad }
            try self.init(shape: .pyramid(ks.map { $0! }), grouping: grouping, left: left)
        case "cube":
            guard hp.count <= 3, let k = Int(hp[1]) else { throw bad }
            var d = (k - 1) / 2
            if hp.count == 3 { guard let dd = Int(hp[2]) else { throw bad }; d = dd }
            try self.init(shape: .cube(k, depth: d), grouping: grouping, left: left)
        default: throw bad
        }
    }

    /// Canonical spec: what streams and model files record.
    public var spec: String {
        let head: String
        switch shape {
        case .pyramid(let ks): head = "pyramid:" + ks.map(String.init).joined(separator: ",")
        case .cube(let k, let d): head = "cube:\(k):\(d)"
        }
        return "\(head)/\(grouping.rawValue)/\(left ? "left" : "noleft")"
    }

    public var description: String { spec }

    /// Number of slices (the current one included) the neighbourhood reaches.
    public var depth: Int { Int(-(dz.min() ?? 0)) + 1 }
}
