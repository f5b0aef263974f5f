#define _GNU_SOURCE
#include "CLinuxShims.h"
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/file.h>
#include <sys/vfs.h>
#include <sys/eventfd.h>
#include <poll.h>
#include <sys/epoll.h>
#include <linux/stat.h>
#include <sys/syscall.h>
#include <linux/fs.h>
#include <linux/capability.h>

static int with_ifreq(const char *name, unsigned long request, struct ifreq *ifr) {
    if (strlen(name) >= IFNAMSIZ) { errno = ENODEV; return -1; }
    memset(ifr, 0, sizeof *ifr);
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int rc = ioctl(fd, request, ifr);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int CLinuxShims_interfaceIndex(const char *name, int *index) {
    struct ifreq ifr;
    if (with_ifreq(name, SIOCGIFINDEX, &ifr) < 0) return -1;
    *index = ifr.ifr_ifindex;
    return 0;
}

int CLinuxShims_interfaceHardwareAddress(const char *name, uint8_t mac[6]) {
    struct ifreq ifr;
    if (with_ifreq(name, SIOCGIFHWADDR, &ifr) < 0) return -1;
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    return 0;
}

int CLinuxShims_interfaceMTU(const char *name, int *mtu) {
    struct ifreq ifr;
    if (with_ifreq(name, SIOCGIFMTU, &ifr) < 0) return -1;
    *mtu = ifr.ifr_mtu;
    return 0;
}

int CLinuxShims_interfaceFlags(const char *name, int *flags) {
    struct ifreq ifr;
    if (with_ifreq(name, SIOCGIFFLAGS, &ifr) < 0) return -1;
    *flags = ifr.ifr_flags;
    return 0;
}

int CLinuxShims_blockDeviceSize(int fd, uint64_t *bytes) {
    return ioctl(fd, BLKGETSIZE64, bytes);
}

int CLinuxShims_sgIO(int fd, sg_io_hdr_t *hdr) {
    return ioctl(fd, SG_IO, hdr);
}

_Static_assert(sizeof(CLinuxShims_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr layout");

int CLinuxShims_recvmmsg(int fd, CLinuxShims_mmsghdr *msgs, unsigned int count, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)msgs, count, flags, NULL);
}

int CLinuxShims_sendmmsg(int fd, CLinuxShims_mmsghdr *msgs, unsigned int count, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)msgs, count, flags);
}

int CLinuxShims_lockExclusiveNonBlocking(int fd) { return flock(fd, LOCK_EX | LOCK_NB); }

int CLinuxShims_attachFilter(int fd, const struct sock_filter *code, unsigned short count) {
    struct sock_fprog prog = { .len = count, .filter = (struct sock_filter *)code };
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);
}

int CLinuxShims_hasCapability(int capability) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capget, &header, data) < 0) return 0;
    return (data[capability / 32].effective >> (capability % 32)) & 1;
}

int CLinuxShims_O_DIRECT(void) { return O_DIRECT; }

int CLinuxShims_fallocate(int fd, int mode, int64_t offset, int64_t length) { return fallocate(fd, mode, offset, length); }

#include <sys/uio.h>
ssize_t CLinuxShims_preadNoWait(int fd, void *buffer, size_t length, off_t offset) {
    struct iovec v = { .iov_base = buffer, .iov_len = length };
    return preadv2(fd, &v, 1, offset, RWF_NOWAIT);
}

int CLinuxShims_filesystemType(int fd, long *type) {
    struct statfs fs;
    if (fstatfs(fd, &fs) < 0) return -1;
    *type = (long)fs.f_type;
    return 0;
}

int CLinuxShims_eventCounter(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int CLinuxShims_directIOAlignment(int fd, uint32_t *memory, uint32_t *offset) {
    struct statx st;
    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) != 0) return -1;
    int known = (st.stx_mask & STATX_DIOALIGN) != 0;
    *memory = known ? st.stx_dio_mem_align : 0;
    *offset = known ? st.stx_dio_offset_align : 0;
    return 0;
}

