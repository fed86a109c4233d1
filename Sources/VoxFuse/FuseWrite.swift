import CFuse3
import Foundation
import VoxCore
import VoxFS

/// The read-write mount's callbacks (`-o rw`): each asks `VoxFileSystem` and replies. Hard
/// links are EPERM; extended attributes other than the read-only user.voxfs.* ones ENOTSUP.
extension FuseMount {
    static func addWriteOps(_ ops: inout fuse_lowlevel_ops) {
        ops.create = { req, parent, name, mode, fi in
            FuseMount.with(req, "create", ino: parent) { m in
                let c = fuse_req_ctx(req)!.pointee
                let a = try m.fs.create(parent: parent, name: String(cString: name!), kind: .file, mode: UInt32(mode), uid: c.uid, gid: c.gid)
                let fh = try m.fs.open(a.ino, write: true)
                fi!.pointee.fh = fh
                var e = m.entryParam(a)
                if fuse_reply_create(req, &e, fi) != 0 { m.fs.release(fh) }
            }
        }
        ops.mknod = { req, parent, name, mode, rdev in
            FuseMount.with(req, "mknod", ino: parent) { m in
                // a regular file, or a FIFO, socket or device node (stored as its type and number;
                // the mount is nodev unless -o dev, so a device node opens nothing)
                let type = mode & S_IFMT
                guard [S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK].contains(type) else { throw FSError.invalid }
                let c = fuse_req_ctx(req)!.pointee
                let regular = type == S_IFREG
                var e = m.entryParam(try m.fs.create(parent: parent, name: String(cString: name!), kind: regular ? .file : .special, mode: UInt32(mode),
                                                      uid: c.uid, gid: c.gid, special: regular ? nil : (UInt32(type), UInt64(rdev))))
                fuse_reply_entry(req, &e)
            }
        }
        ops.mkdir = { req, parent, name, mode in
            FuseMount.with(req, "mkdir", ino: parent) { m in
                let c = fuse_req_ctx(req)!.pointee
                var e = m.entryParam(try m.fs.create(parent: parent, name: String(cString: name!), kind: .directory, mode: UInt32(mode), uid: c.uid, gid: c.gid))
                fuse_reply_entry(req, &e)
            }
        }
        ops.symlink = { req, target, parent, name in
            FuseMount.with(req, "symlink", ino: parent) { m in
                let c = fuse_req_ctx(req)!.pointee
                var e = m.entryParam(try m.fs.create(parent: parent, name: String(cString: name!), kind: .symlink, mode: 0o777,
                                                      uid: c.uid, gid: c.gid, target: String(cString: target!)))
                fuse_reply_entry(req, &e)
            }
        }
        ops.link = { req, _, _, _ in fuse_reply_err(req, EPERM) }      // no hard links
        ops.unlink = { req, parent, name in
            FuseMount.with(req, "unlink", ino: parent) { m in
                try m.fs.remove(parent: parent, name: String(cString: name!), directory: false)
                fuse_reply_err(req, 0)
            }
        }
        ops.rmdir = { req, parent, name in
            FuseMount.with(req, "rmdir", ino: parent) { m in
                try m.fs.remove(parent: parent, name: String(cString: name!), directory: true)
                fuse_reply_err(req, 0)
            }
        }
        ops.rename = { req, parent, name, newParent, newName, flags in
            FuseMount.with(req, "rename", ino: parent) { m in
                // RENAME_NOREPLACE (1) is honoured; RENAME_EXCHANGE (2) and RENAME_WHITEOUT are not offered
                guard flags & ~UInt32(1) == 0 else { throw FSError.invalid }
                try m.fs.rename(parent: parent, name: String(cString: name!), newParent: newParent, newName: String(cString: newName!),
                                noReplace: flags & 1 != 0)
                fuse_reply_err(req, 0)
            }
        }
        ops.setattr = { req, ino, attr, toSet, _ in
            FuseMount.with(req, "setattr", ino: ino) { m in
                let a = attr!.pointee
                var c = VoxFileSystem.AttributeChange()
                if toSet & FUSE_SET_ATTR_MODE != 0 { c.mode = UInt32(a.st_mode) & 0o7777 }
                if toSet & FUSE_SET_ATTR_UID != 0 { c.uid = a.st_uid }
                if toSet & FUSE_SET_ATTR_GID != 0 { c.gid = a.st_gid }
                if toSet & FUSE_SET_ATTR_SIZE != 0 {
                    guard a.st_size >= 0 else { throw FSError.invalid }
                    c.size = UInt64(a.st_size)
                }
                if toSet & FUSE_SET_ATTR_ATIME_NOW != 0 { c.atime = .now }
                else if toSet & FUSE_SET_ATTR_ATIME != 0 { c.atime = .at(Int64(a.st_atim.tv_sec), Int32(a.st_atim.tv_nsec)) }
                if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 { c.mtime = .now }
                else if toSet & FUSE_SET_ATTR_MTIME != 0 { c.mtime = .at(Int64(a.st_mtim.tv_sec), Int32(a.st_mtim.tv_nsec)) }
                var st = FuseMount.stat(try m.fs.setAttributes(ino, c))
                fuse_reply_attr(req, &st, m.timeout)
            }
        }
        ops.write = { req, ino, buf, size, off, fi in
            FuseMount.with(req, "write", ino: ino) { m in
                guard off >= 0 else { throw FSError.invalid }
                let n = try m.fs.write(fi!.pointee.fh, offset: UInt64(off), UnsafeRawBufferPointer(start: buf, count: size))
                fuse_reply_write(req, n)
            }
        }
        ops.flush = { req, ino, fi in
            FuseMount.with(req, "flush", ino: ino) { m in
                try m.fs.flush(fi!.pointee.fh)
                fuse_reply_err(req, 0)
            }
        }
        ops.fsync = { req, ino, _, fi in
            FuseMount.with(req, "fsync", ino: ino) { m in
                try m.fs.flush(fi!.pointee.fh)
                fuse_reply_err(req, 0)
            }
        }
        // every namespace change is committed (and synced) before its reply
        ops.fsyncdir = { req, _, _, _ in fuse_reply_err(req, 0) }
        ops.fallocate = { req, ino, mode, off, length, fi in
            FuseMount.with(req, "fallocate", ino: ino) { m in
                // mode 0 (posix_fallocate) only: the file grows to off + length when shorter
                guard mode == 0 else { throw FSError.notSupported }
                guard off >= 0, length > 0 else { throw FSError.invalid }
                let size = try m.fs.attributes(ino).size
                let end = UInt64(off) + UInt64(length)
                if end > size { _ = try m.fs.setAttributes(ino, VoxFileSystem.AttributeChange(size: end)) }
                fuse_reply_err(req, 0)
            }
        }
        ops.setxattr = { req, _, name, _, _, _ in
            let n = String(cString: name!)
            fuse_reply_err(req, n.hasPrefix("user.voxfs.") ? EPERM : ENOTSUP)
        }
        ops.removexattr = { req, _, name in
            let n = String(cString: name!)
            fuse_reply_err(req, n.hasPrefix("user.voxfs.") ? EPERM : ENOTSUP)
        }
    }
}
