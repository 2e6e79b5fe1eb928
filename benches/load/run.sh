#!/usr/bin/env bash
# Load benchmarks for webcluster against nginx and HAProxy (issue #6).
#
#   bash benches/load/run.sh            # everything, results into benches/README.md
#   DURATION=5 bash benches/load/run.sh # shorter cases
#   DURATION=5 BAL_DURATION=8 BAL_REPEAT=5 bash benches/load/run.sh
#                                       # what benches/README.md's results used
#
# Part 1, "overhead": an upstream nginx (1 worker; upstream.sh) answers a
# small and a 64 KiB response; nginx, HAProxy and webcluster proxy to it
# with 1 and 2 worker processes/threads, each loaded in turn by `wrk -t1
# -c50 --latency` (keep-alive); the direct figure (no proxy) is the
# ceiling. Where there are cores to spare the proxy gets its own (PIN),
# and idle vCPUs poll before they halt (HALT_POLL_NS).
# webcluster runs twice in each case: bare (round_robin, no status scrape, no
# access log) and "full" (webcluster-full: busyness balancing with the
# upstream's stub_status scraped every second, the status-path guard and the
# access log on: what a user runs). With BASELINE (a commit or a binary) the
# same two rows are added for that build, in the same run.
# Part 1b, "idle": peak RSS of each proxy (1 worker) holding 10,000 idle
# keep-alive visitor connections (benches/load/idleconns.py).
# Part 1e, "instructions": instructions per request of webcluster (and of
# BASELINE), bare and full, counted by valgrind's callgrind
# (benches/load/callgrind.sh): a figure that does not move with the
# machine's other load; the overhead tables show it beside the timings.
# Part 1c, "buffering" (not in the default PARTS): the cost of request and
# response buffering. An upstream nginx serves 16 B, 64 KiB and 1 MiB files
# and reads 16 B, 64 KiB and 1 MiB POST bodies whole before it answers;
# nginx (its default buffering), HAProxy (streams), webcluster (default
# buffering) and webcluster with [buffering] requests = false, responses =
# false proxy to it (1 worker each), loaded by `wrk -t1 -c50 --latency`
# (uploads: benches/load/post.lua). The upstream's log checks that every
# upload reached it whole.
# Part 1d, "tls" (not in the default PARTS): TLS termination. nginx,
# HAProxy and webcluster (1 worker each) terminate TLS with the same ECDSA
# P-256 certificate (made by openssl at the start of the part) in front of
# the same upstream nginx (plain HTTP, 1 worker); for each: new TLS
# connections per second with one request each (`wrk -H "Connection:
# close"`), HTTPS keep-alive requests per second (`wrk`), and the peak RSS
# of IDLE_CONNS idle TLS connections (idleconns.py --tls). The protocol
# version, cipher suite and key exchange each one negotiates with OpenSSL's
# client are recorded (`openssl s_client -brief`). HTTP/2 (h2load, 50
# connections x 10 streams) has its slot in part_tls, filled once
# webcluster serves h2.
# Part 2, "balancing": three Apache prefork nodes (16 workers, a 20 ms Lua
# handler); node n1 also gets hidden load that does not pass through the
# proxy. webcluster busyness / round_robin / least_inflight, nginx
# least_conn and HAProxy leastconn are loaded open loop at the same rate by
# benches/load/openloop (a compiled open-loop generator, a workspace member
# built with the proxy). Fresh nodes and proxies for every run.
# Then benches/load/report.py writes the tables into benches/README.md and
# plots benches/load/latency.png.
#
# Every option is an environment variable (defaults in brackets):
#   PARTS        parts to run ["overhead idle instructions balancing"]
#   DURATION     seconds of load per overhead case [10]
#   WARMUP       seconds of unrecorded wrk load before each overhead case [1]
#   REPEAT       runs of each overhead case, interleaved; the report shows
#                the median and the range [3]
#   CONNS        wrk connections [50]
#   PIN          the overhead part's cores [auto]. auto: when the machine
#                has more cores than a proxy has workers, the proxy runs on
#                the last cores, one per worker, and wrk and the upstream on
#                the others (taskset), so that the load generator does not
#                take the proxy's core; with fewer cores all share them.
#                The direct row is measured the way the one-worker cases
#                are: the ceiling of the generator's cores. 0: no pinning
#   HALT_POLL_NS the overhead part's idle-core polling on a KVM guest
#                [200000]. Where the guest's cpuidle driver is haltpoll
#                (/sys/module/haltpoll/parameters/guest_halt_poll_ns, as on
#                Firecracker VMs), an idle vCPU halts at once when that is 0,
#                and waking it (a process the proxy has just sent to) waits
#                for the host to run the vCPU again, up to milliseconds:
#                stalls in every proxy's tail latency that belong to the VM,
#                not to the proxy. The part sets it to this many ns for its
#                run (as root) and puts the old value back after; the report
#                records it. Empty: leave the machine as it is
#   TCP_CC       the overhead part's TCP congestion control [cubic, the
#                kernel's and Debian's default]. With BBR (this project's VMs
#                set it) and no fq qdisc, the upstream paces what it sends
#                with the kernel's own timers once a connection leaves
#                BBR's startup; on loopback that raised the upstream
#                nginx's CPU per 64 KiB response by half after 5-10 s of
#                load, and its core (shared with wrk) became the limit
#                instead of the proxy (benches/README.md, "Sixteenth
#                session"). The part sets net.ipv4.tcp_congestion_control
#                for its run (as root), puts the old value back after, and
#                the report records it. Empty: leave the machine as it is
#   AFFINITY     the overhead part's worker affinity where the proxy
#                shares the cores with wrk and the upstream (PIN gave it no
#                cores of its own) and has two workers or more [auto]. auto:
#                every proxy puts its workers one per core with its own
#                setting (nginx `worker_cpu_affinity auto`, HAProxy
#                `cpu-map auto:1/1-N 0-(N-1)`, webcluster `cpu_affinity =
#                "auto"`; a BASELINE build without that key has its worker
#                threads pinned the same way with taskset); otherwise the
#                kernel sometimes leaves two workers of one proxy on one core,
#                and that run's p99 is three times the next's, whichever
#                proxy it is (benches/README.md, "Seventeenth session").
#                off: the kernel places them
#   THREADS_LIST worker threads/processes per proxy ["1 2"]
#   PROXIES      proxies in the overhead part ["nginx haproxy webcluster
#                webcluster-full"]; with BASELINE, "baseline baseline-full"
#                are added (the same two configs run by the BASELINE build)
#   IDLE_PROXIES proxies in the idle part ["nginx haproxy webcluster"];
#                with BASELINE, "baseline" is added
#   BASELINE     a previous build to compare with in the same run: a path to
#                a webcluster binary, or a git revision of this repository
#                (built once with cargo into BASELINE_DIR, from `git archive`
#                of that revision: the work tree is not touched) [none]
#   BASELINE_DIR where revisions are built [target/baseline]
#   CALLGRIND_REQUESTS requests per callgrind count [2000]
#   SIZES        overhead responses ["small 64k"]
#   BUF_SIZES    bodies in the "buffering" part ["16 64k 1m"]
#   BUF_DIRS     "up" (request bodies, POST) and/or "down" (response bodies,
#                GET) ["up down"]
#   BUF_PROXIES  ["direct nginx haproxy webcluster webcluster-stream"];
#                direct = wrk straight at the upstream, webcluster-stream =
#                webcluster with request and response buffering off
#   BUF_WORKERS  worker threads/processes of each proxy when buffering [1]
#   BUF_NGINX_BODY_BUFFER client_body_buffer_size of the nginx proxy in the
#                buffering part [empty: nginx's default, 16k on 64-bit]
#   TLS_PROXIES  proxies in the "tls" part ["nginx haproxy webcluster"]
#   IDLE_CONNS   idle keep-alive visitor connections in the "idle" part (and
#                idle TLS connections in the "tls" part)
#                [10000, or less when the open-files hard limit is below
#                20,200: HAProxy wants 2 descriptors per connection]
#   BAL_DURATION seconds of arrivals per balancing run [$DURATION]
#   BAL_REPEAT   runs of each balancing scenario x method, interleaved (every
#                method once, then again); the tables show the first run, a
#                table per scenario every run's p99 and the median [1]
#   RATE         arrivals per second in the balancing runs [600]
#   TIMEOUT      per-request deadline of the open-loop generator, s [5]
#   HANDLER_MS   handler time on the nodes, ms [20]
#   NODE_WORKERS MaxRequestWorkers of each Apache node [16]
#   APACHE_CONF  Apache node config [auto: docker/apache/node.conf, the
#                project's node template, with a Lua handler added by -c;
#                benches/load/apache-node.conf where the template is missing]
#   HIDDEN       workers of n1 held by hidden load in the "hidden" scenario [14]
#   HIDDEN_MS    handler time of the hidden requests, ms [100]
#   SCENARIOS    balancing scenarios ["hidden equal full flap"]: hidden =
#                HIDDEN workers of n1 busy with hidden load, equal = no hidden
#                load, full = hidden load holds every worker of n1, flap = as
#                full, but each hidden connection is closed after about
#                FLAP_EVERY requests, so n1 frees a worker now and then;
#                freeze (not in the default list) = no hidden load, n1
#                frozen (SIGSTOP to its process group) for FREEZE_SECS in the
#                middle of the run, then thawed (SIGCONT)
#                The queue scenarios (issue 17; not in the default list),
#                each loaded at a rate made from the cluster's capacity
#                (its free workers x 1000 / HANDLER_MS per second):
#                q-hidden = HIDDEN workers of n1 busy with hidden load,
#                Q_LOAD of the capacity left; q-overload = Q_OVER of the
#                capacity for Q_BURST_S seconds, then Q_AFTER of it for
#                Q_AFTER_S seconds (a second generator); q-sizes = nodes
#                of Q_SIZES workers, Q_LOAD of their capacity; q-two = as
#                q-hidden through two webcluster instances sharing the
#                nodes, half the rate each (wc-* methods only). They run
#                Q_METHODS.
#   Q_METHODS    methods of the queue scenarios ["wc-busyness
#                nginx-least_conn haproxy-leastconn haproxy-leastconn-maxconn"];
#                haproxy-leastconn-maxconn = leastconn with each server's
#                maxconn set to its worker count and `timeout queue`
#                QUEUE_TIMEOUT (the best configuration of the strongest peer)
#   QUEUE_TIMEOUT queue_timeout of webcluster and HAProxy's timeout queue,
#                seconds [2]
#   Q_LOAD       share of the capacity in q-hidden, q-sizes, q-two [0.72]
#   Q_OVER, Q_AFTER, Q_BURST_S, Q_AFTER_S  see q-overload [1.3, 0.5, 10, 10]
#   Q_SIZES      workers of n1 n2 n3 in q-sizes ["8 16 32"]
#   Q_ORDER      webcluster's queue_order in the queue scenarios ["": its
#                default, "adaptive"; "fifo": oldest first, as HAProxy's]
#   FLAP_EVERY   see flap [20]
#   FREEZE_SECS  how long n1 stays frozen in the freeze scenario [3]
#   METHODS      ["wc-busyness wc-round_robin wc-least_inflight wc-busyness-ka
#                  nginx-least_conn haproxy-leastconn"]; wc-M is webcluster
#                with balance = M and its default upstream_keepalive ("auto":
#                pooled connections to prefork nodes only while they have workers to spare), wc-M-ka the same
#                with upstream_keepalive = "on" (a keep-alive pool like the
#                nginx and HAProxy configs); also nginx-round_robin,
#                haproxy-roundrobin
#   BAL_WORKERS  worker threads/processes of each proxy when balancing [1]
#   HANDLER_CHECK 1: measure the handler (Lua vs CGI) and the no-proxy
#                floor before the balancing runs [1]
#   WEBCLUSTER   binary [target/release/webcluster]
#   OPENLOOP     the open-loop generator's binary [target/release/openloop,
#                built from benches/load/openloop as BUILD says]
#   BUILD        auto: cargo build --release first, use the old binaries if
#                that fails; 1: must build; 0: never build [auto]
#   JOBS         cargo -j [1]
#   OUT          Markdown file whose results section is rewritten
#                [benches/README.md]
#   PLOT         1: plot (installs matplotlib with pip if missing) [1]
#   PLOT_DIR     where latency.png|svg and results.json go [benches/load;
#                the directory of OUT when OUT is not benches/README.md]
#   KEEP         1: keep the work directory (configs, logs, raw results) [0]
#   PEER_FORWARDING 1: nginx and HAProxy send the nodes X-Forwarded-For,
#                X-Real-IP, X-Forwarded-Proto and X-Forwarded-Port as
#                webcluster does (the same work); 0: they send none, as in
#                the runs before the eleventh session [1]
#
# It starts every server in its own process group and kills those groups on
# exit (also on error or Ctrl-C); it only uses 127.0.0.1 and ports the kernel
# hands out; every load is bounded in time. Missing tools are installed with
# apt-get when run as root, otherwise it stops and says what is missing.

