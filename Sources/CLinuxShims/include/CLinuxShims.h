// Kernel and libc surfaces that Glibc's Swift module does not expose.
// Each shim exists because Swift cannot see the header, cannot call a variadic
// function (ioctl), or cannot import a function-like macro (BLKGETSIZE64, _IOR).
#ifndef CLINUXSHIMS_H
#define CLINUXSHIMS_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <linux/if_packet.h>
#include <linux/if_ether.h>
#include <linux/filter.h>
#include <net/if.h>
#include <scsi/sg.h>

/// The EtherType IEEE assigned to ATA over Ethernet (AoEr11 section 2.1).
#define CLS_ETH_P_AOE 0x88A2

/// Interface facts read through SIOCGIF* ioctls on a throwaway socket.
/// Returns 0, or -1 with errno set (ENODEV: no such interface).
int CLinuxShims_interfaceIndex(const char *name, int *index);
int CLinuxShims_interfaceHardwareAddress(const char *name, uint8_t mac[6]);
int CLinuxShims_interfaceMTU(const char *name, int *mtu);
int CLinuxShims_interfaceFlags(const char *name, int *flags);

/// ioctl(fd, BLKGETSIZE64, &bytes): BLKGETSIZE64 is an _IOR macro Swift cannot import.
int CLinuxShims_blockDeviceSize(int fd, uint64_t *bytes);

/// ioctl(fd, SG_IO, hdr): ioctl is variadic.
int CLinuxShims_sgIO(int fd, sg_io_hdr_t *hdr);

/// recvmmsg/sendmmsg are declared only under _GNU_SOURCE, which the Swift module does not define.
/// Same layout as the kernel's struct mmsghdr.
typedef struct CLinuxShims_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
} CLinuxShims_mmsghdr;
int CLinuxShims_recvmmsg(int fd, CLinuxShims_mmsghdr *msgs, unsigned int count, int flags);
int CLinuxShims_sendmmsg(int fd, CLinuxShims_mmsghdr *msgs, unsigned int count, int flags);

/// flock(fd, LOCK_EX | LOCK_NB): Swift sees `flock` as the struct of the same name.
int CLinuxShims_lockExclusiveNonBlocking(int fd);

/// Attaches a classic BPF program (SO_ATTACH_FILTER); sock_fprog holds a pointer Swift would have to build by hand.
int CLinuxShims_attachFilter(int fd, const struct sock_filter *code, unsigned short count);

/// Whether the calling process has CAP_NET_RAW in its effective set (capget without libcap).
int CLinuxShims_hasCapability(int capability);

/// fstatfs(fd)->f_type: <sys/vfs.h> is not in the Swift module.
int CLinuxShims_filesystemType(int fd, long *type);

/// preadv2(fd, one iovec, offset, RWF_NOWAIT): reads only what the page cache already holds, never waiting
/// for a disk (EAGAIN otherwise). preadv2 and RWF_NOWAIT are _GNU_SOURCE / <linux/fs.h> names.
ssize_t CLinuxShims_preadNoWait(int fd, void *buffer, size_t length, off_t offset);

/// O_DIRECT is a _GNU_SOURCE constant.
int CLinuxShims_O_DIRECT(void);

/// fallocate(2), a _GNU_SOURCE call: 0, or -1 with errno.
int CLinuxShims_fallocate(int fd, int mode, int64_t offset, int64_t length);

/// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC): <sys/eventfd.h> is not in the Swift module.
int CLinuxShims_eventCounter(void);

/// statx(fd, STATX_DIOALIGN): the memory and file-offset alignment O_DIRECT needs on this file. 0 on success
/// with both set (0 when the filesystem or device does not say), -1 with errno otherwise (ENOSYS, EINVAL on
/// older kernels).
int CLinuxShims_directIOAlignment(int fd, uint32_t *memory, uint32_t *offset);

/// ppoll for POLLIN on `fd` and `other` (ignored when negative), at most `timeout`: ppoll is a GNU extension
/// the Swift Glibc module does not export. Returns how many are readable, 0 on timeout, -1 with errno.
int CLinuxShims_pollReadable(int fd, int other, long long timeoutNanoseconds);

