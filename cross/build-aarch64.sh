#!/usr/bin/env bash
# Cross-build sgbd-edge for the Jetson (aarch64-unknown-linux-gnu, glibc) on an x86_64 Debian/Ubuntu host.
# Idempotent: installs the cross toolchain and the rust target only if missing.
# Usage: cross/build-aarch64.sh [extra cargo args]   (e.g. --profile dist; default: --release)
# Output: target/aarch64-unknown-linux-gnu/<profile>/sgbd-edge
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
t0=$(date +%s)

need_pkgs=()
command -v aarch64-linux-gnu-gcc >/dev/null || need_pkgs+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/include/stdio.h ] || need_pkgs+=(libc6-dev-arm64-cross)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "[build-aarch64] installing ${need_pkgs[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need_pkgs[@]}"
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
    echo "[build-aarch64] rustup target add $TARGET"
    rustup target add "$TARGET"
fi

# C parts (bundled SQLite in libsqlite3-sys, mimalloc in libmimalloc-sys, psm/stacker) are built by the cc
# crate; these per-target variables are read only when building for aarch64, never for the host.
export CC_aarch64_unknown_linux_gnu=${CC_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-gcc}
export AR_aarch64_unknown_linux_gnu=${AR_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-ar}
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}

args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--release)
echo "[build-aarch64] cargo build ${args[*]} --target $TARGET --bin sgbd-edge"
nice -n 15 cargo build "${args[@]}" --target "$TARGET" --bin sgbd-edge

profile=release
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --profile) profile=${args[$((i + 1))]} ;;
        --profile=*) profile=${args[$i]#--profile=} ;;
    esac
done
bin=${CARGO_TARGET_DIR:-target}/$TARGET/$profile/sgbd-edge
file "$bin" 2>/dev/null || ls -l "$bin"
echo "[build-aarch64] done in $(( $(date +%s) - t0 )) s -> $bin ($(du -h "$bin" | cut -f1))"