set -Eeuo pipefail
trap 'printf "[%s] ERROR: command failed (exit %s) at line %s: %s\n" "$(date +%T)" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# peer_forwarding
source "$HERE/peers.sh"
# nginx_upstream_conf: the upstream of the overhead, idle and tls parts
source "$HERE/upstream.sh"
ROOT=$(cd "$HERE/../.." && pwd)

PARTS=${PARTS:-"overhead idle instructions balancing"}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
REPEAT=${REPEAT:-3}
CONNS=${CONNS:-50}
PIN=${PIN:-auto}
HALT_POLL_NS=${HALT_POLL_NS-200000}
HALT_POLL_FILE=/sys/module/haltpoll/parameters/guest_halt_poll_ns
TCP_CC=${TCP_CC-cubic}
AFFINITY=${AFFINITY:-auto}
# 1 while an overhead case pins its proxy's workers (AFFINITY).
AFFINITY_NOW=0
TCP_CC_FILE=/proc/sys/net/ipv4/tcp_congestion_control
# The kernel settings the overhead part changes for its run (kernel_set).
declare -A KERNEL_NOW=() KERNEL_OLD=() KERNEL_FILE=()
PROXY_PIN=() GEN_PIN=() GEN_CPUS="" PIN_LABEL=shared
THREADS_LIST=${THREADS_LIST:-"1 2"}
PROXIES=${PROXIES:-"nginx haproxy webcluster webcluster-full"}
IDLE_PROXIES=${IDLE_PROXIES:-"nginx haproxy webcluster"}
BASELINE=${BASELINE:-}
BASELINE_DIR=${BASELINE_DIR:-$ROOT/target/baseline}
BASELINE_BIN=""
CALLGRIND_REQUESTS=${CALLGRIND_REQUESTS:-2000}
TLS_PROXIES=${TLS_PROXIES:-"nginx haproxy webcluster"}
SIZES=${SIZES:-"small 64k"}
BUF_SIZES=${BUF_SIZES:-"16 64k 1m"}
BUF_DIRS=${BUF_DIRS:-"up down"}
BUF_PROXIES=${BUF_PROXIES:-"direct nginx haproxy webcluster webcluster-stream"}
BUF_WORKERS=${BUF_WORKERS:-1}
BUF_NGINX_BODY_BUFFER=${BUF_NGINX_BODY_BUFFER:-}
if [[ -z ${IDLE_CONNS:-} ]]; then
    IDLE_CONNS=10000
    _hard=$(ulimit -Hn)
    if [[ $_hard != unlimited ]] && (( (_hard - 200) / 2 < IDLE_CONNS )); then
        IDLE_CONNS=$(( (_hard - 200) / 200 * 100 ))
    fi
fi
BAL_DURATION=${BAL_DURATION:-$DURATION}
BAL_REPEAT=${BAL_REPEAT:-1}
RATE=${RATE:-600}
TIMEOUT=${TIMEOUT:-5}
HANDLER_MS=${HANDLER_MS:-20}
NODE_WORKERS=${NODE_WORKERS:-16}
APACHE_CONF=${APACHE_CONF:-auto}
HIDDEN=${HIDDEN:-14}
HIDDEN_MS=${HIDDEN_MS:-100}
SCENARIOS=${SCENARIOS:-"hidden equal full flap"}
FLAP_EVERY=${FLAP_EVERY:-20}
FREEZE_SECS=${FREEZE_SECS:-3}
METHODS=${METHODS:-"wc-busyness wc-round_robin wc-least_inflight wc-busyness-ka nginx-least_conn haproxy-leastconn"}
Q_METHODS=${Q_METHODS:-"wc-busyness nginx-least_conn haproxy-leastconn haproxy-leastconn-maxconn"}
QUEUE_TIMEOUT=${QUEUE_TIMEOUT:-2}
Q_LOAD=${Q_LOAD:-0.72}
Q_OVER=${Q_OVER:-1.3}
Q_AFTER=${Q_AFTER:-0.5}
Q_BURST_S=${Q_BURST_S:-10}
Q_AFTER_S=${Q_AFTER_S:-10}
Q_SIZES=${Q_SIZES:-"8 16 32"}
Q_ORDER=${Q_ORDER:-}
NODE_WORKERS_OF=()
BAL_WORKERS=${BAL_WORKERS:-1}
HANDLER_CHECK=${HANDLER_CHECK:-1}
WEBCLUSTER=${WEBCLUSTER:-$ROOT/target/release/webcluster}
OPENLOOP=${OPENLOOP:-$ROOT/target/release/openloop}
BUILD=${BUILD:-auto}
JOBS=${JOBS:-1}
OUT=${OUT:-$ROOT/benches/README.md}
PLOT=${PLOT:-1}
# A run whose tables go elsewhere (a smoke test) leaves benches/load alone.
if [[ -z ${PLOT_DIR:-} ]]; then
    if [[ $OUT == "$ROOT/benches/README.md" ]]; then PLOT_DIR=$HERE; else PLOT_DIR=$(dirname "$OUT"); fi
