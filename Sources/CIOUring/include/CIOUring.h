// io_uring through Debian's liburing. liburing's prep/submit helpers are static inline functions over
// kernel structs that Swift cannot import cleanly; these few entry points are all the target needs.
#ifndef CIOURING_H
#define CIOURING_H

#include <stdint.h>
#include <sys/uio.h>

typedef struct CIOUring CIOUring;

/// A ring with room for `entries` submissions (twice as many completions). NULL with *error = errno when
/// the kernel refuses (ENOSYS: no io_uring; EPERM: disabled by sysctl or seccomp; ENOMEM).
/// Completions are run when the ring's one thread enters the kernel (COOP_TASKRUN where the kernel has it),
/// not by interrupting it. `maxWorkers` > 0 bounds the kernel's io-wq threads for requests that must block (buffered I/O).
CIOUring *CIOUring_create(unsigned entries, unsigned maxWorkers, int *error);
void CIOUring_destroy(CIOUring *ring);

/// Queue one request; 0, or -EBUSY when the submission queue is full. Nothing reaches the kernel before
/// CIOUring_submit.
int CIOUring_prepareVectored(CIOUring *ring, int write, int fd, const struct iovec *vectors, unsigned count,
                             uint64_t offset, uint64_t userData);
int CIOUring_prepareDatasync(CIOUring *ring, int fd, uint64_t userData);
int CIOUring_prepareFallocate(CIOUring *ring, int fd, int mode, uint64_t offset, uint64_t length, uint64_t userData);
int CIOUring_prepareNop(CIOUring *ring, uint64_t userData);
/// One-shot poll for POLLIN on `fd` (a socket with frames queued).
int CIOUring_preparePollIn(CIOUring *ring, int fd, uint64_t userData);

/// Hands every queued request to the kernel in one system call; the number submitted or -errno.
int CIOUring_submit(CIOUring *ring);

/// Submits what is queued and waits until at least one completion is ready or `timeoutNanoseconds` pass,
/// in one system call. 0 (also on timeout), or -errno.
int CIOUring_submitAndWait(CIOUring *ring, int64_t timeoutNanoseconds);

/// Takes up to `capacity` completions that are ready now, without waiting: their user data and results
/// (bytes moved, or -errno). Returns how many.
int CIOUring_reapReady(CIOUring *ring, uint64_t *userData, int32_t *results, unsigned capacity);

#endif
