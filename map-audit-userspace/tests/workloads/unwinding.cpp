// C++ -O2 writer for tests/unwinding.rs: inlined helpers, a class, and a write made
// while an exception is in flight (in a destructor during unwinding).
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <sys/mman.h>
#include <unistd.h>

namespace {
constexpr int kPage = 4096;
}

struct Journal {
    char *base;
    int next = 0;
    __attribute__((noinline)) void append(char value) {
        base[next * kPage] = value;
        next++;
        asm volatile("" ::: "memory");
    }
    ~Journal() { append('d'); }
};

inline void record_twice(Journal &j) { j.append('a'); j.append('b'); }

__attribute__((noinline)) void risky(Journal &j) {
    record_twice(j);
    Journal scoped{j.base + 8 * kPage};
    throw std::runtime_error("unwind through a destructor");
}

__attribute__((noinline)) int run(char *base) {
    Journal j{base};
    try {
        risky(j);
    } catch (const std::exception &) {
        j.append('c');
    }
    return j.next;
}

int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 16 * kPage) != 0) return 2;
    char *base = static_cast<char *>(mmap(nullptr, 16 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    std::fprintf(stderr, "workload: target %p %p\n", base, base + 16 * kPage);
    int n = run(base);
    usleep(200 * 1000);
    return n > 0 ? 0 : 1;
}
