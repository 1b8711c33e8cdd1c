// `map-audit watch` workload: two threads, started after the watch is set, write the
// global `counter` from different functions (by 1 and by 2, so the compiler cannot
// fold them into one), and `neighbour` next to it in the same loops.
//   watch run N          both threads, N writes each, then exit
//   watch wait N [LIB]   print the addresses ("ready counter=0x... neighbour=0x...",
//                        and lib_counter from LIB, dlopen'ed), wait for SIGUSR1, then
//                        as `run` (and LIB's lib_bump(N) from main)
//   watch kernel N       the kernel writes `counter` N times (read() from /dev/zero)
// The threads' phase is timed: "watch: elapsed_ns T" on stderr (for the benchmark).
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

long counter;
long neighbour;
static long writes;

__attribute__((noinline)) static void bump_by_one(void) {
    for (long i = 0; i < writes; i++) {
        __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&neighbour, 1, __ATOMIC_RELAXED);
    }
}

__attribute__((noinline)) static void bump_by_two(void) {
    for (long i = 0; i < writes; i++) {
        __atomic_fetch_add(&counter, 2, __ATOMIC_RELAXED);
        __atomic_fetch_add(&neighbour, 2, __ATOMIC_RELAXED);
    }
}

static void *thread_one(void *arg) {
    (void)arg;
    bump_by_one();
    return NULL;
}

static void *thread_two(void *arg) {
    (void)arg;
    bump_by_two();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: watch run|wait N [LIB]\n");
        return 2;
    }
    writes = atol(argv[2]);
    void (*lib_bump)(long) = NULL;
    if (strcmp(argv[1], "kernel") == 0) {
        int zero = open("/dev/zero", O_RDONLY);
        for (long i = 0; i < writes; i++)
            if (read(zero, &counter, sizeof counter) != sizeof counter)
                return 1;
        return 0;
    }
    if (strcmp(argv[1], "wait") == 0) {
        void *lib_counter = NULL;
        if (argc > 3) {
            void *lib = dlopen(argv[3], RTLD_NOW);
            if (!lib) {
                fprintf(stderr, "dlopen: %s\n", dlerror());
                return 1;
            }
            lib_counter = dlsym(lib, "lib_counter");
            lib_bump = (void (*)(long))dlsym(lib, "lib_bump");
        }
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR1);
        sigprocmask(SIG_BLOCK, &set, NULL);
        printf("ready counter=%p neighbour=%p lib_counter=%p\n", (void *)&counter,
               (void *)&neighbour, lib_counter);
        fflush(stdout);
        int sig;
        sigwait(&set, &sig);
    }
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pthread_t one, two;
    pthread_create(&one, NULL, thread_one, NULL);
    pthread_create(&two, NULL, thread_two, NULL);
    pthread_join(one, NULL);
    pthread_join(two, NULL);
    clock_gettime(CLOCK_MONOTONIC, &end);
    fprintf(stderr, "watch: elapsed_ns %lld\n",
            (long long)(end.tv_sec - start.tv_sec) * 1000000000LL + (end.tv_nsec - start.tv_nsec));
    if (lib_bump)
        lib_bump(writes);
    fprintf(stderr, "counter=%ld\n", counter);
    return 0;
}
