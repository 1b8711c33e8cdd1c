/* Loads a plugin with dlopen and has it write a MAP_SHARED file (tests/unwinding.rs):
 * the plugin's frames are unwound with the table the agent builds as its mapping
 * arrives. Usage: dlopen_host FILE PLUGIN. */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096
#define PAGES 4

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s FILE PLUGIN\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, PAGES * PAGE) != 0)
        return 1;
    char *region = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (region == MAP_FAILED)
        return 1;
    fprintf(stderr, "workload: target %p %p\n", region, region + PAGES * PAGE);
    void *plugin = dlopen(argv[2], RTLD_NOW);
    if (!plugin) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    int (*entry)(char *, int) = (int (*)(char *, int))dlsym(plugin, "plugin_entry");
    /* A library's table is built as its mapping's record reaches the agent, within
     * milliseconds; a call at once after dlopen can beat it (its stack then stops at the
     * plugin, marked truncated). */
    usleep(100 * 1000);
    return entry(region, PAGES) == 0 ? 0 : 1;
}