fi
KEEP=${KEEP:-0}

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for v in CALLGRIND_REQUESTS BUF_WORKERS FLAP_EVERY REPEAT IDLE_CONNS DURATION WARMUP CONNS BAL_DURATION TIMEOUT HANDLER_MS NODE_WORKERS HIDDEN HIDDEN_MS BAL_WORKERS JOBS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
[[ $RATE =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "RATE must be a number, got '$RATE'"
(( DURATION > 0 && DURATION <= 600 )) || die "DURATION must be 1..600"
(( BAL_DURATION > 0 && BAL_DURATION <= 600 )) || die "BAL_DURATION must be 1..600"
(( HIDDEN <= NODE_WORKERS )) || die "HIDDEN must not exceed NODE_WORKERS"

# ---------------------------------------------------------------------------
# Tools

need_tools() {
    local missing=() pkgs=() t
    declare -A pkg=([nginx]=nginx [haproxy]=haproxy [apache2]=apache2 [wrk]=wrk
                    [python3]=python3 [setsid]=util-linux [taskset]=util-linux [timeout]=coreutils)
    for t in nginx haproxy apache2 wrk python3 setsid taskset timeout; do
        command -v "$t" >/dev/null 2>&1 || { missing+=("$t"); pkgs+=("${pkg[$t]}"); }
    done
    if [[ ! -e /usr/lib/apache2/modules/mod_lua.so || ! -e /usr/lib/apache2/modules/mod_mpm_prefork.so ]]; then
        missing+=("apache2 modules mod_lua/mod_mpm_prefork"); pkgs+=(apache2-bin)
    fi
    if ((${#missing[@]})); then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            log "installing missing tools: ${missing[*]} (apt-get install ${pkgs[*]})"
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
            for t in nginx haproxy apache2 wrk python3 setsid taskset timeout; do
                command -v "$t" >/dev/null 2>&1 || die "still missing after apt-get: $t"
            done
        else
            die "missing: ${missing[*]} (install the Debian packages: ${pkgs[*]})"
        fi
    fi
    # The Debian packages start their own services on install: not ours to
    # stop, and they do not use the ports we get from the kernel.
    id www-data >/dev/null 2>&1 || die "user www-data is missing (Apache workers run as it)"
}

# build BINARY CARGO-ARGS...: cargo build --release CARGO-ARGS as BUILD says;
# then BINARY must exist.
build() {
    local bin=$1; shift
    case $BUILD in
        0) ;;
        1|auto)
            if command -v cargo >/dev/null; then
                log "cargo build --release $* -j $JOBS"
                if ! (cd "$ROOT" && cargo build --release "$@" -j "$JOBS" >&2); then
                    [[ $BUILD == 1 ]] && die "cargo build failed"
                    log "WARNING: cargo build failed; using the existing binary $bin"
                fi
            else
                [[ $BUILD == 1 ]] && die "cargo not found"
            fi ;;
        *) die "BUILD must be auto, 1 or 0" ;;
    esac
    [[ -x $bin ]] || die "no binary at $bin (build it: cargo build --release $*)"
}

# ---------------------------------------------------------------------------
# Processes: each server runs in its own process group, killed on exit.

GROUPS_STARTED=()
WORK=""

cleanup() {
    local rc=$? pg
    trap - EXIT INT TERM
    kernel_restore
    for pg in "${GROUPS_STARTED[@]}"; do
        kill -TERM -- "-$pg" 2>/dev/null || true
    done
    sleep 0.3
    for pg in "${GROUPS_STARTED[@]}"; do
        kill -KILL -- "-$pg" 2>/dev/null || true
    done
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ $KEEP == 1 || $rc != 0 ]]; then
            log "work directory kept: $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME LOGFILE CMD...: run CMD in a new process group; sets STARTED_PID.
start() {
    local name=$1 logf=$2; shift 2
    setsid "$@" >"$logf" 2>&1 </dev/null &
    STARTED_PID=$!
    GROUPS_STARTED+=("$STARTED_PID")
    log "started $name (pid $STARTED_PID)"
}

# stop PID: end the process group, wait for it to go.
stop() {
    local pg=$1 i keep=()
    kill -TERM -- "-$pg" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 -- "-$pg" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pg" 2>/dev/null || true
    wait "$pg" 2>/dev/null || true
    for i in "${GROUPS_STARTED[@]}"; do [[ $i == "$pg" ]] || keep+=("$i"); done
    GROUPS_STARTED=("${keep[@]}")
}

# free_ports N: N distinct ports the kernel considers free now.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# wait_http PORT PATH PID [SECONDS]: until PORT answers HTTP on PATH.
wait_http() {
    local port=$1 path=$2 pid=$3 secs=${4:-15}
    python3 - "$port" "$path" "$secs" "$pid" <<'EOF' || die "nothing answered on 127.0.0.1:$port$path (pid $pid); see the logs in $WORK"
import socket, sys, time
port, path, secs, pid = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
def alive():
    try:
        return open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False
end = time.time() + secs
while time.time() < end and alive():
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        if s.recv(12).startswith(b"HTTP/1."):
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
    kill -0 "$pid" 2>/dev/null || die "pid $pid died at start; see the logs in $WORK"
}

# sum_proc FILE AWK PID...: the sum over the pids of the number AWK prints
# from /proc/PID/FILE (0 for a pid that is gone).
sum_proc() {
    local file=$1 prog=$2 total=0 p v
    shift 2
    for p in "$@"; do
        v=$(awk "$prog" "/proc/$p/$file" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# rss_kb PID...: VmHWM (peak resident set) summed over the pids, in KiB.
rss_kb() { sum_proc status '/^VmHWM:/ {print $2}' "$@"; }

# cpu_ticks PID...: utime+stime of the pids.
cpu_ticks() { sum_proc stat '{print $14+$15}' "$@"; }

jsonl() { printf '%s\n' "$1" >>"$WORK/results.jsonl"; }

# ---------------------------------------------------------------------------
# Configs

nginx_proxy_conf() { # DIR PORT WORKERS BALANCE UPSTREAM_PORTS...
    local d=$1 port=$2 workers=$3 balance=$4; shift 4
    local servers="" p
    for p in "$@"; do servers+="        server 127.0.0.1:$p;"$'\n'; done
    mkdir -p "$d/logs"
    cat >"$d/nginx.conf" <<EOF
worker_processes $workers;
$( ((AFFINITY_NOW)) && echo "worker_cpu_affinity auto;")
error_log $d/logs/error.log warn;
pid $d/nginx.pid;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
${NGINX_EXTRA:-}
    upstream up {
        $balance
$servers        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port backlog=4096 ${NGINX_LISTEN_OPTS:-};
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
$(peer_forwarding nginx)
        }
    }
}
EOF
}

haproxy_conf() { # DIR PORT THREADS BALANCE UPSTREAM_PORTS...
    local d=$1 port=$2 threads=$3 balance=$4; shift 4
    local servers="" p i=1
    for p in "$@"; do
        servers+="    server n$i 127.0.0.1:$p"
        # HAPROXY_MAXCONN=1: each server's maxconn is its worker count.
        if [[ ${HAPROXY_MAXCONN:-0} == 1 ]]; then servers+=" maxconn ${NODE_WORKERS_OF[i-1]}"; fi
        servers+=$'\n'
        i=$((i + 1))
    done
    cat >"$d/haproxy.cfg" <<EOF
global
    nbthread $threads
$( ((AFFINITY_NOW)) && echo "    cpu-map auto:1/1-$threads 0-$((threads - 1))")
    maxconn $([[ ${IDLE:-0} == 1 ]] && echo $((IDLE_CONNS + 10)) || echo 9000)
    ulimit-n $(ulimit -Hn)
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 75s
    timeout queue ${QUEUE_TIMEOUT}s
    http-reuse always
frontend fe
    bind 127.0.0.1:$port ${HAPROXY_BIND_OPTS:-}
$(peer_forwarding haproxy)
    default_backend be
backend be
    balance $balance
$servers
EOF
}

webcluster_conf() { # DIR PORT ADMIN_PORT THREADS BALANCE SCRAPE KEEPALIVE UPSTREAM_PORTS...
    local d=$1 port=$2 admin=$3 threads=$4 balance=$5 scrape=$6 keepalive=$7; shift 7
    local p i=1
    {
        cat <<EOF
[server]
listen = ["127.0.0.1:$port"]
threads = $threads
$( ((AFFINITY_NOW)) && [[ ${WC_AFFINITY_KEY:-1} == 1 ]] && echo 'cpu_affinity = "auto"')
log_level = "warn"
upgrade_sock = "$d/upgrade.sock"

[admin]
enabled = $([[ $admin == 0 ]] && echo false || echo true)
listen = "127.0.0.1:$admin"

[access_log]
target = $([[ ${WC_FULL:-0} == 1 ]] && echo "\"$d/access.log\"" || echo '"off"')
${WC_EXTRA:-}
[[group]]
name = "web"
balance = "$balance"
scrape = $scrape
${WC_GROUP_EXTRA:-}
EOF
        # Only when asked: the default ("auto") is what users get.
        if [[ -n $keepalive ]]; then printf 'upstream_keepalive = "%s"\n' "$keepalive"; fi
        # Full: the node's stub_status scraped every second (the balancing
        # reads it), the status-path guard (on by default) and the access log.
        if [[ ${WC_FULL:-0} == 1 ]]; then printf 'scrape_interval = "1s"\n'; fi
        for p in "$@"; do
            printf '\n  [[group.node]]\n  name = "n%d"\n  address = "127.0.0.1:%s"\n' "$i" "$p"
            if [[ ${WC_FULL:-0} == 1 ]]; then
                printf '  status_url = "http://127.0.0.1:%s/nginx_status"\n  status_kind = "nginx"\n  max_workers = 1024\n' "$p"
            fi
            i=$((i + 1))
        done
    } >"$d/webcluster.toml"
    "${WC_BIN:-$WEBCLUSTER}" check -c "$d/webcluster.toml" >"$d/check.log" 2>&1 \
        || { cat "$d/check.log" >&2; die "webcluster check refused $d/webcluster.toml"; }
}

# start_proxy KIND DIR PORT WORKERS BALANCE UPSTREAM_PORTS...: sets PROXY_PID.
# KIND: nginx | haproxy | webcluster (webcluster: BALANCE is
# "method:scrape[:upstream_keepalive]",
# admin listener on WC_ADMIN_PORT when set; WC_EXTRA: more top-level tables
# for webcluster, NGINX_EXTRA: more http-level directives for nginx).
start_proxy() {
    local kind=$1 d=$2 port=$3 workers=$4 balance=$5; shift 5
    mkdir -p "$d"
    case $kind in
        nginx)
            nginx_proxy_conf "$d" "$port" "$workers" "$balance" "$@"
            start nginx "$d/out.log" "${PROXY_PIN[@]}" nginx -p "$d" -c "$d/nginx.conf" -g 'daemon off;' ;;
        haproxy)
            haproxy_conf "$d" "$port" "$workers" "$balance" "$@"
            haproxy -c -q -f "$d/haproxy.cfg" >/dev/null || die "haproxy refused $d/haproxy.cfg"
            start haproxy "$d/out.log" "${PROXY_PIN[@]}" haproxy -db -f "$d/haproxy.cfg" ;;
        webcluster)
            local spec
            IFS=: read -r -a spec <<<"$balance"
            # A build from before `cpu_affinity` (a BASELINE) refuses the
            # key: its worker threads are pinned from outside instead.
            local outside=0
            if ((AFFINITY_NOW)) && ! "${WC_BIN:-$WEBCLUSTER}" check -c /dev/stdin \
                <<<$'[server]\ncpu_affinity = "auto"\n[[group]]\nname = "g"\n[[group.node]]\nname = "n"\naddress = "127.0.0.1:1"' \
                >/dev/null 2>&1; then
                outside=1
            fi
            WC_AFFINITY_KEY=$((1 - outside)) webcluster_conf "$d" "$port" "${WC_ADMIN_PORT:-0}" "$workers" "${spec[0]}" "${spec[1]}" "${spec[2]:-}" "$@"
            start webcluster "$d/out.log" "${PROXY_PIN[@]}" "${WC_BIN:-$WEBCLUSTER}" run -c "$d/webcluster.toml"
            ((outside)) && pin_workers_outside "$STARTED_PID" "$workers" ;;
        webcluster-full|baseline|baseline-full)
            # webcluster-full: the webcluster build as users run it;
            # baseline[-full]: the BASELINE build, bare or full.
            local bin=$WEBCLUSTER full=0
            [[ $kind == baseline* ]] && bin=$BASELINE_BIN
            [[ $kind == *-full ]] && full=1
            [[ -n $bin ]] || die "$kind needs BASELINE"
            WC_BIN=$bin WC_FULL=$full start_proxy webcluster "$d" "$port" "$workers" "$balance" "$@"
            return ;;
        *) die "unknown proxy $kind" ;;
    esac
    PROXY_PID=$STARTED_PID
}

# pin_workers_outside PID WORKERS: webcluster's worker threads ("webcluster
# prox"), one per core in thread-id order, with taskset: what `cpu_affinity
# = "auto"` does, for a build without it. Waits (bounded) for the threads.
pin_workers_outside() {
    local pid=$1 n=$2 tries t i found
    for ((tries = 0; tries < 100; tries++)); do
        found=()
        for t in /proc/"$pid"/task/*; do
            [[ $(cat "$t/comm" 2>/dev/null) == "webcluster prox" ]] && found+=("${t##*/}")
        done
        ((${#found[@]} >= n)) && break
        sleep 0.05
    done
    i=0
    for t in $(printf '%s\n' "${found[@]}" | sort -n); do
        taskset -p -c $((i % $(nproc))) "$t" >/dev/null
        i=$((i + 1))
    done
}

# Processes whose peak RSS counts: nginx's workers, the process otherwise.
proxy_pids() { # KIND PID
    if [[ $1 == nginx ]]; then (pgrep -P "$2" || true) | tr '\n' ' '; else echo "$2"; fi
}

# ---------------------------------------------------------------------------
# Part 1: proxy overhead

# cpu_range FIRST LAST: a CPU list for taskset ("1", or "2-3").
cpu_range() { if (($1 == $2)); then echo "$1"; else echo "$1-$2"; fi; }

# pin_cores WORKERS: the cores of an overhead case (PIN). Sets GEN_CPUS
# (wrk's and the upstream's CPU list, empty when nothing is pinned),
# PROXY_PIN and GEN_PIN, each empty or a `taskset -c LIST` command prefix,
# and PIN_LABEL ("PROXY-CPUS/GENERATOR-CPUS", or "shared").
pin_cores() {
    local n=$1 cores
    cores=$(nproc)
    PROXY_PIN=() GEN_PIN=() GEN_CPUS="" PIN_LABEL=shared
    [[ $PIN == auto ]] || return 0
    ((cores > n)) || return 0
    local proxy
    GEN_CPUS=$(cpu_range 0 $((cores - n - 1))) proxy=$(cpu_range $((cores - n)) $((cores - 1)))
    PROXY_PIN=(taskset -c "$proxy") GEN_PIN=(taskset -c "$GEN_CPUS") PIN_LABEL="$proxy/$GEN_CPUS"
}

# pin_upstream: move the running upstream (UP_MASTER and its workers, every
# thread) to GEN_CPUS, or to all cores when it is empty.
pin_upstream() {
    local cpus=${GEN_CPUS:-0-$(($(nproc) - 1))} p
    for p in "$UP_MASTER" $(pgrep -P "$UP_MASTER" || true); do
        taskset -a -p -c "$cpus" "$p" >/dev/null
    done
}

run_wrk() { # URL OUTFILE SECONDS [WRK-ARGS...]
    # In the background and waited for, so that a signal to this script is
    # handled at once (bash runs traps only between foreground commands).
    # GEN_PIN (overhead part) pins it.
    local url=$1 out=$2 secs=$3; shift 3
    timeout -k 5 $((secs + 30)) "${GEN_PIN[@]}" wrk -t1 -c"$CONNS" -d"$secs"s --latency "$@" "$url" >"$out" 2>&1 &
    wait $! || true
}

overhead_case() { # PROXY THREADS SIZE UPPORT REP
    local kind=$1 n=$2 size=$3 up=$4 rep=$5 port d pids c0 c1 rss
    port=$(free_ports 1)
    d="$WORK/overhead/$kind-$n-$size-$rep"
    mkdir -p "$d"
    pin_cores "$n"
    pin_upstream
    AFFINITY_NOW=0
    [[ $AFFINITY == auto && $PIN_LABEL == shared ]] && ((n > 1)) && AFFINITY_NOW=1
    case $kind in
        direct) port=$up ;;
        nginx) start_proxy nginx "$d" "$port" "$n" "" "$up" ;;
        haproxy) start_proxy haproxy "$d" "$port" "$n" roundrobin "$up" ;;
        webcluster|baseline) WC_ADMIN_PORT=0 start_proxy "$kind" "$d" "$port" "$n" round_robin:false "$up" ;;
        webcluster-full|baseline-full)
            WC_ADMIN_PORT=$(free_ports 1) start_proxy "$kind" "$d" "$port" "$n" busyness:true "$up" ;;
        *) die "unknown proxy $kind in PROXIES" ;;
    esac
    if [[ $kind != direct ]]; then
        wait_http "$port" "/$size" "$PROXY_PID"
        sleep 0.3
    fi
    local url="http://127.0.0.1:$port/$size"
    ((WARMUP > 0)) && run_wrk "$url" "$d/warmup.txt" "$WARMUP"
    if [[ $kind == direct ]]; then pids=$UP_PID; else pids=$(proxy_pids "$kind" "$PROXY_PID"); fi
    # shellcheck disable=SC2086
    c0=$(cpu_ticks $pids)
    log "overhead ($rep/$REPEAT): $kind threads=$n size=$size: wrk -t1 -c$CONNS -d${DURATION}s $url"
    run_wrk "$url" "$d/wrk.txt" "$DURATION"
    # shellcheck disable=SC2086
    c1=$(cpu_ticks $pids)
    # shellcheck disable=SC2086
    rss=$(rss_kb $pids)
    grep -E 'Requests/sec|^ +(50|99)%' "$d/wrk.txt" | tr -s ' ' | tr '\n' ' ' >&2; echo >&2
    jsonl "{\"part\":\"overhead\",\"rep\":$rep,\"proxy\":\"$kind\",\"threads\":$n,\"cores\":\"$PIN_LABEL\",\"affinity\":$AFFINITY_NOW,\"halt_poll_ns\":\"${KERNEL_NOW[guest_halt_poll_ns]-}\",\"tcp_cc\":\"${KERNEL_NOW[tcp_congestion_control]-}\",\"size\":\"$size\",\"wrk\":\"$d/wrk.txt\",\"rss_kb\":$rss,\"cpu_ticks\":$((c1 - c0)),\"clk_tck\":$(getconf CLK_TCK),\"duration\":$DURATION,\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
    [[ $kind == direct ]] || stop "$PROXY_PID"
    PROXY_PIN=() GEN_PIN=() AFFINITY_NOW=0
}