/// epoll_create1(EPOLL_CLOEXEC) / epoll_ctl(ADD, fd, EPOLLIN) / epoll_wait for any of them, up to
/// timeoutNanoseconds (epoll_pwait2): <sys/epoll.h> is not in the Swift Glibc module. The epoll descriptor
/// itself polls readable while any added descriptor is, so an io_uring poll on it watches them all.
int CLinuxShims_epollCreate(void);
int CLinuxShims_epollAddReadable(int epfd, int fd);
int CLinuxShims_epollWaitReadable(int epfd, long long timeoutNanoseconds);

/// ioctl(BLKSSZGET): a block device's logical sector size, the unit O_DIRECT transfers must be aligned to.
int CLinuxShims_logicalBlockSize(int fd, int *bytes);

/// Where the fields of the TCMU ring (<linux/target_core_user.h>) sit: offsetof() of the packed UAPI structs,
/// which Swift cannot import (packed, a union, a flexible array). Byte offsets from the start of each struct.
typedef struct CLinuxShims_TCMULayout {
    uint32_t mailboxVersion, mailboxFlags, mailboxCommandRingOffset, mailboxCommandRingSize, mailboxHead, mailboxTail;
    uint32_t entryLengthOp, entryCommandID, entryKernelFlags, entryUserFlags;
    uint32_t requestIOVCount, requestBidiIOVCount, requestDIFIOVCount, requestCDBOffset, requestIOVs, iovSize;
    uint32_t responseStatus, responseReadLength, responseSense, senseSize;
    uint32_t opMask, opPad, opCommand, opTaskManagement, userFlagUnknownOp, userFlagReadLength, mailboxCapReadLength;
} CLinuxShims_TCMULayout;
void CLinuxShims_tcmuLayout(CLinuxShims_TCMULayout *layout);

/// Acquire load and release store of a 32-bit word shared with the kernel (the TCMU mailbox's head and tail):
/// the entries a head covers are read after it, and a response is written before its tail.
static inline uint32_t CLinuxShims_loadAcquire32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void CLinuxShims_storeRelease32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/// memcpy that survives a SIGBUS from `mapping` (a shared file mapping whose file someone truncated): returns 0,
/// or -1 when touching [lo, hi) faulted, with the copy incomplete. Any other SIGBUS keeps its default action (the
/// process dies, as before). The first call installs the handler, process-wide. No system call per copy.
int CLinuxShims_guardedCopy(void *dst, const void *src, size_t count, const void *lo, const void *hi);

/// A TPACKET_V2 receive ring (PACKET_RX_RING) mapped from an AF_PACKET socket: the kernel writes each frame
/// into the next ring slot and hands it over by its status word, so frames are taken without a system call.
/// Blocks are 64 KiB (a power of two pages: the kernel allocates each block as one order-n chunk).
typedef struct CLinuxShims_RxRing {
    void *map;
    size_t length;
    unsigned frameSize, framesPerBlock, blockSize, frameCount;
} CLinuxShims_RxRing;
/// Sets TPACKET_V2 and the ring on `fd` (before bind is best: nothing queues outside the ring) and maps it;
/// `frameCount` is rounded up to whole blocks. 0, or -1 with errno (the socket is left as it was when the
/// version or the ring is refused).
int CLinuxShims_rxRingOpen(int fd, unsigned frameBytes, unsigned frameCount, CLinuxShims_RxRing *ring);
void CLinuxShims_rxRingClose(CLinuxShims_RxRing *ring);
/// Where ring slot `index` (0 ..< frameCount, the kernel's fill order) starts.
void *CLinuxShims_rxRingSlot(const CLinuxShims_RxRing *ring, unsigned index);
/// A slot's frame when the kernel has handed it to us: its bytes, length and whether the slot cut it short;
/// NULL while the kernel owns it. The status word is read with acquire, so the bytes are complete.
const void *CLinuxShims_rxRingFrame(void *slot, unsigned *length, int *truncated);
/// Gives a slot back to the kernel (release: our reads of it are done first).
void CLinuxShims_rxRingRelease(void *slot);

#endif
