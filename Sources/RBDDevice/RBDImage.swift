import Glibc
import BlockDevices
import CRBD
import LinuxSystem
import Synchronization

/// Why an RBD image could not be opened, in words for the admin.
public struct RBDOpenError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    /// The librados/librbd error, negated back to an errno value; 0 when none.
    public var errno: Int32
    public init(_ message: String, errno: Int32 = 0) {
        self.message = message
        self.errno = errno
    }
    public var description: String { message }
}

/// One RBD image, opened through its own librados client, with librbd's cache off (`rbd_cache = false`): a
/// write completes only once the OSDs committed it, so every write the target acknowledges is durable without a
/// FLUSH (the Linux initiator never sends one). The blocking calls serve `perform`; the export's event loop uses
/// `RBDDeviceQueue` (librbd's aio).
public final class RBDImage: QueuedBlockDevice, ExclusivelyOwnedDevice, ResizableDevice, @unchecked Sendable {
    /// How long connecting to the monitors may take before the open fails (librados waits 300 s by default).
    public static let connectTimeoutSeconds = 10
    /// How long one operation may wait for the OSDs before it fails (and the initiator gets ABRT), instead of
    /// hanging forever (librados' default) while the cluster is unavailable.
    public static let operationTimeoutSeconds = 30

    public let imageName: RBDImageName
    /// The size now: `rbd resize` changes it while the image is served (`refreshSize`).
    public var sectorCount: UInt64 { sectors.load(ordering: .relaxed) }
    private let sectors: Atomic<UInt64>
    /// Signalled from librbd's thread (C, CRBD_watchHeader) when the image's header changes.
    private let headerChanged = EventCounter()
    private var headerWatch: UInt64 = 0
    private var watchingHeader = false
    public let capabilities: DeviceCapabilities
    public let identity: String
    public var name: String { imageName.description }

    private var cluster: rados_t?
    private var pool: rados_ioctx_t?
    let image: rbd_image_t