# kernel_set NAME FILE VALUE: VALUE into the kernel setting FILE (sysfs or
# procfs) for the overhead part, when FILE exists, VALUE is not empty and
# the kernel takes it (as root); the old value is kept for kernel_restore
# (also run on error or Ctrl-C). KERNEL_NOW[NAME]: the value in force, ""
# when the machine has no such setting.
kernel_set() {
    local name=$1 file=$2 want=$3 now
    KERNEL_NOW[$name]=""
    [[ -r $file ]] || return 0
    now=$(cat "$file")
    KERNEL_NOW[$name]=$now
    [[ -n $want && $want != "$now" ]] || return 0
    if [[ -w $file ]] && { echo "$want" >"$file"; } 2>/dev/null; then
        KERNEL_OLD[$name]=$now KERNEL_FILE[$name]=$file KERNEL_NOW[$name]=$want
        log "$name: $now -> $want for the overhead part"
    else
        log "$name stays $now (not writable, or not taken; run as root to set it)"
    fi
}

kernel_restore() {
    local name
    for name in "${!KERNEL_OLD[@]}"; do
        echo "${KERNEL_OLD[$name]}" >"${KERNEL_FILE[$name]}" 2>/dev/null || true
        log "$name: back to ${KERNEL_OLD[$name]}"
        unset "KERNEL_OLD[$name]"
    done
}

part_overhead() {
    local up size n kind d
    kernel_set guest_halt_poll_ns "$HALT_POLL_FILE" "$HALT_POLL_NS"
    kernel_set tcp_congestion_control "$TCP_CC_FILE" "$TCP_CC"
    up=$(free_ports 1)
    d="$WORK/overhead/upstream"
    nginx_upstream_conf "$d" "$up"
    start upstream-nginx "$d/out.log" nginx -p "$d" -c "$d/nginx.conf"
    local master=$STARTED_PID
    wait_http "$up" /small "$master"
    UP_PID=$(pgrep -P "$master" | head -1)
    UP_MASTER=$master
    local rep
    for rep in $(seq 1 "$REPEAT"); do
        for size in $SIZES; do
            overhead_case direct 1 "$size" "$up" "$rep"
            for n in $THREADS_LIST; do
                for kind in $PROXIES; do
                    overhead_case "$kind" "$n" "$size" "$up" "$rep"
                done
            done
        done
    done
    stop "$master"
    kernel_restore
}

# Part 1b: memory with many idle keep-alive visitors.

# hold_idle LABEL KIND DIR PORT LIMIT READY [IDLECONNS-ARGS...]: with the
# proxy KIND (PROXY_PID) answering on PORT, open IDLE_CONNS keep-alive
# connections with idleconns.py (killed after LIMIT s; READY s to get them
# all open) and hold them; sets IDLE_RSS0 (RSS before), IDLE_RSS (peak RSS
# once open), IDLE_OPEN and IDLE_FAILED. The generator is stopped after.
hold_idle() {
    local label=$1 kind=$2 d=$3 port=$4 limit=$5 ready=$6 pids line i gen
    shift 6
    sleep 0.3
    pids=$(proxy_pids "$kind" "$PROXY_PID")
    # shellcheck disable=SC2086,SC2046
    IDLE_RSS0=$(awk '/^VmRSS:/ {s += $2} END {print s + 0}' $(printf '/proc/%s/status ' $pids))
    log "$label: $kind, opening $IDLE_CONNS keep-alive connections $*"
    start idleconns "$d/idleconns.txt" timeout -k 5 "$limit" python3 "$HERE/idleconns.py" \
        "$@" --port "$port" --conns "$IDLE_CONNS" --hold 4
    gen=$STARTED_PID
    line=""
    for i in $(seq 1 $((ready * 10))); do
        line=$(grep -m1 '^ready' "$d/idleconns.txt" 2>/dev/null || true)
        [[ -n $line ]] && break
        kill -0 "$gen" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $line ]] || die "idleconns.py $* did not get ready (see $d/idleconns.txt)"
    sleep 1
    # shellcheck disable=SC2086
    IDLE_RSS=$(rss_kb $pids)
    log "$label: $kind $line, peak RSS $IDLE_RSS KiB (before: $IDLE_RSS0 KiB)"
    read -r _ IDLE_OPEN IDLE_FAILED <<<"$line"
    stop "$gen"
}

part_idle() {
    local up d kind port master
    (( IDLE_CONNS + 200 <= $(ulimit -Hn) )) || die "IDLE_CONNS=$IDLE_CONNS needs an open-files limit above $((IDLE_CONNS + 200)) (hard limit: $(ulimit -Hn))"
    up=$(free_ports 1)
    d="$WORK/idle/upstream"
    nginx_upstream_conf "$d" "$up"
    start upstream-nginx "$d/out.log" nginx -p "$d" -c "$d/nginx.conf"
    master=$STARTED_PID
    wait_http "$up" /small "$master"
    for kind in $IDLE_PROXIES; do
        port=$(free_ports 1)
        d="$WORK/idle/$kind"
        IDLE=1 WC_ADMIN_PORT=0 start_proxy "$kind" "$d" "$port" 1 \
            "$([[ $kind == webcluster || $kind == baseline ]] && echo round_robin:false || { [[ $kind == haproxy ]] && echo roundrobin; })" "$up"
        wait_http "$port" /small "$PROXY_PID"
        hold_idle "idle" "$kind" "$d" "$port" 120 90
        jsonl "{\"part\":\"idle\",\"proxy\":\"$kind\",\"conns\":$IDLE_CONNS,\"open\":$IDLE_OPEN,\"failed\":$IDLE_FAILED,\"rss_kb\":$IDLE_RSS,\"rss_before_kb\":$IDLE_RSS0}"
        stop "$PROXY_PID"
    done
    stop "$master"
}

# Part 1e: instructions per request (callgrind), this build and BASELINE.

part_instructions() {
    local bin label
    command -v valgrind >/dev/null || [[ $(id -u) == 0 ]] \
        || die "the instructions part needs valgrind (apt-get install valgrind) and ab (apache2-utils)"
    for label in webcluster baseline; do
        bin=$WEBCLUSTER
        if [[ $label == baseline ]]; then
            [[ -n $BASELINE_BIN ]] || continue
            bin=$BASELINE_BIN
        fi
        log "instructions: $label ($bin), $CALLGRIND_REQUESTS requests per count"
        REQUESTS=$CALLGRIND_REQUESTS SIZES="$SIZES" LABEL=$label JSONL="$WORK/results.jsonl" \
            timeout -k 5 1800 bash "$HERE/callgrind.sh" "$bin" >"$WORK/callgrind-$label.md" 2>"$WORK/callgrind-$label.log" \
            || { tail -20 "$WORK/callgrind-$label.log" >&2; die "callgrind.sh failed for $label"; }
        cat "$WORK/callgrind-$label.md" >&2
    done
}

# baseline_setup: BASELINE_BIN from BASELINE (a binary, or a revision built
# once into BASELINE_DIR; the work tree is not touched).
baseline_setup() {
    [[ -n $BASELINE ]] || return 0
    if [[ -f $BASELINE && -x $BASELINE ]]; then
        BASELINE_BIN=$BASELINE
        BASELINE_LABEL=$(basename "$BASELINE")
    else
        local sha src
        sha=$(git -C "$ROOT" rev-parse --verify --quiet "$BASELINE^{commit}") \
            || die "BASELINE=$BASELINE is neither an executable nor a revision of $ROOT"
        BASELINE_LABEL=$(git -C "$ROOT" rev-parse --short "$sha")
        BASELINE_BIN=$BASELINE_DIR/webcluster-$sha
        if [[ ! -x $BASELINE_BIN ]]; then
            command -v cargo >/dev/null || die "BASELINE=$BASELINE needs cargo to build"
            src=$BASELINE_DIR/src-$sha
            rm -rf "$src"
            mkdir -p "$src"
            git -C "$ROOT" archive "$sha" | tar -x -C "$src"
            log "BASELINE: building $BASELINE ($BASELINE_LABEL) in $src (cargo build --release --bin webcluster -j $JOBS)"
            (cd "$src" && CARGO_TARGET_DIR=$BASELINE_DIR/target cargo build --release --bin webcluster -j "$JOBS" >&2) \
                || die "cargo build of BASELINE=$BASELINE failed"
            cp "$BASELINE_DIR/target/release/webcluster" "$BASELINE_BIN"
            rm -rf "$src"
        fi
    fi
    # A private copy, as for WEBCLUSTER.
    cp "$BASELINE_BIN" "$WORK/webcluster-baseline"
    BASELINE_BIN=$WORK/webcluster-baseline
    log "BASELINE: $BASELINE_LABEL ($BASELINE_BIN)"
    [[ " $PROXIES " == *" baseline"* ]] || PROXIES="$PROXIES baseline baseline-full"
    [[ " $IDLE_PROXIES " == *" baseline "* ]] || IDLE_PROXIES="$IDLE_PROXIES baseline"
}

