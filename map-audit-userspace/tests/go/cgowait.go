// cgowait: one goroutine blocked in C code (cgo) while main assigns to a nil map with
// no recover. A crash-only capture then walks a thread that is in libc, not in Go:
// its frames are named by the native symboliser, not by .gopclntab.
package main

/*
#include <unistd.h>
static void wait_in_c(void) { for (;;) pause(); }
*/
import "C"

import "time"

func main() {
	go C.wait_in_c()
	time.Sleep(200 * time.Millisecond)
	var m map[string]int
	m["x"] = 1
}
