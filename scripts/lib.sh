# shellcheck shell=bash
# scripts/lib.sh -- helpers shared by scripts/test.sh and scripts/demo.sh.
# Source it from the repository root: `. scripts/lib.sh`.
#
#   ensure_packages PKG...      apt-get install the Debian packages that are
#                               missing (root, or through sudo); one
#                               `apt-get update` at most, and only if needed
#   stop_system_services SVC... stop Debian-started services (e.g. apache2 on
#                               port 80); the tests run their own processes
#   ensure_cargo                make sure cargo, rustfmt and clippy are usable

log() {
    printf '==> %s\n' "$*" >&2
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Runs "$@" as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# True when Debian package "$1" is installed (not merely known, nor only
# its config files left).
package_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

_LIB_APT_UPDATED=0

ensure_packages() {
    command -v dpkg-query >/dev/null 2>&1 \
        || die "no dpkg here: install these packages by hand: $*"
    local missing=() pkg
    for pkg in "$@"; do
        package_installed "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    log "installing missing Debian packages: ${missing[*]}"
    if [ "$_LIB_APT_UPDATED" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        _LIB_APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
}

stop_system_services() {
    local svc
    for svc in "$@"; do
        if [ -x "/etc/init.d/$svc" ] && command -v service >/dev/null 2>&1 \
            && service "$svc" status >/dev/null 2>&1; then
            log "stopping the system's $svc service (tests run their own)"
            as_root service "$svc" stop >/dev/null 2>&1 || true
        fi
    done
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        printf '%s\n' \
            "error: cargo not found." \
            "Install a Rust toolchain (1.85 or newer) with rustup, including the" \
            "rustfmt and clippy components, e.g.:" \
            "    rustup toolchain install stable --profile minimal --component rustfmt,clippy" \
            "then open a new shell (or source ~/.cargo/env) and run this script again." >&2
        exit 1
    fi
    local component
    for component in fmt clippy; do
        if ! cargo "$component" --version >/dev/null 2>&1; then
            if command -v rustup >/dev/null 2>&1; then
                log "adding the rustup component for cargo $component"
                if [ "$component" = fmt ]; then
                    rustup component add rustfmt || die "cannot install rustfmt"
                else
                    rustup component add clippy || die "cannot install clippy"
                fi
            else
                die "cargo $component is not available: install the toolchain's rustfmt/clippy components"
            fi
        fi
    done
}
