/* msync auditing workload (tests/msync.rs): writes a MAP_SHARED file and flushes it
 * with msync in each way the suite checks, from named functions. Built -O2 without
 * frame pointers. Usage: msync FILE [ROUNDS [LINGER_MS]]: the write/sync cycles run
 * ROUNDS times (1); with LINGER_MS, one more page is written and synced only that
 * long after. Prints "workload: NAME ADDRESS" for the mappings it makes.
 * Usage: msync bench FILE PAGES ROUNDS: writes every page of a PAGES-page mapping of
 * FILE and msyncs it (MS_SYNC), ROUNDS times; prints the loop's time as
 * "workload: elapsed_ns N" (`cargo xtask bench --msync`). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096L
#define PAGES 16L

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Writes `count` pages from page `first`. */
__attribute__((noinline)) static void write_pages(char *map, long first, long count) {
    for (long page = first; page < first + count; page++)
        ((volatile char *)map)[page * PAGE + 8] = (char)page;
}

/* Calls that failed. Counting them after each call also keeps the calls out of tail
 * position, so each flush function stays on the stack. */
static volatile int failures;

static int counted(int result) {
    if (result != 0)
        failures++;
    return result;
}

__attribute__((noinline)) static int flush_sync(char *map, long bytes) {
    return counted(msync(map, bytes, MS_SYNC));
}

__attribute__((noinline)) static int flush_async(char *map, long bytes) {
    return counted(msync(map, bytes, MS_ASYNC));
}

/* An unaligned start: EINVAL. */
__attribute__((noinline)) static int flush_unaligned(char *map) {
    return counted(msync(map + 1, PAGE, MS_SYNC));
}

/* A range reaching past the mapping: ENOMEM. */
__attribute__((noinline)) static int flush_past_the_end(char *map, long bytes) {
    return counted(msync(map, bytes, MS_SYNC | MS_INVALIDATE));
}

static char *map_file(int fd, long pages, int prot) {
    char *map = mmap(NULL, pages * PAGE, prot, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        die("mmap");
    return map;
}

static volatile long rounds_done;

/* Two write/sync cycles: 5 pages, then 4 (two of them written again). */
__attribute__((noinline)) static void cycles(char *map) {
    write_pages(map, 0, 5);
    flush_sync(map, PAGES * PAGE);
    write_pages(map, 3, 4);
    flush_sync(map, PAGES * PAGE);
    flush_sync(map, PAGES * PAGE);
    rounds_done++; /* also keeps the last call out of tail position */
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static int bench(const char *path, long pages, long rounds) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, pages * PAGE) != 0)
        die(path);
    char *map = map_file(fd, pages, PROT_READ | PROT_WRITE);
    long start = now_ns();
    for (long round = 0; round < rounds; round++) {
        write_pages(map, 0, pages);
        if (flush_sync(map, pages * PAGE) != 0)
            die("msync");
    }
    fprintf(stderr, "workload: elapsed_ns %ld\n", now_ns() - start);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "bench") == 0)
        return bench(argv[2], atol(argv[3]), atol(argv[4]));
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s FILE [ROUNDS [LINGER_MS]]\n", argv[0]);
        return 2;
    }
    long rounds = argc > 2 ? atol(argv[2]) : 1;
    long linger_ms = argc > 3 ? atol(argv[3]) : 0;
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, PAGES * PAGE) != 0)
        die(argv[1]);
    char *map = map_file(fd, PAGES, PROT_READ | PROT_WRITE);
    fprintf(stderr, "workload: map %p\n", map);

    for (long round = 0; round < rounds; round++)
        cycles(map);
    if (linger_ms > 0) {
        write_pages(map, 15, 1);
        usleep(linger_ms * 1000);
        flush_sync(map, PAGES * PAGE);
    }
    write_pages(map, 10, 2);
    flush_async(map, PAGES * PAGE);
    if (flush_unaligned(map) == 0)
        die("msync of an unaligned start succeeded");

    char *short_map = map_file(fd, 4, PROT_READ | PROT_WRITE);
    fprintf(stderr, "workload: short_map %p\n", short_map);
    if (munmap(short_map + 2 * PAGE, 2 * PAGE) != 0)
        die("munmap");
    if (flush_past_the_end(short_map, 4 * PAGE) == 0)
        die("msync past the end succeeded");

    char *anon = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (anon == MAP_FAILED)
        die("mmap anonymous");
    fprintf(stderr, "workload: anon %p\n", anon);
    write_pages(anon, 0, 2);
    flush_sync(anon, 2 * PAGE);

    char *read_only = map_file(fd, 2, PROT_READ);
    fprintf(stderr, "workload: read_only %p\n", read_only);
    flush_sync(read_only, 2 * PAGE);

    /* A child writes 2 pages of the inherited mapping and syncs them itself. */
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        write_pages(map, 12, 2);
        _exit(flush_sync(map, PAGES * PAGE) == 0 ? 0 : 1);
    }
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("the child");

    /* Written and unmapped without an msync; then written, synced and unmapped. */
    write_pages(map, 14, 1);
    if (munmap(map, PAGES * PAGE) != 0)
        die("munmap");
    char *synced = map_file(fd, 1, PROT_READ | PROT_WRITE);
    fprintf(stderr, "workload: synced %p\n", synced);
    write_pages(synced, 0, 1);
    flush_sync(synced, PAGE);
    if (munmap(synced, PAGE) != 0)
        die("munmap");
    return 0;
}
