/*
 * Workloads for the "nothing drops out" tests (tests/dropouts.rs): each one provokes a
 * way a process, a region or a count could vanish from the audit, and prints what it
 * did as "workload: KEY VALUE..." lines on stderr. Built the way users build: -O2,
 * no frame pointers, libc doing the mapping.
 *
 * A write to an anonymous page that is not present takes exactly one write fault, and
 * MADV_DONTNEED makes pages not present again: "writes" lines are exact fault counts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <alloca.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static void report(const char *key, const void *start, size_t pages) {
    fprintf(stderr, "workload: %s %p %p\n", key, start, (const char *)start + pages * PAGE);
}

static void *map_anon(size_t pages, void *hint, int extra_flags) {
    void *p = mmap(hint, pages * PAGE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
    if (p == MAP_FAILED) {
        perror("workload: mmap");
        exit(2);
    }
    return p;
}

/* One byte per page: one fault per page that is not present. */
__attribute__((noinline)) void touch_pages(volatile char *buf, size_t pages) {
    for (size_t i = 0; i < pages; i++)
        buf[i * PAGE] = (char)(i + 1);
}

/* The same, from another function: writes the tests tell apart by stack. */
__attribute__((noinline)) void retouch_pages(volatile char *buf, size_t pages) {
    for (size_t i = 0; i < pages; i++)
        buf[i * PAGE] = (char)(i + 2);
}

/* fork-shared FILE: a MAP_SHARED file mapping made by the parent and written by a child
 * right after fork (3 pages), before the agent can have copied the parent's regions. */
static int fork_shared(const char *path) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 3 * PAGE) != 0) {
        perror("workload: file");
        return 2;
    }
    char *buf = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (buf == MAP_FAILED) {
        perror("workload: mmap shared");
        return 2;
    }
    report("shared", buf, 3);
    pid_t child = fork();
    if (child == 0) {
        touch_pages(buf, 3);
        usleep(300 * 1000);
        _exit(0);
    }
    fprintf(stderr, "workload: child %d\n", child);
    waitpid(child, NULL, 0);
    return 0;
}

/* sbrk PAGES: the heap grown by sbrk, every new page written. */
static int grow_heap(size_t pages) {
    char *old = sbrk(0);
    /* Start on a page boundary, so the pages written are exactly the ones grown. */
    size_t pad = (PAGE - ((uintptr_t)old % PAGE)) % PAGE;
    char *start = (char *)sbrk((intptr_t)(pad + pages * PAGE)) + pad;
    if (start == (char *)-1 + pad) {
        perror("workload: sbrk");
        return 2;
    }
    report("heap", start, pages);
    touch_pages(start, pages);
    fprintf(stderr, "workload: writes %zu\n", pages);
    return 0;
}

/* bss: 16 pages of a zero-initialised global array, written. */
static char bss_array[17 * PAGE];

static int write_bss(void) {
    char *start = (char *)(((uintptr_t)bss_array + PAGE - 1) & ~(PAGE - 1));
    report("bss", start, 16);
    touch_pages(start, 16);
    fprintf(stderr, "workload: writes 16\n");
    return 0;
}

/* pthread-exit: main calls pthread_exit; a worker then maps 5 pages and writes them. */
static void *late_worker(void *arg) {
    pid_t main_tid = (pid_t)(intptr_t)arg;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", main_tid);
    /* Wait until the main thread is a zombie (its stat says Z). */
    for (int i = 0; i < 2000; i++) {
        FILE *f = fopen(path, "r");
        char state = 0;
        if (f) {
            if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
                state = 0;
            fclose(f);
        }
        if (state == 'Z' || !f)
            break;
        usleep(1000);
    }
    char *buf = map_anon(5, NULL, 0);
    report("after-main-exit", buf, 5);
    touch_pages(buf, 5);
    fprintf(stderr, "workload: writes 5\n");
    usleep(300 * 1000);
    return NULL;
}

static int main_exits_first(void) {
    pthread_t worker;
    pthread_create(&worker, NULL, late_worker, (void *)(intptr_t)getpid());
    pthread_exit(NULL);
}

/* thread-exec SELF: a worker thread (not main) calls execve; the new image maps and
 * writes 4 pages ("after-thread-exec"). */
static void *exec_worker(void *self) {
    execl((const char *)self, (const char *)self, "after-thread-exec", (char *)NULL);
    perror("workload: exec");
    exit(2);
}

static int thread_exec(const char *self) {
    pthread_t worker;
    pthread_create(&worker, NULL, exec_worker, (void *)self);
    pause();
    return 0;
}

