#!/usr/bin/env bash
# How often each proxy's worker thread is taken off its core, per request:
# webcluster (one thread, "bare": round robin, no scrape, no access log)
# and HAProxy (nbthread 1, the same forwarding headers as webcluster sends)
# in front of one nginx upstream, under `wrk -t1 -c50`, alternated ROUNDS
# times. For each run: req/s, the proxy's voluntary and involuntary
# context switches per request (/proc/PID/task/*/status), its CPU time
# per request, and the time it waited for a core
# (/proc/PID/task/*/schedstat). On a machine with fewer cores than busy
# processes, throughput follows how rarely the proxy loses its core more
# than its CPU per request (benches/README.md, "Eleventh session").
# With `perf` (Debian's linux-perf) and the syscalls tracepoints readable,
# a second table gives each proxy's system calls per request by kind,
# counted in one more run of each (`perf stat -e 'syscalls:sys_enter_*'`):
# the eventfd writes of a runtime waking itself show there
# (benches/README.md, "Twelfth session"). With `perf sched` a third
# table says where the idle core time went: the cores' idle share and the
# time each process waited for a core while another core idled
# (benches/load/idlecores.py; "Thirteenth session").
#
#   bash benches/load/switches.sh [WEBCLUSTER_BINARY]   # target/release/webcluster
#
# SIZE (default small; or 64k), SECONDS_EACH (default 5), ROUNDS (default
# 2), THREADS (each proxy's worker threads, default 1), PIN=1 (wrk and the
# upstream on CPU 0, the proxy on CPU 1: whichever core is full is the
# bottleneck; "Thirteenth session"). Needs nginx, haproxy, wrk, python3
# and /usr/bin/time (Debian's `time`). Only 127.0.0.1 and kernel-chosen
# ports; every wrk run is bounded by SECONDS_EACH. Run it on a quiet
# machine.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${1:-$HERE/../../target/release/webcluster}
SIZE=${SIZE:-small}
SECONDS_EACH=${SECONDS_EACH:-5}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-1}
PIN=${PIN:-0}
# PIN=1: the load generator and the upstream on CPU 0, the proxy on CPU 1
# (taskset), to see which side is the bottleneck.
GEN=() PROXY_CPU=()
if [[ $PIN == 1 ]]; then
    command -v taskset >/dev/null || { echo "PIN=1 needs taskset (util-linux)" >&2; exit 1; }
    GEN=(taskset -c 0) PROXY_CPU=(taskset -c 1)
fi
for t in nginx haproxy wrk python3 /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "missing: $t (apt-get install nginx haproxy wrk python3 time)" >&2; exit 1; }
done
[[ -x $BIN ]] || { echo "no webcluster binary at $BIN (cargo build --release)" >&2; exit 1; }

# free_port, wait_port
source "$HERE/ports.sh"
# start_nginx_upstream, bench_workdir, bare_webcluster_conf
source "$HERE/upstream.sh"
# peer_forwarding
source "$HERE/peers.sh"
bench_workdir switches

UP=$(free_port)
start_nginx_upstream "$WORK" "$UP" 300
UP_WORKER=$(pgrep -P "${PIDS[-1]}" | head -n1)
if [[ $PIN == 1 ]]; then
    for p in "${PIDS[-1]}" "$UP_WORKER"; do taskset -a -p -c 0 "$p" >/dev/null; done
fi

WC_PORT=$(free_port)
bare_webcluster_conf "$WORK/webcluster.toml" "$WC_PORT" "$UP" "$THREADS"
setsid "${PROXY_CPU[@]}" "$BIN" run -c "$WORK/webcluster.toml" >"$WORK/webcluster.log" 2>&1 &
PIDS+=($!)
WC_PID=$!

HP_PORT=$(free_port)
cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread $THREADS
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:$HP_PORT
$(peer_forwarding haproxy)
    default_backend be
backend be
    server s1 127.0.0.1:$UP
EOF
setsid "${PROXY_CPU[@]}" haproxy -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
HP_PID=$!
wait_port "$WC_PORT" 300
wait_port "$HP_PORT" 300

