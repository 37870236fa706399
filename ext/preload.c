/*
 * sqlitebin_preload.so: registers sqlitebin in every SQLite connection of a process that never
 * loads extensions itself, such as a dqlite node.
 *
 *     LD_PRELOAD=/path/to/sqlitebin/sqlitebin_preload.so dqlite-demo ...
 *
 * The constructor finds sqlite3_auto_extension in the process with dlsym (the process's own
 * libsqlite3, whichever it links; nothing here links against SQLite) and opens the extension:
 * sqlitebin.so in the same directory as this file, or the path in SQLITEBIN_EXTENSION.
 *
 * The registration itself waits for the process's first sqlite3_open*(), which this library
 * interposes and forwards: sqlite3_auto_extension() initialises SQLite, after which
 * sqlite3_config() fails, and hosts configure SQLite first (go-dqlite panics at start-up with
 * "set single thread mode: bad parameter or other API misuse" if the constructor registers).
 * From the first open on, every connection gets hamming(), sqlitebin_knn and the rest exactly
 * as after `.load`. A process without libsqlite3 (LD_PRELOAD is inherited by child processes)
 * is left alone; other failures are reported on stderr and never stop the host process.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SQLITEBIN_PRELOAD_EXTENSION_NAME "sqlitebin.so"
#define SQLITEBIN_PRELOAD_ENTRY_POINT "sqlite3_sqlitebin_init"
#define SQLITEBIN_PRELOAD_SQLITE_ERROR 1

typedef int (*auto_extension_function)(void (*)(void));
typedef int (*open_function)(const char *, void **);
typedef int (*open16_function)(const void *, void **);
typedef int (*open_v2_function)(const char *, void **, int, const char *);

static auto_extension_function auto_extension;
static void *entry_point;
static pthread_once_t registration = PTHREAD_ONCE_INIT;

static int extension_path(char *path, size_t size) {
    const char *configured = getenv("SQLITEBIN_EXTENSION");
    if (configured != NULL && configured[0] != '\0') {
        if (strlen(configured) >= size) return -1;
        strcpy(path, configured);
        return 0;
    }
    Dl_info info;
    if (dladdr((void *)extension_path, &info) == 0 || info.dli_fname == NULL) return -1;
    const char *slash = strrchr(info.dli_fname, '/');
    size_t directory = slash ? (size_t)(slash - info.dli_fname + 1) : 0;
    if (directory + strlen(SQLITEBIN_PRELOAD_EXTENSION_NAME) >= size) return -1;
    memcpy(path, info.dli_fname, directory);
    strcpy(path + directory, SQLITEBIN_PRELOAD_EXTENSION_NAME);
    return 0;
}

__attribute__((constructor)) static void sqlitebin_preload(void) {
    auto_extension = (auto_extension_function)dlsym(RTLD_DEFAULT, "sqlite3_auto_extension");
    if (auto_extension == NULL) return; /* no SQLite in this process */
    char path[PATH_MAX];
    if (extension_path(path, sizeof path) != 0) {
        fprintf(stderr, "sqlitebin_preload: cannot work out the path of %s; set SQLITEBIN_EXTENSION\n",
                SQLITEBIN_PRELOAD_EXTENSION_NAME);
        return;
    }
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        fprintf(stderr, "sqlitebin_preload: cannot open %s (%s)\n", path, dlerror());
        return;
    }
    entry_point = dlsym(handle, SQLITEBIN_PRELOAD_ENTRY_POINT);
    if (entry_point == NULL) {
        fprintf(stderr, "sqlitebin_preload: %s has no %s\n", path, SQLITEBIN_PRELOAD_ENTRY_POINT);
    }
}

static void register_extension(void) {
    if (auto_extension == NULL || entry_point == NULL) return;
    int rc = auto_extension((void (*)(void))entry_point);
    if (rc != 0) fprintf(stderr, "sqlitebin_preload: sqlite3_auto_extension failed with code %d\n", rc);
}

int sqlite3_open(const char *filename, void **db) {
    pthread_once(&registration, register_extension);
    open_function next = (open_function)dlsym(RTLD_NEXT, "sqlite3_open");
    return next ? next(filename, db) : SQLITEBIN_PRELOAD_SQLITE_ERROR;
}

int sqlite3_open16(const void *filename, void **db) {
    pthread_once(&registration, register_extension);
    open16_function next = (open16_function)dlsym(RTLD_NEXT, "sqlite3_open16");
    return next ? next(filename, db) : SQLITEBIN_PRELOAD_SQLITE_ERROR;
}

int sqlite3_open_v2(const char *filename, void **db, int flags, const char *vfs) {
    pthread_once(&registration, register_extension);
    open_v2_function next = (open_v2_function)dlsym(RTLD_NEXT, "sqlite3_open_v2");
    return next ? next(filename, db, flags, vfs) : SQLITEBIN_PRELOAD_SQLITE_ERROR;
}
