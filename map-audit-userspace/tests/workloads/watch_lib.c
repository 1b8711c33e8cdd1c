// A shared library (PIE code) whose global `map-audit watch` finds by symbol.
long lib_counter;

__attribute__((noinline)) void lib_bump(long n) {
    for (long i = 0; i < n; i++)
        __atomic_fetch_add(&lib_counter, 1, __ATOMIC_RELAXED);
}
