/* A plugin loaded with dlopen by dlopen_host.c (tests/unwinding.rs): a call chain
 * ending in a frameless leaf that writes one byte per page. -O2 without frame
 * pointers, -shared -fPIC. */
#define PAGE 4096

__attribute__((noinline)) static void plugin_leaf(volatile char *p, int page) {
    p[page * PAGE] = (char)page;
}

__attribute__((noinline)) static void plugin_level(char *p, int pages) {
    for (int i = 0; i < pages; i++)
        plugin_leaf(p, i);
    __asm__ volatile("" ::: "memory");
}

int plugin_entry(char *p, int pages) {
    plugin_level(p, pages);
    return p[0];
}
