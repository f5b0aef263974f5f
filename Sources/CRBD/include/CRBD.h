// Ceph RBD through Debian's librbd and librados, loaded when the first rbd: export opens (dlopen), so that
// aoe-target neither needs the Ceph client libraries (55 of them, 120 MB) nor loads them unless it serves an
// RBD image. Types and constants come from the headers (librbd-dev, librados-dev); every call goes through
// the aoe_ wrappers below, each with the signature of the function it is named after.
#ifndef CRBD_H
#define CRBD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

/// Loads librados.so.2 and librbd.so.1 and resolves every function below, once per process (thread-safe).
/// 0, or -1 with the reason (dlerror's text) in `error`.
int CRBD_load(char *error, size_t errorSize);

/// Watches the image's header (resize, features, lock changes): each change adds 1 to the eventfd `eventFD`,
/// from librbd's thread, so that the event loop notices without any Swift code running there.
int CRBD_watchHeader(rbd_image_t image, int eventFD, uint64_t *handle);
int CRBD_unwatchHeader(rbd_image_t image, uint64_t handle);

int aoe_rados_create2(rados_t *cluster, const char *const clusterName, const char *const name, uint64_t flags);
int aoe_rados_conf_read_file(rados_t cluster, const char *path);
int aoe_rados_conf_parse_env(rados_t cluster, const char *var);
int aoe_rados_conf_set(rados_t cluster, const char *option, const char *value);
int aoe_rados_connect(rados_t cluster);
void aoe_rados_shutdown(rados_t cluster);
int aoe_rados_ioctx_create(rados_t cluster, const char *poolName, rados_ioctx_t *ioctx);
void aoe_rados_ioctx_destroy(rados_ioctx_t io);
void aoe_rados_ioctx_set_namespace(rados_ioctx_t io, const char *nspace);
int aoe_rados_getaddrs(rados_t cluster, char **addrs);

int aoe_rbd_open(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snapName);
int aoe_rbd_open_read_only(rados_ioctx_t io, const char *name, rbd_image_t *image, const char *snapName);
int aoe_rbd_close(rbd_image_t image);
int aoe_rbd_get_size(rbd_image_t image, uint64_t *size);
int aoe_rbd_get_features(rbd_image_t image, uint64_t *features);
int aoe_rbd_get_id(rbd_image_t image, char *id, size_t idLength);
int aoe_rbd_lock_acquire(rbd_image_t image, rbd_lock_mode_t mode);
int aoe_rbd_is_exclusive_lock_owner(rbd_image_t image, int *isOwner);
int aoe_rbd_lock_get_owners(rbd_image_t image, rbd_lock_mode_t *mode, char **owners, size_t *maxOwners);
void aoe_rbd_lock_get_owners_cleanup(char **owners, size_t count);
int aoe_rbd_lock_break(rbd_image_t image, rbd_lock_mode_t mode, const char *owner);
ssize_t aoe_rbd_read(rbd_image_t image, uint64_t offset, size_t length, char *buffer);
ssize_t aoe_rbd_write(rbd_image_t image, uint64_t offset, size_t length, const char *buffer);
int aoe_rbd_flush(rbd_image_t image);
int aoe_rbd_discard(rbd_image_t image, uint64_t offset, uint64_t length);
int aoe_rbd_set_image_notification(rbd_image_t image, int fd, int type);
int aoe_rbd_aio_create_completion(void *argument, rbd_callback_t callback, rbd_completion_t *completion);
int aoe_rbd_aio_readv(rbd_image_t image, const struct iovec *iov, int count, uint64_t offset, rbd_completion_t completion);
int aoe_rbd_aio_writev(rbd_image_t image, const struct iovec *iov, int count, uint64_t offset, rbd_completion_t completion);
int aoe_rbd_aio_flush(rbd_image_t image, rbd_completion_t completion);
int aoe_rbd_aio_discard(rbd_image_t image, uint64_t offset, uint64_t length, rbd_completion_t completion);
void aoe_rbd_aio_release(rbd_completion_t completion);
void *aoe_rbd_aio_get_arg(rbd_completion_t completion);
ssize_t aoe_rbd_aio_get_return_value(rbd_completion_t completion);
int aoe_rbd_poll_io_events(rbd_image_t image, rbd_completion_t *completions, int count);

#endif
