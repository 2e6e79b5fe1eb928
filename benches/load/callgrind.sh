#!/usr/bin/env bash
# Instructions per request of webcluster builds, counted by valgrind's
# callgrind: a figure that does not move with what else the machine is doing
# (unlike req/s), so two builds can be compared on a busy machine.
#
#   bash benches/load/callgrind.sh                          # target/release/webcluster
#   bash benches/load/callgrind.sh OLD_BINARY NEW_BINARY    # side by side
#
# For each binary and response size (SIZES, default "small 64k"): an upstream
# nginx (1 worker) serves the response; webcluster runs under callgrind with
# one worker thread, the status scrape off and no access log ("bare"), and
# again as users run it ("full": busyness balancing with the scrape of the
# upstream's stub_status on, the status-path guard, the access log on);
# `ab -k -c 10` sends REQUESTS requests (default 2000), then webcluster is
# stopped. The same run with no request gives the fixed cost (start, stop,
# scrapes over the same time), which is subtracted:
#   instructions per request = (Ir with REQUESTS - Ir with none) / REQUESTS
# MODES (default "bare full") may also name "h2" and "h2-full": the same
# two configs, with the requests sent over HTTP/2 with prior knowledge
# (h2c, the plain listener's preface sniffing) by `h2load -c 10 -m 10`
# (10 connections, 10 streams each), so the per-request cost of the HTTP/2
# path (h2 frames, a task per stream, the head conversion) is counted the
# same way; needs h2load (nghttp2-client).
# THREADS (default 1) sets the server's `threads`: with 2, the count shows
# what serving connections on two threads costs (callgrind runs the threads
# one at a time, so it counts the work, not the contention). LABEL names
# the binary in the table (default: its path); JSONL=FILE also appends one
# JSON line per row to FILE (benches/load/run.sh's "instructions" part).
# UPSTREAM=prefork: the upstream is an Apache prefork node instead (the
# project's node template, NODE_WORKERS workers [16], serving the same two
# files), scraped through its own ?auto page in both modes, and KEEPALIVE
# (default "auto off") runs each mode with that `upstream_keepalive`: the
# cost of a connection per request to a prefork node ("off", what "auto"
# did whenever the node had no workers to spare) against keeping them
# within the node's limit ("auto" since issue 17).
# KEEP=DIR keeps each run's callgrind output there (NAME-MODE-SIZE-N.out,
# N the request count), for `callgrind_annotate --inclusive=yes`.
# Output: one Markdown table on stdout (and the raw totals on stderr).
# Needs valgrind, nginx and ab (apache2-utils); installed with apt-get when
# missing and run as root. Only 127.0.0.1 and kernel-chosen ports are used.
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REQUESTS=${REQUESTS:-2000}
LAST_SECONDS=2
SIZES=${SIZES:-"small 64k"}
MODES=${MODES:-"bare full"}
THREADS=${THREADS:-1}
LABEL=${LABEL:-}
JSONL=${JSONL:-}
UPSTREAM=${UPSTREAM:-nginx}
NODE_WORKERS=${NODE_WORKERS:-16}
KEEPALIVE=${KEEPALIVE:-}
KEEP=${KEEP:-}
if [[ $UPSTREAM == prefork && -z $KEEPALIVE ]]; then KEEPALIVE="auto off"; fi
if [[ $# -eq 0 ]]; then
    set -- "$ROOT/target/release/webcluster"
fi

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v ab >/dev/null || need+=(apache2-utils)
[[ $MODES != *h2* ]] || command -v h2load >/dev/null || need+=(nghttp2-client)
[[ $UPSTREAM != prefork ]] || command -v apache2 >/dev/null || [[ -x /usr/sbin/apache2 ]] || need+=(apache2)
if ((${#need[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
    else
        echo "missing: ${need[*]} (apt-get install them)" >&2
        exit 1
    fi
fi

# free_port, wait_port
source "$HERE/ports.sh"
# start_nginx_upstream, bench_workdir
source "$HERE/upstream.sh"
bench_workdir callgrind

# The upstream: nginx, one worker, /small (96 bytes), /64k, stub_status;
# or (UPSTREAM=prefork) an Apache prefork node serving the same files.
UP=$(free_port)
if [[ $UPSTREAM == prefork ]]; then
    d="$WORK/apache"
    conf="$ROOT/docker/apache/node.conf"
    mkdir -p "$d/run" "$d/logs" "$d/htdocs" "$d/cgi-bin"
    chmod 755 "$WORK" "$d" "$d/run" "$d/logs" "$d/htdocs" "$d/cgi-bin"
    for f in "$ROOT"/docker/apache/htdocs/*; do
        sed "s/@NODE_NAME@/n1/g" "$f" >"$d/htdocs/$(basename "$f")"
    done
    head -c 96 /dev/zero | tr '\0' 'x' >"$d/htdocs/small"
    head -c 65536 /dev/zero | tr '\0' 'y' >"$d/htdocs/64k"
    chmod 644 "$d"/htdocs/*
    cp "$ROOT"/docker/apache/cgi-bin/* "$d/cgi-bin/"
    chmod 755 "$d"/cgi-bin/*
    setsid env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C apache2 -d "$d" -f "$conf" -DFOREGROUND \
        -C "Define NODE_NAME n1" -C "Define NODE_LISTEN 127.0.0.1:$UP" \
        -C "Define NODE_MPM prefork" -C "Define NODE_MAX_WORKERS $NODE_WORKERS" \
        -C "Define NODE_MAX_SPARE_THREADS $((NODE_WORKERS + 1))" \
        -C "Define NODE_STATUS_ALLOW 127.0.0.1" -C "Define NODE_KEEPALIVE_TIMEOUT 5" \
        -C "Define NODE_MODULES /usr/lib/apache2/modules" \
        -C "Define NODE_RUN_DIR $d/run" -C "Define NODE_LOG_DIR $d/logs" \
        -C "Define NODE_HTDOCS $d/htdocs" -C "Define NODE_CGI_DIR $d/cgi-bin" \
        -C "Define NODE_USER www-data" -C "Define NODE_GROUP www-data" \
        -c "CustomLog /dev/null common" >"$d/out.log" 2>&1 &
    PIDS+=($!)
    wait_port "$UP"
else
    start_nginx_upstream "$WORK" "$UP"
fi

# Instructions of one webcluster run under callgrind with `n` requests.
run() {
    local bin=$1 mode=$2 size=$3 n=$4 keepalive=${5:-}
    local listen admin dir node
    listen=$(free_port)
    admin=$(free_port)
    dir="$WORK/run-$RANDOM"
    mkdir -p "$dir"
    local group="balance = \"round_robin\"\nscrape = false" log='target = "off"'
    if [[ $mode == full || $mode == h2-full ]]; then
        group="balance = \"busyness\"\nscrape_interval = \"1s\""
        log="target = \"$dir/access.log\""
    fi
    node=$(printf '  name = "nginx"\n  address = "127.0.0.1:%s"\n  status_url = "http://127.0.0.1:%s/nginx_status"\n  status_kind = "nginx"\n  max_workers = 1024' "$UP" "$UP")
    if [[ $UPSTREAM == prefork ]]; then
        # Scraped in both modes: the limit and "auto" keep-alive need the
        # node's page (that it is prefork, its free workers).
        [[ $mode == full || $mode == h2-full ]] || group="balance = \"round_robin\""
        node=$(printf '  name = "n1"\n  address = "127.0.0.1:%s"' "$UP")
    fi
    [[ -z $keepalive ]] || group+="\nupstream_keepalive = \"$keepalive\""
    printf '[server]\nlisten = ["127.0.0.1:%s"]\nthreads = %s\nlog_level = "warn"\n\n[admin]\nlisten = "127.0.0.1:%s"\n\n[access_log]\n%s\n\n[[group]]\nname = "up"\n%b\n  [[group.node]]\n%s\n' \
        "$listen" "$THREADS" "$admin" "$log" "$group" "$node" >"$dir/webcluster.toml"
    setsid valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
        "$bin" run -c "$dir/webcluster.toml" >"$dir/out.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_port "$admin"
    wait_port "$listen"
    if ((n > 0)); then
        local t0=$SECONDS
        if [[ $mode == h2* ]]; then
            h2load -c 10 -m 10 -n "$n" "http://127.0.0.1:$listen/$size" >"$dir/h2load.txt" 2>&1
            grep -q "requests: $n total, $n started, $n done, $n succeeded, 0 failed, 0 errored" "$dir/h2load.txt" &&
                grep -q "status codes: $n 2xx" "$dir/h2load.txt" ||
                { cat "$dir/h2load.txt" >&2; return 1; }
        else
            ab -q -k -c 10 -n "$n" "http://127.0.0.1:$listen/$size" >"$dir/ab.txt" 2>&1
            # ab counts a 4xx or 5xx answer as no failure, only as "Non-2xx".
            grep -q "Failed requests:        0" "$dir/ab.txt" && ! grep -q "Non-2xx" "$dir/ab.txt" ||
                { cat "$dir/ab.txt" >&2; return 1; }
        fi
        echo $((SECONDS - t0 + 1)) >"$WORK/seconds"
    else
        # As long without requests: scrapes and timers still run.
        sleep "$LAST_SECONDS"
    fi
    # SIGTERM to webcluster itself (under valgrind it is the same pid).
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    local ir
    ir=$(awk '/^summary:/ {print $2}' "$dir/callgrind.out")
    [[ -n $ir ]] || { echo "no callgrind summary in $dir" >&2; tail "$dir/out.log" >&2; return 1; }
    if [[ -n $KEEP ]]; then
        mkdir -p "$KEEP"
        cp "$dir/callgrind.out" "$KEEP/$(basename "$bin")-$mode-$size-$n.out"
    fi
    echo "$ir"
}

printf '| binary | upstream | keep-alive | mode | response | instructions per request |\n| --- | --- | --- | --- | --- | ---: |\n'
for bin in "$@"; do
    name=${LABEL:-$(basename "$bin")}
    [[ -x $bin ]] || { echo "$bin: not an executable" >&2; exit 1; }
    for keepalive in ${KEEPALIVE:-default}; do
        [[ $keepalive == default ]] && keepalive=""
        for mode in $MODES; do
            for size in $SIZES; do
                log "$name ${keepalive:-} $mode $size: $REQUESTS requests"
                run "$bin" "$mode" "$size" "$REQUESTS" "$keepalive" >"$WORK/total"
                total=$(cat "$WORK/total")
                LAST_SECONDS=$(cat "$WORK/seconds")
                log "$name $mode $size: the same time without requests ($LAST_SECONDS s)"
                base=$(run "$bin" "$mode" "$size" 0 "$keepalive")
                per=$(( (total - base) / REQUESTS ))
                log "$name $mode $size: Ir $total - $base (fixed) = $((total - base)) over $REQUESTS requests"
                printf '| %s | %s | %s | %s | %s | %s |\n' "${LABEL:-$bin}" "$UPSTREAM" "${keepalive:-default}" "$mode" "$size" "$per"
                if [[ -n $JSONL ]]; then
                    printf '{"part":"instructions","label":"%s","binary":"%s","upstream":"%s","keepalive":"%s","mode":"%s","size":"%s","threads":%s,"requests":%s,"ir_per_request":%s}\n' \
                        "$name" "$bin" "$UPSTREAM" "${keepalive:-default}" "$mode" "$size" "$THREADS" "$REQUESTS" "$per" >>"$JSONL"
                fi
            done
        done
    done
done