# Part 1d: TLS termination.

# tls_cert DIR: an ECDSA P-256 certificate for localhost and 127.0.0.1 with
# its key (cert.pem, key.pem; both in haproxy.pem for HAProxy).
tls_cert() {
    mkdir -p "$1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$1/key.pem" -out "$1/cert.pem" 2>"$1/openssl.log" || die "openssl req failed: $1/openssl.log"
    cat "$1/cert.pem" "$1/key.pem" >"$1/haproxy.pem"
}

# start_tls_proxy KIND DIR PORT UPPORT: KIND terminating TLS on PORT with
# the certificate of $TLS_DIR, 1 worker, session resumption on (each
# proxy's default cache and tickets); sets PROXY_PID.
start_tls_proxy() {
    local kind=$1 d=$2 port=$3 up=$4
    # H2=1: HTTP/2 offered by ALPN (webcluster offers it by default).
    local nginx_opts=ssl haproxy_alpn=http/1.1 wc_h2=false
    if [[ ${H2:-0} == 1 ]]; then
        nginx_opts="ssl http2" haproxy_alpn=h2,http/1.1 wc_h2=true
    fi
    case $kind in
        nginx)
            NGINX_LISTEN_OPTS=$nginx_opts NGINX_EXTRA="    ssl_certificate $TLS_DIR/cert.pem;
    ssl_certificate_key $TLS_DIR/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;" start_proxy nginx "$d" "$port" 1 "" "$up" ;;
        haproxy)
            HAPROXY_BIND_OPTS="ssl crt $TLS_DIR/haproxy.pem ssl-min-ver TLSv1.2 alpn $haproxy_alpn" \
                start_proxy haproxy "$d" "$port" 1 roundrobin "$up" ;;
        webcluster)
            local plain
            plain=$(free_ports 1)
            WC_ADMIN_PORT=0 WC_EXTRA="
[[tls]]
listen = [\"127.0.0.1:$port\"]
certificates = [{ chain = \"$TLS_DIR/cert.pem\", key = \"$TLS_DIR/key.pem\" }]
http2 = $wc_h2
" start_proxy webcluster "$d" "$plain" 1 round_robin:false "$up" ;;
        *) die "unknown proxy $kind" ;;
    esac
}

# wait_https PORT PID: until PORT completes a TLS handshake and answers.
wait_https() {
    local port=$1 pid=$2 i
    for i in $(seq 1 150); do
        if curl -sk --max-time 2 -o /dev/null "https://127.0.0.1:$port/small"; then return 0; fi
        kill -0 "$pid" 2>/dev/null || die "pid $pid died at start; see the logs in $WORK"
        sleep 0.1
    done
    die "no HTTPS answer on 127.0.0.1:$port (pid $pid); see the logs in $WORK"
}

tls_case() { # PROXY CASE UPPORT REP: CASE newconn | keepalive
    local kind=$1 case=$2 up=$3 rep=$4 port d pids c0 c1 rss cipher
    port=$(free_ports 1)
    d="$WORK/tls/$kind-$case-$rep"
    mkdir -p "$d"
    start_tls_proxy "$kind" "$d" "$port" "$up"
    wait_https "$port" "$PROXY_PID"
    sleep 0.3
    cipher=$(timeout 5 openssl s_client -connect "127.0.0.1:$port" -brief </dev/null 2>&1 \
        | awk -F': ' '/^(Protocol version|Ciphersuite|(Server|Peer) Temp Key)/ {printf "%s%s", sep, $2; sep=", "}' || true)
    local url="https://127.0.0.1:$port/small" args=()
    [[ $case == newconn ]] && args=(-H "Connection: close")
    ((WARMUP > 0)) && run_wrk "$url" "$d/warmup.txt" "$WARMUP" "${args[@]}"
    pids=$(proxy_pids "$kind" "$PROXY_PID")
    # shellcheck disable=SC2086
    c0=$(cpu_ticks $pids)
    log "tls ($rep/$REPEAT): $kind $case ($cipher): wrk -t1 -c$CONNS -d${DURATION}s ${args[*]} $url"
    run_wrk "$url" "$d/wrk.txt" "$DURATION" "${args[@]}"
    # shellcheck disable=SC2086
    c1=$(cpu_ticks $pids)
    # shellcheck disable=SC2086
    rss=$(rss_kb $pids)
    grep -E 'Requests/sec|^ +(50|99)%|errors' "$d/wrk.txt" | tr -s ' ' | tr '\n' ' ' >&2; echo >&2
    jsonl "{\"part\":\"tls\",\"case\":\"$case\",\"rep\":$rep,\"proxy\":\"$kind\",\"cipher\":\"$cipher\",\"wrk\":\"$d/wrk.txt\",\"rss_kb\":$rss,\"cpu_ticks\":$((c1 - c0)),\"clk_tck\":$(getconf CLK_TCK),\"duration\":$DURATION}"
    stop "$PROXY_PID"
}

tls_h2() { # PROXY UPPORT REP: h2load -c50 -m10 over TLS (ALPN h2)
    local kind=$1 up=$2 rep=$3 port d pids c0 c1 rss
    port=$(free_ports 1)
    d="$WORK/tls/$kind-h2-$rep"
    mkdir -p "$d"
    H2=1 start_tls_proxy "$kind" "$d" "$port" "$up"
    wait_https "$port" "$PROXY_PID"
    sleep 0.3
    local url="https://127.0.0.1:$port/small"
    ((WARMUP > 0)) && timeout -k 5 $((WARMUP + 30)) h2load -c50 -m10 -t1 -D "$WARMUP" "$url" >"$d/warmup.txt" 2>&1
    pids=$(proxy_pids "$kind" "$PROXY_PID")
    # shellcheck disable=SC2086
    c0=$(cpu_ticks $pids)
    log "tls ($rep/$REPEAT): $kind h2: h2load -c50 -m10 -t1 -D $DURATION --log-file $d/h2load.log $url"
    timeout -k 5 $((DURATION + 60)) h2load -c50 -m10 -t1 -D "$DURATION" --log-file "$d/h2load.log" "$url" >"$d/h2load.txt" 2>&1 \
        || log "h2load exited non-zero (see $d/h2load.txt)"
    # shellcheck disable=SC2086
    c1=$(cpu_ticks $pids)
    # shellcheck disable=SC2086
    rss=$(rss_kb $pids)
    grep -E '^finished|^requests:|^status codes:|Protocol:' "$d/h2load.txt" | tr -s ' ' | tr '\n' ' ' >&2; echo >&2
    jsonl "{\"part\":\"tls\",\"case\":\"h2\",\"rep\":$rep,\"proxy\":\"$kind\",\"h2load\":\"$d/h2load.txt\",\"h2log\":\"$d/h2load.log\",\"rss_kb\":$rss,\"cpu_ticks\":$((c1 - c0)),\"clk_tck\":$(getconf CLK_TCK),\"duration\":$DURATION}"
    stop "$PROXY_PID"
}

tls_idle() { # PROXY UPPORT
    local kind=$1 up=$2 port d
    port=$(free_ports 1)
    d="$WORK/tls/$kind-idle"
    mkdir -p "$d"
    IDLE=1 start_tls_proxy "$kind" "$d" "$port" "$up"
    wait_https "$port" "$PROXY_PID"
    hold_idle "tls idle" "$kind" "$d" "$port" 300 240 --tls
    jsonl "{\"part\":\"tls\",\"case\":\"idle\",\"proxy\":\"$kind\",\"conns\":$IDLE_CONNS,\"open\":$IDLE_OPEN,\"failed\":$IDLE_FAILED,\"rss_kb\":$IDLE_RSS,\"rss_before_kb\":$IDLE_RSS0}"
    stop "$PROXY_PID"
}

part_tls() {
    local up d master rep kind case
    command -v openssl >/dev/null || die "openssl is missing (Debian package openssl)"
    command -v curl >/dev/null || die "curl is missing (Debian package curl)"
    (( IDLE_CONNS + 200 <= $(ulimit -Hn) )) || die "IDLE_CONNS=$IDLE_CONNS needs an open-files limit above $((IDLE_CONNS + 200)) (hard limit: $(ulimit -Hn))"
    TLS_DIR="$WORK/tls/cert"
    tls_cert "$TLS_DIR"
    up=$(free_ports 1)
    d="$WORK/tls/upstream"
    nginx_upstream_conf "$d" "$up"
    start upstream-nginx "$d/out.log" nginx -p "$d" -c "$d/nginx.conf"
    master=$STARTED_PID
    wait_http "$up" /small "$master"
    for rep in $(seq 1 "$REPEAT"); do
        for case in newconn keepalive; do
            for kind in $TLS_PROXIES; do
                tls_case "$kind" "$case" "$up" "$rep"
            done
        done
    done
    # HTTP/2: each proxy with `http2 = true` / `listen ... ssl http2` /
    # `alpn h2,http/1.1`, h2load (Debian nghttp2-client) at 50 connections
    # x 10 streams.
    command -v h2load >/dev/null || die "h2load is missing (Debian package nghttp2-client)"
    for rep in $(seq 1 "$REPEAT"); do
        for kind in $TLS_PROXIES; do
            tls_h2 "$kind" "$up" "$rep"
        done
    done
    for kind in $TLS_PROXIES; do
        tls_idle "$kind" "$up"
    done
    stop "$master"
}

# Part 1c: the cost of buffering request and response bodies.

# size_bytes SIZE: 16 -> 16, 64k -> 65536, 1m -> 1048576.
size_bytes() {
    case $1 in
        *k) echo $(( ${1%k} * 1024 )) ;;
        *m) echo $(( ${1%m} * 1048576 )) ;;
        *) echo "$1" ;;
    esac
}

