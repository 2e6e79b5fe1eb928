#!/usr/bin/env bash
# scripts/test.sh -- THE test command of webcluster (run by .ci/run).
#
# On a fresh Debian machine it installs what the tests need (real Apache httpd,
# nginx, haproxy, prometheus/promtool, prometheus-apache-exporter, chromium, wrk, testssl.sh, a C toolchain and cmake
# for the build), stops the Debian-started apache2/nginx services (the tests
# start their own processes on ephemeral loopback ports), then runs
#   cargo fmt --check
#   cargo clippy --workspace --all-targets -- -D warnings
#   cargo test --workspace --all-targets --no-fail-fast [ARGS...]
#   bash scripts/fuzz.sh $FUZZ_SECONDS  (every fuzz target, default 3 s each)
# Every step runs even if an earlier one failed; the exit status is non-zero
# if any failed. Test artifacts (logs, screenshots) go to target/test-output/.
#
# Usage: bash scripts/test.sh [extra cargo test arguments, e.g. a test filter]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

TEST_PACKAGES=(
    cmake build-essential pkg-config iproute2
    apache2 nginx haproxy prometheus prometheus-apache-exporter
    chromium fonts-liberation fonts-dejavu-core
    curl wrk testssl.sh nghttp2-client
    dnsmasq-base keepalived python3
)

ensure_packages "${TEST_PACKAGES[@]}"
stop_system_services apache2 nginx
ensure_cargo

mkdir -p target/test-output
WEBCLUSTER_TEST_OUTPUT="$(pwd)/target/test-output"
export WEBCLUSTER_TEST_OUTPUT
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

failed=()
step() {
    local name="$1"
    shift
    log "$name"
    if "$@"; then
        log "$name: ok"
    else
        log "$name: FAILED"
        failed+=("$name")
    fi
}

run_tests() {
    cargo test --workspace --all-targets --no-fail-fast "$@" 2>&1 | tee target/test-output/cargo-test.log
}

step "cargo fmt --check" cargo fmt --check
step "cargo clippy --workspace --all-targets -- -D warnings" cargo clippy --workspace --all-targets -- -D warnings
step "cargo test --workspace --all-targets" run_tests "$@"
# Every fuzz target briefly (nightly; cargo-fuzz installed when missing;
# without nightly only the corpus replay on stable, said loudly).
step "fuzz targets, ${FUZZ_SECONDS:-3}s each" bash scripts/fuzz.sh "${FUZZ_SECONDS:-3}"

if [ "${#failed[@]}" -ne 0 ]; then
    log "failed steps: $(printf '[%s] ' "${failed[@]}")"
    log "test output: target/test-output/"
    exit 1
fi
log "all checks passed (test output: target/test-output/)"
