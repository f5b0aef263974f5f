// Ceph RBD through Debian's librbd and librados. Swift calls the C API directly; this shim adds only what
// must not be Swift: the header-watch callback, which librbd runs on its own threads.
#ifndef CRBD_H
#define CRBD_H

#include <stdint.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

/// Watches the image's header (resize, features, lock changes): each change adds 1 to the eventfd `eventFD`,
/// from librbd's thread, so that the event loop notices without any Swift code running there.
/// 0 or -errno; `handle` is for CRBD_unwatchHeader.
int CRBD_watchHeader(rbd_image_t image, int eventFD, uint64_t *handle);
int CRBD_unwatchHeader(rbd_image_t image, uint64_t handle);

#endif