# The upstream of the buffering part: GET /SIZE is a static file of SIZE;
# POST /upload is read whole and then answered "ok". nginx's proxy module
# reads the whole request body before it connects anywhere (the default
# proxy_request_buffering on; a 2 MiB client_body_buffer_size keeps it in
# memory), so an answer 200 means the body was read to its last byte: a
# short body ends in a timeout, never in a 200. The body is not passed on
# (proxy_pass_request_body off) to a second server that just says "ok".
# Every upload is logged with its $request_length and $content_length.
nginx_buffering_upstream_conf() { # DIR PORT SINK_PORT
    local d=$1 port=$2 sink=$3 size
    mkdir -p "$d/logs" "$d/html"
    for size in $BUF_SIZES; do
        head -c "$(size_bytes "$size")" /dev/zero | tr '\0' 'x' >"$d/html/$size"
    done
    cat >"$d/nginx.conf" <<EOF
worker_processes 1;
error_log $d/logs/error.log warn;
pid $d/nginx.pid;
events { worker_connections 8192; }
http {
    access_log off;
    log_format upload '\$request_length \$content_length \$status';
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    default_type application/octet-stream;
    client_max_body_size 4m;
    client_body_buffer_size 2m;
    client_body_temp_path $d/client_body;
    proxy_temp_path $d/proxy_temp;
    upstream sink {
        server 127.0.0.1:$sink;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port backlog=4096;
        root $d/html;
        location / { }
        location = /upload {
            access_log $d/logs/upload.log upload;
            proxy_pass http://sink/ok;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Content-Type "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:$sink backlog=4096;
        location = /ok { return 200 "ok\n"; }
    }
}
EOF
}

# upload_check LOG FROM TO BYTES: the upstream's upload log between byte
# offsets FROM and TO: "LINES WHOLE CHUNKED" (WHOLE: answered 200 with the
# whole body; CHUNKED: of those, sent without a Content-Length).
upload_check() {
    local log=$1 from=$2 to=$3 want=$4
    tail -c +$((from + 1)) "$log" 2>/dev/null | head -c $((to - from)) | awk -v want="$want" '
        { n++ }
        $3 == 200 && $2 == "-" && $1 >= want { whole++; chunked++ }
        $3 == 200 && $2 == want && $1 > want { whole++ }
        END { printf "%d %d %d\n", n, whole + 0, chunked + 0 }'
}

file_bytes() { stat -c %s "$1" 2>/dev/null || echo 0; }

buffering_case() { # PROXY DIR SIZE UPPORT REP UPLOG
    local kind=$1 dir=$2 size=$3 up=$4 rep=$5 uplog=$6 port d pids c0 c1 rss bytes o0 o1 url
    local args=() check="0 0 0"
    bytes=$(size_bytes "$size")
    port=$(free_ports 1)
    d="$WORK/buffering/$kind-$dir-$size-$rep"
    mkdir -p "$d"
    case $kind in
        direct) port=$up ;;
        nginx)
            # nginx's defaults otherwise: proxy_request_buffering and
            # proxy_buffering on, client_body_buffer_size 16k, proxy_buffers
            # 8 4k/8k, the rest of a body in a temporary file. The error
            # log at nginx's default level, error: at warn it would write
            # a line for every body that goes to a temporary file.
            NGINX_EXTRA="    error_log $d/logs/error.log error;
    client_max_body_size 4m;${BUF_NGINX_BODY_BUFFER:+
    client_body_buffer_size $BUF_NGINX_BODY_BUFFER;}
    client_body_temp_path $d/client_body;
    proxy_temp_path $d/proxy_temp;" \
                start_proxy nginx "$d" "$port" "$BUF_WORKERS" "" "$up" ;;
        haproxy) start_proxy haproxy "$d" "$port" "$BUF_WORKERS" roundrobin "$up" ;;
        webcluster)
            WC_ADMIN_PORT=0 WC_EXTRA=$'\n[limits]\nmax_request_body = "4m"\n' \
                start_proxy webcluster "$d" "$port" "$BUF_WORKERS" round_robin:false "$up" ;;
        webcluster-stream)
            WC_ADMIN_PORT=0 WC_EXTRA=$'\n[limits]\nmax_request_body = "4m"\n\n[buffering]\nrequests = false\nresponses = false\n' \
                start_proxy webcluster "$d" "$port" "$BUF_WORKERS" round_robin:false "$up" ;;
        *) die "unknown proxy $kind in BUF_PROXIES" ;;
    esac
    if [[ $kind != direct ]]; then
        wait_http "$port" "/$size" "$PROXY_PID"
        sleep 0.3
    fi
    if [[ $dir == up ]]; then
        url="http://127.0.0.1:$port/upload"
        args=(-s "$HERE/post.lua")
    else
        url="http://127.0.0.1:$port/$size"
    fi
    # A generous wrk timeout: a slow 1 MiB exchange must count in the
    # latencies, not drop out of them as a timeout.
    args+=(--timeout 10s)
    export BODY_BYTES=$bytes
    ((WARMUP > 0)) && run_wrk "$url" "$d/warmup.txt" "$WARMUP" "${args[@]}"
    if [[ $kind == direct ]]; then pids=$UP_PID; else pids=$(proxy_pids "${kind%-stream}" "$PROXY_PID"); fi
    o0=$(file_bytes "$uplog")
    # shellcheck disable=SC2086
    c0=$(cpu_ticks $pids)
    log "buffering ($rep/$REPEAT): $kind $([[ $dir == up ]] && echo "POST $size bodies" || echo "GET $size responses"): BODY_BYTES=$bytes wrk -t1 -c$CONNS -d${DURATION}s --latency ${args[*]} $url"
    run_wrk "$url" "$d/wrk.txt" "$DURATION" "${args[@]}"
    # shellcheck disable=SC2086
    c1=$(cpu_ticks $pids)
    o1=$(file_bytes "$uplog")
    # shellcheck disable=SC2086
    rss=$(rss_kb $pids)
    [[ $dir == up ]] && check=$(upload_check "$uplog" "$o0" "$o1" "$bytes")
    local lines whole chunked
    read -r lines whole chunked <<<"$check"
    { grep -E 'Requests/sec|^ +(50|99)%|Non-2xx|Socket errors' "$d/wrk.txt" | tr -s ' ' | tr '\n' ' '
      [[ $dir == up ]] && printf '| upstream: %s uploads logged, %s whole (%s chunked)' "$lines" "$whole" "$chunked"
      echo; } >&2
    jsonl "{\"part\":\"buffering\",\"rep\":$rep,\"proxy\":\"$kind\",\"dir\":\"$dir\",\"size\":\"$size\",\"bytes\":$bytes,\"threads\":$BUF_WORKERS,\"conns\":$CONNS,\"nginx_body_buffer\":\"$BUF_NGINX_BODY_BUFFER\",\"wrk\":\"$d/wrk.txt\",\"rss_kb\":$rss,\"cpu_ticks\":$((c1 - c0)),\"clk_tck\":$(getconf CLK_TCK),\"duration\":$DURATION,\"upstream_uploads\":$lines,\"upstream_whole\":$whole,\"upstream_chunked\":$chunked,\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
    [[ $kind == direct ]] || stop "$PROXY_PID"
}

part_buffering() {
    local up sink d master rep dir size kind
    read -r up sink <<<"$(free_ports 2)"
    d="$WORK/buffering/upstream"
    nginx_buffering_upstream_conf "$d" "$up" "$sink"
    start upstream-nginx "$d/out.log" nginx -p "$d" -c "$d/nginx.conf" -g 'daemon off;'
    master=$STARTED_PID
    wait_http "$up" "/$(set -- $BUF_SIZES; echo "$1")" "$master"
    UP_PID=$(pgrep -P "$master" | head -1)
    for rep in $(seq 1 "$REPEAT"); do
        for dir in $BUF_DIRS; do
            [[ $dir == up || $dir == down ]] || die "BUF_DIRS: up and/or down, got '$dir'"
            for size in $BUF_SIZES; do
                for kind in $BUF_PROXIES; do
                    buffering_case "$kind" "$dir" "$size" "$up" "$rep" "$d/logs/upload.log"
                done
            done
        done
    done
    stop "$master"
}

# ---------------------------------------------------------------------------
# Part 2: balancing quality on Apache prefork nodes

# The Apache node config: the project's template (docker/apache/node.conf,
# also used by tests/support/apache.rs and the Docker demo) with the Lua
# handler added by -c directives, or benches/load/apache-node.conf where the
# template does not exist.
apache_setup() {
    case $APACHE_CONF in
        auto)
            if [[ -f $ROOT/docker/apache/node.conf ]]; then APACHE_CONF=$ROOT/docker/apache/node.conf
            else APACHE_CONF=$HERE/apache-node.conf; fi ;;
    esac
    [[ -f $APACHE_CONF ]] || die "no Apache node config at $APACHE_CONF"
    if [[ $APACHE_CONF == "$HERE/apache-node.conf" ]]; then
        APACHE_KIND=own; LUA_PATH=/sleep; CGI_PATH=/cgi-sleep; NODE_HEADER=X-Node
    else
        APACHE_KIND=template; LUA_PATH=/lua-sleep; CGI_PATH=/sleep; NODE_HEADER=X-Webcluster-Node
    fi
    jsonl "{\"part\":\"apache\",\"conf\":\"${APACHE_CONF#"$ROOT"/}\",\"lua_path\":\"$LUA_PATH\",\"cgi_path\":\"$CGI_PATH\"}"
}

