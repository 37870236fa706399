/*
 * Support for splitting one scan between the calling thread and one worker.
 *
 * The split is by measured progress, not fixed halves: the scan is cut into
 * units of consecutive codes and each thread claims the next unclaimed unit
 * from a shared counter, so a worker that starts late or runs on a busy core
 * simply claims fewer units and the calling thread does the rest. A worker is
 * started at all only when some CPU is idle (`sqlitebin_idle_cpus`), because a
 * worker that has to share a core with another process costs the query its
 * start-up and its last unit's wait without saving anything.
 */
#ifndef SQLITEBIN_SCAN_THREADS_H
#define SQLITEBIN_SCAN_THREADS_H

#include <stdint.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#  include <fcntl.h>
#  include <sched.h>
#endif
#include <time.h>

typedef struct {
    int64_t next;   /* the next unit to claim; advanced atomically by both threads */
    int64_t units;  /* how many units there are */
} sqlitebin_work_queue;

static inline int64_t sqlitebin_work_claim(sqlitebin_work_queue *queue) {
    return __atomic_fetch_add(&queue->next, 1, __ATOMIC_RELAXED);
}

/* CPUs this process may use that are idle: the CPUs of its affinity mask less
 * the busier of two readings of /proc/loadavg, the runnable tasks right now
 * (which include the caller) and the one-minute load average rounded to the
 * nearest task. The average keeps a process that is busy most of the time from
 * being missed by an unlucky instant. Where /proc/loadavg cannot be read (not
 * Linux), the count of online CPUs less one: the progress-based split still
 * bounds the cost. */
static long sqlitebin_idle_cpus(void) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
#if defined(__linux__)
#  if defined(CPU_COUNT)  /* glibc with _GNU_SOURCE (as every Python build defines) */
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0 && CPU_COUNT(&allowed) < cpus)
        cpus = CPU_COUNT(&allowed);
#  endif
    /* Format: "0.50 0.40 0.30 2/345 12345": the fourth field is runnable/total. */
    char text[128];
    int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, text, sizeof(text) - 1);
        close(fd);
        if (n > 0) {
            text[n] = 0;
            /* The one-minute average, in hundredths, without locale-dependent parsing. */
            long average = 0;
            const char *p = text;
            while (*p >= '0' && *p <= '9')
                average = average * 10 + (*p++ - '0');
            average *= 100;
            if (*p == '.' && p[1] >= '0' && p[1] <= '9') {
                average += 10 * (p[1] - '0');
                if (p[2] >= '0' && p[2] <= '9')
                    average += p[2] - '0';
            }
            p = text;
            for (int field = 0; field < 3 && p; field++) {
                p = strchr(p, ' ');
                if (p) p++;
            }
            if (p && *p >= '0' && *p <= '9') {
                long running = 0;
                while (*p >= '0' && *p <= '9')
                    running = running * 10 + (*p++ - '0');
                long busy = (average + 50) / 100;
                if (running > busy)
                    busy = running;
                return cpus - (busy > 0 ? busy : 1);
            }
        }
    }
#endif
    return cpus - 1;
}

/* The same, read at most every 50 ms: the check costs about 20 us of system calls,
 * too much to pay on every query. A process-wide cache written with relaxed
 * atomics: a racing reader sees an old value or a new one, both valid answers.
 * (Static storage is zeroed by the loader; nothing here needs an initialiser.) */
#define SQLITEBIN_IDLE_CHECK_NS 50000000LL
static long sqlitebin_idle_cpus_recent(void) {
    static int64_t checked_at;  /* CLOCK_MONOTONIC ns of the last check, 0 before the first */
    static long idle;
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
        return sqlitebin_idle_cpus();
    int64_t ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
    int64_t last = __atomic_load_n(&checked_at, __ATOMIC_ACQUIRE);
    if (last != 0 && ns - last < SQLITEBIN_IDLE_CHECK_NS)
        return __atomic_load_n(&idle, __ATOMIC_RELAXED);
    long fresh = sqlitebin_idle_cpus();
    __atomic_store_n(&idle, fresh, __ATOMIC_RELAXED);
    __atomic_store_n(&checked_at, ns, __ATOMIC_RELEASE);
    return fresh;
}

#endif
