import CZstd
import Foundation
import VoxCore

/// Writing an archive the way a read-write mount changes it: each change (a file's new content,
/// a rename, a deletion) is one transaction of tree records and the content records they need,
/// with what no entry refers to any more dropped in the same transaction. The caller (the
/// filesystem, which holds the whole tree in memory) knows what is shared, so no tree scan runs.
extension Archive {
    /// One transaction's worth of changes.
    public struct Change: Sendable {
        /// Tree paths to delete (applied first).
        public var remove: [String] = []
        /// Entries to store (under their paths, replacing what is there).
        public var put: [Entry] = []
        /// `blobs` records to store (chunks): key (SHA-256 of the content) and record.
        public var blobs: [(key: [UInt8], record: [UInt8])] = []
        /// `blobs` records no entry refers to any more.
        public var dropBlobs: [[UInt8]] = []
        /// Volumes no entry refers to any more (header, slabs and parts are deleted).
        public var dropVolumes: [UInt64] = []
        /// The root folder's owner, mode and times (the tree has no record for "").
        public var root: Entry?
        public init() {}
        public var isEmpty: Bool { remove.isEmpty && put.isEmpty && blobs.isEmpty && dropBlobs.isEmpty && dropVolumes.isEmpty && root == nil }
    }

    static let rootKey = Array("root".utf8)

    /// A chunk's key and record (zstd at a fast level: a write through the mount should cost
    /// what the disk costs; the ingester codes what matters later).
    public static func chunkRecord(_ bytes: [UInt8]) -> (key: [UInt8], record: [UInt8]) {
        (Checksum.sha256(bytes), chunkBlob(bytes))
    }
    /// A chunk's record alone (its key computed by the caller).
    public static func chunkBlob(_ bytes: [UInt8]) -> [UInt8] { packBlob(bytes, level: 3) }

    /// Applies `c` in one write transaction. The first change turns a schema 2 or 3 archive to 4
    /// (chunked files, access and change times and the root record are version 4 records).
    public func apply(_ c: Change) throws {
        guard schema >= 2 else {
            throw VoxError(.badFormat, "\(path) has archive schema \(schema) (an older voxfs); it cannot be changed: unpack it and pack it again")
        }
        guard !c.isEmpty else { return }
        let before = schema
        raiseSchema(to: 4)
        do {
            try write { t in
                var sv = ByteWriter(); sv.u32(4)
                try t.put(.meta, Array("schema".utf8), sv.bytes)
                for (k, r) in c.blobs where try t.size(.blobs, k) == nil { try t.put(.blobs, k, r) }
                for p in c.remove { try deleteTree(p, t) }
                for e in c.put { try putTree(e, t) }
                if let r = c.root { try t.put(.meta, Archive.rootKey, seal("meta", Archive.rootKey, r.encoded(schema: 4))) }
                for h in c.dropBlobs { try t.delete(.blobs, h) }
                for id in c.dropVolumes { try deleteVolume(id, t) }
            }
        } catch {
            // nothing was written: a schema 2 or 3 archive stays one
            if before < 4 { resetSchema(before) }
            throw error
        }
    }

    /// The root folder's stored attributes (nil when none were stored, or damaged: then the
    /// mount shows the archive file's).
    public func rootEntry() throws -> Entry? {
        guard schema >= 4 else { return nil }
        return try read { t in
            guard let rec = try t.get(.meta, Archive.rootKey), let v = unseal("meta", Archive.rootKey, rec) else { return nil }
            return try? Entry.decode(path: "", v, schema: 4)
        }
    }

    /// Deletes the tree record at `path` inside `t`, keeping the tree digest up to date.
    func deleteTree(_ path: String, _ t: any StoreTransaction) throws {
        let key = Archive.treeKey(path)
        guard let old = try t.get(.tree, key) else { return }
        var digest = try recordedDigest(t)
        digest?.toggle(key, old, adding: false)
        try t.delete(.tree, key)
        if let digest { try t.put(.meta, Archive.digestKey, seal("meta", Archive.digestKey, digest.encoded)) }
    }

    /// Every key in `blobs` (compact: records no entry refers to).
    func blobKeys(_ t: any StoreTransaction) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        try t.scan(.blobs) { k, _ in out.append(k); return true }
        return out
    }

    /// Drops every blob and volume record that no entry refers to (left behind by a mount that
    /// was killed while a deleted file was still open); returns how many records went.
    public func compact() throws -> (blobs: Int, volumes: Int) {
        let scan = try scanTree(digest: false)
        guard scan.damaged.isEmpty else {
            throw VoxError(.corrupt, "\(path): \(scan.damaged.count) tree records are damaged; compact deletes nothing while it cannot know what they refer to (see voxfs verify)")
        }
        var used = Set<[UInt8]>(), volumes = Set<UInt64>()
        for e in scan.entries {
            for h in e.content.blobKeys { used.insert(h) }
            if case .volume(let id, _) = e.content { volumes.insert(id) }
        }
        let stored = try scanVolumes().infos.map(\.id)
        return try write { t in
            let dead = try blobKeys(t).filter { !used.contains($0) }
            for h in dead { try t.delete(.blobs, h) }
            let deadVolumes = stored.filter { !volumes.contains($0) }
            for id in deadVolumes { try deleteVolume(id, t) }
            return (dead.count, deadVolumes.count)
        }
    }
}
