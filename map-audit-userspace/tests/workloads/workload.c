/*
 * Workloads for map-audit's integration tests and demo. Each mode prints what it did
 * to stderr as "workload: KEY VALUE" lines so tests can compare with the agent's JSON.
 * Built with frame pointers (-O0 -fno-omit-frame-pointer) so user stacks are complete.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096UL

static void report(const char *key, void *start, size_t pages) {
    fprintf(stderr, "workload: %s %p %p\n", key, start, (char *)start + pages * PAGE);
}

static void *map_anon(size_t pages, int prot, void *hint, int extra_flags) {
    void *p = mmap(hint, pages * PAGE, prot, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
    if (p == MAP_FAILED) {
        perror("workload: mmap");
        exit(2);
    }
    return p;
}

__attribute__((noinline)) void write_pages(volatile char *buf, size_t pages) {
    for (size_t i = 0; i < pages; i++)
        buf[i * PAGE] = (char)i;
}

__attribute__((noinline)) void rewrite_pages(volatile char *buf, size_t pages) {
    for (size_t i = 0; i < pages; i++)
        buf[i * PAGE] = (char)(i + 1);
}

__attribute__((noinline)) void write_shared_pages(volatile char *buf, size_t pages) {
    for (size_t i = 0; i < pages; i++)
        buf[i * PAGE + 7] = 'x';
}

__attribute__((noinline)) unsigned long read_pages(volatile char *buf, size_t pages) {
    unsigned long sum = 0;
    for (size_t i = 0; i < pages; i++)
        sum += buf[i * PAGE];
    return sum;
}

/* anon PAGES: write PAGES pages; read another region; map a read-only one; unmap the
 * written region and map a new one at the same address, then write it. */
static int anon(size_t pages) {
    char *buf = map_anon(pages, PROT_READ | PROT_WRITE, NULL, 0);
    report("written", buf, pages);
    write_pages(buf, pages);

    char *readonly_rw = map_anon(pages, PROT_READ | PROT_WRITE, NULL, 0);
    report("read", readonly_rw, pages);
    fprintf(stderr, "workload: read_sum %lu\n", read_pages(readonly_rw, pages));

    char *ro = map_anon(pages, PROT_READ, NULL, 0);
    report("readonly", ro, pages);
    fprintf(stderr, "workload: ro_sum %lu\n", read_pages(ro, pages));

    munmap(buf, pages * PAGE);
    char *again = map_anon(pages, PROT_READ | PROT_WRITE, buf, MAP_FIXED_NOREPLACE);
    report("rewritten", again, pages);
    rewrite_pages(again, pages);
    return 0;
}

/* map-then-wait PAGES: map PAGES pages and write the first, report them as "mapped",
 * then wait for a line on stdin and write the others with no new mapping (an agent
 * restarted in between knows the region only from /proc). */
static int map_then_wait(size_t pages) {
    char *buf = map_anon(pages, PROT_READ | PROT_WRITE, NULL, 0);
    write_pages(buf, 1);
    report("mapped", buf, pages);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 3;
    rewrite_pages(buf + PAGE, pages - 1);
    return 0;
}

/* deep N: N nested calls with 1.5 KiB frames, then one page written: the stack walk
   must follow frame pointers that lie far apart. */
__attribute__((noinline)) int descend(volatile char *buf, int depth) {
    volatile char frame[1536];
    frame[0] = (char)depth;
    if (depth > 1)
        return descend(buf, depth - 1) + frame[0];
    write_pages(buf, 1);
    return frame[0];
}

static int deep(int depth) {
    char *buf = map_anon(1, PROT_READ | PROT_WRITE, NULL, 0);
    report("written", buf, 1);
    return descend(buf, depth) > 0 ? 0 : 1;
}

/* Maps PATH shared, reports it as KEY, writes it page by page and unmaps it. */
static int map_shared_file(const char *path, size_t pages, const char *key) {
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, pages * PAGE) != 0) {
        perror("workload: open/ftruncate");
        return 2;
    }
    char *buf = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (buf == MAP_FAILED) {
        perror("workload: mmap shared");
        return 2;
    }
    report(key, buf, pages);
    write_shared_pages(buf, pages);
    munmap(buf, pages * PAGE);
    close(fd);
    return 0;
}

/* shared FILE PAGES: MAP_SHARED mapping of FILE, written page by page. */
static int shared(const char *path, size_t pages) {
    return map_shared_file(path, pages, "shared");
}

static volatile char *trampoline_target;