static int after_thread_exec(void) {
    char *buf = map_anon(4, NULL, 0);
    report("after-thread-exec", buf, 4);
    touch_pages(buf, 4);
    fprintf(stderr, "workload: writes 4\n");
    usleep(300 * 1000);
    return 0;
}

/* reuse-race ROUNDS: two threads each map 4 pages, write them and unmap them, ROUNDS
 * times: one thread's munmap and the other's mmap reuse each other's addresses. */
static atomic_long race_writes;

static void *map_write_unmap(void *arg) {
    long rounds = (long)arg;
    for (long i = 0; i < rounds; i++) {
        char *buf = map_anon(4, NULL, 0);
        touch_pages(buf, 4);
        atomic_fetch_add(&race_writes, 4);
        munmap(buf, 4 * PAGE);
    }
    return NULL;
}

static int reuse_race(long rounds) {
    pthread_t a, b;
    pthread_create(&a, NULL, map_write_unmap, (void *)rounds);
    pthread_create(&b, NULL, map_write_unmap, (void *)rounds);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    fprintf(stderr, "workload: writes %ld\n", atomic_load(&race_writes));
    return 0;
}

/* Region of 64 pages: a writer rewrites pages 0..15 and 48..63 ROUNDS times
 * (MADV_DONTNEED between rounds), while a second thread changes pages 16..47. */
#define SPLIT_PAGES 64
static char *split_region;
static atomic_int writer_done;

static void *rewrite_lower_half(void *arg) {
    long rounds = (long)arg;
    for (long i = 0; i < rounds; i++) {
        touch_pages(split_region, 32);
        madvise(split_region, 32 * PAGE, MADV_DONTNEED);
    }
    atomic_store(&writer_done, 1);
    return NULL;
}

/* A region of many table blocks (odd size, odd start: a split rewrites them all). */
#define WIDE_PAGES 1021

/* Both ends, so the writer's faults alternate between the pieces a split leaves. */
static void *rewrite_both_ends(void *arg) {
    long rounds = (long)arg;
    char *high = split_region + (WIDE_PAGES - 16) * PAGE;
    for (long i = 0; i < rounds; i++) {
        for (int page = 0; page < 16; page++) {
            touch_pages(split_region + page * PAGE, 1);
            touch_pages(high + page * PAGE, 1);
        }
        madvise(split_region, 16 * PAGE, MADV_DONTNEED);
        madvise(high, 16 * PAGE, MADV_DONTNEED);
    }
    atomic_store(&writer_done, 1);
    return NULL;
}

/* split-race ROUNDS: the second thread splits a region with mprotect, back and forth,
 * in its middle, while the writer rewrites both ends. */
static int split_race(long rounds) {
    char *range = map_anon(WIDE_PAGES + 2, NULL, 0);
    munmap(range, (WIDE_PAGES + 2) * PAGE);
    split_region = map_anon(WIDE_PAGES, range + PAGE, MAP_FIXED_NOREPLACE);
    report("split", split_region, WIDE_PAGES);
    pthread_t writer;
    pthread_create(&writer, NULL, rewrite_both_ends, (void *)rounds);
    long splits = 0;
    while (!atomic_load(&writer_done)) {
        char *page = split_region + (100 + splits % 800) * PAGE;
        mprotect(page, PAGE, PROT_READ);
        mprotect(page, PAGE, PROT_READ | PROT_WRITE);
        splits++;
    }
    pthread_join(writer, NULL);
    fprintf(stderr, "workload: splits %ld\n", splits);
    fprintf(stderr, "workload: writes %ld\n", rounds * 32);
    return 0;
}

/* unmap-race ROUNDS: the second thread unmaps pages 63, 62, ... 32 one by one while the
 * writer works (each a partial unmap of the region). */
static int unmap_race(long rounds) {
    split_region = map_anon(SPLIT_PAGES, NULL, 0);
    report("split", split_region, SPLIT_PAGES);
    pthread_t writer;
    pthread_create(&writer, NULL, rewrite_lower_half, (void *)rounds);
    for (int page = SPLIT_PAGES - 1; page >= 32 && !atomic_load(&writer_done); page--) {
        munmap(split_region + page * PAGE, PAGE);
        usleep(2000);
    }
    pthread_join(writer, NULL);
    fprintf(stderr, "workload: writes %ld\n", rounds * 32);
    return 0;
}

/* churn MILLIS: maps a new 2-page region and writes it every 100 us for MILLIS ms (so
 * some mappings happen while an agent starts), keeping them all; then, on a line on
 * stdin, empties and rewrites every one of them ("writes" = the second pass). */
