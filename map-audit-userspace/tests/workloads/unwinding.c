/*
 * Writers for the stack-unwinding tests (tests/unwinding.rs): each mode writes pages
 * of a MAP_SHARED file through a known call chain, the way real programs do (built
 * -O2 without frame pointers, libc doing the write, a thread, a signal handler, the
 * vDSO, forked children). The
 * tests compare the agent's stacks with perf's DWARF unwinder on the same program.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define PAGES 16
static char *region;

/* A barrier against tail calls and folding: each level really calls the next. */
#define KEEP() __asm__ volatile("" ::: "memory")

__attribute__((noinline)) void leaf_store(volatile char *p, int i) { p[i * PAGE] = (char)i; }
__attribute__((noinline)) void level_three(char *p, int n) { for (int i = 0; i < n; i++) leaf_store(p, i); KEEP(); }
__attribute__((noinline)) void level_two(char *p, int n) { level_three(p, n); KEEP(); }
__attribute__((noinline)) void level_one(char *p, int n) { level_two(p, n); KEEP(); }

__attribute__((noinline)) void clear_block(char *p, size_t n) { memset(p, 1, n); KEEP(); }
__attribute__((noinline)) void copy_block(char *p, const char *from, size_t n) { memcpy(p, from, n); KEEP(); }
__attribute__((noinline)) void fill_all(char *p) {
    static char source[2 * PAGE];
    clear_block(p, 2 * PAGE);
    copy_block(p + 2 * PAGE, source, 2 * PAGE);
    KEEP();
}

__attribute__((noinline)) void *thread_body(void *p) { level_one(p, 2); KEEP(); return NULL; }
__attribute__((noinline)) void in_a_thread(char *p) {
    pthread_t t;
    pthread_create(&t, NULL, thread_body, p);
    pthread_join(t, NULL);
}

static char *signal_target;
__attribute__((noinline)) void on_signal(int sig) { leaf_store(signal_target, sig == SIGUSR1 ? 0 : 1); KEEP(); }
__attribute__((noinline)) void in_a_signal_handler(char *p) {
    signal_target = p;
    signal(SIGUSR1, on_signal);
    raise(SIGUSR1);
    KEEP();
}

/* The vDSO writes clock_gettime's result: its frame is in no file. */
__attribute__((noinline)) void stamp(char *p, int i) { clock_gettime(CLOCK_MONOTONIC, (struct timespec *)(p + i * PAGE)); KEEP(); }
__attribute__((noinline)) void stamp_pages(char *p, int n) { for (int i = 0; i < n; i++) stamp(p, i); KEEP(); }

/* Two callers alike call the same leaf: its writes come at the same pc and stack
 * pointer under different return addresses, four pages by one, four by the other, and
 * again. */
__attribute__((noinline)) void first_caller(char *p, int n) { for (int i = 0; i < n; i++) leaf_store(p, i); KEEP(); }
__attribute__((noinline)) void second_caller(char *p, int n) { for (int i = 0; i < n; i++) leaf_store(p, i); KEEP(); }
__attribute__((noinline)) void by_turns(char *p) {
    for (int round = 0; round < 2; round++) {
        first_caller(p + round * 8 * PAGE, 4);
        second_caller(p + (round * 8 + 4) * PAGE, 4);
    }
    KEEP();
}

/* Each child maps the file again, over its inherited mapping, and writes at once: its
 * region is its own while its code is still only in its parent's regions (the agent
 * has not copied them yet). */
__attribute__((noinline)) void in_children(char *p, int fd) {
    for (int c = 0; c < 4; c++) {
        if (fork() == 0) {
            if (mmap(p, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
                _exit(2);
            level_one(p + c * 4 * PAGE, 4);
            _exit(0);
        }
    }
    while (wait(NULL) > 0)
        ;
    KEEP();
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: unwinding FILE chain|libc|thread|signal|vdso|fork|two-callers\n");
        return 64;
    }
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, PAGES * PAGE) != 0)
        return 2;
    region = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (region == MAP_FAILED)
        return 2;
    fprintf(stderr, "workload: target %p %p\n", region, region + PAGES * PAGE);
    if (strcmp(argv[2], "chain") == 0)
        level_one(region, 4);
    else if (strcmp(argv[2], "libc") == 0)
        fill_all(region);
    else if (strcmp(argv[2], "thread") == 0)
        in_a_thread(region);
    else if (strcmp(argv[2], "signal") == 0)
        in_a_signal_handler(region);
    else if (strcmp(argv[2], "vdso") == 0)
        stamp_pages(region, 4);
    else if (strcmp(argv[2], "fork") == 0)
        in_children(region, fd);
    else if (strcmp(argv[2], "two-callers") == 0)
        by_turns(region);
    else
        return 64;
    usleep(200 * 1000);
    return 0;
}
