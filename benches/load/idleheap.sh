#!/usr/bin/env bash
# Where the heap of an idle keep-alive visitor connection goes: webcluster
# (a build with `--features system-allocator`, since heaptrack only sees
# malloc) under heaptrack, CONNS idle keep-alive connections opened by
# benches/load/idleconns.py and held, then heaptrack_print's peak view.
#
#   cargo build --release --bin webcluster --features system-allocator
#   bash benches/load/idleheap.sh target/release/webcluster [CONNS]
#
# Output: heaptrack_print's "peak memory consumers" (stdout) and the
# heaptrack file kept in the work directory it names. Needs heaptrack,
# nginx, python3. Only 127.0.0.1 and kernel-chosen ports; the load is
# bounded (idleconns.py holds the connections HOLD seconds, default 3).
# PARALLEL (default 10): how many connections idleconns.py opens at a
# time; each one's request in flight holds a 16 KiB read buffer for the
# node's answer, which the peak then also counts (200 at a time put 0.65
# KiB per connection of such buffers into the peak of 4,000).
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${1:?usage: idleheap.sh WEBCLUSTER_BINARY [CONNS]}
CONNS=${2:-4000}
HOLD=${HOLD:-3}
PARALLEL=${PARALLEL:-10}
for t in heaptrack heaptrack_print nginx python3; do
    command -v "$t" >/dev/null || { echo "missing: $t (apt-get install heaptrack nginx python3)" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"

# free_port, wait_port
source "$HERE/ports.sh"
# start_nginx_upstream, bench_workdir, bare_webcluster_conf
source "$HERE/upstream.sh"
# The work directory stays: it holds the heaptrack file.
bench_workdir idleheap keep

UP=$(free_port)
start_nginx_upstream "$WORK" "$UP" 300

PORT=$(free_port)
bare_webcluster_conf "$WORK/webcluster.toml" "$PORT" "$UP"
setsid heaptrack -o "$WORK/heaptrack" "$BIN" run -c "$WORK/webcluster.toml" >"$WORK/heaptrack.log" 2>&1 &
WC=$!
PIDS+=("$WC")
wait_port "$PORT" 300
timeout -k 5 120 python3 "$HERE/idleconns.py" --port "$PORT" --conns "$CONNS" --hold "$HOLD" --parallel "$PARALLEL" >"$WORK/idleconns.txt"
cat "$WORK/idleconns.txt" >&2
# SIGINT to webcluster (the process of our own group running $BIN):
# pingora's fast shutdown; heaptrack writes its file as the process ends.
app=$(ps -o pid=,args= -g "$WC" | awk -v b="$BIN" '$2 == b {print $1; exit}')
[[ -n $app ]] && kill -INT "$app"
for _ in $(seq 1 100); do kill -0 "$WC" 2>/dev/null || break; sleep 0.1; done
file=$(ls "$WORK"/heaptrack*.zst "$WORK"/heaptrack*.gz 2>/dev/null | head -1 || true)
[[ -n $file ]] || { cat "$WORK/heaptrack.log" >&2; exit 1; }
echo "heaptrack file: $file" >&2
heaptrack_print -f "$file" --print-peaks 1 --print-allocators 0 --print-temporary 0 --print-leaks 0 \
    --peak-limit 25 2>/dev/null