static int churn(long millis) {
    static char *regions[200000];
    size_t n = 0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    fprintf(stderr, "workload: churning\n");
    do {
        regions[n] = map_anon(2, NULL, 0);
        touch_pages(regions[n], 2);
        /* Alternate protections so the kernel does not merge neighbours. */
        if (n % 2)
            mprotect(regions[n], 2 * PAGE, PROT_READ | PROT_WRITE | PROT_EXEC);
        n++;
        usleep(100);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while (n < sizeof regions / sizeof regions[0] &&
             (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < millis);
    fprintf(stderr, "workload: regions %zu\n", n);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 3;
    for (size_t i = 0; i < n; i++) {
        madvise(regions[i], 2 * PAGE, MADV_DONTNEED);
        retouch_pages(regions[i], 2);
    }
    fprintf(stderr, "workload: writes %zu\n", 2 * n);
    usleep(300 * 1000);
    return 0;
}

/* exec-shadow SELF: 32 one-page regions at every other page of an aligned 64-page
 * range, written; then exec, and the new image maps the whole range at once and writes
 * all 64 pages ("after-exec-shadow"). */
static int exec_shadow(const char *self) {
    char *range = map_anon(128, NULL, 0);
    char *base = (char *)(((uintptr_t)range + 64 * PAGE - 1) & ~(64 * PAGE - 1));
    munmap(range, 128 * PAGE);
    for (int i = 0; i < 64; i += 2) {
        char *page = map_anon(1, base + i * PAGE, MAP_FIXED_NOREPLACE);
        touch_pages(page, 1);
    }
    char arg[32];
    snprintf(arg, sizeof arg, "%p", base);
    execl(self, self, "after-exec-shadow", arg, (char *)NULL);
    perror("workload: exec");
    return 2;
}

static int after_exec_shadow(const char *base_text) {
    char *base = (char *)strtoul(base_text, NULL, 0);
    char *buf = map_anon(64, base, MAP_FIXED_NOREPLACE);
    report("after-exec-shadow", buf, 64);
    retouch_pages(buf, 64);
    fprintf(stderr, "workload: writes 64\n");
    usleep(300 * 1000);
    return 0;
}

/* interval-page MILLIS: page 0 of a region written by thread "first", emptied, then
 * written again MILLIS ms later by thread "second" (another flush interval). */
static char *interval_region;

static void *write_page_zero(void *name) {
    prctl(PR_SET_NAME, (const char *)name);
    fprintf(stderr, "workload: tid-%s %d\n", (const char *)name, gettid());
    touch_pages(interval_region, 1);
    return NULL;
}

static int interval_page(long millis) {
    interval_region = map_anon(4, NULL, 0);
    report("interval", interval_region, 4);
    pthread_t t;
    pthread_create(&t, NULL, write_page_zero, "first");
    pthread_join(t, NULL);
    madvise(interval_region, 4 * PAGE, MADV_DONTNEED);
    usleep(millis * 1000);
    pthread_create(&t, NULL, write_page_zero, "second");
    pthread_join(t, NULL);
    usleep(300 * 1000);
    return 0;
}

/* same-prot SPAN: SPAN+1 one-page regions side by side (alternating protections keep
 * them apart in the kernel), then one mprotect(PROT_READ|PROT_WRITE) over all of them
 * but the first half of the first: every region keeps its protection; then unmapped
 * one by one. */
static int same_prot(int span) {
    char *range = map_anon(span + 2, NULL, 0);
    munmap(range, (span + 2) * PAGE);
    char *first = map_anon(2, range, MAP_FIXED_NOREPLACE);
    for (int i = 0; i < span; i++) {
        char *page = map_anon(1, range + (2 + i) * PAGE, MAP_FIXED_NOREPLACE);
        if (i % 2 == 0)
            mprotect(page, PAGE, PROT_READ | PROT_WRITE | PROT_EXEC);
    }
    report("same-prot", range, span + 2);
    if (mprotect(range, PAGE, PROT_READ | PROT_WRITE) != 0 ||
        mprotect(range + PAGE, (span + 1) * PAGE, PROT_READ | PROT_WRITE | PROT_EXEC) != 0 ||
        mprotect(range + PAGE, (span + 1) * PAGE, PROT_READ | PROT_WRITE) != 0) {
        perror("workload: mprotect");
        return 2;
    }
    touch_pages(first, 2);
    /* The first region alone (a walk the kernel finishes), then the rest. */
    munmap(first, 2 * PAGE);
    munmap(range + 2 * PAGE, span * PAGE);
    usleep(300 * 1000);
    return 0;
}

/* fork-many N FILE: N children, each writing the 3 pages of a MAP_SHARED file mapping
 * its parent made, right after the fork. */
static int fork_many(int n, const char *path) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 3 * PAGE) != 0) {
        perror("workload: file");
        return 2;
    }
    char *buf = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (buf == MAP_FAILED) {
        perror("workload: mmap shared");
        return 2;
    }
    report("shared", buf, 3);
    for (int i = 0; i < n; i++) {
        pid_t child = fork();
        if (child == 0) {
            touch_pages(buf, 3);
            _exit(0);
        }
        if (child < 0 || waitpid(child, NULL, 0) < 0) {
            perror("workload: fork");
            return 2;
        }
    }
    fprintf(stderr, "workload: children %d\n", n);
    usleep(300 * 1000);
    return 0;
}

