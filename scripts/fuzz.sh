#!/usr/bin/env bash
# scripts/fuzz.sh -- run webcluster's fuzz targets (fuzz/, cargo-fuzz).
#
# Usage: bash scripts/fuzz.sh [SECONDS [TARGET...]]
#   SECONDS  how long each target runs (default 20)
#   TARGET   the targets to run (default: all of `cargo fuzz list`)
#
# Each target starts from its seed corpus fuzz/corpus/<target>/ (read only)
# and the inputs earlier runs found, kept in fuzz/target/corpus/<target>/
# (ignored by git); a crashing input is saved under fuzz/artifacts/<target>/.
# Prints the executions of every target; exits non-zero when one crashed.
#
# Needs the nightly toolchain (libFuzzer's instrumentation) and cargo-fuzz,
# which is installed from crates.io when missing. Without a nightly
# toolchain it says so and only replays the corpora on stable
# (tests/fuzz_corpus.rs). FUZZ_SANITIZER (default none: the code under test
# is safe Rust, and debug assertions are on) is passed to `cargo fuzz -s`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() {
    printf '==> %s\n' "$*" >&2
}

seconds="${1:-20}"
shift || true
case "$seconds" in
    '' | *[!0-9]*)
        printf 'usage: bash scripts/fuzz.sh [SECONDS [TARGET...]]\n' >&2
        exit 2
        ;;
esac

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    log "!!! NO NIGHTLY TOOLCHAIN: cannot fuzz (libFuzzer needs nightly)."
    log "!!! Only replaying the seed corpora and regressions on stable."
    log "!!! Install one with: rustup toolchain install nightly --profile minimal"
    cargo test --test fuzz_corpus
    exit $?
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi

sanitizer="${FUZZ_SANITIZER:-none}"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

log "building the fuzz targets (nightly, sanitizer: $sanitizer)"
build_start=$SECONDS
cargo +nightly fuzz build -s "$sanitizer"
log "fuzz build: $((SECONDS - build_start))s"

mkdir -p fuzz/target/logs
results=()
crashed=()
for target in "${targets[@]}"; do
    work="fuzz/target/corpus/$target"
    logfile="fuzz/target/logs/$target.log"
    mkdir -p "$work" "fuzz/artifacts/$target"
    log "fuzzing $target for ${seconds}s (log: $logfile)"
    status=0
    cargo +nightly fuzz run -s "$sanitizer" "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$logfile" 2>&1 || status=$?
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$logfile" | tail -n 1)"
    if [ -z "$runs" ]; then
        runs="$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$logfile" | tail -n 1)"
    fi
    cov="$(grep -o 'cov: [0-9]*' "$logfile" | tail -n 1 || true)"
    if [ "$status" -ne 0 ]; then
        crashed+=("$target")
        results+=("$(printf '%-16s %10s executions  %-10s CRASHED (exit %s)' "$target" "${runs:-?}" "$cov" "$status")")
        grep -E 'panicked at|^artifact_prefix|Test unit written to' "$logfile" >&2 || tail -n 20 "$logfile" >&2
    else
        results+=("$(printf '%-16s %10s executions  %-10s ok' "$target" "${runs:-?}" "$cov")")
    fi
done

log "executions per target (${seconds}s each):"
printf '    %s\n' "${results[@]}" >&2
if [ "${#crashed[@]}" -ne 0 ]; then
    log "crashed: ${crashed[*]} (inputs in fuzz/artifacts/; replay one with"
    log "  cargo +nightly fuzz run -s $sanitizer TARGET fuzz/artifacts/TARGET/crash-...)"
    exit 1
fi
