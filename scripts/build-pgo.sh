#!/usr/bin/env bash
# A profile-guided release build of webcluster: the release profile (fat
# LTO, one codegen unit) plus LLVM's profile-guided optimisation, trained on
# the proxy's own request path. The gain and how it was measured are in
# benches/README.md ("Quiet-machine figures of the ninth session").
#
#   bash scripts/build-pgo.sh            # -> target/release/webcluster
#
# Steps: (1) build an instrumented binary (into target/pgo-gen); (2) run it
# in front of a local nginx (127.0.0.1, kernel-chosen ports) under wrk and,
# when there, h2load: small and 64 KiB responses, keep-alive and a new
# connection per request, a 404, HTTP/2 over h2c, once with the status
# scrape, the status-path guard and the access log on and once bare; (3)
# merge the profiles with llvm-profdata (rustup's llvm-tools component, the
# LLVM of this rustc: a profile is read only by the LLVM that wrote it);
# (4) build target/release/webcluster with the profile. Every load run is
# bounded in time. Needs nginx and wrk (apt-get as root when missing), and
# rustup to add llvm-tools when it is missing.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=benches/load/ports.sh
source "$ROOT/benches/load/ports.sh"
# shellcheck source=benches/load/upstream.sh
source "$ROOT/benches/load/upstream.sh"

die() { echo "build-pgo: $*" >&2; exit 1; }

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
if ((${#need[@]})); then
    [[ $(id -u) == 0 ]] || die "missing ${need[*]}: install them (apt-get install ${need[*]})"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [[ ! -x $profdata ]]; then
    rustup component add llvm-tools >/dev/null || die "cannot add rustup's llvm-tools component"
fi
[[ -x $profdata ]] || die "no llvm-profdata at $profdata"

WORK=$(mktemp -d /tmp/webcluster-pgo.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "build-pgo: 1/4 instrumented build" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$WORK/profiles" \
    cargo build --release --bin webcluster --target-dir target/pgo-gen

echo "build-pgo: 2/4 training" >&2
UP=$(free_port)
start_nginx_upstream "$WORK" "$UP"

train() { # MODE
    local mode=$1 listen admin group log
    listen=$(free_port)
    admin=$(free_port)
    group='balance = "round_robin"\nscrape = false'
    log='target = "off"'
    if [[ $mode == full ]]; then
        group='balance = "busyness"\nscrape_interval = "1s"'
        log="target = \"$WORK/access-$mode.log\""
    fi
    printf '[server]\nlisten = ["127.0.0.1:%s"]\nthreads = 1\nlog_level = "warn"\n\n[admin]\nlisten = "127.0.0.1:%s"\n\n[access_log]\n%s\n\n[[group]]\nname = "up"\n%b\n  [[group.node]]\n  name = "nginx"\n  address = "127.0.0.1:%s"\n  status_url = "http://127.0.0.1:%s/nginx_status"\n  status_kind = "nginx"\n  max_workers = 4096\n' \
        "$listen" "$admin" "$log" "$group" "$UP" "$UP" >"$WORK/$mode.toml"
    target/pgo-gen/release/webcluster run -c "$WORK/$mode.toml" >"$WORK/$mode.out" 2>&1 &
    local pid=$!
    wait_port "$listen"
    local url="http://127.0.0.1:$listen"
    timeout 30 wrk -t1 -c50 -d6s "$url/small" >/dev/null
    timeout 30 wrk -t1 -c50 -d3s "$url/64k" >/dev/null
    timeout 30 wrk -t1 -c20 -d2s -H "Connection: close" "$url/small" >/dev/null
    timeout 30 wrk -t1 -c10 -d1s "$url/missing" >/dev/null
    if command -v h2load >/dev/null; then
        timeout 30 h2load -c10 -m10 -n 50000 "$url/small" >/dev/null
    fi
    # A clean stop writes the profile.
    kill -TERM "$pid"
    wait "$pid" || true
}
train bare
train full
ls "$WORK"/profiles/*.profraw >/dev/null 2>&1 || die "the training wrote no profile"

echo "build-pgo: 3/4 merging the profiles" >&2
"$profdata" merge -o "$WORK/webcluster.profdata" "$WORK"/profiles/*.profraw

echo "build-pgo: 4/4 optimised build" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$WORK/webcluster.profdata" \
    cargo build --release --bin webcluster
echo "build-pgo: target/release/webcluster is built with the profile" >&2
