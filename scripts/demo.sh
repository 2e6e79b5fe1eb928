#!/usr/bin/env bash
# scripts/demo.sh -- THE demo command of webcluster: installs the build
# dependencies that are missing (Debian packages), then runs
#   cargo run --release -- demo [ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

DEMO_PACKAGES=(cmake build-essential pkg-config)

ensure_packages "${DEMO_PACKAGES[@]}"
ensure_cargo
exec cargo run --release -- demo "$@"
