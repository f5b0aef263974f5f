#include "CIOUring.h"
#include <errno.h>
#include <stdlib.h>
#include <poll.h>
#include <liburing.h>

struct CIOUring { struct io_uring ring; };

CIOUring *CIOUring_create(unsigned entries, unsigned maxWorkers, int *error) {
    CIOUring *r = calloc(1, sizeof *r);
    if (!r) { *error = ENOMEM; return NULL; }
    struct io_uring_params params = { .flags = IORING_SETUP_COOP_TASKRUN };
    int rc = io_uring_queue_init_params(entries, &r->ring, &params);
    if (rc == -EINVAL) {   // before 5.19
        struct io_uring_params plain = { 0 };
        rc = io_uring_queue_init_params(entries, &r->ring, &plain);
    }
    if (rc < 0) { free(r); *error = -rc; return NULL; }
    if (maxWorkers > 0) {
        unsigned limits[2] = { maxWorkers, maxWorkers };   // bounded and unbounded io-wq pools
        (void)io_uring_register_iowq_max_workers(&r->ring, limits);   // best effort: older kernels lack it
    }
    return r;
}

void CIOUring_destroy(CIOUring *r) {
    if (!r) return;
    io_uring_queue_exit(&r->ring);
    free(r);
}

int CIOUring_prepareVectored(CIOUring *r, int write, int fd, const struct iovec *v, unsigned n, uint64_t off, uint64_t data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) return -EBUSY;
    if (write) io_uring_prep_writev(sqe, fd, v, n, off); else io_uring_prep_readv(sqe, fd, v, n, off);
    io_uring_sqe_set_data64(sqe, data);
    return 0;
}

int CIOUring_prepareDatasync(CIOUring *r, int fd, uint64_t data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, data);
    return 0;
}

int CIOUring_prepareFallocate(CIOUring *r, int fd, int mode, uint64_t offset, uint64_t length, uint64_t data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_fallocate(sqe, fd, mode, offset, length);
    io_uring_sqe_set_data64(sqe, data);
    return 0;
}

int CIOUring_prepareNop(CIOUring *r, uint64_t data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, data);
    return 0;
}

int CIOUring_preparePollIn(CIOUring *r, int fd, uint64_t data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, data);
    return 0;
}

int CIOUring_submit(CIOUring *r) {
    int rc;
    do { rc = io_uring_submit(&r->ring); } while (rc == -EINTR);
    return rc;
}

int CIOUring_submitAndWait(CIOUring *r, int64_t timeoutNanoseconds) {
    struct __kernel_timespec ts = { .tv_sec = timeoutNanoseconds / 1000000000, .tv_nsec = timeoutNanoseconds % 1000000000 };
    struct io_uring_cqe *cqe;
    int rc = io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, &ts, NULL);
    if (rc == -ETIME || rc == -EINTR) return 0;
    return rc < 0 ? rc : 0;
}

int CIOUring_reapReady(CIOUring *r, uint64_t *data, int32_t *results, unsigned capacity) {
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&r->ring, head, cqe) {
        if (n == capacity) break;
        data[n] = io_uring_cqe_get_data64(cqe);
        results[n] = cqe->res;
        n++;
    }
    io_uring_cq_advance(&r->ring, n);
    return (int)n;
}