int CLinuxShims_pollReadable(int fd, int other, long long timeoutNanoseconds) {
    /* poll ignores a negative descriptor: `other` is optional. */
    struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = other, .events = POLLIN } };
    struct timespec t = { .tv_sec = timeoutNanoseconds / 1000000000LL, .tv_nsec = timeoutNanoseconds % 1000000000LL };
    return ppoll(p, 2, &t, NULL);
}

int CLinuxShims_epollCreate(void) { return epoll_create1(EPOLL_CLOEXEC); }

int CLinuxShims_epollAddReadable(int epfd, int fd) {
    struct epoll_event e = { .events = EPOLLIN, .data.fd = fd };
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
}

int CLinuxShims_epollWaitReadable(int epfd, long long timeoutNanoseconds) {
    struct epoll_event events[8];
    struct timespec t = { .tv_sec = timeoutNanoseconds / 1000000000LL, .tv_nsec = timeoutNanoseconds % 1000000000LL };
    return epoll_pwait2(epfd, events, 8, &t, NULL);
}

int CLinuxShims_logicalBlockSize(int fd, int *bytes) {
    return ioctl(fd, BLKSSZGET, bytes);
}

// <linux/uio.h> defines struct iovec again, after <sys/uio.h> did: its guard keeps the libc one, the same layout.
#include <linux/types.h>
#define __LINUX_UIO_H
#define UIO_MAXIOV 1024
#include <linux/target_core_user.h>
void CLinuxShims_tcmuLayout(CLinuxShims_TCMULayout *l) {
    l->mailboxVersion = offsetof(struct tcmu_mailbox, version);
    l->mailboxFlags = offsetof(struct tcmu_mailbox, flags);
    l->mailboxCommandRingOffset = offsetof(struct tcmu_mailbox, cmdr_off);
    l->mailboxCommandRingSize = offsetof(struct tcmu_mailbox, cmdr_size);
    l->mailboxHead = offsetof(struct tcmu_mailbox, cmd_head);
    l->mailboxTail = offsetof(struct tcmu_mailbox, cmd_tail);
    l->entryLengthOp = offsetof(struct tcmu_cmd_entry, hdr.len_op);
    l->entryCommandID = offsetof(struct tcmu_cmd_entry, hdr.cmd_id);
    l->entryKernelFlags = offsetof(struct tcmu_cmd_entry, hdr.kflags);
    l->entryUserFlags = offsetof(struct tcmu_cmd_entry, hdr.uflags);
    l->requestIOVCount = offsetof(struct tcmu_cmd_entry, req.iov_cnt);
    l->requestBidiIOVCount = offsetof(struct tcmu_cmd_entry, req.iov_bidi_cnt);
    l->requestDIFIOVCount = offsetof(struct tcmu_cmd_entry, req.iov_dif_cnt);
    l->requestCDBOffset = offsetof(struct tcmu_cmd_entry, req.cdb_off);
    l->requestIOVs = offsetof(struct tcmu_cmd_entry, req.iov);
    l->iovSize = sizeof(struct iovec);
    l->responseStatus = offsetof(struct tcmu_cmd_entry, rsp.scsi_status);
    l->responseReadLength = offsetof(struct tcmu_cmd_entry, rsp.read_len);
    l->responseSense = offsetof(struct tcmu_cmd_entry, rsp.sense_buffer);
    l->senseSize = TCMU_SENSE_BUFFERSIZE;
    l->opMask = TCMU_OP_MASK;
    l->opPad = TCMU_OP_PAD;
    l->opCommand = TCMU_OP_CMD;
    l->opTaskManagement = TCMU_OP_TMR;
    l->userFlagUnknownOp = TCMU_UFLAG_UNKNOWN_OP;
    l->userFlagReadLength = TCMU_UFLAG_READ_LEN;
    l->mailboxCapReadLength = TCMU_MAILBOX_FLAG_CAP_READ_LEN;
}

#include <setjmp.h>
#include <signal.h>
#include <pthread.h>
#include <string.h>