# counters PID: voluntary, involuntary switches, run ns, wait ns, summed
# over the process's threads.
counters() {
    local v=0 n=0 run=0 wait=0 t a b c w
    for t in /proc/"$1"/task/*; do
        read -r a b < <(awk '/^voluntary_ctxt_switches/{a=$2} /^nonvoluntary_ctxt_switches/{b=$2} END{print a, b}' "$t/status")
        read -r c w _ <"$t/schedstat"
        v=$((v + a)); n=$((n + b)); run=$((run + c)); wait=$((wait + w))
    done
    echo "$v $n $run $wait"
}

# target webcluster|haproxy: sets port and pid.
target() {
    if [[ $1 == webcluster ]]; then port=$WC_PORT pid=$WC_PID; else port=$HP_PORT pid=$HP_PID; fi
}

# System calls per request, when perf can count them.
PERF=0
if command -v perf >/dev/null && perf stat -e 'syscalls:sys_enter_write' -- true >/dev/null 2>&1; then
    PERF=1
fi

printf '| round | proxy | req/s | voluntary / request | involuntary / request | CPU per request | proxy busy (share of a core) | waited for a core | upstream CPU / request | wrk CPU / request |\n'
printf '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
for round in $(seq 1 "$ROUNDS"); do
    for which in webcluster haproxy; do
        target "$which"
        url="http://127.0.0.1:$port/$SIZE"
        timeout -k 5 30 "${GEN[@]}" wrk -t1 -c50 -d2s "$url" >/dev/null
        read -r v0 n0 r0 w0 < <(counters "$pid")
        read -r _ _ u0 _ < <(counters "$UP_WORKER")
        out=$(/usr/bin/time -f '%U %S' -o "$WORK/wrk.time" \
            timeout -k 5 $((SECONDS_EACH + 30)) "${GEN[@]}" wrk -t1 -c50 -d"${SECONDS_EACH}s" "$url")
        read -r v1 n1 r1 w1 < <(counters "$pid")
        read -r _ _ u1 _ < <(counters "$UP_WORKER")
        read -r wu ws <"$WORK/wrk.time"
        reqs=$(awk '/requests in/{print $1}' <<<"$out")
        python3 - "$round" "$which" "$reqs" "$SECONDS_EACH" "$((v1 - v0))" "$((n1 - n0))" "$((r1 - r0))" "$((w1 - w0))" "$((u1 - u0))" "$wu" "$ws" <<'PY'
import sys
rnd, which, reqs, secs, v, n, run, wait, up, wu, ws = sys.argv[1:]
reqs, secs, v, n, run, wait, up = int(reqs), float(secs), int(v), int(n), int(run), int(wait), int(up)
wrk = (float(wu) + float(ws)) * 1e6
print("| %s | %s | %.0f | %.3f | %.3f | %.2f µs | %.0f%% | %.0f ms | %.2f µs | %.2f µs |" % (
    rnd, which, reqs / secs, v / reqs, n / reqs, run / 1000.0 / reqs, run / 1e9 / secs * 100, wait / 1e6,
    up / 1000.0 / reqs, wrk / reqs))
PY
    done
done

# The system calls in runs of their own: counting them costs each call a
# little, which the figures above must not carry.
if ((PERF)); then
    for which in webcluster haproxy; do
        target "$which"
        url="http://127.0.0.1:$port/$SIZE"
        perf stat -x, -e 'syscalls:sys_enter_*' -p "$pid" -o "$WORK/syscalls.$which" \
            -- sleep $((SECONDS_EACH + 1)) >/dev/null 2>&1 &
        perf_pid=$!
        out=$(timeout -k 5 $((SECONDS_EACH + 30)) "${GEN[@]}" wrk -t1 -c50 -d"${SECONDS_EACH}s" "$url")
        # perf counts a second longer than wrk runs: the calls of that
        # second are the idle proxy's (a handful).
        wait "$perf_pid" || true
        echo "$which $(awk '/requests in/{print $1}' <<<"$out")" >>"$WORK/requests"
    done
    echo
    echo "System calls per request (perf stat, a run of its own per proxy; kinds above 0.001):"
    echo
    python3 - "$WORK" <<'PY'
import os, sys
work = sys.argv[1]
reqs = {}
for line in open(os.path.join(work, "requests")):
    which, n = line.split()
    reqs[which] = int(n)
rows = []
kinds = set()
for which, n in reqs.items():
    counts = {}
    path = os.path.join(work, "syscalls.%s" % which)
    for line in open(path):
        f = line.strip().split(",")
        if len(f) > 2 and f[0].isdigit() and f[2].startswith("syscalls:sys_enter_"):
            per = int(f[0]) / n
            if per >= 0.001:
                counts[f[2][len("syscalls:sys_enter_"):]] = per
    kinds |= set(counts)
    rows.append((which, counts))
kinds = sorted(kinds)
print("| proxy | " + " | ".join(kinds) + " | all |")
print("| --- | " + " | ".join("---:" for _ in kinds) + " | ---: |")
for which, counts in rows:
    print("| %s | %s | %.3f |" % (which, " | ".join("%.3f" % counts.get(k, 0) for k in kinds), sum(counts.values())))
PY
fi

# Where the idle core time went, when perf can record the scheduler: one
# more run of each proxy, its scheduler events recorded for 1 s in the
# middle (idlecores.py).
SCHED=0
if command -v perf >/dev/null && perf sched record -o "$WORK/probe.data" -- true >/dev/null 2>&1; then
    SCHED=1
fi
if ((SCHED)); then
    echo
    echo "Idle cores (perf sched, 1 s in a run of its own per proxy): the cores' idle share; the time each process waited for a core while another core idled; the proxy's wake-ups per request:"
    echo
    echo "| proxy | idle | proxy waited | wrk waited | upstream waited | proxy woken / request |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for which in webcluster haproxy; do
        target "$which"
        url="http://127.0.0.1:$port/$SIZE"
        timeout -k 5 $((SECONDS_EACH + 30)) "${GEN[@]}" wrk -t1 -c50 -d"${SECONDS_EACH}s" "$url" >"$WORK/sched-wrk.$which" &
        wrk_pid=$!
        sleep 1
        perf sched record -o "$WORK/sched.$which" -- sleep 1 >/dev/null 2>&1 || true
        wait "$wrk_pid" || true
        perf sched timehist -i "$WORK/sched.$which" >"$WORK/timehist.$which" 2>/dev/null || true
        rate=$(awk '/Requests\/sec/{print $2}' "$WORK/sched-wrk.$which")
        comm=$which
        [[ $which == webcluster ]] && comm="webcluster prox"
        python3 "$HERE/idlecores.py" "$WORK/timehist.$which" "$which" "$comm" "${rate:-1}"
    done
fi
