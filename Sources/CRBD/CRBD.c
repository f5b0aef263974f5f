#include "CRBD.h"
#include <unistd.h>

static void CRBD_headerChanged(void *arg) {
    uint64_t one = 1;
    // An eventfd write of 8 bytes only fails when the counter would overflow, which a reader prevents.
    ssize_t written = write((int)(intptr_t)arg, &one, sizeof one);
    (void)written;
}

int CRBD_watchHeader(rbd_image_t image, int eventFD, uint64_t *handle) {
    return rbd_update_watch(image, handle, CRBD_headerChanged, (void *)(intptr_t)eventFD);
}

int CRBD_unwatchHeader(rbd_image_t image, uint64_t handle) {
    return rbd_update_unwatch(image, handle);
}
