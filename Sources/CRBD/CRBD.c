#include "CRBD.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

// Each function of the list, as (return type, name, parameters, arguments): a pointer typed from the header's
// own declaration (so a signature that differs from librbd's does not compile) and its wrapper.
#define CRBD_FUNCTIONS(F, V) \
    F(int, rados_create2, (rados_t *a, const char *const b, const char *const c, uint64_t d), (a, b, c, d)) \
    F(int, rados_conf_read_file, (rados_t a, const char *b), (a, b)) \
    F(int, rados_conf_parse_env, (rados_t a, const char *b), (a, b)) \
    F(int, rados_conf_set, (rados_t a, const char *b, const char *c), (a, b, c)) \
    F(int, rados_connect, (rados_t a), (a)) \
    V(rados_shutdown, (rados_t a), (a)) \
    F(int, rados_ioctx_create, (rados_t a, const char *b, rados_ioctx_t *c), (a, b, c)) \
    V(rados_ioctx_destroy, (rados_ioctx_t a), (a)) \
    V(rados_ioctx_set_namespace, (rados_ioctx_t a, const char *b), (a, b)) \
    F(int, rados_getaddrs, (rados_t a, char **b), (a, b)) \
    F(int, rbd_open, (rados_ioctx_t a, const char *b, rbd_image_t *c, const char *d), (a, b, c, d)) \
    F(int, rbd_open_read_only, (rados_ioctx_t a, const char *b, rbd_image_t *c, const char *d), (a, b, c, d)) \
    F(int, rbd_close, (rbd_image_t a), (a)) \
    F(int, rbd_get_size, (rbd_image_t a, uint64_t *b), (a, b)) \
    F(int, rbd_get_features, (rbd_image_t a, uint64_t *b), (a, b)) \
    F(int, rbd_get_id, (rbd_image_t a, char *b, size_t c), (a, b, c)) \
    F(int, rbd_lock_acquire, (rbd_image_t a, rbd_lock_mode_t b), (a, b)) \
    F(int, rbd_is_exclusive_lock_owner, (rbd_image_t a, int *b), (a, b)) \
    F(int, rbd_lock_get_owners, (rbd_image_t a, rbd_lock_mode_t *b, char **c, size_t *d), (a, b, c, d)) \
    V(rbd_lock_get_owners_cleanup, (char **a, size_t b), (a, b)) \
    F(int, rbd_lock_break, (rbd_image_t a, rbd_lock_mode_t b, const char *c), (a, b, c)) \
    F(ssize_t, rbd_read, (rbd_image_t a, uint64_t b, size_t c, char *d), (a, b, c, d)) \
    F(ssize_t, rbd_write, (rbd_image_t a, uint64_t b, size_t c, const char *d), (a, b, c, d)) \
    F(int, rbd_flush, (rbd_image_t a), (a)) \
    F(int, rbd_discard, (rbd_image_t a, uint64_t b, uint64_t c), (a, b, c)) \
    F(int, rbd_set_image_notification, (rbd_image_t a, int b, int c), (a, b, c)) \
    F(int, rbd_aio_create_completion, (void *a, rbd_callback_t b, rbd_completion_t *c), (a, b, c)) \
    F(int, rbd_aio_readv, (rbd_image_t a, const struct iovec *b, int c, uint64_t d, rbd_completion_t e), (a, b, c, d, e)) \
    F(int, rbd_aio_writev, (rbd_image_t a, const struct iovec *b, int c, uint64_t d, rbd_completion_t e), (a, b, c, d, e)) \
    F(int, rbd_aio_flush, (rbd_image_t a, rbd_completion_t b), (a, b)) \
    F(int, rbd_aio_discard, (rbd_image_t a, uint64_t b, uint64_t c, rbd_completion_t d), (a, b, c, d)) \
    V(rbd_aio_release, (rbd_completion_t a), (a)) \
    F(void *, rbd_aio_get_arg, (rbd_completion_t a), (a)) \
    F(ssize_t, rbd_aio_get_return_value, (rbd_completion_t a), (a)) \
    F(int, rbd_poll_io_events, (rbd_image_t a, rbd_completion_t *b, int c), (a, b, c)) \
    F(int, rbd_update_watch, (rbd_image_t a, uint64_t *b, rbd_update_callback_t c, void *d), (a, b, c, d)) \
    F(int, rbd_update_unwatch, (rbd_image_t a, uint64_t b), (a, b))

#define CRBD_POINTER(ret, name, params, args) static __typeof__(&name) p_##name;
#define CRBD_VOID_POINTER(name, params, args) static __typeof__(&name) p_##name;
CRBD_FUNCTIONS(CRBD_POINTER, CRBD_VOID_POINTER)

#define CRBD_WRAPPER(ret, name, params, args) ret aoe_##name params { return p_##name args; }
#define CRBD_VOID_WRAPPER(name, params, args) void aoe_##name params { p_##name args; }
CRBD_FUNCTIONS(CRBD_WRAPPER, CRBD_VOID_WRAPPER)

static pthread_once_t loadOnce = PTHREAD_ONCE_INIT;
static char loadError[512];

static void *resolve(void *library, const char *name) {
    void *symbol = dlsym(library, name);
    if (symbol == NULL && loadError[0] == 0) snprintf(loadError, sizeof loadError, "%s", dlerror());
    return symbol;
}

static void loadLibraries(void) {
    // librados first: librbd needs it, and naming it gives the clearer error when it is missing.
    void *rados = dlopen("librados.so.2", RTLD_NOW | RTLD_LOCAL);
    void *rbd = rados != NULL ? dlopen("librbd.so.1", RTLD_NOW | RTLD_LOCAL) : NULL;
    if (rbd == NULL) {
        snprintf(loadError, sizeof loadError, "%s", dlerror());
        return;
    }
#define CRBD_RESOLVE(ret, name, params, args) p_##name = (__typeof__(&name))resolve(strncmp(#name, "rados", 5) == 0 ? rados : rbd, #name);
#define CRBD_VOID_RESOLVE(name, params, args) CRBD_RESOLVE(void, name, params, args)
    CRBD_FUNCTIONS(CRBD_RESOLVE, CRBD_VOID_RESOLVE)
}

int CRBD_load(char *error, size_t errorSize) {
    pthread_once(&loadOnce, loadLibraries);
    if (loadError[0] == 0) return 0;
    snprintf(error, errorSize, "%s", loadError);
    return -1;
}

static void CRBD_headerChanged(void *arg) {
    uint64_t one = 1;
    // An eventfd write of 8 bytes only fails when the counter would overflow, which a reader prevents.
    ssize_t written = write((int)(intptr_t)arg, &one, sizeof one);
    (void)written;
}

int CRBD_watchHeader(rbd_image_t image, int eventFD, uint64_t *handle) {
    return p_rbd_update_watch(image, handle, CRBD_headerChanged, (void *)(intptr_t)eventFD);
}

int CRBD_unwatchHeader(rbd_image_t image, uint64_t handle) {
    return p_rbd_update_unwatch(image, handle);
}