__attribute__((noinline)) void written_through_foreign_code(void) {
    trampoline_target[0] = 1;
}

/* Runs written_through_foreign_code() from code at byte 64 of FILE, which holds
 * HEADER padded to 64 bytes, then push rbp; mov rbp, rsp; call rdi; pop rbp; ret:
 * a frame no symboliser can name. The write lands in a fresh page reported as KEY. */
static int call_through_file_code(const char *file, const char *header, size_t header_len,
                                  const char *key) {
    static const unsigned char code[] = {0x55, 0x48, 0x89, 0xe5, 0xff, 0xd7, 0x5d, 0xc3};
    unsigned char bytes[64 + sizeof code] = {0};
    memcpy(bytes, header, header_len);
    memcpy(bytes + 64, code, sizeof code);
    int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0700);
    if (fd < 0 || write(fd, bytes, sizeof bytes) != (ssize_t)sizeof bytes) {
        perror("workload: code file");
        return 2;
    }
    char *text = mmap(NULL, PAGE, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
    if (text == MAP_FAILED) {
        perror("workload: mmap code file");
        return 2;
    }
    close(fd);
    trampoline_target = map_anon(1, PROT_READ | PROT_WRITE, NULL, 0);
    report(key, (void *)trampoline_target, 1);
    ((void (*)(void (*)(void)))(text + 64))(written_through_foreign_code);
    return 0;
}

/* hostile DIR: in DIR, files whose names a log must escape (a newline,
 * a quote and a backslash, invalid UTF-8) and one under 19 nested directories with
 * 200-byte names (~3.9 KiB of path), each mapped shared and written (reported as
 * hostile-0..3); then writes called through code in a mapped file that is not an
 * ELF, and in one that is a truncated ELF. */
static int hostile(const char *dir) {
    if (chdir(dir) != 0) {
        perror("workload: chdir");
        return 2;
    }
    const char *names[] = {"new\nline", "quo\"te\\back", "bad\xff\xfeutf8"};
    char key[32];
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof key, "hostile-%d", i);
        if (map_shared_file(names[i], 1, key) != 0)
            return 2;
    }
    char level[201];
    memset(level, 'd', 200);
    level[200] = 0;
    int top = open(".", O_RDONLY | O_DIRECTORY);
    for (int i = 0; i < 19; i++) {
        if ((mkdir(level, 0700) != 0 && errno != EEXIST) || chdir(level) != 0) {
            perror("workload: nested directories");
            return 2;
        }
    }
    if (map_shared_file("deep-file", 1, "hostile-3") != 0 || fchdir(top) != 0)
        return 2;
    /* Not an ELF at all, and an ELF header cut short after its identification. */
    if (call_through_file_code("foreign-code", "", 0, "foreign-code") != 0)
        return 2;
    return call_through_file_code("truncated-elf", "\x7f" "ELF\x02\x01\x01", 7, "truncated-elf");
}

/* loop PAGES MILLISECONDS [PAUSE_US]: map, write and unmap PAGES pages until the time is
 * up, pausing PAUSE_US microseconds after each round. */
static int loop(size_t pages, long millis, long pause_us) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    fprintf(stderr, "workload: looping\n");
    do {
        char *buf = map_anon(pages, PROT_READ | PROT_WRITE, NULL, 0);
        write_pages(buf, pages);
        munmap(buf, pages * PAGE);
        if (pause_us > 0)
            usleep(pause_us);
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < millis);
    return 0;
}

/* ---- lifecycle: every region operation inside one arena, with checkpoints. ---- */

#define ARENA_PAGES 64
static char *arena;
static const char *marker_dir;
static int step_number;

/* Prints the writable pages of the arena per /proc/self/maps, then maps (and unmaps)
 * a file named after the step: its region_mapped event marks this point in the
 * agent's stream. */
static void checkpoint(const char *name) {
    char line[512];
    FILE *maps = fopen("/proc/self/maps", "r");
    fprintf(stderr, "workload: checkpoint %d %s", step_number, name);
    while (maps && fgets(line, sizeof line, maps)) {
        unsigned long start, end;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3 || perms[1] != 'w')
            continue;
        unsigned long lo = (unsigned long)arena, hi = lo + ARENA_PAGES * PAGE;
        if (end <= lo || start >= hi)
            continue;
        fprintf(stderr, " %lx-%lx", start < lo ? lo : start, end > hi ? hi : end);
    }
    fprintf(stderr, "\n");
    if (maps)
        fclose(maps);
    char path[256];
    snprintf(path, sizeof path, "%s/step-%d", marker_dir, step_number++);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, PAGE) != 0) {
        perror("workload: marker");
        exit(2);
    }
    void *marker = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    munmap(marker, PAGE);
    close(fd);
}