/* Writes the lowest PAGES - 64 pages of PAGES pages of stack below this frame (the
 * main thread's stack grows; the 64 nearest the frame may have been used already,
 * by the loader). */
__attribute__((noinline)) void write_deep_stack(size_t pages) {
    char *below = alloca((pages + 1) * PAGE);
    volatile char *start = (char *)(((uintptr_t)below + PAGE - 1) & ~(PAGE - 1));
    report("stack", (const void *)start, pages - 64);
    for (size_t i = 0; i < pages - 64; i++)
        start[i * PAGE] = 1;
}

/* stack PAGES: PAGES pages of the main thread's stack written, beyond its first 132 KiB. */
static int deep_stack(size_t pages) {
    write_deep_stack(pages);
    usleep(300 * 1000);
    return 0;
}

/* named-thread NAME: a thread renamed NAME writes a region mapped before the agent
 * started, on a line on stdin ("retouch" in its stack). */
static char *named_region;

static void *named_writer(void *name) {
    prctl(PR_SET_NAME, (const char *)name);
    char line[16];
    fprintf(stderr, "workload: waiting\n");
    if (!fgets(line, sizeof line, stdin))
        exit(3);
    retouch_pages(named_region, 6);
    fprintf(stderr, "workload: writes 6\n");
    return NULL;
}

static int named_thread(const char *name) {
    named_region = map_anon(6, NULL, 0);
    report("named", named_region, 6);
    pthread_t t;
    pthread_create(&t, NULL, named_writer, (void *)name);
    pthread_join(t, NULL);
    usleep(300 * 1000);
    return 0;
}

/* hugetlb: 4 KiB asked of MAP_HUGETLB (the kernel maps a whole 2 MiB page), written
 * at its start and 1 MiB in (the same huge page: one fault). */
static int hugetlb(void) {
    char *buf = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (buf == MAP_FAILED) {
        perror("workload: mmap MAP_HUGETLB (needs vm.nr_hugepages > 0)");
        return 2;
    }
    report("huge", buf, 512);
    touch_pages(buf, 1);
    touch_pages(buf + 256 * PAGE, 1);
    munmap(buf, PAGE);
    usleep(300 * 1000);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "fork-shared") == 0)
        return fork_shared(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "sbrk") == 0)
        return grow_heap(strtoul(argv[2], NULL, 0));
    if (argc >= 2 && strcmp(argv[1], "bss") == 0)
        return write_bss();
    if (argc >= 2 && strcmp(argv[1], "pthread-exit") == 0)
        return main_exits_first();
    if (argc >= 2 && strcmp(argv[1], "thread-exec") == 0)
        return thread_exec(argv[0]);
    if (argc >= 2 && strcmp(argv[1], "after-thread-exec") == 0)
        return after_thread_exec();
    if (argc >= 3 && strcmp(argv[1], "reuse-race") == 0)
        return reuse_race(strtol(argv[2], NULL, 0));
    if (argc >= 3 && strcmp(argv[1], "split-race") == 0)
        return split_race(strtol(argv[2], NULL, 0));
    if (argc >= 3 && strcmp(argv[1], "unmap-race") == 0)
        return unmap_race(strtol(argv[2], NULL, 0));
    if (argc >= 3 && strcmp(argv[1], "churn") == 0)
        return churn(strtol(argv[2], NULL, 0));
    if (argc >= 2 && strcmp(argv[1], "exec-shadow") == 0)
        return exec_shadow(argv[0]);
    if (argc >= 3 && strcmp(argv[1], "after-exec-shadow") == 0)
        return after_exec_shadow(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "interval-page") == 0)
        return interval_page(strtol(argv[2], NULL, 0));
    if (argc >= 3 && strcmp(argv[1], "same-prot") == 0)
        return same_prot(atoi(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "fork-many") == 0)
        return fork_many(atoi(argv[2]), argv[3]);
    if (argc >= 3 && strcmp(argv[1], "stack") == 0)
        return deep_stack(strtoul(argv[2], NULL, 0));
    if (argc >= 3 && strcmp(argv[1], "named-thread") == 0)
        return named_thread(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "hugetlb") == 0)
        return hugetlb();
    fprintf(stderr, "usage: dropouts MODE [ARGS]\n");
    return 64;
}
