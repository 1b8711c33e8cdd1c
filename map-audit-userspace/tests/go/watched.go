// `map-audit watch` on a Go global by its Go name: two goroutines (on threads the Go
// runtime starts after the watch is set) add to `main.counter` from two functions.
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
)

var counter int64

//go:noinline
func bumpOne(n int) {
	for i := 0; i < n; i++ {
		atomic.AddInt64(&counter, 1)
	}
}

//go:noinline
func bumpTwo(n int) {
	for i := 0; i < n; i++ {
		atomic.AddInt64(&counter, 2)
	}
}

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); bumpOne(n) }()
	go func() { defer wg.Done(); bumpTwo(n) }()
	wg.Wait()
	fmt.Fprintf(os.Stderr, "counter=%d\n", atomic.LoadInt64(&counter))
}
