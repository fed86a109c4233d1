import Foundation
import VoxCore

/// Named coding configurations users pick with `--preset`.
public struct Preset: Sendable {
    public enum Predictor: Sendable {
        case classical(left: Bool)
        case lstm(hidden: Int, neighbourhood: String, seed: UInt64)
    }

    public let name: String
    public let summary: String
    public let predictor: Predictor

    public static let all: [Preset] = [
        Preset(name: "classical", summary: "MED-3D blend with left voxels, no LSTM: fastest, the baseline",
               predictor: .classical(left: true)),
        Preset(name: "classical-par", summary: "MED-3D blend without left voxels (the LSTM presets' anchor)",
               predictor: .classical(left: false)),
        Preset(name: "fast", summary: "LSTM H=8, pyramid 7/5/3 grouped by slice, row-parallel",
               predictor: .lstm(hidden: 8, neighbourhood: "pyramid:7,5,3/slice/noleft", seed: 0x766F_7866_7301)),
        Preset(name: "parallel", summary: "LSTM H=16, pyramid 7/5/3 grouped by slice, row-parallel",
               predictor: .lstm(hidden: 16, neighbourhood: "pyramid:7,5,3/slice/noleft", seed: 0x766F_7866_7305)),
        Preset(name: "default", summary: "LSTM H=16, pyramid 7/5/3 grouped by slice, with left voxels (voxel-serial)",
               predictor: .lstm(hidden: 16, neighbourhood: "pyramid:7,5,3/slice/left", seed: 0x766F_7866_7302)),
        Preset(name: "large", summary: "LSTM H=32, pyramid 7/5/3 grouped by slice, with left voxels (voxel-serial)",
               predictor: .lstm(hidden: 32, neighbourhood: "pyramid:7,5,3/slice/left", seed: 0x766F_7866_7304)),
        Preset(name: "paper", summary: "the paper's model: LSTM H=128 over pyramid 13/9/5/1, voxel by voxel, with left voxels (very slow)",
               predictor: .lstm(hidden: 128, neighbourhood: "pyramid:13,9,5,1/voxel/left", seed: 0x766F_7866_7303)),
    ]

    public static let defaultName = "default"

    public static func named(_ name: String) throws -> Preset {
        guard let p = all.first(where: { $0.name == name }) else {
            throw VoxError(.invalidArgument, "unknown preset '\(name)' (known: \(all.map(\.name).joined(separator: ", ")))")
        }
        return p
    }

    /// The preset's built-in model (nil for classical presets): the trained model shipped in
    /// models/NAME.vxm (embedded in the binary) when there is one, else a reproducible seeded,
    /// untrained one. Either way the same bytes, and so the same hash, on every machine.
    public func builtinModel() throws -> LSTMModel? {
        guard case .lstm(let h, let spec, let seed) = predictor else { return nil }
        if let m = try ModelRegistry.shared.embedded(name: name) {
            guard m.hidden == h, m.neighbourhood.spec == (try Neighbourhood(spec: spec)).spec else {
                throw VoxError(.badFormat, "embedded model '\(name)' does not match its preset (H=\(m.hidden), \(m.neighbourhood.spec))")
            }
            return m
        }
        return try ModelRegistry.shared.builtin(preset: name, hidden: h, spec: spec, seed: seed)
    }

    /// Whether the preset's model is a trained one.
    public var hasTrainedModel: Bool { BuiltinModels.files[name] != nil }
}

/// Finds models by content hash: built-in presets, files given with --model, and the model
/// folders ($VOXFS_MODEL_PATH, colon-separated; ~/.local/share/voxfs/models;
/// /usr/local/share/voxfs/models).
public final class ModelRegistry: @unchecked Sendable {
    public static let shared = ModelRegistry()
    private let lock = NSLock()
    private var byHash: [[UInt8]: LSTMModel] = [:]
    private var builtins: [String: LSTMModel] = [:]

    func builtin(preset: String, hidden: Int, spec: String, seed: UInt64) throws -> LSTMModel {
        lock.lock(); defer { lock.unlock() }
        if let m = builtins[preset] { return m }
        let m = try LSTMModel.seeded(hidden: hidden, neighbourhood: try Neighbourhood(spec: spec), seed: seed, name: preset)
        builtins[preset] = m
        byHash[m.hash] = m
        return m
    }

    private var embeddedByName: [String: LSTMModel] = [:]

    /// A model embedded from models/NAME.vxm, registered by hash on first use.
    func embedded(name: String) throws -> LSTMModel? {
        lock.lock(); defer { lock.unlock() }
        if let m = embeddedByName[name] { return m }
        guard let b64 = BuiltinModels.files[name] else { return nil }
        guard let data = Data(base64Encoded: b64) else { throw VoxError(.badFormat, "embedded model '\(name)' is not valid base64") }
        let m = try LSTMModel(bytes: [UInt8](data), name: "embedded model \(name)")
        embeddedByName[name] = m
        byHash[m.hash] = m
        return m
    }

    public func register(_ m: LSTMModel) {
        lock.lock(); defer { lock.unlock() }
        byHash[m.hash] = m
    }

    public static var searchPaths: [String] {
        var paths: [String] = []
        if let env = ProcessInfo.processInfo.environment["VOXFS_MODEL_PATH"] {
            paths += env.split(separator: ":").map(String.init)
        }
        paths.append(NSHomeDirectory() + "/.local/share/voxfs/models")
        paths.append("/usr/local/share/voxfs/models")
        return paths
    }

    /// Looks a model up by hash; loads built-ins and model folders on demand.
    public func model(hash: [UInt8]) -> LSTMModel? {
        for p in Preset.all { _ = try? p.builtinModel() }
        // every embedded model (including retired defaults) and the seeded placeholders
        for name in BuiltinModels.files.keys { _ = try? embedded(name: name) }
        for p in Preset.all {
            if case .lstm(let h, let spec, let seed) = p.predictor { _ = try? builtin(preset: p.name, hidden: h, spec: spec, seed: seed) }
        }
        lock.lock()
        if let m = byHash[hash] { lock.unlock(); return m }
        lock.unlock()
        let fm = FileManager.default
        for dir in ModelRegistry.searchPaths {
            guard let names = try? fm.contentsOfDirectory(atPath: dir) else { continue }
            for n in names.sorted() where n.hasSuffix(".vxm") {
                if let m = try? LSTMModel.load(path: dir + "/" + n) {
                    register(m)
                    if m.hash == hash { return m }
                }
            }
        }
        return nil
    }
}
