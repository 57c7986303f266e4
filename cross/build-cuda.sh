#!/usr/bin/env bash
# Build sgbd-edge with the `cuda` feature (candle-core/nn/transformers on CUDA) on a machine that has
# the CUDA toolkit: natively on a Jetson Orin (JetPack 6.x, CUDA 12.x, sm_87) or on an x86_64/arm64
# box with a data-centre GPU (H100: sm_90). Cross-compiling CUDA from x86 to the Jetson is not
# supported here: build on the Jetson itself (or in an L4T JetPack container on an arm64 host).
#
# Usage: CUDA_COMPUTE_CAP=87 cross/build-cuda.sh            # Jetson Orin (default when on aarch64)
#        CUDA_COMPUTE_CAP=90 cross/build-cuda.sh            # H100 (default on x86_64)
#        cross/build-cuda.sh --profile dist                 # extra cargo args (default --release)
# Output: target/<profile>/sgbd-edge (native target dir).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)

# nvcc: PATH, then $CUDA_HOME/bin, then the JetPack / toolkit default /usr/local/cuda/bin.
if ! command -v nvcc >/dev/null 2>&1; then
    for d in "${CUDA_HOME:-}" /usr/local/cuda; do
        if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then export PATH="$d/bin:$PATH"; break; fi
    done
fi
if ! command -v nvcc >/dev/null 2>&1; then
    echo "build-cuda: nvcc not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)." >&2
    echo "  Jetson: install JetPack 6.x (\`apt install nvidia-jetpack\` or at least cuda-toolkit-12-x)," >&2
    echo "  then \`export PATH=/usr/local/cuda/bin:\$PATH\`. This machine can only build the CPU binary:" >&2
    echo "  cargo build --release (device = \"auto\" falls back to the CPU with a log line)." >&2
    exit 2
fi
nvcc --version | tail -2

if [ -z "${CUDA_COMPUTE_CAP:-}" ]; then
    case "$(uname -m)" in
        aarch64) export CUDA_COMPUTE_CAP=87 ;;   # Jetson AGX/NX Orin (Ampere, sm_87)
        *) export CUDA_COMPUTE_CAP=90 ;;         # H100 (Hopper, sm_90)
    esac
    echo "build-cuda: CUDA_COMPUTE_CAP not set; using $CUDA_COMPUTE_CAP for $(uname -m)"
fi
case "$CUDA_COMPUTE_CAP" in
    87|90|90a) ;;
    *) echo "build-cuda: note: CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP is neither 87 (Orin) nor 90 (H100); building anyway" >&2 ;;
esac
# candle-kernels' build (cudaforge) turns CUDA_COMPUTE_CAP=90 into sm_90a (Hopper's arch-specific
# features), which only CUDA 12+ knows. With an older nvcc (Debian's 11.8) build plain sm_90 through
# a wrapper that rewrites the architecture flags: the kernels then use no sm_90a-only instructions
# and run on any Hopper GPU.
nvcc_major=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p' | head -n1)
if [ "${CUDA_COMPUTE_CAP#sm_}" = "90" ] && [ -n "$nvcc_major" ] && [ "$nvcc_major" -lt 12 ] && [ -z "${NVCC:-}" ]; then
    shim="$PWD/${CARGO_TARGET_DIR:-target}/nvcc-sm90/bin"
    case "${CARGO_TARGET_DIR:-}" in /*) shim="$CARGO_TARGET_DIR/nvcc-sm90/bin" ;; esac
    mkdir -p "$shim"
    {
        echo '#!/usr/bin/env bash'
        echo "# written by cross/build-cuda.sh: CUDA $nvcc_major has no sm_90a, so build plain sm_90"
        echo 'args=()'
        echo 'for a in "$@"; do a=${a//compute_90a/compute_90}; a=${a//sm_90a/sm_90}; args+=("$a"); done'
        echo "exec $(command -v nvcc) \"\${args[@]}\""
    } >"$shim/nvcc"
    chmod +x "$shim/nvcc"
    export NVCC="$shim/nvcc"
    echo "build-cuda: nvcc $nvcc_major has no sm_90a: building plain sm_90 through $NVCC"
fi
# libcudart / libcublas for the linker (candle-kernels links cudart, cudarc links the rest).
cuda_root=$(dirname "$(dirname "$(command -v nvcc)")")
for d in "$cuda_root/lib64" "$cuda_root/targets/$(uname -m)-linux/lib"; do
    [ -d "$d" ] && export LIBRARY_PATH="$d${LIBRARY_PATH:+:$LIBRARY_PATH}"
done

args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--release)
echo "build-cuda: CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP cargo build ${args[*]} --features cuda --bin sgbd-edge"
nice -n 10 cargo build "${args[@]}" --features cuda --bin sgbd-edge
echo "build-cuda: done in $(( $(date +%s) - t0 )) s"
