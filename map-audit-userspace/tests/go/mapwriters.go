// Workloads for map-audit's Go mode tests and benchmark. Usage: mapwriters MODE [N]
//
//	race      two goroutines write one map until the runtime throws (exit 3 if it
//	          has not in 10 s)
//	race-on-input  the same, once a line arrives on stdin (for --pid tests)
//	readwrite one goroutine writes a map while another reads it, until the runtime throws
//	nilmap    assigns to a nil map with no recover: the panic ends the process
//	unlock    unlocks an unlocked sync.Mutex: a fatal error outside the map runtime
//	overflow  recurses past a 1 MiB stack limit: the runtime throws on its system stack
//	nilpanic N N goroutines in turn assign to a nil map and recover from the panic
//	mutex N   four goroutines write one map N times each under a sync.Mutex
//	syncmap N four goroutines store N times each into one sync.Map
//	local N   four goroutines write N times each into maps of their own
//	serial N  one goroutine writes N times into one map and prints the loop's time to
//	          stderr (the benchmark's workload)
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"time"
)

const workers = 4

var shared = map[string]int{}

//go:noinline
func raceWriterA(keys []string) {
	for i := 0; ; i++ {
		shared[keys[i%len(keys)]] = i
	}
}

//go:noinline
func raceWriterB(keys []string) {
	for i := 0; ; i++ {
		delete(shared, keys[i%len(keys)])
		shared[keys[(i+1)%len(keys)]] = i
	}
}

//go:noinline
func readWriterA(keys []string) {
	for i := 0; ; i++ {
		shared[keys[i%len(keys)]] = i
	}
}

//go:noinline
func readWriterB(keys []string) (sum int) {
	for i := 0; ; i++ {
		sum += shared[keys[i%len(keys)]]
	}
}

//go:noinline
func nilMapPanic() {
	var m map[string]int
	m["nil"] = 1
}

//go:noinline
func badUnlock(mu *sync.Mutex) {
	mu.Unlock()
}

//go:noinline
func deepRecursion(n int) int {
	var pad [64]byte
	pad[n%64] = byte(n)
	return deepRecursion(n+1) + int(pad[(n+1)%64])
}

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "key-" + strconv.Itoa(i)
	}
	return out
}

//go:noinline
func mutexWriter(m map[int]int, mu *sync.Mutex, base, n int) {
	for i := 0; i < n; i++ {
		mu.Lock()
		m[base+i%1024] = i
		mu.Unlock()
	}
}

//go:noinline
func syncMapWriter(m *sync.Map, base, n int) {
	for i := 0; i < n; i++ {
		m.Store(base+i%1024, i)
	}
}

//go:noinline
func localWriter(n int) int {
	m := map[int]int{}
	for i := 0; i < n; i++ {
		m[i%1024] = i
	}
	return len(m)
}

//go:noinline
func serialWriter(m map[int]int, n int) {
	for i := 0; i < n; i++ {
		m[i%4096] = i
	}
}

//go:noinline
func nilMapWriter() (recovered bool) {
	defer func() { recovered = recover() != nil }()
	var m map[string]int
	m["nil"] = 1
	return false
}

// noCrashExit is race's exit status when the runtime has not thrown in 10 s: a race
// can also leave the map in a state where both writers spin forever.
const noCrashExit = 3

func race() {
	go func() {
		time.Sleep(10 * time.Second)
		fmt.Fprintln(os.Stderr, "mapwriters: no crash in 10 s")
		os.Exit(noCrashExit)
	}()
	ks := keys(64)
	go raceWriterA(ks)
	raceWriterB(ks)
}

func parallel(work func(w int)) {
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			work(w)
		}(w)
	}
	wg.Wait()
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: mapwriters race|mutex|syncmap|local|serial [N]")
		os.Exit(2)
	}
	n := 0
	if len(os.Args) > 2 {
		n, _ = strconv.Atoi(os.Args[2])
	}
	switch os.Args[1] {
	case "race":
		race()
	case "race-on-input":
		bufio.NewReader(os.Stdin).ReadString('\n')
		race()
	case "readwrite":
		ks := keys(64)
		go readWriterA(ks)
		readWriterB(ks)
	case "nilmap":
		nilMapPanic()
	case "unlock":
		badUnlock(&sync.Mutex{})
	case "overflow":
		debug.SetMaxStack(1 << 20)
		deepRecursion(0)
	case "nilpanic":
		for i := 0; i < n; i++ {
			done := make(chan bool)
			go func() { done <- nilMapWriter() }()
			if !<-done {
				os.Exit(3)
			}
		}
	case "mutex":
		m, mu := map[int]int{}, &sync.Mutex{}
		parallel(func(w int) { mutexWriter(m, mu, w*1024, n) })
	case "syncmap":
		var m sync.Map
		parallel(func(w int) { syncMapWriter(&m, w*1024, n) })
	case "local":
		parallel(func(w int) { localWriter(n) })
	case "serial":
		m := map[int]int{}
		serialWriter(m, 4096) // the map at full size: the timed loop only assigns
		start := time.Now()
		serialWriter(m, n)
		fmt.Fprintf(os.Stderr, "mapwriters: elapsed_ns %d\n", time.Since(start).Nanoseconds())
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}