# start_nodes DIR: three fresh Apache prefork nodes of NODE_WORKERS_OF
# workers (NODE_WORKERS each when unset); sets NODE_PORTS, NODE_PIDS.
start_nodes() {
    local base=$1 i d ports f w
    ((${#NODE_WORKERS_OF[@]} == 3)) || NODE_WORKERS_OF=("$NODE_WORKERS" "$NODE_WORKERS" "$NODE_WORKERS")
    read -r -a ports <<<"$(free_ports 3)"
    NODE_PORTS=("${ports[@]}")
    NODE_PIDS=()
    for i in 1 2 3; do
        d="$base/n$i"
        mkdir -p "$d"
        chmod 755 "$d"
        w=${NODE_WORKERS_OF[i-1]}
        cp "$HERE/sleep.lua" "$d/"
        chmod 644 "$d/sleep.lua"
        if [[ $APACHE_KIND == own ]]; then
            cp "$HERE/sleep.cgi" "$d/"
            start "apache n$i" "$d/out.log" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C \
                apache2 -d "$d" -f "$APACHE_CONF" -DFOREGROUND \
                -C "Define NODE_DIR $d" -C "Define NODE_PORT ${NODE_PORTS[i-1]}" \
                -C "Define NODE_NAME n$i" -C "Define NODE_WORKERS $w"
        else
            # The layout tests/support/apache.rs makes: run, logs, htdocs
            # (rendered), cgi-bin.
            mkdir -p "$d/run" "$d/logs" "$d/htdocs" "$d/cgi-bin"
            chmod 755 "$d/run" "$d/logs" "$d/htdocs" "$d/cgi-bin"
            for f in "$(dirname "$APACHE_CONF")"/htdocs/*; do
                sed "s/@NODE_NAME@/n$i/g" "$f" >"$d/htdocs/$(basename "$f")"
            done
            cp "$(dirname "$APACHE_CONF")"/cgi-bin/* "$d/cgi-bin/"
            chmod 755 "$d"/cgi-bin/*
            start "apache n$i" "$d/out.log" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C \
                apache2 -d "$d" -f "$APACHE_CONF" -DFOREGROUND \
                -C "Define NODE_NAME n$i" -C "Define NODE_LISTEN 127.0.0.1:${NODE_PORTS[i-1]}" \
                -C "Define NODE_MPM prefork" -C "Define NODE_MAX_WORKERS $w" \
                -C "Define NODE_MAX_SPARE_THREADS $((w + 1))" \
                -C "Define NODE_STATUS_ALLOW 127.0.0.1" -C "Define NODE_KEEPALIVE_TIMEOUT 5" \
                -C "Define NODE_MODULES /usr/lib/apache2/modules" \
                -C "Define NODE_RUN_DIR $d/run" -C "Define NODE_LOG_DIR $d/logs" \
                -C "Define NODE_HTDOCS $d/htdocs" -C "Define NODE_CGI_DIR $d/cgi-bin" \
                -C "Define NODE_USER www-data" -C "Define NODE_GROUP www-data" \
                -c "LoadModule lua_module /usr/lib/apache2/modules/mod_lua.so" \
                -c "LuaMapHandler ^$LUA_PATH\$ $d/sleep.lua handle"
        fi
        NODE_PIDS+=("$STARTED_PID")
    done
    for i in 1 2 3; do
        wait_http "${NODE_PORTS[i-1]}" "$LUA_PATH?ms=0" "${NODE_PIDS[i-1]}"
    done
    # Wait until every node has forked its whole worker pool.
    python3 - "${NODE_PORTS[@]}" "${NODE_WORKERS_OF[@]}" <<'EOF' || die "the Apache nodes did not start their workers"
import sys, time, urllib.request
ports, wants = sys.argv[1:4], [int(w) for w in sys.argv[4:7]]
end = time.time() + 15
for p, want in zip(ports, wants):
    while True:
        page = urllib.request.urlopen("http://127.0.0.1:%s/server-status?auto" % p, timeout=2).read().decode()
        sb = [l for l in page.splitlines() if l.startswith("Scoreboard:")][0].split(":", 1)[1].strip()
        if sum(1 for c in sb if c != ".") >= want:
            break
        if time.time() > end:
            sys.exit(1)
        time.sleep(0.2)
EOF
}

# Handler cost: the Lua handler against the same sleep in CGI (fork + exec),
# 12 keep-alive connections for 4 s on one fresh node each.
part_handler_check() {
    local d="$WORK/handler" h
    mkdir -p "$d"
    for h in lua cgi; do
        local path=$LUA_PATH
        [[ $h == cgi ]] && path=$CGI_PATH
        start_nodes "$d/$h"
        log "handler check: $path?ms=$HANDLER_MS"
        timeout -k 5 40 wrk -t1 -c12 -d4s --latency "http://127.0.0.1:${NODE_PORTS[0]}$path?ms=$HANDLER_MS" >"$d/$h.txt" 2>&1 || true
        jsonl "{\"part\":\"handler\",\"handler\":\"$h\",\"path\":\"$path\",\"wrk\":\"$d/$h.txt\"}"
        if [[ $h == lua ]]; then
            # The floor for the balancing runs: the same open-loop generator
            # straight to one idle node at a third of the rate (its share).
            sleep 1
            log "baseline: openloop straight to one idle node, $RATE/3 per second"
            "$OPENLOOP" --url "http://127.0.0.1:${NODE_PORTS[1]}$LUA_PATH?ms=$HANDLER_MS" \
                --node-header "$NODE_HEADER" --rate "$(python3 -c "print($RATE / 3)")" --duration "$BAL_DURATION" --timeout "$TIMEOUT" \
                --out "$d/baseline.json" 2> >(tee "$d/baseline.log" >&2) || die "openloop failed"
            jsonl "{\"part\":\"baseline\",\"openloop\":\"$d/baseline.json\"}"
        fi
        for i in 0 1 2; do stop "${NODE_PIDS[i]}"; done
    done
}

# freeze_n1 PGID DIR: in the middle of the run (of BAL_DURATION s), SIGSTOP
# n1's process group for FREEZE_SECS, then SIGCONT; the epoch times of both
# go to DIR/freeze.txt.
freeze_n1() {
    local pg=$1 d=$2 at
    at=$(python3 -c "print(max(0.0, ($BAL_DURATION - $FREEZE_SECS) / 2))")
    sleep "$at"
    kill -STOP -- "-$pg"
    echo "stop $(date +%s.%N)" >"$d/freeze.txt"
    log "freeze: n1 (process group $pg) stopped for ${FREEZE_SECS}s"
    sleep "$FREEZE_SECS"
    kill -CONT -- "-$pg"
    echo "cont $(date +%s.%N)" >>"$d/freeze.txt"
    log "freeze: n1 thawed"
}

# freeze_report DIR T_LOAD: JSON of the freeze: when (seconds after the load
# began) and for how long n1 was frozen, and what n1's access log shows of
# the load ($LUA_PATH requests): in all, and received from one whole second
# after the thaw on (Apache's %t has whole seconds, and requests that queued
# in n1's listen backlog during the freeze are received at the thaw: those
# were not sent after it). No access log (APACHE_CONF's own config): null.
freeze_report() {
    python3 - "$1/freeze.txt" "$1/n1/logs/access.log" "$LUA_PATH" "$2" <<'EOF'
import datetime, json, sys
times = dict(l.split() for l in open(sys.argv[1]) if l.strip())
stop, cont, t_load = float(times["stop"]), float(times["cont"]), float(sys.argv[4])
since = int(cont) + 2  # the first whole second >= thaw + 1 s
total = after = None
try:
    lines = open(sys.argv[2], errors="replace").readlines()
    total = after = 0
except OSError:
    lines = []
for line in lines:
    # 127.0.0.1 51234 [05/Dec/2026:22:10:03 +0000] "GET /lua-sleep?ms=20 HTTP/1.1" ...
    try:
        stamp = line.split("[", 1)[1].split("]", 1)[0]
        target = line.split('"', 2)[1].split(" ")[1]
        t = datetime.datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z").timestamp()
    except (IndexError, ValueError):
        continue
    if not target.startswith(sys.argv[3]) or t < t_load - 1:
        continue
    total += 1
    if t >= since:
        after += 1
print(json.dumps({"frozen_at_s": round(stop - t_load, 2), "frozen_s": round(cont - stop, 2),
                  "n1_requests": total, "n1_after_thaw": after,
                  "after_from_s": round(since - t_load, 2)}))
EOF
}

# q_rate SHARE HIDDEN: SHARE of the capacity of the nodes just started
# (their workers less HIDDEN, each serving 1000 / HANDLER_MS per second).
q_rate() {
    python3 -c "import sys; w = sum(map(int, sys.argv[3:])) - int(sys.argv[2]); print(round(float(sys.argv[1]) * w * 1000 / $HANDLER_MS))" \
        "$1" "$2" "${NODE_WORKERS_OF[@]}"
}

balancing_run() { # SCENARIO METHOD REP
    local scenario=$1 method=$2 rep=${3:-1} d kind balance port admin hidden=0 hidden_pid="" status_json=""
    local rate=$RATE duration=$BAL_DURATION maxconn=0 wc_extra=""
    d="$WORK/balancing/$scenario-$method"
    ((rep > 1)) && d+="-$rep"
    mkdir -p "$d"
    NODE_WORKERS_OF=()
    if [[ $scenario == q-sizes ]]; then read -r -a NODE_WORKERS_OF <<<"$Q_SIZES"; fi
    start_nodes "$d"
    case $scenario in
        hidden|q-hidden|q-two) hidden=$HIDDEN ;;
        full|flap) hidden=$NODE_WORKERS ;;
        equal|freeze|q-overload|q-sizes) hidden=0 ;;
        *) die "unknown scenario $scenario" ;;
    esac
    case $scenario in
        q-hidden|q-two|q-sizes) rate=$(q_rate "$Q_LOAD" "$hidden") ;;
        q-overload) rate=$(q_rate "$Q_OVER" 0); duration=$Q_BURST_S ;;
    esac
    if [[ $scenario == q-* ]]; then
        wc_extra="queue_timeout = \"${QUEUE_TIMEOUT}s\""
        [[ -n $Q_ORDER ]] && wc_extra+=$'\n'"queue_order = \"$Q_ORDER\""
    fi
    local total=$duration
    [[ $scenario == q-overload ]] && total=$((Q_BURST_S + Q_AFTER_S))
    if ((hidden > 0)); then
        # Keep-alive connections: on prefork each holds one worker of n1 for
        # the whole run, whether a request is running on it or not.
        local script=()
        [[ $scenario == flap ]] && script=(-s "$HERE/flap.lua")
        start "hidden load" "$d/hidden.txt" env CLOSE_EVERY="$FLAP_EVERY" timeout -k 5 $((total + TIMEOUT + 30)) \
            wrk -t1 -c"$hidden" -d$((total + TIMEOUT + 20))s --timeout 10s --latency "${script[@]}" \
            "http://127.0.0.1:${NODE_PORTS[0]}$LUA_PATH?ms=$HIDDEN_MS"
        hidden_pid=$STARTED_PID
        sleep 1.5
    fi
    read -r port admin <<<"$(free_ports 2)"
    case $method in
        wc-*-ka) kind=webcluster; balance="${method#wc-}"; balance="${balance%-ka}:true:on" ;;
        wc-*) kind=webcluster; balance="${method#wc-}:true" ;;
        nginx-least_conn) kind=nginx; balance="least_conn;" ;;
        nginx-round_robin) kind=nginx; balance="" ;;
        haproxy-leastconn) kind=haproxy; balance=leastconn ;;
        haproxy-roundrobin) kind=haproxy; balance=roundrobin ;;
        haproxy-leastconn-maxconn) kind=haproxy; balance=leastconn; maxconn=1 ;;
        *) die "unknown method $method" ;;
    esac
    WC_GROUP_EXTRA=$wc_extra HAPROXY_MAXCONN=$maxconn WC_ADMIN_PORT=$admin \
        start_proxy "$kind" "$d/proxy" "$port" "$BAL_WORKERS" "$balance" "${NODE_PORTS[@]}"
    wait_http "$port" "$LUA_PATH?ms=0" "$PROXY_PID"
    # q-two: a second webcluster instance in front of the same nodes.
    local port_b="" admin_b="" proxy_b=""
    if [[ $scenario == q-two ]]; then
        [[ $kind == webcluster ]] || die "q-two runs webcluster methods only, not $method"
        read -r port_b admin_b <<<"$(free_ports 2)"
        local first=$PROXY_PID
        WC_GROUP_EXTRA=$wc_extra WC_ADMIN_PORT=$admin_b \
            start_proxy "$kind" "$d/proxy-b" "$port_b" "$BAL_WORKERS" "$balance" "${NODE_PORTS[@]}"
        proxy_b=$PROXY_PID
        PROXY_PID=$first
        wait_http "$port_b" "$LUA_PATH?ms=0" "$proxy_b"
    fi
    # Let webcluster scrape every node a few times (and treat all alike).
    sleep 2.5
    local scoreboard_before
    scoreboard_before=$(python3 - "${NODE_PORTS[@]}" <<'EOF'
import sys, urllib.request
out = []
for p in sys.argv[1:]:
    try:
        page = urllib.request.urlopen("http://127.0.0.1:%s/server-status?auto" % p, timeout=1).read().decode()
        out.append([l for l in page.splitlines() if l.startswith("Scoreboard:")][0].split(":", 1)[1].strip())
    except Exception as e:
        out.append("(no answer: %s)" % type(e).__name__)
print(" | ".join(out))
EOF
)
    log "balancing: scenario=$scenario method=$method run $rep/$BAL_REPEAT rate=$rate/s for ${duration}s (n1 hidden load: $hidden workers); scoreboards: $scoreboard_before"
    local c0 c1 sampler ppids
    ppids="$PROXY_PID $( (pgrep -P "$PROXY_PID" || true) | tr '\n' ' ')$proxy_b"
    # shellcheck disable=SC2086
    c0=$(cpu_ticks $ppids)
    # shellcheck disable=SC2086,SC2046
    start sampler "$d/sampler.log" python3 "$HERE/sampler.py" --ports "${NODE_PORTS[@]}" \
        --names n1 n2 n3 --pids $ppids $([[ $kind == webcluster ]] && echo "--admin $admin") --max-seconds $((total + TIMEOUT + 20)) --out "$d/sampler.json"
    sampler=$STARTED_PID
    local t_load freezer="" freeze_json=""
    t_load=$(date +%s.%N)
    local rate_a=$rate extra_pid="" extra_json=""
    if [[ $scenario == q-two ]]; then
        # Half the visitors to each instance.
        rate_a=$(python3 -c "print($rate / 2)")
        "$OPENLOOP" --url "http://127.0.0.1:$port_b$LUA_PATH?ms=$HANDLER_MS" --seed 2 \
            --node-header "$NODE_HEADER" --rate "$rate_a" --duration "$duration" --timeout "$TIMEOUT" --out "$d/openloop-b.json" \
            2> >(tee "$d/openloop-b.log" >&2) &
        extra_pid=$!
        extra_json=",\"openloop_b\":\"$d/openloop-b.json\""
    elif [[ $scenario == q-overload ]]; then
        # After the burst, Q_AFTER of the capacity for Q_AFTER_S seconds.
        local rate_after
        rate_after=$(q_rate "$Q_AFTER" 0)
        (sleep "$Q_BURST_S"; exec "$OPENLOOP" --url "http://127.0.0.1:$port$LUA_PATH?ms=$HANDLER_MS" --seed 2 \
            --node-header "$NODE_HEADER" --rate "$rate_after" --duration "$Q_AFTER_S" --timeout "$TIMEOUT" --out "$d/openloop-after.json" \
            2> >(tee "$d/openloop-after.log" >&2)) &
        extra_pid=$!
        extra_json=",\"openloop_after\":\"$d/openloop-after.json\",\"rate_after\":$rate_after"
    fi
    "$OPENLOOP" --url "http://127.0.0.1:$port$LUA_PATH?ms=$HANDLER_MS" \
        --node-header "$NODE_HEADER" --rate "$rate_a" --duration "$duration" --timeout "$TIMEOUT" --out "$d/openloop.json" \
        2> >(tee "$d/openloop.log" >&2) &
    local openloop_pid=$!
    if [[ $scenario == freeze ]]; then
        freeze_n1 "${NODE_PIDS[0]}" "$d" &
        freezer=$!
    fi
    wait "$openloop_pid" || die "openloop failed (see $d/openloop.log)"
    if [[ -n $extra_pid ]]; then wait "$extra_pid" || die "the second openloop failed (see $d)"; fi
    if [[ -n $freezer ]]; then
        wait "$freezer" || die "freezing n1 failed"
        freeze_json=$(freeze_report "$d" "$t_load")
    fi
    # shellcheck disable=SC2086
    c1=$(cpu_ticks $ppids)
    stop "$sampler"
    if [[ $kind == webcluster ]]; then
        python3 - "$admin" "$d/admin-status.json" <<'EOF' || true
import sys, urllib.request
open(sys.argv[2], "wb").write(urllib.request.urlopen("http://127.0.0.1:%s/status.json" % sys.argv[1], timeout=2).read())
EOF
        status_json="$d/admin-status.json"
    fi
    jsonl "{\"part\":\"balancing\",\"scenario\":\"$scenario\",\"method\":\"$method\",\"rep\":$rep,\"hidden_workers\":$hidden,\"openloop\":\"$d/openloop.json\",\"hidden_wrk\":\"$d/hidden.txt\",\"admin\":\"$status_json\",\"sampler\":\"$d/sampler.json\",\"proxy_cpu_ticks\":$((c1 - c0)),\"clk_tck\":$(getconf CLK_TCK),\"scoreboards_before\":\"$scoreboard_before\",\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"${freeze_json:+,\"freeze\":$freeze_json},\"rate\":$rate,\"workers\":\"${NODE_WORKERS_OF[*]}\"$extra_json}"
    if [[ -n $proxy_b ]]; then
        python3 - "$admin_b" "$d/admin-status-b.json" <<'EOF' || true
import sys, urllib.request
open(sys.argv[2], "wb").write(urllib.request.urlopen("http://127.0.0.1:%s/status.json" % sys.argv[1], timeout=2).read())
EOF
        stop "$proxy_b"
    fi
    stop "$PROXY_PID"
    [[ -n $hidden_pid ]] && stop "$hidden_pid"
    local i
    for i in 0 1 2; do stop "${NODE_PIDS[i]}"; done
}

part_balancing() {
    local scenario method rep
    for scenario in $SCENARIOS; do
        local methods=$METHODS
        if [[ $scenario == q-two ]]; then
            methods=""
            for method in $Q_METHODS; do
                if [[ $method == wc-* ]]; then methods+=" $method"; fi
            done
        elif [[ $scenario == q-* ]]; then
            methods=$Q_METHODS
        fi
        for rep in $(seq "$BAL_REPEAT"); do
            for method in $methods; do
                balancing_run "$scenario" "$method" "$rep"
            done
        done
    done
}

# ---------------------------------------------------------------------------

main() {
    need_tools
    if [[ " $PROXIES $IDLE_PROXIES $METHODS $BUF_PROXIES $TLS_PROXIES $PARTS " == *" webcluster"* || " $METHODS " == *" wc-"* || " $PARTS " == *" instructions "* ]]; then
        build "$WEBCLUSTER" --bin webcluster
    fi
    if [[ " $PARTS " == *" balancing "* ]]; then build "$OPENLOOP" -p openloop; fi
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    WORK=$(mktemp -d /tmp/webcluster-bench.XXXXXX)
    chmod 755 "$WORK"
    : >"$WORK/results.jsonl"
    if [[ -x $WEBCLUSTER ]]; then
        # A private copy: a build finishing during the run must not swap the
        # binary between cases.
        cp "$WEBCLUSTER" "$WORK/webcluster"
        WEBCLUSTER_SRC=$WEBCLUSTER
        WEBCLUSTER=$WORK/webcluster
    fi
    if [[ -x $OPENLOOP ]]; then
        cp "$OPENLOOP" "$WORK/openloop"
        OPENLOOP=$WORK/openloop
    fi
    log "work directory: $WORK"
    baseline_setup
    local started=$SECONDS
    # Machine and versions, for the report.
    BASELINE_LABEL=${BASELINE_LABEL:-} python3 - "$WORK/machine.json" "$WEBCLUSTER" "$ROOT" "${WEBCLUSTER_SRC:-$WEBCLUSTER}" <<'EOF'
import json, os, platform, re, subprocess, sys
out, wc, root, wc_src = sys.argv[1:5]
def run(*cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip()
    except Exception as e:
        return "?"
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
mem = "?"
for line in open("/proc/meminfo"):
    if line.startswith("MemTotal"):
        mem = "%.1f GiB" % (int(line.split()[1]) / 1048576); break
def newest_src_after(binary, root):
    """When a file under src/ or Cargo.* changed after the binary was built."""
    try:
        built = os.path.getmtime(binary)
    except OSError:
        return None
    newest = 0.0
    for base, _, files in os.walk(os.path.join(root, "src")):
        for f in files:
            newest = max(newest, os.path.getmtime(os.path.join(base, f)))
    for f in ("Cargo.toml", "Cargo.lock"):
        try:
            newest = max(newest, os.path.getmtime(os.path.join(root, f)))
        except OSError:
            pass
    if newest > built:
        import time
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(newest))
    return None
rev = run("git", "-C", root, "rev-parse", "--short", "HEAD")
dirty = run("git", "-C", root, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")
json.dump({
    "nproc": os.cpu_count(),
    "cpu": cpu,
    "mem": mem,
    "kernel": platform.release(),
    "os": run("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
    "nginx": run("nginx", "-v").replace("nginx version: ", ""),
    "haproxy": " ".join(run("haproxy", "-v").splitlines()[0].split()[:3]).replace(" version", ""),
    "apache": run("apache2", "-v").splitlines()[0].replace("Server version: ", ""),
    "wrk": " ".join(run("wrk", "-v").splitlines()[0].split()[:2]),
    "python": platform.python_version(),
    "webcluster": run(wc, "--version").splitlines()[0],
    "webcluster_commit": rev + (" (with uncommitted changes in src/ or Cargo.*)" if dirty else ""),
    "webcluster_binary_stale": newest_src_after(wc_src, root),
    "webcluster_binary_mtime": run("date", "-u", "-r", wc_src, "+%Y-%m-%d %H:%M UTC"),
    "loadavg_start": open("/proc/loadavg").read().split()[:3],
    "date": run("date", "-u", "+%Y-%m-%d %H:%M UTC"),
    "baseline_label": os.environ.get("BASELINE_LABEL") or None,
}, open(out, "w"), indent=1)
EOF
    {
        printf 'PARTS="%s" PROXIES="%s" ' "$PARTS" "$PROXIES"
        if [[ -n $BASELINE ]]; then printf 'BASELINE=%s ' "$BASELINE"; fi
        printf 'PEER_FORWARDING=%s ' "${PEER_FORWARDING:-1}"
        if [[ " $PARTS " == *" buffering "* ]]; then
            printf 'BUF_SIZES="%s" BUF_DIRS="%s" BUF_PROXIES="%s" BUF_WORKERS=%s ' \
                "$BUF_SIZES" "$BUF_DIRS" "$BUF_PROXIES" "$BUF_WORKERS"
            if [[ -n $BUF_NGINX_BODY_BUFFER ]]; then printf 'BUF_NGINX_BODY_BUFFER=%s ' "$BUF_NGINX_BODY_BUFFER"; fi
        fi
        printf 'DURATION=%s WARMUP=%s REPEAT=%s CONNS=%s THREADS_LIST="%s" SIZES="%s" BAL_DURATION=%s RATE=%s TIMEOUT=%s BAL_REPEAT=%s ' \
            "$DURATION" "$WARMUP" "$REPEAT" "$CONNS" "$THREADS_LIST" "$SIZES" "$BAL_DURATION" "$RATE" "$TIMEOUT" "$BAL_REPEAT"
        local freeze_opt=""
        if [[ " $SCENARIOS " == *" freeze "* ]]; then freeze_opt="FREEZE_SECS=$FREEZE_SECS "; fi
        printf 'HANDLER_MS=%s NODE_WORKERS=%s HIDDEN=%s HIDDEN_MS=%s SCENARIOS="%s" FLAP_EVERY=%s %sBAL_WORKERS=%s bash benches/load/run.sh\n' \
            "$HANDLER_MS" "$NODE_WORKERS" "$HIDDEN" "$HIDDEN_MS" "$SCENARIOS" "$FLAP_EVERY" "$freeze_opt" "$BAL_WORKERS"
    } >"$WORK/command.txt"
    local part
    for part in $PARTS; do
        case $part in
            overhead) part_overhead ;;
            idle) part_idle ;;
            instructions) part_instructions ;;
            buffering) part_buffering ;;
            tls) part_tls ;;
            balancing)
                apache_setup
                log "Apache nodes: $APACHE_CONF (handler $LUA_PATH)"
                [[ $HANDLER_CHECK == 1 ]] && part_handler_check
                part_balancing ;;
            *) die "unknown part $part (overhead, idle, instructions, buffering, tls, balancing)" ;;
        esac
    done
    log "load done in $((SECONDS - started)) s; writing the report"
    local py=python3
    if [[ $PLOT == 1 ]] && ! python3 -c 'import matplotlib' 2>/dev/null; then
        log "matplotlib missing: python3 -m pip install matplotlib"
        python3 -m pip install --quiet matplotlib >&2 2>/dev/null \
            || { [[ $(id -u) == 0 ]] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-matplotlib >/dev/null 2>&1 && py=/usr/bin/python3; } \
            || log "no matplotlib: the plot will be a hand-written SVG"
    fi
    mkdir -p "$PLOT_DIR"
    "$py" "$HERE/report.py" --work "$WORK" --out "$OUT" --plot-dir "$PLOT_DIR" \
        --elapsed $((SECONDS - started)) --handler-ms "$HANDLER_MS"
    log "results written to $OUT"
}

main "$@"
