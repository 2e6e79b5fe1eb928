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

# start_nginx_upstream DIR PORT [TRIES]: nginx (1 worker) on 127.0.0.1:PORT
# serving DIR/nginx/html/small (96 bytes) and .../64k (64 KiB), with
# stub_status at /nginx_status and no access log; its pid is added to PIDS,
# and it is waited for (TRIES as wait_port's).
start_nginx_upstream() {
    local dir=$1 port=$2
    mkdir -p "$dir/nginx/html" "$dir/nginx/logs"
    # nginx's worker runs as nobody when started as root: mktemp's 0700
    # would make every response a 403.
    chmod 755 "$dir" "$dir/nginx" "$dir/nginx/html"
    head -c 96 /dev/zero | tr '\0' 'x' >"$dir/nginx/html/small"
    head -c 65536 /dev/zero | tr '\0' 'y' >"$dir/nginx/html/64k"
    cat >"$dir/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port;
        root $dir/nginx/html;
        location = /nginx_status { stub_status; }
    }
}
CONF
    setsid nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" >/dev/null 2>&1 &
    PIDS+=($!)
    wait_port "$port" "${3:-200}"
}
