#!/usr/bin/env bash
# Installs what `cross/build-cuda.sh` needs on Debian 12 (bookworm, x86_64 or arm64): the CUDA 11.8
# toolkit (nvcc, cudart, cuBLAS, cuRAND, NVRTC) and libcuda1 (the driver's user-space library,
# which the CUDA binary links; without a GPU it loads and reports "no device", and sgbd-edge falls
# back to the CPU). Both live in Debian's contrib / non-free components: this adds an apt source
# for them when none is configured. Idempotent; needs root (or sudo).
#
# Usage: cross/install-cuda.sh          # then: CUDA_COMPUTE_CAP=90 cross/build-cuda.sh
# On a Jetson use JetPack's CUDA 12 instead (see cross/README.md); this script refuses other systems.
set -euo pipefail

if command -v nvcc >/dev/null 2>&1 && ldconfig -p | grep -q 'libcuda\.so\.1 '; then
    echo "install-cuda: nvcc and libcuda.so.1 are already installed"
    nvcc --version | tail -2
    exit 0
fi

. /etc/os-release
if [ "${ID:-}" != "debian" ] || [ "${VERSION_CODENAME:-}" != "bookworm" ]; then
    echo "install-cuda: this script installs Debian bookworm's CUDA 11.8 packages; this is ${PRETTY_NAME:-unknown}." >&2
    echo "  Elsewhere install a CUDA toolkit (11.8 or 12.x) from NVIDIA or JetPack and put nvcc on PATH." >&2
    exit 2
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-cuda: run as root (or install sudo)" >&2; exit 2; }
    SUDO=sudo
fi

# An apt source for contrib + non-free unless one is configured already (deb822 or one-line style).
if ! grep -rqsE '^(Components:.*non-free|deb .*bookworm.* non-free)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "install-cuda: adding /etc/apt/sources.list.d/debian-nonfree.sources (contrib non-free)"
    $SUDO tee /etc/apt/sources.list.d/debian-nonfree.sources >/dev/null <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi

$SUDO apt-get update -qq
# nvidia-cuda-toolkit pulls nvcc, the CUDA libraries and their -dev packages; libcuda1 asks debconf
# nothing but recommends the kernel driver, which a build machine does not need.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nvidia-cuda-toolkit libcuda1
nvcc --version | tail -2
ldconfig -p | grep 'libcuda\.so\.1 ' || { echo "install-cuda: libcuda.so.1 missing after the install" >&2; exit 1; }
echo "install-cuda: done"