static char *page(int n) { return arena + n * PAGE; }

static void fixed(int first, int pages, int prot) {
    if (mmap(page(first), pages * PAGE, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
        perror("workload: mmap fixed");
        exit(2);
    }
}

__attribute__((noinline)) void child_writes(void) {
    *page(0) = 1;
    *page(20) = 1;
}

static int lifecycle(const char *self, const char *dir) {
    marker_dir = dir;
    arena = mmap(NULL, ARENA_PAGES * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    report("arena", arena, ARENA_PAGES);
    checkpoint("reserved");
    fixed(0, 8, PROT_READ | PROT_WRITE);
    write_pages(page(0), 8);
    checkpoint("mapped");
    fixed(8, 8, PROT_READ);
    mprotect(page(8), 8 * PAGE, PROT_READ | PROT_WRITE);
    checkpoint("made-writable");
    mprotect(page(2), 2 * PAGE, PROT_READ);
    checkpoint("split-read-only");
    munmap(page(5), PAGE);
    checkpoint("hole");
    if (mremap(page(8), 8 * PAGE, 12 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, page(20)) == MAP_FAILED) {
        perror("workload: mremap");
        exit(2);
    }
    checkpoint("moved");
    pid_t child = fork();
    if (child == 0) {
        child_writes();
        _exit(0);
    }
    waitpid(child, NULL, 0);
    fprintf(stderr, "workload: child %d\n", child);
    checkpoint("forked");
    if (syscall(SYS_pkey_mprotect, page(0), 2 * PAGE, PROT_READ | PROT_WRITE | PROT_EXEC, -1) != 0) {
        perror("workload: pkey_mprotect");
        exit(2);
    }
    checkpoint("wx");
    fflush(stderr);
    execl(self, self, "after-exec", dir, (char *)NULL);
    perror("workload: exec");
    return 2;
}

static int after_exec(const char *dir) {
    marker_dir = dir;
    step_number = 100;
    arena = mmap(NULL, ARENA_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    report("arena-after-exec", arena, ARENA_PAGES);
    write_pages(arena, 2);
    checkpoint("after-exec");
    return 0;
}

__attribute__((noinline)) void child_touch(volatile char *buf) { buf[0] = 1; }

/* spawn N: N short-lived children, half writing to an inherited region and exiting,
 * half exec'ing /bin/true. */
static int spawn(int n) {
    char *buf = map_anon(1, PROT_READ | PROT_WRITE, NULL, 0);
    write_pages(buf, 1);
    for (int i = 0; i < n; i++) {
        pid_t child = fork();
        if (child == 0) {
            if (i % 2) {
                child_touch(buf);
                _exit(0);
            }
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        if (child < 0 || waitpid(child, NULL, 0) < 0) {
            perror("workload: fork/wait");
            return 2;
        }
    }
    fprintf(stderr, "workload: spawned %d\n", n);
    return 0;
}

/* cycles PAGES N: N times map PAGES pages, write one byte per page, unmap (the
 * benchmark's fault-heavy loop). */
static int cycles(size_t pages, int n) {
    for (int i = 0; i < n; i++) {
        char *buf = map_anon(pages, PROT_READ | PROT_WRITE, NULL, 0);
        write_pages(buf, pages);
        munmap(buf, pages * PAGE);
    }
    fprintf(stderr, "workload: cycles %d\n", n);
    return 0;
}

/* bench PAGES CYCLES EXTRA: EXTRA one-page regions mapped first (they stay tracked),
 * then CYCLES x (map PAGES, write one byte per page, unmap). Prints the time of the
 * cycles alone, so start-up and exit do not count. */
static int bench(size_t pages, int n, int extra) {
    for (int i = 0; i < extra; i++) {
        char *r = map_anon(1, PROT_READ | PROT_WRITE, NULL, 0);
        /* alternate protections so the kernel does not merge them into one VMA */
        if (i % 2)
            mprotect(r, PAGE, PROT_READ);
    }
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    cycles(pages, n);
    clock_gettime(CLOCK_MONOTONIC, &end);
    fprintf(stderr, "workload: elapsed_ns %ld\n",
            (long)((end.tv_sec - start.tv_sec) * 1000000000L + (end.tv_nsec - start.tv_nsec)));
    return 0;
}

/* wx: a read-write region and a read-write-execute one, both written. */
static int wx(void) {
    char *rw = map_anon(2, PROT_READ | PROT_WRITE, NULL, 0);
    char *rwx = map_anon(2, PROT_READ | PROT_WRITE | PROT_EXEC, NULL, 0);
    report("rw", rw, 2);
    report("rwx", rwx, 2);
    write_pages(rw, 2);
    write_pages(rwx, 2);
    return 0;
}

/* kernel-read PAGES: read() from /dev/zero into a fresh mapping: the kernel writes. */
__attribute__((noinline)) ssize_t read_into(int fd, char *buf, size_t len) { return read(fd, buf, len); }

static int kernel_read(size_t pages) {
    char *buf = map_anon(pages, PROT_READ | PROT_WRITE, NULL, 0);
    report("kernel-read", buf, pages);
    int fd = open("/dev/zero", O_RDONLY);
    if (fd < 0 || read_into(fd, buf, pages * PAGE) != (ssize_t)(pages * PAGE)) {
        perror("workload: read");
        return 2;
    }
    close(fd);
    return 0;
}

/* Stay alive a moment before exiting: the agent reads /proc/PID/maps for paths and
 * symbols when it sees the process's first records, and processes that exit within a
 * millisecond of starting are not yet resolved reliably (tracked separately). */
static int linger(int rc) {
    usleep(300 * 1000);
    return rc;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "anon") == 0)
        return linger(anon(strtoul(argv[2], NULL, 0)));
    if (argc >= 3 && strcmp(argv[1], "deep") == 0)
        return linger(deep(atoi(argv[2])));
    if (argc >= 3 && strcmp(argv[1], "wait-anon") == 0) {
        /* Started before the agent: wait for a line on stdin, then behave like anon. */
        char line[16];
        fprintf(stderr, "workload: waiting\n");
        if (!fgets(line, sizeof line, stdin))
            return 3;
        return linger(anon(strtoul(argv[2], NULL, 0)));
    }
    if (argc >= 3 && strcmp(argv[1], "map-then-wait") == 0)
        return map_then_wait(strtoul(argv[2], NULL, 0));
    if (argc >= 3 && strcmp(argv[1], "hostile") == 0)
        return hostile(argv[2]);
    if (argc >= 4 && strcmp(argv[1], "shared") == 0)
        return linger(shared(argv[2], strtoul(argv[3], NULL, 0)));
    if (argc >= 2 && strcmp(argv[1], "write-and-exit") == 0) {
        /* Exits within microseconds of its write: nothing left in /proc to read. */
        char *buf = map_anon(1, PROT_READ | PROT_WRITE, NULL, 0);
        write_pages(buf, 1);
        _exit(0);
    }
    if (argc >= 5 && strcmp(argv[1], "bench") == 0)
        return bench(strtoul(argv[2], NULL, 0), atoi(argv[3]), atoi(argv[4]));
    if (argc >= 4 && strcmp(argv[1], "cycles") == 0)
        return linger(cycles(strtoul(argv[2], NULL, 0), atoi(argv[3])));
    if (argc >= 2 && strcmp(argv[1], "wx") == 0)
        return linger(wx());
    if (argc >= 3 && strcmp(argv[1], "kernel-read") == 0)
        return linger(kernel_read(strtoul(argv[2], NULL, 0)));
    if (argc >= 3 && strcmp(argv[1], "spawn") == 0)
        return linger(spawn(atoi(argv[2])));
    if (argc >= 3 && strcmp(argv[1], "lifecycle") == 0)
        return linger(lifecycle(argv[0], argv[2]));
    if (argc >= 3 && strcmp(argv[1], "after-exec") == 0)
        return linger(after_exec(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "loop") == 0)
        return loop(strtoul(argv[2], NULL, 0), strtol(argv[3], NULL, 0),
                    argc >= 5 ? strtol(argv[4], NULL, 0) : 0);
    if (argc >= 2 && strcmp(argv[1], "demo") == 0) {
        char path[] = "/tmp/map-audit-demo-XXXXXX";
        int fd = mkstemp(path);
        if (fd >= 0)
            close(fd);
        int rc = anon(4) || shared(path, 2);
        unlink(path);
        return linger(rc);
    }
    fprintf(stderr, "usage: workload anon PAGES | wait-anon PAGES | map-then-wait PAGES | deep N | shared FILE PAGES | hostile DIR | loop PAGES MS [PAUSE_US] | demo\n");
    return 64;
}