    /// Connects as `client.<cephID>` (default `admin`) with the settings librados reads itself (`CEPH_CONF`, else
    /// /etc/ceph/ceph.conf and the keyring it names; `CEPH_ARGS`), and opens the image.
    public init(_ imageName: RBDImageName, cephID: String? = nil, readOnly: Bool) throws(RBDOpenError) {
        self.imageName = imageName
        var loadError = [CChar](repeating: 0, count: 512)
        if CRBD_load(&loadError, loadError.count) != 0 {
            let reason = String(decoding: loadError.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw RBDOpenError("rbd: cannot load the Ceph client libraries (\(reason)); install librbd1 and librados2")
        }
        var cluster: rados_t?
        let user = cephID ?? "admin"
        var rc = aoe_rados_create2(&cluster, "ceph", "client.\(user)", 0)
        guard rc == 0, let cluster else { throw RBDOpenError("rbd: cannot create a Ceph client: \(Self.text(rc))", errno: -rc) }
        self.cluster = cluster
        rc = aoe_rados_conf_read_file(cluster, nil)
        if rc < 0 {
            aoe_rados_shutdown(cluster)
            let conf = getenv("CEPH_CONF").map { String(cString: $0) }
            throw RBDOpenError(conf.map { "rbd: cannot read the Ceph configuration \($0) (CEPH_CONF): \(Self.text(rc))" }
                               ?? "rbd: no Ceph configuration: set CEPH_CONF or create /etc/ceph/ceph.conf", errno: -rc)
        }
        _ = aoe_rados_conf_parse_env(cluster, nil)
        // Acknowledged means committed by the OSDs: librbd's cache would acknowledge writes from memory once a
        // flush has been seen. A discard of part of an object zeroes that part instead of being skipped, so a
        // trimmed sector always reads back as zeros (what IDENTIFY then promises).
        for (key, value) in [("rbd_cache", "false"), ("rbd_skip_partial_discard", "false"), ("client_mount_timeout", "\(Self.connectTimeoutSeconds)"),
                             ("rados_mon_op_timeout", "\(Self.connectTimeoutSeconds)"),
                             ("rados_osd_op_timeout", "\(Self.operationTimeoutSeconds)")] {
            rc = aoe_rados_conf_set(cluster, key, value)
            if rc < 0 {
                aoe_rados_shutdown(cluster)
                throw RBDOpenError("rbd: cannot set \(key)=\(value): \(Self.text(rc))", errno: -rc)
            }
        }
        rc = aoe_rados_connect(cluster)
        if rc < 0 {
            aoe_rados_shutdown(cluster)
            let why: String
            switch -rc {
            case ETIMEDOUT: why = "no monitor answered within \(Self.connectTimeoutSeconds) s (is the cluster up and mon_host right?)"
            case EACCES, EPERM: why = "client.\(user) was refused (keyring, caps)"
            case ENOENT: why = "no keyring for client.\(user)"
            default: why = Self.text(rc)
            }
            throw RBDOpenError("rbd: cannot connect to the Ceph cluster as client.\(user): \(why)", errno: -rc)
        }
        var pool: rados_ioctx_t?
        rc = aoe_rados_ioctx_create(cluster, imageName.pool, &pool)
        guard rc == 0, let pool else {
            aoe_rados_shutdown(cluster)
            throw RBDOpenError(-rc == ENOENT ? "\(imageName): pool '\(imageName.pool)' does not exist"
                                             : "\(imageName): cannot open pool '\(imageName.pool)': \(Self.text(rc))", errno: -rc)
        }
        self.pool = pool
        if !imageName.namespace.isEmpty { aoe_rados_ioctx_set_namespace(pool, imageName.namespace) }
        var image: rbd_image_t?
        rc = readOnly ? aoe_rbd_open_read_only(pool, imageName.image, &image, nil) : aoe_rbd_open(pool, imageName.image, &image, nil)
        guard rc == 0, let image else {
            aoe_rados_ioctx_destroy(pool)
            aoe_rados_shutdown(cluster)
            let why: String
            switch -rc {
            case ENOENT: why = imageName.namespace.isEmpty ? "no image '\(imageName.image)' in pool '\(imageName.pool)'"
                                                           : "no image '\(imageName.image)' in namespace '\(imageName.namespace)' of pool '\(imageName.pool)'"
            case EACCES, EPERM: why = "client.\(user) may not open it (caps)"
            default: why = Self.text(rc)
            }
            throw RBDOpenError("\(imageName): \(why)", errno: -rc)
        }
        self.image = image
        var bytes: UInt64 = 0
        rc = aoe_rbd_get_size(image, &bytes)
        var features: UInt64 = 0
        if rc == 0 { rc = aoe_rbd_get_features(image, &features) }
        var id = [CChar](repeating: 0, count: 64)
        if rc == 0 { rc = aoe_rbd_get_id(image, &id, id.count) }
        let imageID = String(decoding: id.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if rc < 0 {
            aoe_rbd_close(image)
            aoe_rados_ioctx_destroy(pool)
            aoe_rados_shutdown(cluster)
            throw RBDOpenError("\(imageName): cannot read the image's size and features: \(Self.text(rc))", errno: -rc)
        }
        sectors = Atomic(bytes / UInt64(sectorSize))
        hasExclusiveLock = features & UInt64(RBD_FEATURE_EXCLUSIVE_LOCK) != 0
        capabilities = DeviceCapabilities(writable: !readOnly, canFlush: true, discard: .zeros)
        identity = "rbd:\(imageName.pool)/\(imageID)"
        if sectorCount == 0 {
            close()
            throw RBDOpenError("\(imageName): the image is smaller than one sector (\(bytes) bytes)")
        }
        watchingHeader = CRBD_watchHeader(image, headerChanged.descriptor, &headerWatch) == 0
    }

    /// Whether the image has the exclusive-lock feature, which failover and fencing rely on.
    public let hasExclusiveLock: Bool

    deinit { close() }

    private func close() {
        if pool == nil { return }
        if watchingHeader { _ = CRBD_unwatchHeader(image, headerWatch) }
        watchingHeader = false
        aoe_rbd_close(image)
        aoe_rados_ioctx_destroy(pool)
        aoe_rados_shutdown(cluster)
        pool = nil
        cluster = nil
    }

    /// Takes the image's exclusive lock in the mode where librbd never hands it to another client on request:
    /// from then on, another client's write fails instead of taking the lock away. The error names the owner.
    public func acquireExclusiveLock() throws(RBDOpenError) {
        guard hasExclusiveLock else {
            throw RBDOpenError("\(imageName): the image lacks the exclusive-lock feature (rbd feature enable \(imageName.pool)/\(imageName.image) exclusive-lock)")
        }
        let rc = aoe_rbd_lock_acquire(image, RBD_LOCK_MODE_EXCLUSIVE)
        if rc < 0 {
            let owners = lockOwners() ?? []
            throw RBDOpenError(owners.isEmpty ? "\(imageName): cannot take the exclusive lock: \(Self.text(rc))"
                                              : "\(imageName): locked by another client (\(owners.joined(separator: ", ")))", errno: -rc)
        }
    }

    /// Whether this client holds the exclusive lock now.
    public var ownsExclusiveLock: Bool {
        var owner: Int32 = 0
        return aoe_rbd_is_exclusive_lock_owner(image, &owner) == 0 && owner != 0
    }

    /// The clients holding the lock, as librbd names them (by address); nil when the cluster did not say.
    public func lockOwners() -> [String]? {
        var mode = RBD_LOCK_MODE_EXCLUSIVE
        var names = [UnsafeMutablePointer<CChar>?](repeating: nil, count: 8)
        var count = names.count
        let rc = aoe_rbd_lock_get_owners(image, &mode, &names, &count)
        if rc == -ENOENT { return [] }
        guard rc == 0 else { return nil }
        defer { aoe_rbd_lock_get_owners_cleanup(&names, count) }
        return names.prefix(count).compactMap { $0.map { String(cString: $0) } }
    }

    // MARK: - Ownership (failover and fencing)

    /// This client's address as the cluster sees it, which is how librbd names a lock owner.
    public var clientAddress: String {
        var addresses: UnsafeMutablePointer<CChar>?
        guard aoe_rados_getaddrs(cluster, &addresses) == 0, let addresses else { return "" }
        defer { free(addresses) }
        return String(cString: addresses)
    }

    public func confirmOwnership() -> Bool {
        var mode = RBD_LOCK_MODE_EXCLUSIVE
        var names = [UnsafeMutablePointer<CChar>?](repeating: nil, count: 8)
        var count = names.count
        let rc = aoe_rbd_lock_get_owners(image, &mode, &names, &count)
        if rc == -ESHUTDOWN { return false }   // blocklisted: the lock was broken
        guard rc == 0 else { return rc != -ENOENT }
        defer { aoe_rbd_lock_get_owners_cleanup(&names, count) }
        let owners = names.prefix(count).compactMap { $0.map { String(cString: $0) } }
        let me = clientAddress
        return owners.contains { Self.sameClient($0, me) }
    }

    /// librbd names an owner by its address, which may carry the v2/v1 protocol prefixes or a bracketed list.
    static func sameClient(_ owner: String, _ address: String) -> Bool {
        func nonces(_ text: String) -> Set<Substring> {
            Set(text.split(whereSeparator: { $0 == "," || $0 == "[" || $0 == "]" || $0 == " " }).map { part in
                part.hasPrefix("v2:") || part.hasPrefix("v1:") ? part.dropFirst(3) : part[...]
            })
        }
        return !address.isEmpty && !nonces(owner).isDisjoint(with: nonces(address))
    }

    /// A standby's takeover: breaks the lock of every owner (librbd blocklists each, so none of their writes
    /// can land afterwards), takes the lock, and checks that this client holds it. Returns the owners broken.
    public func takeOver() throws(RBDOpenError) -> [String] {
        let owners = lockOwners() ?? []
        for owner in owners {
            let rc = aoe_rbd_lock_break(image, RBD_LOCK_MODE_EXCLUSIVE, owner)
            if rc < 0 && rc != -ENOENT { throw RBDOpenError("\(imageName): cannot break the lock of \(owner): \(Self.text(rc))", errno: -rc) }
        }
        try acquireExclusiveLock()
        guard ownsExclusiveLock else { throw RBDOpenError("\(imageName): took the lock, yet librbd says another client owns it") }
        return owners
    }

    public func refreshSize() -> Bool {
        guard headerChanged.take() else { return false }
        var bytes: UInt64 = 0
        guard aoe_rbd_get_size(image, &bytes) == 0, bytes / UInt64(sectorSize) != sectorCount else { return false }
        sectors.store(bytes / UInt64(sectorSize), ordering: .relaxed)
        return true
    }

    public func makeQueue(tokenCapacity: Int) throws(DeviceError) -> any DeviceQueue {
        try RBDDeviceQueue(image: self, tokenCapacity: tokenCapacity)
    }

    // MARK: - Blocking calls (what `DeviceRequest.perform` uses)

    public func read(into buffer: UnsafeMutableRawBufferPointer, at lba: UInt64) throws(DeviceError) {
        let n = aoe_rbd_read(image, lba * UInt64(sectorSize), buffer.count, buffer.baseAddress?.assumingMemoryBound(to: CChar.self))
        try Self.check(n, expected: buffer.count, call: "rbd_read", lba: lba)
    }

    public func write(from buffer: UnsafeRawBufferPointer, at lba: UInt64) throws(DeviceError) {
        let n = aoe_rbd_write(image, lba * UInt64(sectorSize), buffer.count, buffer.baseAddress?.assumingMemoryBound(to: CChar.self))
        try Self.check(n, expected: buffer.count, call: "rbd_write", lba: lba)
    }

    public func flush() throws(DeviceError) {
        let rc = aoe_rbd_flush(image)
        if rc < 0 { throw DeviceError(SystemError(call: "rbd_flush", errno: -rc)) }
    }

    public func discard(_ range: SectorRange) throws(DeviceError) {
        let rc = aoe_rbd_discard(image, range.lba * UInt64(sectorSize), UInt64(range.count * sectorSize))
        if rc < 0 { throw DeviceError(SystemError(call: "rbd_discard", errno: -rc, context: "lba \(range.lba)")) }
    }

    static func check(_ result: Int, expected: Int, call: String, lba: UInt64) throws(DeviceError) {
        if result < 0 { throw DeviceError(SystemError(call: call, errno: Int32(-result), context: "lba \(lba)")) }
        if result != expected { throw DeviceError(SystemError(call: call, errno: EIO, context: "lba \(lba): \(result) of \(expected) bytes")) }
    }

    static func text(_ rc: Int32) -> String { String(cString: strerror(-rc)) }
}
