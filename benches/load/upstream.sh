# A static upstream for the bench and build scripts (sourced, not run):
# benches/load/callgrind.sh, benches/load/idleheap.sh,
# benches/load/switches.sh, scripts/build-pgo.sh. Needs ports.sh's
# wait_port and the caller's PIDS array (bench_workdir makes one).

# bench_workdir NAME [keep]: a fresh WORK directory /tmp/webcluster-NAME.*,
# an empty PIDS array, and an EXIT trap that stops every process group in
# PIDS and (without "keep") removes WORK.
bench_workdir() {
    WORK=$(mktemp -d "/tmp/webcluster-$1.XXXXXX")
    PIDS=()
    BENCH_KEEP_WORK=${2:-}
    trap bench_cleanup EXIT
}

bench_cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
    [[ $BENCH_KEEP_WORK == keep ]] || rm -rf "$WORK"
}

# bare_webcluster_conf FILE PORT UPSTREAM_PORT [THREADS]: webcluster with
# THREADS (default 1) worker threads on 127.0.0.1:PORT in front of the upstream alone, with nothing else on
# (round robin, no status scrape, no admin listener, no access log).
bare_webcluster_conf() {
    cat >"$1" <<EOF
[server]
listen = ["127.0.0.1:$2"]
threads = ${4:-1}
log_level = "warn"
upgrade_sock = "$(dirname "$1")/upgrade.sock"

[admin]
enabled = false

[access_log]
target = "off"

[[group]]
name = "up"
balance = "round_robin"
scrape = false
  [[group.node]]
  name = "nginx"
  address = "127.0.0.1:$3"
EOF
}

# nginx_upstream_conf DIR PORT: the upstream every overhead benchmark
# proxies to, written into DIR (nginx.conf, html/, logs/): nginx, 1 worker,
# on 127.0.0.1:PORT, `daemon off`, no access log, stub_status at
# /nginx_status (webcluster-full scrapes it), and two responses:
# - /small: 96 bytes, answered from the config (`return 200`) with the
#   headers a file would get (Last-Modified, ETag, Accept-Ranges), so the
#   proxies read the same head as from a file;
# - /64k: 65,536 bytes from a file, sent with sendfile, its descriptor kept
#   open between requests (open_file_cache).
# Why not a file for /small: opening, reading and closing it costs nginx
# about 6 us per request against about 4.5 us for `return`. With one
# proxy thread on a 2-core machine, wrk and the upstream share the other
# core, and at 11 us per request between them they, not the proxy, were
# the limit: every proxy under about 11 us per request looked the same
# (benches/README.md, "Fifteenth session").
nginx_upstream_conf() {
    local d=$1 port=$2
    mkdir -p "$d/logs" "$d/html"
    # nginx's worker runs as nobody when started as root: mktemp's 0700
    # would make every response a 403.
    chmod 755 "$d" "$d/html"
    head -c 65536 /dev/zero | tr '\0' 'x' >"$d/html/64k"
    cat >"$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log $d/logs/error.log warn;
pid $d/nginx.pid;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    default_type text/plain;
    open_file_cache max=16 inactive=600s;
    open_file_cache_valid 600s;
    server {
        listen 127.0.0.1:$port backlog=4096;
        root $d/html;
        location / { }
        location = /small {
            add_header Last-Modified "Sun, 06 Dec 2026 00:00:00 GMT";
            add_header ETag '"69337200-60"';
            add_header Accept-Ranges bytes;
            return 200 "node up\n$(printf '%087d' 0)\n";   # 96 bytes
        }
        location = /nginx_status { stub_status; }
    }
}
EOF
}

# start_nginx_upstream DIR PORT [TRIES]: the upstream (nginx_upstream_conf)
# in DIR/nginx; its pid is added to PIDS, and it is waited for (TRIES as
# wait_port's). With UPSTREAM_CPUS set, it runs on those CPUs (taskset).
start_nginx_upstream() {
    local dir=$1 port=$2 pin=()
    chmod 755 "$dir"
    nginx_upstream_conf "$dir/nginx" "$port"
    [[ -n ${UPSTREAM_CPUS:-} ]] && pin=(taskset -c "$UPSTREAM_CPUS")
    setsid "${pin[@]}" nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" >/dev/null 2>&1 &
    PIDS+=($!)
    wait_port "$port" "${3:-200}"
}
