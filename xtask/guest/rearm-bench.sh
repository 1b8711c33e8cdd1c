#!/bin/sh
# Re-arm cost figures (docs/benchmarks-rearm.md), run in a matrix guest:
#   cargo xtask vm-run --file target/vm/rearm-workload --file $PWD/xtask/guest/rearm-bench.sh \
#     -- sh $PWD/xtask/guest/rearm-bench.sh $PWD/target/vm/rearm-workload [BUDGET]
# (target/vm/rearm: tests/workloads/rearm.c built by `cargo xtask vm-test`, or
# gcc -static -O2).
# Each configuration: the agent (if any) started first with --comm, then a workload
# that writes 1 GiB once and rewrites all of it for 30 s; its passes per second and the
# agent's CPU over those 30 s (utime + stime ticks from /proc, 100 per second).
W=${1:?usage: rearm-bench.sh PATH-OF-STATIC-rearm [BUDGET]}
BUDGET=${2:-100000}
C=$(basename "$W" | cut -c1-15)
P=262144
S=30
echo "== target-side cost (no agent)"
$W clear-cost $P
$W clear-cost $P thp
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
for conf in none 30 5 1 1-budget none; do
    a=""
    case $conf in
        none) ;;
        1-budget) map-audit run --comm "$C" --rearm-interval 1 --rearm-budget $BUDGET -o /tmp/agent.out & a=$! ;;
        *) map-audit run --comm "$C" --rearm-interval $conf -o /tmp/agent.out & a=$! ;;
    esac
    if [ -n "$a" ]; then
        while ! grep -q agent_started /tmp/agent.out 2>/dev/null; do sleep 1; done
        before=$(ticks $a)
    fi
    $W bench $P $S > /tmp/w.out
    line="rearm-interval=$conf $(cat /tmp/w.out)"
    if [ -n "$a" ]; then
        after=$(ticks $a)
        kill -INT $a; wait $a
        stats=$(grep agent_stopped /tmp/agent.out | grep -o '"rearm_rounds":[0-9]*,"processes_rearmed":[0-9]*,"rearm_failed":[0-9]*,"rearm_skipped_over_budget":[0-9]*')
        faults=$(grep agent_stopped /tmp/agent.out | grep -o '"faults_matched":[0-9]*')
        line="$line agent_cpu_s=$(awk "BEGIN { print ($after - $before) / 100 }") $faults $stats"
        rm -f /tmp/agent.out
    fi
    echo "$line"
done
