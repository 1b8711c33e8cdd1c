// Re-arm workloads (`tests/rearm.rs`), built the way users build: -O2, no frame
// pointers.
//
//   rearm warm PAGES SECONDS   writes PAGES anonymous pages once, prints the region and
//                              "ready" on stderr, then
//                              for SECONDS rewrites pages 0..PAGES-2 (rewrite_all) and
//                              the last page (rewrite_one) every millisecond.
//   rearm churn SECONDS        for SECONDS maps, writes, remaps and unmaps regions
//                              (100 times a second: the agent's rounds must keep up
//                              in an emulated guest too), then exits in the middle.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void rewrite_all(volatile char *region, long pages, char value) {
    for (long i = 0; i < pages - 1; i++)
        region[i * PAGE] = value;
}

__attribute__((noinline)) void rewrite_one(volatile char *region, long pages, char value) {
    region[(pages - 1) * PAGE] = value;
}

static int warm(long pages, double seconds) {
    char *region = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        return perror("mmap"), 1;
    memset(region, 1, pages * PAGE);
    fprintf(stderr, "workload: region %p %p\nworkload: ready 1\n", (void *)region,
            (void *)(region + pages * PAGE));
    struct timespec tick = {0, 1000000};
    double end = now() + seconds;
    for (char value = 2; now() < end; value++) {
        rewrite_all(region, pages, value);
        rewrite_one(region, pages, value);
        nanosleep(&tick, NULL);
    }
    return 0;
}

__attribute__((noinline)) void churn_write(volatile char *region, long pages) {
    for (long i = 0; i < pages; i++)
        region[i * PAGE] = (char)i;
}

static int churn(double seconds) {
    double end = now() + seconds;
    struct timespec pause = {0, 10000000};
    int kept = 0;
    while (now() < end) {
        long pages = 1 + rand() % 64;
        char *region = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED)
            return perror("mmap"), 1;
        churn_write(region, pages);
        char *moved = mremap(region, pages * PAGE, 2 * pages * PAGE, MREMAP_MAYMOVE);
        if (moved == MAP_FAILED)
            return perror("mremap"), 1;
        churn_write(moved, 2 * pages);
        munmap(moved, pages * PAGE);
        churn_write(moved + pages * PAGE, pages);
        if (kept < 64 && rand() % 4 == 0)
            kept++;
        else
            munmap(moved + pages * PAGE, pages * PAGE);
        nanosleep(&pause, NULL);
    }
    // Exits with regions still mapped and written, whatever round is running.
    return 0;
}

// Cost figures (docs/benchmarks.md): PAGES written once, then for SECONDS rewritten
// pass after pass; prints passes per second. With `clear`, each of 5 rounds times its
// own clear_refs (the re-arm) and the pass after it (one fault per page).
// 4 KiB pages unless "thp": a re-armed huge page faults once for its 2 MiB.
static int bench(long pages, double seconds, int clear, int thp) {
    char *region = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED)
        return perror("mmap"), 1;
    madvise(region, pages * PAGE, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    memset(region, 1, pages * PAGE);
    if (clear) {
        for (int round = 0; round < 5; round++) {
            double quiet = now();
            rewrite_all(region, pages + 1, (char)round);
            double t0 = now();
            FILE *refs = fopen("/proc/self/clear_refs", "w");
            if (!refs || fputs("4", refs) < 0 || fclose(refs) != 0)
                return perror("clear_refs"), 1;
            double t1 = now();
            rewrite_all(region, pages + 1, (char)round);
            double t2 = now();
            printf("clear_refs %.1f ms per GiB, re-fault %.0f ns per page (a pass without "
                   "faults: %.0f ns per page)\n",
                   (t1 - t0) * 1e3 * (1 << 18) / pages, (t2 - t1) * 1e9 / pages,
                   (t0 - quiet) * 1e9 / pages);
        }
        return 0;
    }
    long passes = 0;
    double start = now(), end = start + seconds;
    for (; now() < end; passes++)
        rewrite_all(region, pages + 1, (char)passes);
    printf("passes_per_second %.2f\n", passes / (now() - start));
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "bench") == 0)
        return bench(atol(argv[2]), atof(argv[3]), 0, 0);
    if (argc >= 3 && strcmp(argv[1], "clear-cost") == 0)
        return bench(atol(argv[2]), 0, 1, argc == 4 && strcmp(argv[3], "thp") == 0);
    if (argc == 4 && strcmp(argv[1], "warm") == 0)
        return warm(atol(argv[2]), atof(argv[3]));
    if (argc == 3 && strcmp(argv[1], "churn") == 0)
        return churn(atof(argv[2]));
    fprintf(stderr, "usage: rearm warm PAGES SECONDS | churn SECONDS | bench PAGES SECONDS | "
                    "clear-cost PAGES [thp]\n");
    return 2;
}