// Per thread: where the copy in progress jumps back to, and the mapping it may fault in.
static __thread sigjmp_buf *guard_jump;
static __thread const char *guard_lo, *guard_hi;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static struct sigaction guard_previous;

static void guard_handler(int sig, siginfo_t *info, void *context) {
    (void)context;
    const char *at = (const char *)info->si_addr;
    if (guard_jump && at >= guard_lo && at < guard_hi) siglongjmp(*guard_jump, 1);
    // Not a guarded copy: whatever handled SIGBUS before us (the Swift runtime's backtracer, or the default
    // action) takes it, as it always did: with the old handler back, the faulting access runs again and faults
    // into it, with its own address.
    sigaction(sig, &guard_previous, NULL);
}

static void guard_install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = guard_handler;
    // SA_NODEFER: SIGBUS is not blocked in the handler, so leaving it with siglongjmp needs no mask restore and
    // sigsetjmp need not save the mask (which would be a sigprocmask call per copy).
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, &guard_previous);
}

int CLinuxShims_guardedCopy(void *dst, const void *src, size_t count, const void *lo, const void *hi) {
    pthread_once(&guard_once, guard_install);
    sigjmp_buf jump;
    if (sigsetjmp(jump, 0)) {
        guard_jump = NULL;
        return -1;
    }
    guard_lo = lo;
    guard_hi = hi;
    guard_jump = &jump;
    memcpy(dst, src, count);
    guard_jump = NULL;
    return 0;
}

#include <sys/mman.h>

int CLinuxShims_rxRingOpen(int fd, unsigned frameBytes, unsigned frameCount, CLinuxShims_RxRing *ring) {
    const unsigned blockSize = 64 * 1024;
    /* Room for the header the kernel puts before the frame (tp_mac offset, up to ~80 bytes for V2). */
    unsigned frameSize = (unsigned)TPACKET_ALIGN(TPACKET2_HDRLEN + 16 + frameBytes + TPACKET_ALIGNMENT);
    if (frameSize > blockSize || frameCount == 0) { errno = EINVAL; return -1; }
    unsigned perBlock = blockSize / frameSize;
    unsigned blocks = (frameCount + perBlock - 1) / perBlock;
    int version = TPACKET_V2;
    if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof version) != 0) return -1;
    struct tpacket_req req = { .tp_block_size = blockSize, .tp_block_nr = blocks, .tp_frame_size = frameSize,
                               .tp_frame_nr = blocks * perBlock };
    size_t length = (size_t)blockSize * blocks;
    void *map = MAP_FAILED;
    if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) == 0) {
        map = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
            int saved = errno;
            struct tpacket_req none = { 0 };
            setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &none, sizeof none);
            errno = saved;
        }
    }
    if (map == MAP_FAILED) {   /* the socket as it was: no ring, version 1 */
        int saved = errno;
        version = TPACKET_V1;
        setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof version);
        errno = saved;
        return -1;
    }
    *ring = (CLinuxShims_RxRing){ .map = map, .length = length, .frameSize = frameSize, .framesPerBlock = perBlock,
                                  .blockSize = blockSize, .frameCount = blocks * perBlock };
    return 0;
}

void CLinuxShims_rxRingClose(CLinuxShims_RxRing *ring) {
    if (ring->map) munmap(ring->map, ring->length);
    ring->map = NULL;
}

void *CLinuxShims_rxRingSlot(const CLinuxShims_RxRing *ring, unsigned index) {
    return (char *)ring->map + (size_t)(index / ring->framesPerBlock) * ring->blockSize
           + (size_t)(index % ring->framesPerBlock) * ring->frameSize;
}

const void *CLinuxShims_rxRingFrame(void *slot, unsigned *length, int *truncated) {
    struct tpacket2_hdr *h = slot;
    if (!(__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER)) return NULL;
    *length = h->tp_snaplen;
    *truncated = h->tp_snaplen < h->tp_len;
    return (const char *)h + h->tp_mac;
}

void CLinuxShims_rxRingRelease(void *slot) {
    __atomic_store_n(&((struct tpacket2_hdr *)slot)->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
}
